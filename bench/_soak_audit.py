"""The soak's verdict: the journal and the ledger of side effects, read after the last kill.

- **re-runs of completed steps**: an action line written after its step's completion was committed (the line is
  written when the action starts, the completion after it ends, so a legitimate line always comes first);
- **checked steps run twice**: a step with a ``check`` whose action ran more than once (its check holds as
  soon as the action's line is there, so a second run means recovery skipped the check);
- **lost deliveries**: an acknowledged (2xx) delivery or ``POST /v1/runs`` whose run is not in the journal, or
  whose decision is not recorded;
- **stuck runs**: runs still ``running`` once every executor had time to finish (or take over) their work;
- **unfinished steps**: a succeeded run with a step whose action never ran (the run skipped work).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _soak_parts import CHECKED, STEPS, Sent

TERMINAL = {"succeeded", "failed", "cancelled"}
DONE_STEP = {"succeeded", "satisfied"}


@dataclass
class Audit:
    """What the journal and the ledger say about one store's soak."""

    runs: int = 0
    runs_by_origin: Counter[str] = field(default_factory=Counter)
    runs_by_state: Counter[str] = field(default_factory=Counter)
    steps_completed: int = 0
    actions: int = 0
    recoveries: Counter[str] = field(default_factory=Counter)
    takeovers: int = 0
    reruns_of_completed: list[str] = field(default_factory=list)
    checked_run_twice: list[str] = field(default_factory=list)
    unfinished_steps: list[str] = field(default_factory=list)
    unknown_actions: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    not_terminal: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    journals: dict[str, list[str]] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """The counts (and the first few offenders of each check) as JSON."""
        return {
            "runs": self.runs, "runs_by_origin": dict(self.runs_by_origin), "runs_by_state": dict(self.runs_by_state),
            "steps_completed": self.steps_completed, "step_actions": self.actions,
            "recoveries": dict(self.recoveries), "resumptions": self.takeovers,
            "reruns_of_completed_steps": len(self.reruns_of_completed), "checked_steps_run_twice": len(self.checked_run_twice),
            "unfinished_steps_in_succeeded_runs": len(self.unfinished_steps), "actions_of_unknown_runs": len(self.unknown_actions),
            "lost_deliveries": len(self.lost), "stuck_runs": len(self.stuck), "not_terminal": len(self.not_terminal),
            "failed_runs": len(self.failed),
            "offenders": {k: v[:20] for k, v in (("reruns_of_completed", self.reruns_of_completed),
                                                 ("checked_run_twice", self.checked_run_twice),
                                                 ("unfinished_steps", self.unfinished_steps),
                                                 ("unknown_actions", self.unknown_actions), ("lost", self.lost),
                                                 ("stuck", self.stuck), ("not_terminal", self.not_terminal),
                                                 ("failed", self.failed)) if v},
            "journals_of_runs_not_succeeded": self.journals,
        }  # fmt: skip


def read_ledger(path: Path) -> dict[tuple[str, str], list[int]]:
    """``(tag, step) -> [ns, ...]`` from the ledger (a torn last line of a killed writer is ignored)."""
    out: dict[tuple[str, str], list[int]] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            out.setdefault((parts[0], parts[1]), []).append(int(parts[2]))
    return out


def all_runs(store: Any) -> list[Any]:
    """Every run of the journal (newest first), page by page."""
    runs: list[Any] = []
    before = None
    while True:
        page = store.list_runs(limit=500, before=before)
        runs.extend(page)
        if len(page) < 500:
            return runs
        before = page[-1].id


def origin(tag: str) -> str:
    """Which path started a run, from its tag (``PREFIX-KIND-N``): ``cli``, ``am`` (an alert delivery) or ``api``."""
    parts = tag.split("-")
    return parts[1] if len(parts) == 3 else "unknown"


def audit(store: Any, ledger: Path, acked: list[Sent]) -> Audit:
    """Check every run of ``store`` against the ledger, and every acknowledged request against the journal."""
    result = Audit()
    lines = read_ledger(ledger)
    tags: set[str] = set()
    for run in all_runs(store):
        if run.runbook != "soak":
            continue
        tag = str(run.params.get("tag"))
        tags.add(tag)
        result.runs += 1
        result.runs_by_origin[origin(tag)] += 1
        result.runs_by_state[str(run.state)] += 1
        state = str(run.state)
        if state == "running":
            holder = f"{run.holder.pid}@{run.holder.host}" if run.holder else "none"
            result.stuck.append(f"{run.id} ({tag}) held by {holder}, lease until {run.lease_expires_at}")
        elif state not in TERMINAL:
            result.not_terminal.append(f"{run.id} ({tag}) {state}: {run.reason}")
        elif state == "failed":
            result.failed.append(f"{run.id} ({tag}): {run.reason}")
        if state != "succeeded" and len(result.journals) < 10:  # what happened, for a reproduction
            result.journals[run.id] = [_brief(ev) for ev in store.events(run.id, limit=100000)]
        for ev in store.events(run.id, limit=100000, types=("run.recovered", "step.recovered", "run.resumed")):
            if ev.type == "step.recovered":
                result.recoveries[str(ev.data.get("decision"))] += 1
            elif ev.type == "run.resumed":
                result.takeovers += 1
        for step in store.get_steps(run.id):
            seen = lines.get((tag, step.step_id), [])
            result.actions += len(seen)
            where = f"{run.id} ({tag}) {step.step_id}"
            if step.step_id in CHECKED and len(seen) > 1:
                result.checked_run_twice.append(f"{where}: action ran {len(seen)} times")
            if str(step.state) in DONE_STEP:
                result.steps_completed += 1
                if step.finished_at is not None:
                    late = [ns for ns in seen if ns > step.finished_at * 1e9]
                    if late:
                        result.reruns_of_completed.append(f"{where}: {len(late)} action(s) after it completed")
                if not seen and state == "succeeded":
                    result.unfinished_steps.append(f"{where}: {step.state} but its action never ran")
        if state == "succeeded" and len(store.get_steps(run.id)) != len(STEPS):
            result.unfinished_steps.append(f"{run.id} ({tag}): succeeded with a missing step record")
    result.unknown_actions = sorted(f"{t} {s}" for t, s in lines if t not in tags)
    _check_acknowledged(store, acked, result)
    return result


def _brief(ev: Any) -> str:
    """One event as a line: time, sequence, type, step, and its data (executor, decision, reason...)."""
    data = {k: v for k, v in ev.data.items() if k not in ("output", "evidence", "params", "spec")}
    return f"{ev.ts:.3f} #{ev.seq} {ev.type} {ev.step_id or ''} a{ev.attempt or ''} {data}"[:600]


def _check_acknowledged(store: Any, acked: list[Sent], result: Audit) -> None:
    from runner.errors import RunNotFound

    for sent in acked:
        if not sent.run_ids:
            result.lost.append(f"{sent.kind} {sent.tag}: acknowledged without a run")
        for run_id in sent.run_ids:
            try:
                run = store.get_run(run_id)
            except RunNotFound:
                result.lost.append(f"{sent.kind} {sent.tag}: acknowledged run {run_id} is not in the journal")
                continue
            if run.params.get("tag") != sent.tag:
                result.lost.append(f"{sent.kind} {sent.tag}: run {run_id} has tag {run.params.get('tag')}")
            if sent.kind == "alert" and not any(d.delivery_id == sent.delivery_id for d in store.list_decisions(run_id=run_id)):
                result.lost.append(f"alert {sent.tag}: no decision of delivery {sent.delivery_id} names run {run_id}")
