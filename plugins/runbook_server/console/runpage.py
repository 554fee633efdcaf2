"""The run page's data: the run view, step panels, recent events, decisions so far, and what this viewer may do.

What a viewer may do is only a matter of which buttons to show: every action is checked again when it is
posted, by the same functions as the API (scopes, agent policy, the approval's own rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runbook_server.console.outputs import step_panels
from runner.authority import Action
from runner.store.records import RunState

if TYPE_CHECKING:
    from runbook_server.console.session import Viewer
    from runbook_server.state import ServerState
    from runner.store.records import RunRecord

__all__ = ["EVENTS_SHOWN", "Allowed", "allowed", "check_read", "may_read", "run_context"]

EVENTS_SHOWN = 200


@dataclass
class Allowed:
    """The buttons a viewer sees on a run page."""

    approve: bool = False
    decide: bool = False
    pause: bool = False
    resume: bool = False
    retry: bool = False
    cancel: bool = False
    why_not_approve: str = ""

    @property
    def any(self) -> bool:
        """True if any button is shown."""
        return self.approve or self.decide or self.pause or self.resume or self.retry or self.cancel


def may_read(state: ServerState, viewer: Viewer, run: RunRecord) -> bool:
    """Whether ``viewer`` may see ``run`` at all: the engine's read decision, as for ``GET /v1/runs/{id}`` (an agent
    token sees its own runs, and others' only where the agent policy grants ``agents_may_read``)."""
    from runner.authority import Action, decide

    who = viewer.principal.acting()
    return decide(who, Action.READ, runbook=run.runbook, run=run, policy=state.policy if who.is_agent else None).ok


def check_read(state: ServerState, viewer: Viewer, run: RunRecord) -> None:
    """Raise the API's refusal (403 with the rule) unless ``viewer`` may read ``run``."""
    state.agent_engine.authorize(viewer.principal.acting(), Action.READ, run)


def allowed(state: ServerState, viewer: Viewer, runbook: str, run_state: RunState, next_action: str,
            run: RunRecord | None = None) -> Allowed:  # fmt: skip
    """Which actions to offer ``viewer`` on a run of ``runbook`` in ``run_state`` whose ``next.action`` is ``next_action``
    (for an agent token and a given ``run``, only the steering the agent policy allows on that run)."""
    out = Allowed()
    may_run = viewer.can("run")
    agent = viewer.principal.is_agent
    if next_action == "await_approval":
        if not viewer.can("approve"):
            out.why_not_approve = f"your token '{viewer.name}' has no approve scope"
        elif agent and (state.policy is None or not state.policy.may_approve(runbook)):
            out.why_not_approve = f"the agent policy does not let agents approve runs of '{runbook}'"
        else:
            out.approve = True
    out.decide = next_action == "decide" and may_run and viewer.can("approve")
    out.pause = may_run and run_state in (RunState.QUEUED, RunState.RUNNING, RunState.WAITING, RunState.INTERRUPTED)
    out.resume = may_run and run_state in (RunState.PAUSED, RunState.INTERRUPTED)
    out.retry = may_run and run_state == RunState.FAILED
    out.cancel = may_run and run_state not in (RunState.SUCCEEDED, RunState.CANCELLED)
    if agent and run is not None:
        from runner.authority import decide

        who, policy = viewer.principal.acting(), state.policy
        for name, action in (("decide", Action.DECIDE), ("pause", Action.PAUSE), ("resume", Action.RESUME), ("retry", Action.RETRY),
                             ("cancel", Action.CANCEL)):  # fmt: skip
            if getattr(out, name) and not decide(who, action, runbook=runbook, run=run, policy=policy).ok:
                setattr(out, name, False)
    return out


def run_context(state: ServerState, viewer: Viewer, run_id: str) -> dict[str, Any]:
    """Everything the run page (and its live part) renders."""
    engine, store = state.api_engine, state.store
    rid = engine.resolve_id(run_id)
    run = store.get_run(rid)
    check_read(state, viewer, run)
    view = engine.view(rid)
    steps = store.get_steps(rid)
    running = any(str(s.state) == "running" for s in steps)
    panels = step_panels(steps, store.events(rid, types=("probe",), limit=5000),
                         store.events(rid, types=("step.output",), limit=5000) if running else [])  # fmt: skip
    events = store.events(rid, after=max(0, run.last_seq - EVENTS_SHOWN), limit=EVENTS_SHOWN)
    votes = store.events(rid, types=("request.approve", "request.deny"), limit=500)
    children = [r for r in store.list_runs(parent=rid, limit=50) if may_read(state, viewer, r)]
    schema = _params_schema(state, run.runbook)
    secret = {k for k, v in (schema.get("properties") or {}).items() if isinstance(v, dict) and v.get("x-secret")}
    return {
        "run": view,
        "run_state": str(view.state),
        "panels": panels,
        "events": events,
        "last_seq": events[-1].seq if events else run.last_seq,
        "earlier_events": bool(events) and events[0].seq > 1,
        "votes": votes,
        "children": children,
        "secret_params": secret,
        "can": allowed(state, viewer, run.runbook, run.state, view.next.action, run),
        "live": run.state not in (RunState.SUCCEEDED, RunState.CANCELLED, RunState.FAILED),
    }


def _params_schema(state: ServerState, runbook: str) -> dict[str, Any]:
    """The runbook's params schema (empty if it left the catalog: secret params are still references)."""
    try:
        return dict(state.catalog.get(runbook).params_model.model_json_schema())
    except Exception:  # a runbook removed or broken since the run began: show its params as stored
        return {}
