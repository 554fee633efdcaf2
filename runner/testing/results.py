"""Typed results of a run under test, built from the documented JSON shapes (``run --json``, ``events --json``).

Built from the JSON documents rather than from engine objects, so a test reads the same thing whether the run
went in-process (:class:`runner.Client`) or through the CLI, and keeps working when the engine's internals move.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Outcome", "StepOutcome"]


@dataclass(frozen=True)
class StepOutcome:
    """One step of a run: its state (``succeeded``, ``satisfied``, ``skipped``, ``failed`` ...), attempts, output."""

    id: str
    state: str
    attempts: int
    output: Any
    reason: str
    targets: dict[str, Any] | None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StepOutcome:
        """From one item of a run view's ``steps``."""
        return cls(id=doc["id"], state=str(doc["state"]), attempts=int(doc.get("attempts") or 0), output=doc.get("output"),
                   reason=str(doc.get("reason") or ""), targets=doc.get("targets"))  # fmt: skip

    @property
    def done(self) -> bool:
        """True if the step completed (``succeeded``, ``satisfied`` or ``skipped``)."""
        return self.state in ("succeeded", "satisfied", "skipped")


@dataclass(frozen=True)
class Event:
    """One journal event of a run."""

    seq: int
    type: str
    step_id: str | None
    attempt: int | None
    actor: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """Where a run stands after a call: its state, exit code, steps, ``next`` and journal.

    ``state`` and ``exit_code`` are those ``runbook run --json`` shows (``succeeded`` 0, ``failed`` 1, ``paused``
    3, ``waiting`` 4, ``cancelled`` 5).
    """

    run_id: str
    runbook: str
    state: str
    exit_code: int
    reason: str
    steps: dict[str, StepOutcome]
    next: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    view: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, view: dict[str, Any], events: list[dict[str, Any]] | None = None) -> Outcome:
        """From a run view (``run --json``) and, optionally, its events (``events --json``'s ``events``)."""
        steps = {s["id"]: StepOutcome.from_json(s) for s in view.get("steps", [])}
        evs = [Event(seq=int(e["seq"]), type=e["type"], step_id=e.get("step_id"), attempt=e.get("attempt"), actor=e.get("actor"),
                     data=dict(e.get("data") or {})) for e in events or []]  # fmt: skip
        return cls(run_id=view["run_id"], runbook=view["runbook"], state=str(view["state"]), exit_code=int(view["exit_code"]),
                   reason=str(view.get("reason") or ""), steps=steps, next=dict(view.get("next") or {}),
                   notices=list(view.get("notices") or []), events=evs, view=view)  # fmt: skip

    def step(self, step_id: str) -> StepOutcome:
        """The step ``step_id`` (``KeyError`` naming the steps there are)."""
        if step_id not in self.steps:
            raise KeyError(f"run {self.run_id} has no step '{step_id}' (steps: {', '.join(self.steps)})")
        return self.steps[step_id]

    def output(self, step_id: str) -> Any:
        """The output the step stored (what ``steps.ID.output`` is to later templates)."""
        return self.step(step_id).output

    def states(self) -> dict[str, str]:
        """Step id → state, in step order."""
        return {sid: s.state for sid, s in self.steps.items()}

    def events_of(self, kind: str, step_id: str | None = None) -> list[Event]:
        """Events of type ``kind`` (e.g. ``step.started``), of one step if given."""
        return [e for e in self.events if e.type == kind and (step_id is None or e.step_id == step_id)]

    @property
    def next_action(self) -> str:
        """``next.action``: ``none``, ``resume``, ``await_approval``, ``decide`` ..."""
        return str(self.next.get("action", "none"))
