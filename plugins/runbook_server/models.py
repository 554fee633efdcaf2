"""Request and response bodies of the HTTP API (pydantic: they make ``/openapi.json`` accurate)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.alerts import DecisionRecord
from runner.durations import Duration
from runner.views import NextAction, RunView

__all__ = [
    "ApiRunView", "Decide", "DecideStep", "DecisionList", "DeliveryResult", "ErrorBody", "EventList", "HttpHint", "Reason", "Resume",
    "RunList", "RunSummary", "RunbookDetail", "RunbookList", "RunbookSummary", "StartRun", "http_next",
]  # fmt: skip


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRun(_In):
    """``POST /v1/runs``."""

    runbook: str = Field(description="runbook name (see GET /v1/runbooks)")
    params: dict[str, Any] = Field(default_factory=dict, description="validated by the runbook's params schema")
    budget: Duration | None = Field(default=None, description="stop (paused) before a step that cannot finish in this time")
    max_steps: int | None = Field(default=None, ge=1, description="stop (paused) after this many steps")
    wait: Duration | None = Field(default=None, description="block up to this long (capped by the server) until the run settles")
    actor: str | None = Field(default=None, max_length=200, description="who starts it (only without tokens, or with admin scope)")


class Resume(_In):
    """``POST /v1/runs/{id}/resume``: queue the run again for a worker, with the decisions a CLI resume takes."""

    retry: bool = Field(default=False, description="retry the failed or blocked steps of a failed run")
    retry_step: str | None = Field(default=None, description="decide an unknown step: run its action again")
    skip_step: str | None = Field(default=None, description="decide an unknown step: treat it as done")
    accept_changes: bool = Field(default=False, description="continue with a runbook whose completed steps were edited")
    budget: Duration | None = None
    max_steps: int | None = Field(default=None, ge=1)
    wait: Duration | None = None


class Reason(_In):
    """``pause`` / ``cancel``."""

    reason: str = Field(default="", max_length=2000)
    rollback: bool = Field(default=False, description="cancel only: run the rollback actions of completed steps first")


class DecideStep(_In):
    """``POST /v1/runs/{id}/decide``: a decision on a step whose outcome is unknown (exactly one of the two)."""

    retry_step: str | None = Field(default=None, description="run the step's action again")
    skip_step: str | None = Field(default=None, description="treat the step as done and go on")

    @model_validator(mode="after")
    def _one(self) -> DecideStep:
        if (self.retry_step is None) == (self.skip_step is None):
            raise ValueError("give exactly one of retry_step or skip_step")
        return self


class Decide(_In):
    """``approve`` / ``deny``."""

    comment: str = Field(default="", max_length=2000)
    step: str | None = Field(default=None, description="the approval step (default: the one waiting)")
    by: str | None = Field(default=None, max_length=200, description="who decides (only without tokens, or with admin scope)")


class HttpHint(BaseModel):
    """The HTTP request that does what ``next.command`` does on the command line."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    meaning: str = ""


class ApiNextAction(NextAction):
    """``next`` with HTTP equivalents: ``http`` (what to call) and ``http_options`` (for decisions)."""

    http: HttpHint | None = None
    http_options: list[HttpHint] = Field(default_factory=list)


class ApiRunView(RunView):
    """A run: the same shape as ``runbook status --json``, plus ``next.http``."""

    next: ApiNextAction


class RunSummary(BaseModel):
    """One row of ``GET /v1/runs`` (same as ``runbook runs --json``)."""

    run_id: str
    runbook: str
    state: str
    reason: str = ""
    started_by: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    parent_run_id: str | None = None


class RunList(BaseModel):
    """A page of runs, newest first; pass ``next_before`` as ``before`` for the next page."""

    runs: list[RunSummary]
    next_before: str | None = None


class EventOut(BaseModel):
    """One journal event (same as ``runbook events --json``)."""

    seq: int
    ts: str | None
    type: str
    step_id: str | None = None
    attempt: int | None = None
    actor: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventList(BaseModel):
    """Events after ``after``; pass the last ``seq`` as ``after`` to continue."""

    run_id: str
    events: list[EventOut]


class RunbookSummary(BaseModel):
    """A catalog entry with its params JSON Schema (same as ``runbook list --json``)."""

    name: str
    description: str | None = ""
    version: str | int | float | None = None
    tags: list[str] = Field(default_factory=list)
    file: str = ""
    steps: int
    params_schema: dict[str, Any]


class RunbookList(BaseModel):
    """``GET /v1/runbooks``."""

    runbooks: list[RunbookSummary]


class RunbookDetail(RunbookSummary):
    """``GET /v1/runbooks/{name}`` (same as ``runbook show --json``)."""

    runbook: dict[str, Any]
    content_hash: str


class DeliveryResult(BaseModel):
    """What alert intake decided for one delivery (a duplicate delivery gets the first answer, ``duplicate: true``)."""

    delivery_id: str
    source: str
    alerts: int
    truncated: int = 0
    decisions: list[DecisionRecord]
    duplicate: bool = False


class DecisionList(BaseModel):
    """A page of decisions, newest first; pass ``next_before`` as ``before`` for the next page."""

    decisions: list[DecisionRecord]
    next_before: int | None = None


class ErrorDetail(BaseModel):
    """What went wrong; never a stack trace."""

    type: str
    message: str
    hint: str | None = None
    status: int
    problems: list[Any] | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    error: ErrorDetail


def http_next(view: RunView) -> ApiRunView:
    """``view`` with ``next.http`` filled in for HTTP clients."""
    nxt = view.next
    rid = view.run_id
    base = f"/v1/runs/{rid}"
    http: HttpHint | None = None
    options: list[HttpHint] = []
    if nxt.action == "fix_and_retry":
        http = HttpHint(method="POST", path=f"{base}/retry", body={}, meaning="the cause is fixed: record a retry; a worker retries")
    elif nxt.action in ("resume", "handoff") and str(view.state) not in ("queued", "running"):
        http = HttpHint(method="POST", path=f"{base}/resume", body={}, meaning="queue the run for a worker again")
    elif nxt.action in ("wait", "await_approval", "resume", "wait_elsewhere"):
        http = HttpHint(method="GET", path=base, meaning="poll at or after not_before; the server's workers drive the run")
        if nxt.action == "await_approval":
            options = [HttpHint(method="POST", path=f"{base}/approve", body={"comment": ""}, meaning="approve (approve scope)"),
                       HttpHint(method="POST", path=f"{base}/deny", body={"comment": ""}, meaning="deny (approve scope)")]  # fmt: skip
    elif nxt.action == "conflict" and nxt.holder:
        http = HttpHint(method="GET", path=f"/v1/runs/{nxt.holder}", meaning="the run holding the lock; start again once it is over")
    elif nxt.action == "decide" and nxt.step:
        http = HttpHint(method="GET", path=base, meaning="poll: a person records a decision")
        options = [HttpHint(method="POST", path=f"{base}/decide", body={"retry_step": nxt.step}, meaning="run the step's action again"),
                   HttpHint(method="POST", path=f"{base}/decide", body={"skip_step": nxt.step}, meaning="treat the step as done")]  # fmt: skip
    data = view.model_dump(mode="json")
    data["next"] = {**data["next"], "http": http.model_dump() if http else None, "http_options": [o.model_dump() for o in options]}
    return ApiRunView.model_validate(data)
