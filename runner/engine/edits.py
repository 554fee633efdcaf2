"""Resuming a run whose runbook was edited since the run started.

A run stores per-step hashes. On resume, steps whose hash changed are compared with the run's stored
snapshot: an edit of words only (``description``) is accepted with a notice. What would rewrite what
already happened, or slip past a step that is waiting or in flight, is refused unless
``--accept-changes``: a completed step changed or removed; completed steps now in another order, or a
new step put before a completed one; a waiting or in-flight step removed, renamed or moved. An accepted
removal closes the removed step's record (``skipped``), and an agent-policy gate that had not been
approved moves to every step the edit added, so an edit never removes an approval from the path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.errors import RunbookChanged
from runner.store.progress import GateStatus, RunOptions
from runner.store.records import DONE_STEP_STATES, IN_FLIGHT_STEP_STATES, NewEvent, StepRecord, StepState
from runner.store.transitions import StepEvent, step_after

if TYPE_CHECKING:
    from runner.engine.execution import Execution

__all__ = ["reconcile_edits"]

_COSMETIC = frozenset({"description"})
"""Step fields whose edit changes no behaviour."""
_HELD = frozenset({StepState.WAITING, StepState.UNKNOWN, *IN_FLIGHT_STEP_STATES})
"""Step states an edit must not slip past silently."""


def reconcile_edits(exe: Execution, events: list[NewEvent], run_cols: dict[str, Any], changed: dict[str, StepRecord]) -> None:
    """Compare the run's stored step hashes with the runbook's; refuse or record the edit (see the module doc)."""
    current = exe.rb.step_hashes
    # the order steps were declared in is their records' idx: a JSON object's key order is not kept by every
    # store (PostgreSQL's jsonb sorts keys)
    if exe.run.content_hash == exe.rb.content_hash and _record_order(exe) == exe.spec.steps.ids:
        return  # the same step hashes (the content hash is taken of them) in the same order: not edited
    stored = exe.store.get_step_hashes(exe.run.id)
    last = len(exe.steps)
    stored_order = sorted(stored, key=lambda s: exe.steps[s].idx if s in exe.steps else last)
    if stored == current and stored_order == list(current):
        return
    old_spec = {s["id"]: s for s in exe.store.get_spec(exe.run.id).get("steps", [])}
    new_spec = {s.id: s.model_dump(mode="json", by_alias=True) for s in exe.spec.steps}
    changed_ids = [s for s in stored if s in current and stored[s] != current[s]]
    cosmetic = [s for s in changed_ids if s in old_spec and _same_behaviour(old_spec[s], new_spec[s])]
    changed_ids = [s for s in changed_ids if s not in cosmetic]
    removed = [s for s in stored if s not in current]
    added = [s for s in current if s not in stored]
    state = {s: exe.steps[s].state for s in stored if s in exe.steps}
    done = {s for s, st in state.items() if st in DONE_STEP_STATES or st == StepState.RUNNING}
    held = {s for s, st in state.items() if st in _HELD}
    refused = [s for s in changed_ids + removed if s in done] + [s for s in removed if s in held and s not in done]
    order = _order_changes(stored_order, list(current), done | held)
    if (refused or order) and not exe.opts.accept_changes:
        details = [f"{sid}: {d}" for sid in refused for d in _changes(old_spec.get(sid), new_spec.get(sid))[:3]]
        details += [f"{sid}: it is {state[sid]} and was removed" for sid in removed if sid in held]
        names = list(dict.fromkeys([*refused, *(s for s, _ in order)]))
        raise RunbookChanged(exe.run.id, names, details + [f"{sid}: {why}" for sid, why in order])
    detail = {"changed": changed_ids, "cosmetic": cosmetic, "added": added, "removed": removed, "moved": [s for s, _ in order],
              "accepted": bool(refused or order)}  # fmt: skip
    events.append(NewEvent("run.edited", data=detail, actor=exe.opts.actor or None))
    exe.opts.notices.append("runbook changed since the run started: " + ", ".join(
        f"{k} {', '.join(v)}" for k, v in detail.items() if isinstance(v, list) and v))  # fmt: skip
    for i, step in enumerate(exe.spec.steps):
        rec = exe.steps.get(step.id) or StepRecord(run_id=exe.run.id, step_id=step.id, idx=i)
        rec.idx = i
        exe.steps[step.id] = changed[step.id] = rec
    _close_removed(exe, removed, events, changed)
    _carry_gates(exe, removed, added, run_cols)
    run_cols.update(step_hashes=current, content_hash=exe.rb.content_hash, spec=exe.rb.spec_json)


def _record_order(exe: Execution) -> tuple[str, ...]:
    """The run's step ids in the order of their records (a step an accepted edit removed sorts after the rest)."""
    return tuple(rec.step_id for rec in sorted(exe.steps.values(), key=lambda rec: rec.idx))


def _same_behaviour(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True for an edit of words only. Called for a step whose hash changed: if its stored form is the same, what
    changed is outside it (a Python step's function source, a step type's fingerprint), which is behaviour."""
    if old == new:
        return False
    return {k: v for k, v in old.items() if k not in _COSMETIC} == {k: v for k, v in new.items() if k not in _COSMETIC}


def _close_removed(exe: Execution, removed: list[str], events: list[NewEvent], changed: dict[str, StepRecord]) -> None:
    """An accepted edit removed these steps: a record left open (waiting, unknown, ...) is closed as skipped."""
    for sid in removed:
        rec = exe.steps.get(sid)
        if rec is None or rec.state in DONE_STEP_STATES:
            continue
        rec.state, rec.reason = step_after(rec.state, StepEvent.REMOVE), f"removed from the runbook (edit accepted by {exe.opts.actor})"
        rec.progress.waiting = None
        rec.idx = len(exe.spec.steps) + rec.idx  # after every current step
        events.append(NewEvent("step.finished", step_id=sid, data={"state": str(rec.state), "reason": rec.reason}))
        changed[sid] = rec


def _carry_gates(exe: Execution, removed: list[str], added: list[str], run_cols: dict[str, Any]) -> None:
    """A gate of a removed step that was never approved goes to every added step (fail closed: a rename keeps it)."""
    options = RunOptions.from_json(exe.run.options)
    open_gates = [s for s in removed if s in options.gates and not _approved(exe.steps.get(s))]
    if not open_gates or not added:
        return
    for sid in added:
        options.gates.setdefault(sid, dict(options.gates[open_gates[0]]))
    run_cols["options"] = options.to_json()
    exe.opts.notices.append(f"the approval gate of {', '.join(open_gates)} now holds {', '.join(added)}")


def _approved(rec: StepRecord | None) -> bool:
    return rec is not None and rec.progress.gate is not None and rec.progress.gate.status == GateStatus.APPROVED


def _changes(old: Any, new: Any) -> list[str]:
    """What changed in a step whose hash changed: its fields, or the code its hash covers besides them."""
    if old is not None and old == new:
        return ["its code changed (a python step's function source, or its step type's)"]
    return _diff(old, new)


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    """Field-level differences between two JSON values, as ``field: old -> new`` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    if old == new:
        return []
    if new is None:
        return [f"{path or 'step'} removed"]
    return [f"{(path or 'step').removeprefix('action.config.')}: {old!r} -> {new!r}"]


def _order_changes(stored: list[str], current: list[str], done: set[str]) -> list[tuple[str, str]]:
    """Order edits that rewrite what already happened: completed (or held) steps now in another order, or a new step
    put before one (it would run after the steps it is declared to precede)."""
    pos = {s: i for i, s in enumerate(current)}
    ran = [s for s in stored if s in done and s in pos]
    out: list[tuple[str, str]] = []
    if sorted(ran, key=pos.__getitem__) != ran:
        now = ", ".join(sorted(ran, key=pos.__getitem__))
        out += [(s, f"completed in the order {', '.join(ran)}, now declared as {now}") for s in ran[:1]]
    for s in current:
        if s not in stored:
            later = [c for c in ran if pos[c] > pos[s]]
            if later:
                out.append((s, f"added before completed step '{min(later, key=pos.__getitem__)}'"))
    return out
