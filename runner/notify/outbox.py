"""The outbox: which events notify, and the records of the store's ``notifications`` table.

A store writes an outbox row **in the same transaction** as the event that causes it (``Store.commit`` for run
events, ``Store.record_decisions`` for alert decisions), so a notification is never lost (the event cannot
commit without it) and never invented (it cannot commit without the event). Deliverers then claim rows with a
lease, like workers claim runs (:mod:`runner.notify.deliver`).

Which events notify (the *kind* of a notification):

==================  =====================================================================================
kind                event
==================  =====================================================================================
waiting_approval    ``step.waiting`` with ``kind: approval`` (once per approval request; a re-poll of the same
                    request writes no new ``step.waiting``)
unknown             ``run.waiting`` with ``kind: decision`` (a step whose effect is unknown needs a decision)
failed              ``run.failed``
succeeded           ``run.succeeded``
cancelled           ``run.cancelled``
breaker_open        alert decision ``breaker_open`` (a route's circuit breaker gated a new run)
storm_refused       alert decisions ``over_budget`` and ``cooled_down`` (the storm guard refused a run)
==================  =====================================================================================

Only top-level runs get rows: a sub-runbook run's approval, failure or decision reaches its parent run, which
notifies (with the parent's id, which is what ``runbook approve`` takes).

The key of a row is its *event key*: ``RUN_ID:SEQ`` for a run event and ``decision:ID`` for an alert decision. It
is unique, so writing the same event twice adds nothing, and it is what a receiver sees as the delivery id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from runner.alerts import DecisionRecord
    from runner.store.records import NewEvent

__all__ = [
    "EVENT_KINDS",
    "NOTIFY_EVENT_TYPES",
    "NewNotification",
    "NotificationState",
    "decision_notification",
    "event_kind",
    "run_notifications",
]

EVENT_KINDS = ("waiting_approval", "failed", "unknown", "succeeded", "cancelled", "breaker_open", "storm_refused")
"""Every kind a rule may name, in the order the docs list them."""

NOTIFY_EVENT_TYPES = frozenset({"run.failed", "run.succeeded", "run.cancelled", "run.waiting", "run.interrupted", "step.waiting"})
"""Journal event types that may notify (a cheap test a store makes on every event it commits)."""

_RUN_KINDS = {"run.failed": "failed", "run.succeeded": "succeeded", "run.cancelled": "cancelled"}
_DECISION_KINDS = {"breaker_open": "breaker_open", "over_budget": "storm_refused", "cooled_down": "storm_refused"}
_KEPT = ("reason", "kind", "gate", "target", "steps")
"""Event data a row keeps (already redacted by the engine): what a message needs, never outputs or params."""

NotificationState = Literal["pending", "delivered", "failed", "skipped"]


def event_kind(type_: str, data: Mapping[str, Any]) -> str | None:
    """The notification kind of a journal event of ``type_`` with ``data``, or None if it does not notify."""
    if type_ in _RUN_KINDS:
        return _RUN_KINDS[type_]
    if type_ == "step.waiting" and data.get("kind") == "approval":
        return "waiting_approval"
    if type_ in ("run.waiting", "run.interrupted") and data.get("kind") == "decision" and not data.get("asked"):
        return "unknown"  # (a run interrupted in such a step needs the decision at once; asked: the same question again)
    return None


@dataclass
class NewNotification:
    """An outbox row to write with its event (``runbook``: filled by the store from the run's row)."""

    key: str
    kind: str
    run_id: str | None
    seq: int | None = None
    step_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def run_notifications(run_id: str, first_seq: int, events: Sequence[NewEvent]) -> list[NewNotification]:
    """Outbox rows for ``events``, numbered from ``first_seq`` as the store numbers them ([] for most commits)."""
    out: list[NewNotification] = []
    for i, ev in enumerate(events):
        if ev.type not in NOTIFY_EVENT_TYPES:
            continue
        kind = event_kind(ev.type, ev.data)
        if kind is None:
            continue
        data = {k: ev.data[k] for k in _KEPT if ev.data.get(k) is not None}
        data["event"] = ev.type
        if ev.actor:
            data["actor"] = ev.actor
        out.append(NewNotification(f"{run_id}:{first_seq + i}", kind, run_id, first_seq + i, ev.step_id, data))
    return out


def decision_notification(d: DecisionRecord) -> NewNotification | None:
    """The outbox row for an alert decision, or None if the decision does not notify."""
    kind = _DECISION_KINDS.get(d.decision)
    if kind is None:
        return None
    labels = d.alert.get("labels") if isinstance(d.alert.get("labels"), dict) else {}
    data = {"decision": d.decision, "route": d.route, "reason": d.reason, "source": d.source, "dedupe_key": d.dedupe_key,
            "fingerprint": d.fingerprint, "labels": labels, "event": f"alert.{d.decision}"}  # fmt: skip
    return NewNotification(f"decision:{d.id}", kind, d.run_id, None, None, data)


# The stored records (``ChannelStatus``, ``NotificationRecord``) are in :mod:`runner.notify.records`: pydantic models,
# built only where notifications are read, not by every store commit that imports this module.
