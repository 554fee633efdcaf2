"""What the run page shows of each step: its outcome, its probes (from the journal) and its output per target.

Output comes from the step records the journal keeps (redacted before they were stored): ``stdout``,
``stderr`` and ``body`` as text, the exit code or HTTP status, anything else as JSON. The run page shows the
last lines of each stream; the step page shows them whole (as captured, up to the step type's capture cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.store.records import Event, StepRecord

__all__ = ["OutputBlock", "Probe", "StepPanel", "step_panels", "tail"]

TAIL_LINES = 20
TAIL_CHARS = 4000
_STREAMS = ("stdout", "stderr", "body")


@dataclass
class Probe:
    """One evaluated check, precondition or verification (a ``probe`` event)."""

    kind: str
    check: str
    holds: bool
    detail: str
    target: str | None = None
    attempt: int | None = None
    poll: int | None = None
    seen: dict[str, Any] = field(default_factory=dict)
    """What the probe saw (exit code, stdout, ...), as recorded."""


@dataclass
class OutputBlock:
    """The output of a step (``target`` None) or of one fan-out target."""

    target: str | None
    state: str | None = None
    reason: str = ""
    code: str = ""
    """``exit code 3`` / ``HTTP 503`` or empty."""
    streams: list[tuple[str, str]] = field(default_factory=list)
    other: Any = None

    @property
    def empty(self) -> bool:
        """True if there is nothing to show."""
        return not self.code and not any(text for _n, text in self.streams) and self.other in (None, {}, [], "")


@dataclass
class StepPanel:
    """Everything the run page shows of one step."""

    id: str
    state: str
    attempts: int
    reason: str
    started_at: float | None
    finished_at: float | None
    waiting_for: str | None
    probes: list[Probe]
    outputs: list[OutputBlock]

    @property
    def has_output(self) -> bool:
        """True if any block has something to show."""
        return any(not b.empty for b in self.outputs)


def tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> tuple[str, bool]:
    """The last ``lines`` lines (at most ``chars`` characters) of ``text``, and whether anything was left out."""
    kept = text.splitlines(keepends=True)[-lines:]
    out = "".join(kept)[-chars:]
    return out, len(out) < len(text)


def block_of(target: str | None, output: Any, *, state: str | None = None, reason: str = "") -> OutputBlock:
    """An output block from a step type's output value."""
    block = OutputBlock(target, state, reason)
    if isinstance(output, dict):
        rest = dict(output)
        if rest.get("exit_code") is not None:
            block.code = f"exit code {rest.pop('exit_code')}"
        elif rest.get("status") is not None and isinstance(rest.get("status"), int):
            block.code = f"HTTP {rest.pop('status')}"
        for name in _STREAMS:
            value = rest.pop(name, None)
            if isinstance(value, str):
                block.streams.append((name, value))
            elif value is not None:
                rest[name] = value
        block.other = rest or None
    elif isinstance(output, str):
        block.streams.append(("output", output))
    else:
        block.other = output
    return block


def _outputs(rec: StepRecord, live: dict[tuple[str | None, str], list[str]]) -> list[OutputBlock]:
    """The step's (or each target's) output: its recorded result, or while it runs what it wrote so far."""
    targets = rec.progress.targets
    if targets:
        return [block_of(name, t.output if t.state != "running" else _so_far(live, name), state=t.state, reason=t.reason)
                for name, t in targets.items()]  # fmt: skip
    return [block_of(None, rec.output if str(rec.state) != "running" else _so_far(live, None))]


def _so_far(live: dict[tuple[str | None, str], list[str]], target: str | None) -> dict[str, str] | None:
    """A running step's journaled output chunks (``step.output``), shaped like a result."""
    streams = {stream: "\n".join(lines) for (t, stream), lines in live.items() if t == target and lines}
    return streams or None


def _probe(ev: Event) -> Probe:
    data = dict(ev.data)
    seen = {k: data[k] for k in ("exit_code", "status", *_STREAMS, "duration") if k in data}
    return Probe(kind=str(data.get("kind", "check")), check=str(data.get("check", "")), holds=bool(data.get("holds")),
                 detail=str(data.get("detail", "")), target=data.get("target"), attempt=ev.attempt, poll=data.get("poll"),
                 seen=seen)  # fmt: skip


def step_panels(steps: list[StepRecord], probe_events: list[Event], output_events: Sequence[Event] = ()) -> list[StepPanel]:
    """A panel per step, in runbook order, with the step's probes in journal order (and a running step's output so far)."""
    probes: dict[str, list[Probe]] = {}
    for ev in probe_events:
        if ev.step_id:
            probes.setdefault(ev.step_id, []).append(_probe(ev))
    live: dict[str, dict[tuple[str | None, str], list[str]]] = {}
    for ev in output_events:
        if ev.step_id:
            key = (ev.data.get("target"), str(ev.data.get("stream")))
            live.setdefault(ev.step_id, {}).setdefault(key, []).extend(str(x) for x in ev.data.get("lines") or [])
    return [
        StepPanel(id=s.step_id, state=str(s.state), attempts=s.attempts, reason=s.reason, started_at=s.started_at,
                  finished_at=s.finished_at, waiting_for=str(s.progress.waiting) if str(s.state) == "waiting" and s.progress.waiting else None,
                  probes=probes.get(s.step_id, []), outputs=_outputs(s, live.get(s.step_id, {})))
        for s in steps
    ]  # fmt: skip
