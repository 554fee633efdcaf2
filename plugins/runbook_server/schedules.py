"""Schedules (``schedules:`` in the server config): slots, fire times, params, checks, and what is listed.

A *slot* is one instant a schedule's cron expression names in its time zone (see :mod:`runbook_server.cron`
for what happens around daylight-saving changes). Its *fire time* is the slot plus a delay of up to
``jitter``, derived from a hash of the schedule's name and the slot, so every server computes the same one.
The slot is the run's idempotency key (``schedule:<name>:<slot in UTC>``) and the key of its decision in
the journal, which is why any number of schedulers can race for it and still start one run.

The scheduler loop is in :mod:`runbook_server.scheduler`; this module is what it, the API
(``GET /v1/schedules``) and the CLI (``runbook schedules``) share.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from runbook_server.cron import Slots, parse_cron, zone
from runner.errors import ParamsError, Problem, RunNotFound, TemplateError, ValidationError

if TYPE_CHECKING:
    from runbook_server.config import BreakerSpec, BudgetSpec, ScheduleSpec, ServerConfig
    from runner.catalog import Catalog
    from runner.store.base import Store
    from runner.templating import Renderer

__all__ = ["SOURCE", "CompiledSchedule", "ScheduleList", "ScheduleStatus", "check_schedules", "compile_schedules", "describe",
           "utc_iso"]  # fmt: skip

SOURCE = "schedule"
"""The ``source`` of every decision a scheduler records (its ``route`` is ``schedule:<name>``)."""


def utc_iso(instant: datetime) -> str:
    """``2026-03-29T01:00:00Z``: a slot's canonical spelling (keys and decisions)."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_utc_iso(text: str) -> datetime:
    """The instant :func:`utc_iso` spelled."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def at(epoch: float) -> datetime:
    """An epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)


@dataclass(frozen=True)
class _GuardSpec:
    """The storm-guard settings of a schedule (a schedule has no cooldown: its slots space its runs)."""

    budget: BudgetSpec | None
    breaker: BreakerSpec | None
    approval: str
    cooldown: float = 0.0


@dataclass(frozen=True)
class _Guarded:
    name: str
    spec: _GuardSpec


@dataclass(frozen=True)
class CompiledSchedule:
    """A schedule ready to compute slots, fire times, keys and params."""

    spec: ScheduleSpec
    slots: Slots
    file: str

    @property
    def name(self) -> str:
        """The schedule's name."""
        return self.spec.name

    @property
    def route(self) -> str:
        """The name its decisions and runs are recorded under (the storm guard counts them): ``schedule:<name>``."""
        return f"{SOURCE}:{self.spec.name}"

    @property
    def guard(self) -> _Guarded:
        """What :func:`runbook_server.guard.judge` judges for this schedule."""
        return _Guarded(self.route, _GuardSpec(self.spec.budget, self.spec.breaker, self.spec.approval))

    def key(self, slot: datetime) -> str:
        """The slot's run idempotency key and decision key: ``schedule:<name>:<slot in UTC>``."""
        return f"{self.route}:{utc_iso(slot)}"

    def delay(self, slot: datetime) -> float:
        """The slot's jitter: a delay in ``[0, jitter)`` that every server derives alike from name and slot."""
        if self.spec.jitter <= 0:
            return 0.0
        digest = hashlib.sha256(f"{self.spec.name}\x00{utc_iso(slot)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 * float(self.spec.jitter)

    def fire_at(self, slot: datetime) -> float:
        """When the slot fires (epoch seconds): the slot plus its jitter."""
        return slot.timestamp() + self.delay(slot)

    def dedupe_key(self, slot: datetime) -> str:
        """``overlap: skip``: the schedule's name (an active run of any slot defers the next); ``allow``: the slot."""
        return self.spec.name if self.spec.overlap == "skip" else utc_iso(slot)

    def local(self, slot: datetime) -> str:
        """The slot in the schedule's time zone, ISO 8601 with its offset."""
        return slot.astimezone(self.slots.tz).isoformat()

    def context(self, slot: datetime) -> dict[str, Any]:
        """What ``params`` templates see: ``schedule.name``, ``.slot`` (local ISO), ``.slot_utc``, ``.timestamp``, ..."""
        return {"schedule": {"name": self.spec.name, "slot": self.local(slot), "slot_utc": utc_iso(slot), "timestamp": slot.timestamp(),
                             "timezone": self.spec.timezone, "cron": self.spec.cron}}  # fmt: skip

    def params(self, renderer: Renderer, slot: datetime) -> dict[str, Any]:
        """The runbook params rendered for ``slot`` (TemplateError if a template fails)."""
        rendered = renderer.render(self.spec.params, self.context(slot), file=self.file, step=None, field=f"schedules.{self.name}.params")
        return dict(rendered)

    def trigger(self, slot: datetime, *, catch_up: bool = False) -> dict[str, Any]:
        """The run's ``trigger`` (``{{ run.trigger.slot }}`` in the runbook)."""
        return {"source": SOURCE, "schedule": self.spec.name, "route": self.route, "slot": self.local(slot), "slot_utc": utc_iso(slot),
                "delivery": self.key(slot), "catch_up": catch_up}  # fmt: skip

    def next_slot(self, now: float) -> datetime | None:
        """The first slot after ``now``."""
        return self.slots.next_after(at(now))


def compile_schedules(config: ServerConfig) -> list[CompiledSchedule]:
    """The config's schedules, compiled (the config model already checked each expression and zone)."""
    return [CompiledSchedule(spec, Slots(parse_cron(spec.cron), zone(spec.timezone)), config.file) for spec in config.schedules]


def check_schedules(config: ServerConfig, catalog: Catalog, renderer: Renderer, now: float) -> list[CompiledSchedule]:
    """Check the schedules against the catalog: unique names, known runbooks, and params that render and fit the
    runbook for the next slot. Raises ValidationError naming ``file:line:column`` of every problem."""
    from runner.params import validate_params

    problems: list[Problem] = []
    seen: set[str] = set()
    compiled = compile_schedules(config)
    for i, cs in enumerate(compiled):
        if cs.name in seen:
            problems.append(config.problem(("schedules", i, "name"), f"schedule name '{cs.name}' is used twice"))
        seen.add(cs.name)
        if cs.spec.runbook not in catalog.runbooks:
            problems.append(config.problem(("schedules", i, "runbook"), f"no runbook named '{cs.spec.runbook}' in the catalog", value=True))
            continue
        syntax = [(path, renderer.check_syntax(text)) for path, text in _strings(cs.spec.params, ("schedules", i, "params"))]
        problems += [config.problem(path, error, value=True) for path, error in syntax if error]
        slot = cs.next_slot(now)
        if any(error for _, error in syntax):
            continue
        if slot is None:
            problems.append(config.problem(("schedules", i, "cron"), "the expression names no time in the next 14 years", value=True))
            continue
        try:
            validate_params(cs.spec.runbook, catalog.get(cs.spec.runbook).params_model, cs.params(renderer, slot))
        except TemplateError as exc:
            problems.append(config.problem(("schedules", i, "params"), exc.detail))
        except ParamsError as exc:
            problems.append(config.problem(("schedules", i, "params"), f"for the slot {cs.local(slot)}: {'; '.join(exc.problems)}"))
    if problems:
        raise ValidationError(problems)
    return compiled


def _strings(value: Any, path: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _strings(v, (*path, k))]
    if isinstance(value, list):
        return [item for i, v in enumerate(value) for item in _strings(v, (*path, i))]
    return [(path, value)] if isinstance(value, str) else []


# ---------------------------------------------------------------------- listing


class ScheduleStatus(BaseModel):
    """One schedule as ``GET /v1/schedules`` and ``runbook schedules --json`` show it."""

    name: str
    runbook: str
    cron: str
    timezone: str
    enabled: bool
    jitter: float = Field(description="seconds")
    misfire: str
    overlap: str
    next_slot: str | None = Field(description="the next slot, in the schedule's time zone (null when disabled)")
    next_fire_at: str | None = Field(description="when the next slot fires: the slot plus its jitter")
    last_slot: str | None = Field(default=None, description="the newest slot a decision was recorded for")
    last_decision: str | None = Field(default=None, description="started, deduped, over_budget, breaker_open, locked, missed, ...")
    last_reason: str | None = None
    last_run_id: str | None = Field(default=None, description="the newest run the schedule started")
    last_run_state: str | None = None
    last_run_slot: str | None = None


class ScheduleList(BaseModel):
    """``GET /v1/schedules``."""

    schedules: list[ScheduleStatus]
    now: str = Field(description="the scheduler's clock")


def describe(schedules: list[CompiledSchedule], store: Store | None, now: float) -> ScheduleList:
    """Every schedule with its next slot and what its newest decision and run were (None: no journal yet)."""
    out = []
    for cs in schedules:
        slot = cs.next_slot(now) if cs.spec.enabled else None
        row = ScheduleStatus(name=cs.name, runbook=cs.spec.runbook, cron=cs.spec.cron, timezone=cs.spec.timezone, enabled=cs.spec.enabled,
                             jitter=cs.spec.jitter, misfire=cs.spec.misfire, overlap=cs.spec.overlap,
                             next_slot=cs.local(slot) if slot else None,
                             next_fire_at=at(cs.fire_at(slot)).astimezone(cs.slots.tz).isoformat(timespec="seconds") if slot else None)  # fmt: skip
        out.append(row)
        if store is None:
            continue
        decisions = store.list_decisions(route=cs.route, source=SOURCE, limit=1)
        if decisions:
            d = decisions[0]
            row.last_slot = cs.local(from_utc_iso(d.fingerprint)) if d.fingerprint else None
            row.last_decision, row.last_reason = d.decision, d.reason
        runs = store.route_runs(cs.route, limit=1)
        if runs:
            row.last_run_id, row.last_run_state = runs[0].run_id, runs[0].state
            with contextlib.suppress(RunNotFound):  # pruned meanwhile
                row.last_run_slot = (store.get_run(runs[0].run_id).trigger or {}).get("slot")
    return ScheduleList(schedules=out, now=at(now).isoformat(timespec="seconds"))
