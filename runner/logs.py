"""A run's captured output as lines: what ``runbook logs`` and the API's logs call return.

Sources, all from the journal (already redacted): each step's (and fan-out target's) captured ``stdout`` and
``stderr`` — complete up to the step type's capture cap (``max_output``; a note says when it was capped) — and
the messages a Python step wrote with ``ctx.log``; for a step still running, the chunks of its output journaled so
far (``step.output``). Run views show only the tail of each stream (:mod:`runner.views`); this is the other half.

Every attempt of a step is kept: the output of an attempt that another one followed (a ``retry:`` in the run, or
``runbook retry``) is journaled as ``step.attempt_output`` when the next attempt starts; the last attempt's is in
the step's record. What a Python step's calls captured (``ctx.shell``, ``ctx.ssh(...).run``) is journaled as
``step.call_output``, and what a rollback action printed goes with its ``rollback.finished`` event. Each line
says which attempt (counted over the whole run, retries included) and which part (``action``, ``rollback``, or the
call, e.g. ``ctx.shell``) wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.store.records import IN_FLIGHT_STEP_STATES, StepState

if TYPE_CHECKING:
    from runner.store.base import Store
    from runner.store.records import Event

__all__ = ["LogLine", "collect"]

_STREAMS = ("stdout", "stderr", "body")
_TYPES = ("step.started", "step.attempt_output", "step.call_output", "rollback.finished", "step.log", "step.output")


@dataclass(frozen=True)
class LogLine:
    """One line of output: which step (and target), attempt and part it came from, its stream and number there."""

    step: str
    target: str | None
    stream: str  # stdout | stderr | body (an http response) | log | note
    n: int
    text: str
    attempt: int | None = None
    """The attempt that wrote it, counted over the run (a ``runbook retry`` goes on counting); None for a rollback."""
    part: str = "action"
    """``action``, ``rollback``, or a call the action made (``ctx.shell``, ``ctx.ssh``, ``ctx.http``)."""
    labelled: bool = field(default=False, compare=False)
    """The human view names the attempt (the unit ran more than one)."""

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` line record."""
        return {"step": self.step, "target": self.target, "stream": self.stream, "n": self.n, "line": self.text,
                "attempt": self.attempt, "part": self.part}  # fmt: skip

    def human(self) -> str:
        """``step@target stream| text``, with ``[attempt 2]``, ``[rollback]`` or ``[ctx.shell]`` when that tells lines apart."""
        where = self.step if self.target is None else f"{self.step}@{self.target}"
        tags = [f"attempt {self.attempt}"] if self.labelled and self.attempt is not None and self.part != "rollback" else []
        if self.part != "action":
            tags.append(self.part)
        return f"{where}{' [' + ' '.join(tags) + ']' if tags else ''} {self.stream}| {self.text}"

    def key(self) -> tuple[str, str | None, int | None, str, str, int]:
        """What names this line among a run's (a follower prints each once)."""
        return (self.step, self.target, self.attempt, self.part, self.stream, self.n)


@dataclass
class _Unit:
    """What the events say about one step (or target): its attempts' outputs, rollbacks, messages, live chunks."""

    attempts: int = 0
    started_seq: int = 0
    captured: list[tuple[int | None, str, Any]] = field(default_factory=list)  # (attempt, part, output) in order
    rollbacks: list[Any] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    chunks: list[tuple[int, str, str, list[str]]] = field(default_factory=list)  # (seq, part, stream, lines)


def _units(events: Iterable[Event]) -> dict[tuple[str, str | None], _Unit]:
    units: dict[tuple[str, str | None], _Unit] = {}
    for ev in events:
        u = units.setdefault((ev.step_id or "", ev.data.get("target")), _Unit())
        if ev.type == "step.started":
            u.attempts, u.started_seq = u.attempts + 1, ev.seq
        elif ev.type == "step.attempt_output":
            u.captured.append((max(u.attempts, 1), "action", ev.data.get("output")))
        elif ev.type == "step.call_output":
            rollback = ev.data.get("kind") == "rollback"
            u.captured.append((None if rollback else max(u.attempts, 1), "rollback" if rollback else str(ev.data.get("call")),
                               ev.data.get("output")))  # fmt: skip
        elif ev.type == "rollback.finished" and ev.data.get("output") is not None:
            u.rollbacks.append(ev.data["output"])
        elif ev.type == "step.log":
            u.logs.append(str(ev.data.get("message", "")))
        elif ev.type == "step.output":
            part = str(ev.data.get("part") or "action")
            u.chunks.append((ev.seq, part, str(ev.data.get("stream")), [str(x) for x in ev.data.get("lines") or []]))
    return units


class _Numbered:
    """Lines numbered per (attempt, part, stream), in the order they are added."""

    def __init__(self, step: str, target: str | None, wanted: str | None, labelled: bool) -> None:
        self.step, self.target, self.wanted, self.labelled = step, target, wanted, labelled
        self.counts: dict[tuple[int | None, str, str], int] = {}
        self.lines: list[LogLine] = []

    def add(self, attempt: int | None, part: str, stream: str, texts: Iterable[str]) -> None:
        if self.wanted not in (None, stream):
            return
        for text in texts:
            n = self.counts[(attempt, part, stream)] = self.counts.get((attempt, part, stream), 0) + 1
            self.lines.append(LogLine(self.step, self.target, stream, n, text, attempt, part, self.labelled))

    def output(self, attempt: int | None, part: str, output: Any) -> None:
        if not isinstance(output, dict):
            return
        for stream in _STREAMS:
            text = output.get(stream)
            if isinstance(text, str) and text:
                self.add(attempt, part, stream, text.splitlines())
        if output.get("truncated"):
            self.add(attempt, part, "note", ["output was capped at the step's max_output; the rest was not kept"])


def _streams(output: Any) -> tuple[Any, ...]:
    return tuple(output.get(s) for s in _STREAMS) if isinstance(output, dict) else ()


def collect(store: Store, run_id: str, *, step: str | None = None, target: str | None = None, stream: str | None = None,
            finished_only: bool = False) -> list[LogLine]:  # fmt: skip
    """Every captured line of the run (or of one step / target / stream), in step order, then target order; within a
    unit, attempt by attempt (what its calls captured, then the action's own output), then ``ctx.log`` messages,
    then what its rollbacks printed.

    A step still running shows what it wrote so far (its journaled ``step.output`` chunks), numbered like its final
    output, so a follower prints each line once. ``finished_only`` leaves running steps out.
    """
    steps = store.get_steps(run_id)
    if step is not None and step not in {s.step_id for s in steps}:
        from runner.errors import UsageError

        raise UsageError(f"run {run_id} has no step '{step}'; steps: {', '.join(s.step_id for s in steps)}")
    units = _units(store.events(run_id, types=_TYPES, limit=1_000_000))
    out: list[LogLine] = []
    for rec in steps:
        if step is not None and rec.step_id != step:
            continue
        running = rec.state in IN_FLIGHT_STEP_STATES or rec.state == StepState.PENDING
        if running and finished_only:
            continue
        targets: list[tuple[str | None, Any, bool]] = [
            (n, t.output, t.state in ("running", "pending")) for n, t in rec.progress.targets.items()
        ]
        for name, output, live in targets or [(None, rec.output, running)]:
            if target is not None and name != target:
                continue
            u = units.get((rec.step_id, name)) or _Unit()
            last = max(u.attempts, 1)
            lines = _Numbered(rec.step_id, name, stream, labelled=u.attempts > 1)
            if live:
                for attempt, part, captured in u.captured:
                    if attempt is not None and attempt < last:
                        lines.output(attempt, part, captured)
                for seq, part, s, texts in u.chunks:
                    if seq > u.started_seq:  # this attempt's (a retried step's older chunks are its earlier attempts')
                        lines.add(last, part, s, texts)
            else:
                final = _streams(output)
                for attempt, part, captured in u.captured:
                    if attempt == last and part.startswith("ctx.") and final and _streams(captured) == final:
                        continue  # the action returned what its call captured: shown once, as the action's
                    if part != "rollback":
                        lines.output(attempt, part, captured)
                lines.output(last, "action", output)
            lines.add(None, "action", "log", u.logs)
            for captured in u.rollbacks + [c for a, p, c in u.captured if p == "rollback"]:
                lines.output(None, "rollback", captured)
            out += lines.lines
    return out
