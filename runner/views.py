"""What every surface shows of runs, runbooks and events: the documented JSON shapes, built in one place.

The CLI's ``--json``, the Python API (:mod:`runner.api`), the HTTP API and the MCP tools all render these
models, so a run looks the same wherever it is read. (Lists of runs, events and runbooks: :mod:`runner.listings`,
kept apart so that running a runbook does not build their models.) ``next`` (:class:`NextAction`) is computed by
:func:`runner.cursor.next_action` from the run's typed state.

Views are bounded: a step shows its outcome, exit code and the last lines of its output
(:data:`TAIL_LINES` lines, :data:`TAIL_BYTES` bytes per stream) with ``truncated`` and the full sizes;
the whole output is read with ``runbook logs`` (:func:`runner.api.Client.logs`) or the events API.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

from pydantic import BaseModel, Field

from runner.errors import ExitCode
from runner.store.records import RunRecord, RunState, StepRecord, StepState

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, SerializationInfo
    from pydantic.json_schema import JsonSchemaValue
    from pydantic_core import CoreSchema

__all__ = ["TAIL_BYTES", "TAIL_LINES", "NextAction", "RunView", "StepView", "StepViews", "bound_output", "build_view", "error_document",
           "exit_code_for", "iso"]  # fmt: skip

TAIL_LINES = 20
TAIL_BYTES = 2048
_MAX_JSON = 4096
"""An output that is not command output (a Python step's return value) is shown whole up to this many bytes of JSON."""
_STREAMS = ("stdout", "stderr", "body")


def iso(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------- run views


class NextAction(BaseModel):
    """What to do next with a run: the one answer every surface gives (see :mod:`runner.cursor`)."""

    action: str = Field(description="none | resume | wait | await_approval | decide | fix_and_retry | wait_elsewhere | conflict | handoff")
    step: str | None = None
    command: str | None = Field(default=None, description="exact command for whoever drives the run (None: nothing to run)")
    not_before: str | None = Field(default=None, description="ISO time before which running the command is pointless")
    reason: str = ""
    human_command: str | None = Field(default=None, description="exact command a person runs for the run to go on (NAME: who decides); "
                                      "it records a decision and never runs a step")  # fmt: skip
    options: list[dict[str, str]] = Field(default_factory=list, description="choices when a decision is needed")
    then: str | None = Field(default=None, description="what continues the run once a person's decision is recorded (a resume)")
    holder: str | None = Field(default=None, description="wait_elsewhere/conflict: who holds the run or its lock")
    until: str | None = Field(default=None, description="wait_elsewhere: when the holder's lease expires unless renewed")
    budget_fits: int | None = Field(default=None, description="handoff: seconds of budget that fit the step")
    estimate: float | None = Field(default=None, description="handoff: what the step is expected to need, in seconds")
    approvals: dict[str, Any] | None = Field(default=None, description="await_approval: approved_by, needed, expires_at")


class StepView(BaseModel):
    """One step in a run view (its output bounded: the tail of each stream)."""

    id: str
    state: StepState
    attempts: int
    exit_code: int | None = None
    output: Any = None
    truncated: bool = Field(default=False, description="output shows only the tail of a longer output (see sizes)")
    sizes: dict[str, int] | None = Field(default=None, description="full sizes in bytes of the streams that were cut")
    started_at: str | None = None
    finished_at: str | None = None
    reason: str = ""
    not_before: str | None = None
    targets: dict[str, Any] | None = None
    rollback_failed: bool = Field(default=False, description="its rollback action failed: what it changed is still in place")


class StepViews(Sequence[StepView]):
    """A run view's steps: each :class:`StepView` is made from the run's step record when it is read or written.

    A view of a long run holds its records only (each view is made, written and let go of while the view is
    serialized: issue 19, a 5000-step run peaks under 50 MiB). Read from JSON (an API client), the views are
    held as they came. Either way it is a sequence of :class:`StepView` and serializes as a list of them.

    A read-only sequence: each read of a view made from records gives a new :class:`StepView` (setting a field
    of it changes nothing the view holds), and ``model_dump(include=/exclude=)`` applies to the run view's own
    fields, not inside each step (take ``[s.model_dump(...) for s in view.steps]`` for that).
    """

    __slots__ = ("_records", "_views")

    def __init__(self, views: Iterable[StepView] = (), *, records: Sequence[StepRecord] | None = None) -> None:
        self._views: tuple[StepView, ...] = tuple(views)
        self._records = records

    def __len__(self) -> int:
        return len(self._records) if self._records is not None else len(self._views)

    @overload
    def __getitem__(self, i: int) -> StepView: ...
    @overload
    def __getitem__(self, i: slice) -> list[StepView]: ...
    def __getitem__(self, i: int | slice) -> StepView | list[StepView]:
        if self._records is None:
            return list(self._views[i]) if isinstance(i, slice) else self._views[i]
        if isinstance(i, slice):
            return [_step_view(r) for r in self._records[i]]
        return _step_view(self._records[i])

    def __iter__(self) -> Iterator[StepView]:
        if self._records is None:
            return iter(self._views)
        return map(_step_view, self._records)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepViews | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StepViews({len(self)} steps)"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        from pydantic_core import core_schema

        items = handler.generate_schema(list[StepView])
        from_items = core_schema.no_info_after_validator_function(cls, items)

        def serialize(value: StepViews, info: SerializationInfo) -> Any:
            return iter(value) if info.mode_is_json() else list(value)  # JSON: written one view at a time

        return core_schema.json_or_python_schema(
            json_schema=from_items,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_items]),
            serialization=core_schema.plain_serializer_function_ser_schema(serialize, info_arg=True),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(schema["json_schema"])  # a list of StepView, read or written


class RunView(BaseModel):
    """The documented JSON shape of a run (``run``/``resume``/``step``/``status --json``, API, MCP)."""

    run_id: str
    runbook: str
    state: RunState
    reason: str = ""
    exit_code: int
    params: dict[str, Any]
    started_by: str
    trigger: dict[str, Any] | None = None
    created_at: str | None
    updated_at: str | None
    finished_at: str | None = None
    parent_run_id: str | None = None
    executor: str | None = None
    steps: StepViews
    next: NextAction
    notices: list[str] = Field(default_factory=list, description="things the caller should know (e.g. the runbook changed)")


_EXIT = {
    RunState.SUCCEEDED: ExitCode.SUCCEEDED,
    RunState.FAILED: ExitCode.FAILED,
    RunState.PAUSED: ExitCode.PAUSED,
    RunState.QUEUED: ExitCode.PAUSED,
    RunState.WAITING: ExitCode.WAITING,
    RunState.CANCELLED: ExitCode.CANCELLED,
    RunState.INTERRUPTED: ExitCode.INTERRUPTED,
    RunState.RUNNING: ExitCode.CONFLICT,
}


def exit_code_for(state: RunState, action: str | None = None) -> ExitCode:
    """Exit code of a command that leaves a run in ``state`` (a running run that ``resume`` can pick up: 3)."""
    if state == RunState.RUNNING and action == "resume":
        return ExitCode.PAUSED
    return _EXIT[state]


def bound_output(output: Any) -> tuple[Any, bool, dict[str, int] | None]:
    """``output`` as a view shows it: the tail of each stream, or a short preview of a large value."""
    if isinstance(output, dict) and any(isinstance(output.get(k), str) for k in _STREAMS):
        out, sizes = dict(output), {}
        for key in _STREAMS:
            text = output.get(key)
            if isinstance(text, str):
                tail = _tail(text)
                if tail is not text:
                    out[key], sizes[key] = tail, len(text.encode("utf-8", "replace"))
        return out, bool(sizes), sizes or None
    if output is None or isinstance(output, bool | int | float):
        return output, False, None
    text = json.dumps(output, default=str, ensure_ascii=False)
    if len(text) <= _MAX_JSON:
        return output, False, None
    return {"preview": text[:TAIL_BYTES] + "..."}, True, {"output": len(text.encode("utf-8", "replace"))}


def _tail(text: str) -> str:
    lines = text.splitlines(keepends=True)
    tail = "".join(lines[-TAIL_LINES:]) if len(lines) > TAIL_LINES else text
    if len(tail) > TAIL_BYTES:
        tail = tail[-TAIL_BYTES:]
    return text if tail == text else tail


_STEP_FIELDS = set(StepView.model_fields)
"""Every step view sets every field: one set shared by all (pydantic keeps a set of set fields per model, about
0.7 KiB; a view of a 5000-step run built each its own, issue 19). Setting a field of a view adds nothing to it."""


def _step_view(s: StepRecord) -> StepView:
    output, truncated, sizes = bound_output(s.output)
    exit_code = s.output.get("exit_code") if isinstance(s.output, dict) and isinstance(s.output.get("exit_code"), int) else None
    targets = None
    if s.progress.targets:
        targets = {}
        for name, t in s.progress.targets.items():
            t_out, t_cut, t_sizes = bound_output(t.output)
            targets[name] = {"state": t.state, "attempts": t.attempts, "output": t_out, "reason": t.reason,
                             "started_at": iso(t.started_at), "finished_at": iso(t.finished_at),
                             **({"truncated": True, "sizes": t_sizes} if t_cut else {}),
                             **({"item": bound_output(t.item)[0]} if t.item is not None else {})}  # fmt: skip
    # Built from a stored record whose fields have these types already: constructed, not validated again.
    return StepView.model_construct(_STEP_FIELDS, id=s.step_id, state=s.state, attempts=s.attempts, exit_code=exit_code, output=output,
                                    truncated=truncated, sizes=sizes, started_at=iso(s.started_at), finished_at=iso(s.finished_at),
                                    reason=s.reason, not_before=iso(s.not_before), targets=targets,
                                    rollback_failed=bool(s.progress.rollback is not None and s.progress.rollback.failed))  # fmt: skip


def build_view(run: RunRecord, steps: Iterable[StepRecord], nxt: NextAction, *, notices: list[str] | None = None) -> RunView:
    """The view of ``run`` and its ``steps`` with ``nxt`` (from :func:`runner.cursor.next_action`)."""
    return RunView(
        run_id=run.id, runbook=run.runbook, state=run.state, reason=run.reason, exit_code=int(exit_code_for(run.state, nxt.action)),
        params=run.params, started_by=run.started_by, trigger=run.trigger, created_at=iso(run.created_at),
        updated_at=iso(run.updated_at), finished_at=iso(run.finished_at), parent_run_id=run.parent_run_id,
        executor=run.holder.label() if run.holder and run.state == RunState.RUNNING else None,
        steps=StepViews(records=list(steps)), next=nxt, notices=list(notices or []),
    )  # fmt: skip


# ---------------------------------------------------------------------- errors


def error_document(exc: BaseException, *, nxt: NextAction | None = None) -> dict[str, Any]:
    """The JSON shape of an error: ``{"error": {type, message, hint, exit_code, problems?}, "next"?: ...}``.

    A conflict (exit 6) carries ``run_id`` and ``next`` (``wait_elsewhere`` or ``conflict``): what to do about it.
    """
    from runner.errors import RunbookError, ValidationError

    code = exc.exit_code if isinstance(exc, RunbookError) else 1
    body: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": getattr(exc, "message", None) or str(exc),
        "hint": getattr(exc, "hint", None),
        "exit_code": int(code),
    }
    if isinstance(exc, ValidationError):
        body["problems"] = [p.as_dict() for p in exc.problems]
    doc: dict[str, Any] = {"error": body}
    if nxt is not None:
        doc["next"] = nxt.model_dump(mode="json")
        if getattr(exc, "run_id", None):
            doc["run_id"] = exc.run_id  # type: ignore[attr-defined]
    return doc
