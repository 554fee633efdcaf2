"""The shape of ``runbook plan``: a verdict per step (and per target or item), what would run, rendered, and why.

Verdicts:

=========================== ==================================================================================
``would-run``               the action would run (no check, or the check does not hold, and nothing earlier
                            changes what it reads)
``already-satisfied``       the check holds now and nothing the run does before it changes what it reads
``depends-on-earlier-change`` the step's check or precondition reads something an earlier step that would run
                            changes (declared, or not ruled out): what it says now is not what it will say
                            then (``now`` keeps what it says now)
``would-skip``              its ``when`` is false
``blocked``                 its precondition does not hold (and nothing earlier changes that): the run would
                            fail there
``would-wait``              an approval or a wait
``cannot-know``             it depends on an earlier step's output, or a probe could not be evaluated
=========================== ==================================================================================
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["VERDICTS", "PlanStep", "PlanUnit", "PlanView", "aggregate"]

VERDICTS = ("would-run", "already-satisfied", "depends-on-earlier-change", "would-skip", "blocked", "would-wait", "cannot-know")
_PRECEDENCE = ("blocked", "would-run", "depends-on-earlier-change", "cannot-know", "would-wait", "already-satisfied", "would-skip")
"""For a step whose targets differ: the verdict of the step is the first of these any target has."""


class PlanUnit(BaseModel):
    """The verdict for one target (host) or ``for_each`` item of a step that fans out."""

    name: str = Field(description="the target's name or the item's key")
    item: Any = Field(default=None, description="the item (for_each), secrets masked")
    verdict: str
    reason: str
    now: str | None = Field(default=None, description="for depends-on-earlier-change: what the probes say now")
    depends_on: list[str] = Field(default_factory=list)
    action: str | None = Field(default=None, description="the action as it would run, rendered (secrets masked)")
    config: dict[str, Any] | None = Field(default=None, description="the rendered config (secrets masked)")
    evidence: list[dict[str, Any]] = Field(default_factory=list)


class PlanStep(BaseModel):
    """The verdict for one step."""

    id: str
    type: str
    verdict: str = Field(description=" | ".join(VERDICTS))
    reason: str
    now: str | None = Field(default=None, description="for depends-on-earlier-change: what the probes say now")
    depends_on: list[str] = Field(default_factory=list, description="earlier steps whose changes this step's probes may read")
    action: str | None = Field(default=None, description="the action as it would run, rendered (secrets masked)")
    config: dict[str, Any] | None = Field(default=None, description="the rendered config (secrets masked)")
    reads: list[str] | None = None
    writes: list[str] | None = None
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    targets: list[PlanUnit] | None = Field(default=None, description="per target (targets:) or item (for_each:)")
    runbook: dict[str, Any] | None = Field(
        default=None, description="the sub-runbook's own plan, with the params it would get (a PlanView: the shape of the whole document)"
    )


class PlanView(BaseModel):
    """JSON shape of ``runbook plan --json``."""

    runbook: str
    params: dict[str, Any]
    steps: list[PlanStep]
    summary: dict[str, int]
    problems: list[dict[str, Any]] = Field(default_factory=list, description="what pre-flight finds: a run would fail before its "
                                                                             "first step with these")  # fmt: skip
    stops_at: str | None = Field(default=None, description="the first step whose precondition does not hold: a run fails there")


def aggregate(units: list[PlanUnit], what: str) -> tuple[str, str]:
    """(verdict, reason) of a step from its units' verdicts (``what``: ``targets`` or ``items``)."""
    if not units:
        return "would-run", f"no {what}: nothing to do"
    if len(units) == 1:
        return units[0].verdict, f"{units[0].name}: {units[0].reason}"
    by: dict[str, list[str]] = {}
    for u in units:
        by.setdefault(u.verdict, []).append(u.name)
    if len(by) == 1:
        same = units[0].reason if len({u.reason for u in units}) == 1 else None
        return units[0].verdict, f"all {len(units)} {what} {units[0].verdict}" + (f": {same}" if same else "")
    verdict = next(v for v in _PRECEDENCE if v in by)
    return verdict, f"{what}: " + ", ".join(f"{len(names)} {v} ({', '.join(names)})" for v, names in by.items())
