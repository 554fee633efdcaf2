"""A run's captured output as lines: what ``runbook logs`` and the API's logs call return.

Sources, all from the journal (already redacted): each step's (and fan-out target's) captured ``stdout`` and
``stderr`` — complete up to the step type's capture cap (``max_output``; a note says when it was capped) — and
the messages a Python step wrote with ``ctx.log``. Run views show only the tail of each stream
(:mod:`runner.views`); this is the other half.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.store.records import IN_FLIGHT_STEP_STATES, StepState

if TYPE_CHECKING:
    from runner.store.base import Store

__all__ = ["LogLine", "collect"]

_STREAMS = ("stdout", "stderr", "body")


@dataclass(frozen=True)
class LogLine:
    """One line of output: which step (and target) and stream it came from, and its number in that stream."""

    step: str
    target: str | None
    stream: str  # stdout | stderr | body (an http response) | log | note
    n: int
    text: str

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` line record."""
        return {"step": self.step, "target": self.target, "stream": self.stream, "n": self.n, "line": self.text}

    def human(self) -> str:
        """``step@target stream| text``."""
        where = self.step if self.target is None else f"{self.step}@{self.target}"
        return f"{where} {self.stream}| {self.text}"


def _lines(step: str, target: str | None, output: Any, wanted: str | None) -> list[LogLine]:
    if not isinstance(output, dict):
        return []
    out: list[LogLine] = []
    for stream in _STREAMS:
        text = output.get(stream)
        if wanted not in (None, stream) or not isinstance(text, str) or not text:
            continue
        out += [LogLine(step, target, stream, i, line) for i, line in enumerate(text.splitlines(), 1)]
    if output.get("truncated") and wanted in (None, "note"):
        out.append(LogLine(step, target, "note", 1, "output was capped at the step's max_output; the rest was not kept"))
    return out


def collect(store: Store, run_id: str, *, step: str | None = None, target: str | None = None, stream: str | None = None,
            finished_only: bool = False) -> list[LogLine]:  # fmt: skip
    """Every captured line of the run (or of one step / target / stream), in step order, then target order.

    ``finished_only`` leaves out steps still in flight (their output is recorded when they finish).
    """
    steps = store.get_steps(run_id)
    if step is not None and step not in {s.step_id for s in steps}:
        from runner.errors import UsageError

        raise UsageError(f"run {run_id} has no step '{step}'; steps: {', '.join(s.step_id for s in steps)}")
    logs: dict[tuple[str, str | None], list[str]] = {}
    if stream in (None, "log"):
        for ev in store.events(run_id, types=("step.log",), limit=1_000_000):
            logs.setdefault((ev.step_id or "", ev.data.get("target")), []).append(str(ev.data.get("message", "")))
    out: list[LogLine] = []
    for rec in steps:
        if step is not None and rec.step_id != step:
            continue
        if finished_only and (rec.state in IN_FLIGHT_STEP_STATES or rec.state == StepState.PENDING):
            continue
        units: list[tuple[str | None, Any]] = [(name, t.output) for name, t in rec.progress.targets.items()] or [(None, rec.output)]
        for name, output in units:
            if target is not None and name != target:
                continue
            out += _lines(rec.step_id, name, output, stream)
            out += [LogLine(rec.step_id, name, "log", i, m) for i, m in enumerate(logs.get((rec.step_id, name), []), 1)]
    return out
