"""A step's durable progress, as typed records.

Besides its outcome columns (state, attempts, output, reason, times), a step row keeps
where the step is *inside* its life: verifying after its action, waiting (for what),
held at an agent-policy approval gate, what recovery decided for it, the step type's own
state between polls, the sub-runbook run it started, and each fan-out target's record.
The engine reads and writes these fields only; they are stored as one JSON value (the
row's ``data`` column) by every store.

Journals written before these records existed (format 2) kept the same facts under
loose keys (``phase``, ``gate``, ``gate_state``, ``wait_kind``, ``state``, ``recovery``,
``targets[].data``): :meth:`StepProgress.from_json` reads both forms, so a run journaled
by an older release resumes after the upgrade.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ChildLink", "Gate", "GateStatus", "Phase", "Recovery", "RollbackProgress", "RunOptions", "StepProgress", "TargetRecord",
    "WaitKind",
]  # fmt: skip

# Plain dataclasses with an explicit, checked JSON form: these records are read and written on every step's commit
# and built for every step of every run read, so they cost nothing at import and little per instance.


class Phase(enum.StrEnum):
    """Where a running step is after its action started."""

    VERIFYING = "verifying"  # the action succeeded; ``verify`` is being polled


class WaitKind(enum.StrEnum):
    """What a ``waiting`` step (or target) waits for."""

    TIME = "wait"  # a time or a polled condition (``wait`` steps, a sub-runbook's wait)
    APPROVAL = "approval"  # people's decisions (an approval step, an agent-policy gate, a sub-runbook's approval)
    DECISION = "decision"  # a decision on an unknown step (in a sub-runbook)
    PAUSED = "paused"  # a sub-runbook stopped at a boundary (pause, budget): the parent pauses too


class Recovery(enum.StrEnum):
    """What resuming does with a step whose action was cut short (crash or second signal)."""

    VERIFY = "verify"  # the action had finished: poll ``verify`` again
    CHECK = "check"  # re-enter through the step's ``check``
    RERUN = "rerun"  # ``idempotent: true``: run it again
    UNKNOWN = "unknown"  # neither: someone must decide (``runbook decide``)


class GateStatus(enum.StrEnum):
    """An agent-policy approval gate in front of a step's action."""

    PENDING = "pending"
    APPROVED = "approved"


def _dict(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"step progress: {where} must be an object, got {type(value).__name__}")
    return value


@dataclass
class Gate:
    """The agent-policy approval gate of a step: its status and the approval step type's state for it."""

    status: GateStatus = GateStatus.PENDING
    state: dict[str, Any] = field(default_factory=dict)
    """The approval step type's own state for this gate."""

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"status": str(self.status), **({"state": self.state} if self.state else {})}

    @classmethod
    def from_json(cls, data: Any) -> Gate:
        """Read the stored form."""
        data = _dict(data, "gate")
        return cls(GateStatus(data.get("status", "pending")), dict(_dict(data.get("state"), "gate.state")))


@dataclass
class ChildLink:
    """The sub-runbook run a ``runbook:`` step started, and the step attempt that last drove it."""

    run_id: str
    attempt: int = 0

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"run_id": self.run_id, **({"attempt": self.attempt} if self.attempt else {})}

    @classmethod
    def from_json(cls, data: Any) -> ChildLink:
        """Read the stored form."""
        data = _dict(data, "child")
        return cls(str(data["run_id"]), int(data.get("attempt", 0) or 0))


@dataclass
class RollbackProgress:
    """The rollback of a completed step (``on_failure: rollback`` or ``cancel --rollback``): which of its units'
    rollback actions finished (``""`` is the step itself, else target names), so none is run twice on resume."""

    done: list[str] = field(default_factory=list)
    failed: str = ""
    """Why its latest rollback failed ("" if it did not): what it changed is still in place, a person must act."""

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"done": list(self.done), **({"failed": self.failed} if self.failed else {})}

    @classmethod
    def from_json(cls, data: Any) -> RollbackProgress:
        """Read the stored form."""
        stored = _dict(data, "rollback")
        return cls([str(x) for x in stored.get("done") or []], str(stored.get("failed") or ""))


@dataclass(slots=True)
class StepProgress:
    """Where a step (or one fan-out target) is inside its life. Empty for a step that has not begun."""

    phase: Phase | None = None
    waiting: WaitKind | None = None
    gate: Gate | None = None
    recovery: Recovery | None = None
    child: ChildLink | None = None
    rollback: RollbackProgress | None = None
    local: dict[str, Any] = field(default_factory=dict)
    """The step type's own state between polls (``ctx.state``)."""
    targets: dict[str, TargetRecord] = field(default_factory=dict)
    """Fan-out targets by name (``for_each`` items by key), in start order."""

    @property
    def gate_pending(self) -> bool:
        """True while an agent-policy gate holds the step's action back."""
        return self.gate is not None and self.gate.status == GateStatus.PENDING

    def restart(self) -> None:
        """Forget what a fresh attempt must not inherit (a retry): waits, gates, recovery; keep the sub-runbook link."""
        self.phase = self.waiting = self.recovery = None
        self.gate = None
        self.local = {}

    def is_empty(self) -> bool:
        """True when nothing is recorded (a step that has not begun, or a plain step that ran straight through)."""
        return (self.phase is None and self.waiting is None and self.gate is None and self.recovery is None and self.child is None
                and self.rollback is None and not self.local and not self.targets)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The stored JSON form (what is unset left out, so an untouched step stores ``{}``)."""
        if self.is_empty():
            return {}  # the common case, on every step's commit
        out: dict[str, Any] = {}
        for key in ("phase", "waiting", "recovery"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value)
        for key in ("gate", "child", "rollback"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value.to_json()
        if self.local:
            out["local"] = self.local
        if self.targets:
            out["targets"] = {name: t.to_json() for name, t in self.targets.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StepProgress:
        """Read the stored form, either today's or the loose keys of a format-2 journal (``ValueError`` if invalid)."""
        if not data:
            return cls()
        if _is_legacy(data):
            data = _from_legacy(data)
        unknown = set(data) - _PROGRESS_KEYS
        if unknown:
            raise ValueError(f"step progress: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(
            phase=Phase(data["phase"]) if data.get("phase") else None,
            waiting=WaitKind(data["waiting"]) if data.get("waiting") else None,
            gate=Gate.from_json(data["gate"]) if data.get("gate") is not None else None,
            recovery=Recovery(data["recovery"]) if data.get("recovery") else None,
            child=ChildLink.from_json(data["child"]) if data.get("child") is not None else None,
            rollback=RollbackProgress.from_json(data["rollback"]) if data.get("rollback") is not None else None,
            local=dict(_dict(data.get("local"), "local")),
            targets={str(n): TargetRecord.from_json(t) for n, t in _dict(data.get("targets"), "targets").items()},
        )


_PROGRESS_KEYS = frozenset({"phase", "waiting", "gate", "recovery", "child", "rollback", "local", "targets"})


@dataclass(slots=True)
class TargetRecord:
    """One target (or ``for_each`` item) of a fan-out step: its own outcome and progress (stored inside its step's progress)."""

    state: str = "pending"
    """A :class:`~runner.store.records.StepState` value, or ``not_started`` (held back: too many targets failed)."""
    attempts: int = 0
    output: Any = None
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    not_before: float | None = None
    progress: StepProgress = field(default_factory=StepProgress)
    item: Any = None
    """The item of a ``for_each`` unit (secrets masked), for its rollback and views."""

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        out: dict[str, Any] = {"state": self.state}
        for key in ("attempts", "output", "reason", "started_at", "finished_at", "not_before"):
            value = getattr(self, key)
            if value not in (None, "", 0):
                out[key] = value
        if not self.progress.is_empty():
            out["progress"] = self.progress.to_json()
        if self.item is not None:
            out["item"] = self.item
        return out

    @classmethod
    def from_json(cls, data: Any) -> TargetRecord:
        """Read the stored form."""
        data = _dict(data, "target")
        return cls(state=str(data.get("state", "pending")), attempts=int(data.get("attempts") or 0), output=data.get("output"),
                   reason=str(data.get("reason") or ""), started_at=data.get("started_at"), finished_at=data.get("finished_at"),
                   not_before=data.get("not_before"), progress=StepProgress.from_json(data.get("progress")),
                   item=data.get("item"))  # fmt: skip


@dataclass
class RunOptions:
    """What a run carries besides its params (the run row's ``options``): who it acts for and the rules it inherited.

    Keys this release does not know are kept (``extra``), so options a newer release or a plugin stored survive.
    """

    agent: bool = False
    """Started by an agent: the agent policy applies to every action on it."""
    gates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Step id → approval config of an agent-policy gate."""
    depth: int = 0
    """Sub-runbook nesting: 0 for a top-level run."""
    principal: dict[str, Any] | None = None
    """Who started it (kind, name), inherited by its child runs."""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The stored form (defaults left out)."""
        out: dict[str, Any] = dict(self.extra)
        if self.agent:
            out["agent"] = True
        if self.gates:
            out["gates"] = self.gates
        if self.depth:
            out["depth"] = self.depth
        if self.principal is not None:
            out["principal"] = self.principal
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RunOptions:
        """Read the stored form."""
        data = dict(data or {})
        known = {k: data.pop(k) for k in ("agent", "gates", "depth", "principal") if k in data}
        return cls(agent=bool(known.get("agent", False)), gates=dict(_dict(known.get("gates"), "gates")),
                   depth=int(known.get("depth") or 0), principal=known.get("principal"), extra=data)  # fmt: skip


_LEGACY_KEYS = frozenset({"state", "gate_state", "wait_kind"})


def _is_legacy(data: dict[str, Any]) -> bool:
    if _LEGACY_KEYS & data.keys() or isinstance(data.get("gate"), str):
        return True
    targets = data.get("targets")
    return isinstance(targets, dict) and any(isinstance(t, dict) and "data" in t for t in targets.values())


def _from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Format 2 → today: ``state`` is the step type's ``local`` state (minus the sub-runbook link, now typed),
    ``gate``/``gate_state`` the gate, ``wait_kind`` what a waiting step waits for, targets' ``data`` their progress."""
    local = dict(data.get("state") or {})
    out: dict[str, Any] = {"local": local}
    if "child_run_id" in local:
        out["child"] = {"run_id": local.pop("child_run_id"), "attempt": int(local.pop("child_attempt", 0) or 0)}
    if data.get("phase"):
        out["phase"] = data["phase"]
    if data.get("wait_kind"):
        out["waiting"] = data["wait_kind"]
    if data.get("recovery"):
        out["recovery"] = data["recovery"]
    if isinstance(data.get("gate"), str):
        out["gate"] = {"status": data["gate"], "state": dict(data.get("gate_state") or {})}
    targets: dict[str, Any] = {}
    for name, t in (data.get("targets") or {}).items():
        entry = {k: t[k] for k in ("state", "attempts", "output", "reason", "started_at", "finished_at", "not_before") if k in t}
        entry["progress"] = _from_legacy(dict(t.get("data") or {}))
        targets[name] = entry
    if targets:
        out["targets"] = targets
    return out
