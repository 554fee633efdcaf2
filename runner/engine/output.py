"""Live step output: lines a running command writes, shown as they come and journaled in chunks.

Each line goes to the engine's in-process output observers at once (the CLI's live view), redacted. While a step
has run longer than :data:`CHUNK_EVERY`, its lines are also journaled as ``step.output`` events (at most one per
stream every :data:`CHUNK_EVERY` seconds), so ``runbook logs --follow`` and the web console can show a long step's
output while it runs. The step's complete output is recorded with its outcome, as always; the chunks are a preview.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.store.records import NewEvent

if TYPE_CHECKING:
    from runner.engine.journal import Journal
    from runner.secrets import Redactor

__all__ = ["CHUNK_EVERY", "STREAMS", "LiveOutput", "OutputObserver", "has_streams"]

CHUNK_EVERY = 1.0
"""Seconds between journaled chunks of a running step's output (and before the first)."""
_MAX_CHUNK_LINES = 200
STREAMS = ("stdout", "stderr", "body")
"""The keys of a command's (or an HTTP response's) captured output that ``runbook logs`` prints as lines."""


def has_streams(output: Any) -> bool:
    """True if ``output`` is captured command output (a stream with text, or capped): what ``runbook logs`` shows."""
    return isinstance(output, dict) and (bool(output.get("truncated")) or any(isinstance(output.get(k), str) and output[k]
                                                                                for k in STREAMS))  # fmt: skip


OutputObserver = Callable[[str, "str | None", str, str], None]
"""``observer(step_id, target, stream, line)``: a line a running step wrote (already redacted)."""


@dataclass
class _Buffer:
    started: float
    last: float = 0.0
    lines: dict[str, list[str]] = field(default_factory=dict)


class LiveOutput:
    """The live output of one drive's steps."""

    def __init__(self, journal: Journal, redactor: Redactor, observers: list[OutputObserver]) -> None:
        self.journal, self.redactor, self.observers = journal, redactor, observers
        self._lock = threading.Lock()
        self._buffers: dict[tuple[str, str | None], _Buffer] = {}

    def line(self, step_id: str, target: str | None, attempt: int, stream: str, text: str, part: str = "action") -> None:
        """One line of ``stream`` from the step (or target): tell observers, journal a chunk when due.

        ``part`` is what wrote it: ``action``, ``rollback``, or a call the action made (``ctx.shell``)."""
        text = self.redactor.text(text)
        for observer in self.observers:
            observer(step_id, target, stream, text)
        now = time.monotonic()
        with self._lock:
            buf = self._buffers.setdefault((step_id, target), _Buffer(started=now))
            buf.lines.setdefault(f"{part}:{stream}", []).append(text)
            due = now - buf.started >= CHUNK_EVERY and now - buf.last >= CHUNK_EVERY
            if not due and sum(len(v) for v in buf.lines.values()) < _MAX_CHUNK_LINES:
                return
            chunks, buf.lines, buf.last = buf.lines, {}, now
        events = [NewEvent("step.output", step_id=step_id, attempt=attempt,
                           data={"stream": key.split(":", 1)[1], "lines": lines, **({"target": target} if target else {}),
                                 **({"part": key.split(":", 1)[0]} if not key.startswith("action:") else {})})
                  for key, lines in chunks.items() if lines]  # fmt: skip
        if events:
            self.journal.commit(events)

    def done(self, step_id: str, target: str | None) -> None:
        """The step (or target) finished: its complete output is in its record; drop the preview buffer."""
        with self._lock:
            self._buffers.pop((step_id, target), None)
