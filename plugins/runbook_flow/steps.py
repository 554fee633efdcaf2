"""The ``wait``, ``approval`` and ``runbook`` step types."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from runner.durations import Duration, format_duration
from runner.errors import StepFailed, UsageError
from runner.model import NAME_PATTERN, Check
from runner.steptypes import APPROVAL_POLL, ActionResult, ApprovalRequest, StepConfig, StepType, Tally, Vote, Wait

if TYPE_CHECKING:
    from runner.context import Context

__all__ = ["ApprovalStep", "SubRunbookStep", "WaitStep"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: str | float) -> float:
    """Epoch seconds of an ISO 8601 time (``2026-11-22T10:00:00Z``) or of a number."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2026-11-22T10:00:00Z, got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time, as a human would mean it
    return dt.timestamp()


# --------------------------------------------------------------------------- wait


class WaitConfig(StepConfig):
    """``wait: {for: 30s}``, ``wait: {until: TIME}`` or ``wait: {checks: [...], every: 10s, within: 1h}``."""

    for_: Duration | None = Field(default=None, alias="for", description="wait this long (from when the step first ran)")
    until: str | float | None = Field(default=None, description="wait until this ISO 8601 time")
    checks: list[dict[str, Any]] | None = Field(default=None, description="wait until all these checks hold")
    every: Duration = Field(default=10.0, description="how often checks are polled")
    within: Duration | None = Field(default=None, description="give up (fail) if checks do not hold within this")

    @model_validator(mode="after")
    def _one(self) -> WaitConfig:
        given = [k for k in ("for_", "until", "checks") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'for', 'until' or 'checks'")
        return self

    @field_validator("until")
    @classmethod
    def _until(cls, value: Any, info: Any) -> Any:
        if value is not None and info.context and info.context.get("rendered"):
            parse_time(value)
        return value


class WaitStep(StepType):
    """Wait for a duration, until a time, or until checks hold, without keeping a process alive."""

    name = "wait"
    Config = WaitConfig
    description = "Wait for a duration, until a time, or until checks hold (polled); the run waits without a process"
    may_wait = True
    expect_keys: ClassVar[frozenset[str] | None] = frozenset({"output", "json"})
    output_fields: ClassVar[frozenset[str] | None] = frozenset({"waited_until", "polls"})
    unrendered: ClassVar[frozenset[str]] = frozenset({"checks"})
    check_fields: ClassVar[frozenset[str]] = frozenset({"checks"})

    def summary(self, config: dict[str, Any]) -> str:
        """``for 30s`` / ``until TIME`` / ``until N checks hold``."""
        if config.get("for") is not None:
            return f"for {format_duration(float(config['for']))}"
        if config.get("until") is not None:
            return f"until {config['until']}"
        return f"until {len(config.get('checks') or [])} check(s) hold, every {format_duration(float(config.get('every', 10)))}"

    def estimate(self, config: dict[str, Any]) -> float | None:
        """The duration of a ``for`` wait."""
        return float(config["for"]) if config.get("for") is not None else None

    def execute(self, config: WaitConfig, ctx: Context) -> ActionResult | Wait:
        """Return a result once the wait is over, else a :class:`Wait` with when to look again."""
        now = time.time()
        state = ctx.state
        started = state.setdefault("started_at", now)
        due = None
        if config.for_ is not None:
            due = started + config.for_
        elif config.until is not None:
            due = parse_time(config.until)
        if due is not None:
            if now >= due:
                return ActionResult(output={"waited_until": _iso(due)}, ok=True, detail=f"reached {_iso(due)}")
            return Wait(reason=f"waiting until {_iso(due)}", not_before=due, kind="wait", deadline=due)
        checks = [Check.model_validate(c) for c in config.checks or []]
        held, evidence = ctx.services.evaluate_checks(ctx, checks, "wait")
        state["polls"] = int(state.get("polls", 0)) + 1
        if held:
            return ActionResult(output={"polls": state["polls"]}, ok=True, detail=f"condition held after {state['polls']} poll(s)")
        last = evidence[-1] if evidence else {"check": "condition", "detail": "does not hold"}
        deadline = started + config.within if config.within is not None else None
        if deadline is not None and now >= deadline:
            raise StepFailed(f"condition did not hold within {format_duration(config.within or 0)}: {last['check']}: {last['detail']}")
        return Wait(reason=f"waiting for {last['check']} ({last['detail']})", not_before=now + config.every, kind="wait", deadline=deadline)


# --------------------------------------------------------------------------- approval


class ApprovalConfig(StepConfig):
    """``approval: {message, approvers: N, distinct_from_starter, expires: 1h, on_expiry: deny}``."""

    message: str = Field(description="what the approvers are asked (templates allowed)")
    approvers: int = Field(default=1, ge=1, le=20, description="distinct people who must approve")
    distinct_from_starter: bool = Field(default=False, description="the run's starter cannot approve it")
    allowed: list[str] | None = Field(default=None, description="only these identities may decide")
    expires: Duration | None = Field(default=3600.0, description="how long the request stays open (None: forever)")
    on_expiry: Literal["deny", "approve"] = Field(default="deny", description="what an expired request means")


class ApprovalStep(StepType):
    """Ask N people to approve before the run goes on; deny, or expiry by default, fails the step.

    The rules of who may decide and what counts live here, once (:class:`runner.steptypes.Approvable`): the
    engine calls :meth:`admit` before it records a decision and :meth:`tally` for every run view.
    """

    name = "approval"
    Config = ApprovalConfig
    description = "Wait for N approvals (`runbook approve RUN --by NAME`); a denial or expiry fails the step"
    may_wait = True
    expect_keys: ClassVar[frozenset[str] | None] = frozenset({"output", "json"})
    output_fields: ClassVar[frozenset[str] | None] = frozenset({"approved_by", "message", "expired"})

    def summary(self, config: dict[str, Any]) -> str:
        """The message and how many approvers."""
        return f"{config.get('message', '')!r} ({config.get('approvers', 1)} approver(s))"

    def execute(self, config: ApprovalConfig, ctx: Context) -> ActionResult | Wait:
        """Make the request (once), then apply the tally of the decisions recorded since."""
        now = time.time()
        state = ctx.state
        if "requested_at" not in state:
            state["requested_at"] = now
            state["since_seq"] = ctx.services.last_seq()
            state["message"] = config.message  # as rendered now: views tell where the request stands in its words
            if config.expires is not None:
                state["expires_at"] = now + config.expires
        votes = [Vote(d["actor"], d["decision"] == "approve", d.get("comment", ""), d["ts"]) for d in ctx.services.approvals(ctx)]
        tally = self._tally(config, state, votes, ctx.started_by, now)
        if tally.outcome == "denied":
            note = f": {tally.comment}" if tally.comment else ""
            raise StepFailed(f"denied by {tally.denied_by}{note}")
        if tally.outcome == "approved":
            return ActionResult(output={"approved_by": list(tally.approved_by), "message": config.message}, ok=True,
                                detail=f"approved by {', '.join(tally.approved_by)}")  # fmt: skip
        if tally.outcome == "expired":
            if config.on_expiry == "approve":
                return ActionResult(output={"approved_by": list(tally.approved_by), "expired": True}, ok=True,
                                    detail="request expired; on_expiry: approve")  # fmt: skip
            raise StepFailed(f"approval request expired after {format_duration(config.expires or 0)} with {len(tally.approved_by)} of "
                             f"{config.approvers} approval(s) (on_expiry: deny)")  # fmt: skip
        return Wait(
            reason=_waiting_reason(config, tally, state), kind="approval", not_before=_look_again(tally, now), deadline=tally.expires_at
        )

    # ------------------------------------------------------------------ the rules (runner.steptypes.Approvable)

    def request_of(self, state: dict[str, Any]) -> ApprovalRequest | None:
        """The open request kept in the step's state."""
        if "requested_at" not in state:
            return None
        return ApprovalRequest(float(state["requested_at"]), int(state.get("since_seq", 0)), state.get("expires_at"))

    def tally(self, config: dict[str, Any], state: dict[str, Any], votes: list[Vote], started_by: str, now: float) -> Tally:
        """Where the request stands with ``votes``."""
        return self._tally(ApprovalConfig.model_validate(config), state, votes, started_by, now)

    def admit(self, config: dict[str, Any], state: dict[str, Any], vote: Vote, started_by: str, votes: list[Vote]) -> None:
        """Refuse a decision that would not count (naming the rule), so that it is never recorded."""
        cfg = ApprovalConfig.model_validate(config)
        verb = "approve" if vote.approve else "deny"
        if cfg.distinct_from_starter and vote.actor == started_by:
            raise UsageError(f"{vote.actor} started this run and cannot {verb} it (distinct_from_starter)")
        if cfg.allowed and vote.actor not in cfg.allowed:
            raise UsageError(f"{vote.actor} may not {verb} this step; allowed: {', '.join(cfg.allowed)}")
        if any(v.actor == vote.actor for v in votes):
            raise UsageError(f"{vote.actor} already decided on this approval request")
        tally = self._tally(cfg, state, votes, started_by, vote.ts)
        if tally.outcome == "approved":
            raise UsageError(f"the request already has the {cfg.approvers} approval(s) it needs ({', '.join(tally.approved_by)}); "
                             "resume the run to go on")  # fmt: skip
        if tally.outcome == "denied":
            raise UsageError(f"the request was already denied by {tally.denied_by}; resume the run to apply it")

    @staticmethod
    def _tally(config: ApprovalConfig, state: dict[str, Any], votes: list[Vote], started_by: str, now: float) -> Tally:
        expires_at = state.get("expires_at")
        # a decision recorded after the request expired does not count: expiry and on_expiry decide then
        counted = [v for v in votes if expires_at is None or v.ts < expires_at]
        common = {"needed": config.approvers, "expires_at": expires_at, "on_expiry": config.on_expiry}
        for v in counted:
            if not v.approve and _eligible(config, v.actor, started_by):
                return Tally("denied", denied_by=v.actor, comment=v.comment, **common)  # type: ignore[arg-type]
        approved: list[str] = []
        for v in counted:
            if v.approve and _eligible(config, v.actor, started_by) and v.actor not in approved and len(approved) < config.approvers:
                approved.append(v.actor)
        if len(approved) >= config.approvers:
            return Tally("approved", tuple(approved), **common)  # type: ignore[arg-type]
        if expires_at is not None and now >= expires_at:
            return Tally("expired", tuple(approved), **common)  # type: ignore[arg-type]
        pending = Tally("pending", tuple(approved), **common)  # type: ignore[arg-type]
        return replace(pending, text=_waiting_reason(config, pending, state))


def _eligible(config: ApprovalConfig, actor: str, started_by: str) -> bool:
    return not (config.distinct_from_starter and actor == started_by) and not (config.allowed and actor not in config.allowed)


def _waiting_reason(config: ApprovalConfig, tally: Tally, state: dict[str, Any]) -> str:
    """``waiting for N approval(s) (k of M so far: ...): MESSAGE`` (the message as rendered when the request was made)."""
    need = config.approvers - len(tally.approved_by)
    progress = f" ({len(tally.approved_by)} of {config.approvers} so far: {', '.join(tally.approved_by)})" if tally.approved_by else ""
    return f"waiting for {need} approval(s){progress}: {state.get('message') or config.message}"


def _look_again(tally: Tally, now: float) -> float | None:
    """Look again at expiry when it comes before the usual re-poll, so on_expiry applies on time."""
    expires_at = tally.expires_at
    return expires_at if expires_at is not None and expires_at - now < APPROVAL_POLL else None


# --------------------------------------------------------------------------- sub-runbook


class SubRunbookConfig(StepConfig):
    """``runbook: {name: other-runbook, params: {...}}``."""

    name: str = Field(pattern=NAME_PATTERN, description="runbook to run as this step")
    params: dict[str, Any] = Field(default_factory=dict, description="its params (templates allowed)")


class SubRunbookStep(StepType):
    """Run another runbook as one step; it has its own run and journal, linked to this one."""

    name = "runbook"
    Config = SubRunbookConfig
    description = "Run another runbook as a step, with its own journal linked to this run"
    may_wait = True
    expect_keys: ClassVar[frozenset[str] | None] = frozenset({"output", "json"})
    output_fields: ClassVar[frozenset[str] | None] = frozenset({"run_id", "steps"})

    def summary(self, config: dict[str, Any]) -> str:
        """``runbook NAME``."""
        return f"runbook {config.get('name')}"

    def execute(self, config: SubRunbookConfig, ctx: Context) -> ActionResult | Wait:
        """Start or advance the child run and map its state to this step's."""
        view = ctx.services.child_run(ctx, config.name, config.params)
        state, rid, reason = view["state"], view["run_id"], view.get("reason", "")
        if state == "succeeded":
            outputs = {s["id"]: s["output"] for s in view["steps"]}
            return ActionResult(output={"run_id": rid, "steps": outputs}, ok=True, detail=f"sub-runbook run {rid} succeeded")
        if state in ("failed", "cancelled"):
            raise StepFailed(f"sub-runbook '{config.name}' (run {rid}) {state}: {reason}")
        nxt = view.get("next") or {}
        if state == "waiting":
            kind = "approval" if nxt.get("action") == "await_approval" else ("decision" if nxt.get("action") == "decide" else "wait")
            not_before = _epoch(nxt.get("not_before"))
            return Wait(reason=f"sub-runbook '{config.name}' (run {rid}) is waiting: {reason}", kind=kind, not_before=not_before)
        return Wait(reason=f"sub-runbook '{config.name}' (run {rid}) is {state}: {reason}", kind="paused")


def _epoch(value: str | None) -> float | None:
    return parse_time(value) if value else None
