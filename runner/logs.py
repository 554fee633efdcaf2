"""A run's captured output as lines: what ``runbook logs`` and the API's logs call return.

Sources, all from the journal (already redacted): each step's (and fan-out target's) captured ``stdout`` and
``stderr`` — complete up to the step type's capture cap (``max_output``; a note says when it was capped) — and
the messages a Python step wrote with ``ctx.log``; for a step still running, the chunks of its output journaled so
far (``step.output``). Run views show only the tail of each stream (:mod:`runner.views`); this is the other half.
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

    A step still running shows what it wrote so far (its journaled ``step.output`` chunks), numbered like its final
    output, so a follower prints each line once. ``finished_only`` leaves running steps out.
    """
    steps = store.get_steps(run_id)
    if step is not None and step not in {s.step_id for s in steps}:
        from runner.errors import UsageError

        raise UsageError(f"run {run_id} has no step '{step}'; steps: {', '.join(s.step_id for s in steps)}")
    logs: dict[tuple[str, str | None], list[str]] = {}
    preview: dict[tuple[str, str | None, str], list[str]] = {}
    for ev in store.events(run_id, types=("step.log", "step.output"), limit=1_000_000):
        where = (ev.step_id or "", ev.data.get("target"))
        if ev.type == "step.log":
            logs.setdefault(where, []).append(str(ev.data.get("message", "")))
        else:
            preview.setdefault((*where, str(ev.data.get("stream"))), []).extend(str(x) for x in ev.data.get("lines") or [])
    out: list[LogLine] = []
    for rec in steps:
        if step is not None and rec.step_id != step:
            continue
        running = rec.state in IN_FLIGHT_STEP_STATES or rec.state == StepState.PENDING
        if running and finished_only:
            continue
        units: list[tuple[str | None, Any, bool]] = [
            (n, t.output, t.state in ("running", "pending")) for n, t in rec.progress.targets.items()
        ]
        for name, output, live in units or [(None, rec.output, running)]:
            if target is not None and name != target:
                continue
            if live:
                for s in _STREAMS:
                    if stream in (None, s):
                        out += [LogLine(rec.step_id, name, s, i, line) for i, line in enumerate(preview.get((rec.step_id, name, s), []), 1)]
            else:
                out += _lines(rec.step_id, name, output, stream)
            if stream in (None, "log"):
                out += [LogLine(rec.step_id, name, "log", i, m) for i, m in enumerate(logs.get((rec.step_id, name), []), 1)]
    return out
