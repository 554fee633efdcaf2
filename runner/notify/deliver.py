"""The deliverer: claims due notifications, sends them to the channels the rules choose, retries until done.

Guarantees (with a store that keeps the outbox, see :mod:`runner.notify.outbox`):

- **Never lost**: a notification is a row written with its event; it stays ``pending`` until every chosen
  channel accepted it, refused it for good, or it expired (``delivery.expire_after``).
- **At least once, and once per channel in the normal case**: each channel's outcome is saved the moment its send
  returns, so a retry sends only to the channels still pending. A deliverer killed between a send and that save
  sends again after its lease ends: receivers de-duplicate on the delivery id (``KEY:CHANNEL``, the same on
  every try).
- **Never by two deliverers at once**: a row is claimed with a lease and a fencing counter (``claim``), like a
  run; every save checks the counter, and a renewer thread keeps the lease while a send is in flight, so a slow
  receiver does not let another deliverer in. A dead deliverer's rows are taken once its lease expires.
- **Never in a run's way**: delivery runs in ``runbook serve``/``runbook worker``'s background thread, in
  ``runbook notify deliver``, or for at most ``delivery.cli_wait`` after a CLI command that ran a run stopped.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner.errors import NotifyError, RunNotFound, StoreError
from runner.notify.records import ChannelStatus

if TYPE_CHECKING:
    from types import TracebackType

    from runner.notify.channel import Message
    from runner.notify.config import NotifySettings
    from runner.notify.outbox import NotificationState
    from runner.notify.records import NotificationRecord
    from runner.store.base import Store
    from runner.store.records import RunRecord

__all__ = ["LEASE_TTL_ENV", "Budget", "Deliverer", "DelivererThread", "Report", "backoff", "holder_name"]

log = logging.getLogger("runbook.notify")

LEASE_TTL_ENV = "RUNBOOK_NOTIFY_LEASE_TTL"
"""Seconds a claim on a notification lasts without renewal (default 30): how soon a dead deliverer's rows are retried."""
ROUTE_KINDS = frozenset({"breaker_open", "storm_refused"})
_DETAIL = 500


def holder_name(kind: str) -> str:
    """Who claims: ``serve pid 4242 on web1 #a1b2c3`` (unique per deliverer)."""
    from runner.settings import hostname

    return f"{kind} pid {os.getpid()} on {hostname()} #{os.urandom(3).hex()}"


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Delay before the next try after ``attempts`` failed rounds: ``initial·2^(attempts-1)``, at most ``maximum``, +0-10%."""
    return float(min(initial * 2 ** max(attempts - 1, 0), maximum) * (1 + random.random() / 10))


@dataclass
class Budget:
    """When a delivery pass must stop: a monotonic deadline (the CLI) and/or a stop event (a background thread)."""

    deadline: float | None = None
    stop: threading.Event | None = None

    def left(self) -> float | None:
        """Seconds left, or None without a deadline."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def over(self) -> bool:
        """True once the deadline passed or the stop event is set."""
        left = self.left()
        return (left is not None and left <= 0) or (self.stop is not None and self.stop.is_set())


@dataclass
class Report:
    """What a pass did with one notification (``runbook notify deliver --json`` prints these)."""

    key: str
    kind: str
    state: str
    channels: dict[str, ChannelStatus] = field(default_factory=dict)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON shape."""
        return {"key": self.key, "kind": self.kind, "state": self.state, "note": self.note,
                "channels": {n: s.model_dump(mode="json") for n, s in self.channels.items()}}  # fmt: skip


class _Claim:
    """A claimed row: its progress is saved under the claim; a renewer thread keeps the lease while sends run."""

    def __init__(self, store: Store, rec: NotificationRecord, ttl: float) -> None:
        self.store, self.rec, self.ttl = store, rec, ttl
        self.channels = {n: s.model_copy() for n, s in rec.channels.items()}
        self.lost = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def save(self, *, state: NotificationState = "pending", attempts: int | None = None, next_at: float | None = None,
             last_error: str = "", hold: bool = True) -> bool:  # fmt: skip
        """Write the progress (and renew the lease, or with ``hold=False`` release it); False if the claim was lost."""
        with self._lock:
            if self.lost:
                return False
            ok = self.store.update_notification(
                self.rec.key, self.rec.claim, channels=dict(self.channels), state=state,
                attempts=self.rec.attempts if attempts is None else attempts, next_at=next_at, last_error=last_error,
                ttl=self.ttl if hold else None,
            )  # fmt: skip
            self.lost = not ok
            return ok

    def __enter__(self) -> _Claim:
        self._thread = threading.Thread(target=self._renew, name="runbook-notify-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.save():
                    log.warning("notification %s: the claim was lost while sending (another deliverer took it over)", self.rec.key)
                    return
            except StoreError as exc:
                log.warning("notification %s: renewing the claim failed: %s", self.rec.key, exc)


class Deliverer:
    """Delivers the outbox of ``store`` with the channels and rules of ``notify``."""

    def __init__(self, store: Store, notify: NotifySettings, *, holder: str, ttl: float | None = None) -> None:
        self.store, self.notify, self.holder = store, notify, holder
        self.ttl = ttl if ttl is not None else float(os.environ.get(LEASE_TTL_ENV, "30"))
        self.delivery = notify.config.delivery

    # ------------------------------------------------------------------ passes

    def deliver_due(self, *, run_ids: tuple[str, ...] | list[str] = (), limit: int = 5, budget: Budget | None = None) -> list[Report]:
        """Claim up to ``limit`` due notifications and process them; what is left when ``budget`` ends is released."""
        budget = budget or Budget()
        recs = self.store.claim_notifications(self.holder, self.ttl, limit=limit, run_ids=run_ids)
        reports: list[Report] = []
        for i, rec in enumerate(recs):
            if budget.over():
                for rest in recs[i:]:
                    _Claim(self.store, rest, self.ttl).save(hold=False, next_at=rest.next_at)
                break
            reports.append(self.process(rec, budget))
        return reports

    def deliver_runs(self, run_ids: list[str], wait: float) -> list[Report]:
        """Deliver the notifications of ``run_ids`` for at most ``wait`` seconds, retrying failures that fall due in time.

        What is still pending afterwards (or held by another deliverer) is left to the next deliverer.
        """
        budget = Budget(deadline=time.monotonic() + wait)
        reports: dict[str, Report] = {}
        while not budget.over():
            for report in self.deliver_due(run_ids=run_ids, limit=20, budget=budget):
                reports[report.key] = report
            now = time.time()
            free = [n for rid in run_ids for n in self.store.list_notifications(run_id=rid, states=("pending",), limit=100)
                    if n.lease_expires_at is None or n.lease_expires_at < now]  # fmt: skip
            if not free:
                break
            pause = min(n.next_at for n in free) - now
            if pause > (budget.left() or 0) - 0.1:
                break
            time.sleep(max(pause, 0.02))
        return list(reports.values())

    # ------------------------------------------------------------------ one notification

    def process(self, rec: NotificationRecord, budget: Budget | None = None) -> Report:
        """Send a claimed notification to its pending channels and save the outcome."""
        budget = budget or Budget()
        claim = _Claim(self.store, rec, self.ttl)
        run = self._run(rec)
        if not claim.channels:  # first pass: the rules choose the channels, once
            chosen, note = self._choose(rec, run)
            if not chosen:
                claim.save(state="skipped", last_error=note, hold=False)
                return Report(rec.key, rec.kind, "skipped", note=note)
            claim.channels = {name: ChannelStatus() for name in chosen}
        if not claim.save():
            return Report(rec.key, rec.kind, "lost", note="another deliverer took it over")
        expired = time.time() >= rec.created_at + self.delivery.expire_after
        tried = False
        if not expired:
            from runner.notify.message import build_message

            message = build_message(rec, run, self.notify.config, self.notify.redactor)
            with claim:
                for name, status in list(claim.channels.items()):
                    if status.state != "pending" or claim.lost:
                        continue
                    if budget.over():
                        break
                    claim.channels[name] = self._send(rec.key, name, status, message, budget)
                    tried = True
                    claim.save()
        return self._finish(claim, expired=expired, tried=tried)

    def _finish(self, claim: _Claim, *, expired: bool, tried: bool) -> Report:
        rec, now = claim.rec, time.time()
        pending = [n for n, s in claim.channels.items() if s.state == "pending"]
        if expired:
            for name in pending:
                last = claim.channels[name].detail
                claim.channels[name] = claim.channels[name].model_copy(update={
                    "state": "failed", "at": now, "detail": f"expired after {self.delivery.expire_after:g}s without delivery"
                    + (f" (last: {last})" if last else "")})  # fmt: skip
            pending = []
        errors = "; ".join(f"{n}: {s.detail}" for n, s in claim.channels.items() if s.state != "sent" and s.detail)
        state: NotificationState
        if not pending:
            state = "delivered" if all(s.state == "sent" for s in claim.channels.values()) else "failed"
            ok = claim.save(state=state, attempts=rec.attempts + int(tried), last_error=errors, hold=False)
        elif not tried:  # the budget ended before any send: due again at once, for the next deliverer
            state = "pending"
            ok = claim.save(hold=False, next_at=rec.next_at, last_error=rec.last_error)
        else:
            state, attempts = "pending", rec.attempts + 1
            delay = backoff(attempts, self.delivery.retry_initial, self.delivery.retry_max)
            ok = claim.save(attempts=attempts, next_at=now + delay, last_error=errors, hold=False)
            log.warning("notification %s (%s): %s; trying again in %.1fs", rec.key, rec.kind, errors, delay)
        if not ok:
            return Report(rec.key, rec.kind, "lost", claim.channels, "another deliverer took it over")
        return Report(rec.key, rec.kind, state, claim.channels, errors)

    def _send(self, key: str, name: str, status: ChannelStatus, message: Message, budget: Budget) -> ChannelStatus:
        """One send to one channel; its new status (never raises)."""
        channel = self.notify.channels.get(name)
        tries, now = status.attempts + 1, time.time()
        if channel is None:
            return ChannelStatus(state="failed", attempts=tries, at=now, detail=f"channel '{name}' is not configured (any more)")
        left = budget.left()
        timeout = self.delivery.timeout if left is None else max(0.5, min(self.delivery.timeout, left))
        try:
            detail = channel.notifier.send(message, channel.config, delivery_id=f"{key}:{name}", timeout=timeout)
        except NotifyError as exc:
            state = "pending" if exc.retryable else "failed"
            return ChannelStatus(state=state, attempts=tries, at=time.time(), detail=self._mask(str(exc)))
        except Exception as exc:  # a notifier's bug: retried (it may be transient), and logged with its traceback
            log.exception("notifier '%s' of channel '%s' failed", channel.notifier.name, name)
            return ChannelStatus(state="pending", attempts=tries, at=time.time(),
                                 detail=self._mask(f"internal error in notifier '{channel.notifier.name}': {type(exc).__name__}: {exc}"))  # fmt: skip
        log.info("notification %s (%s) sent to %s: %s", key, message.kind, name, detail)
        return ChannelStatus(state="sent", attempts=tries, at=time.time(), detail=self._mask(str(detail)))

    def _mask(self, text: str) -> str:
        return self.notify.redactor.text(text)[:_DETAIL]

    # ------------------------------------------------------------------ choosing channels

    def _run(self, rec: NotificationRecord) -> RunRecord | None:
        if rec.run_id is None:
            return None
        try:
            return self.store.get_run(rec.run_id)
        except RunNotFound:  # pruned meanwhile: the row still says what happened
            return None

    def _choose(self, rec: NotificationRecord, run: RunRecord | None) -> tuple[list[str], str]:
        """The channels the rules choose (and why none, if none)."""
        from runner.notify.message import context_of

        runbook, route, labels = context_of(rec, run)
        names = self.notify.channels_for(rec.kind, runbook, route, labels)
        if not names:
            return [], "no rule matches"
        if rec.kind in ROUTE_KINDS and self.delivery.route_quiet > 0:
            earlier = self._notified_recently(rec, route)
            if earlier is not None:
                return [], (f"route '{route}' had a {rec.kind} notification ({earlier.key}) within delivery.route_quiet "
                            f"({self.delivery.route_quiet:g}s)")  # fmt: skip
        return names, ""

    def _notified_recently(self, rec: NotificationRecord, route: str | None) -> NotificationRecord | None:
        since = rec.created_at - self.delivery.route_quiet
        for other in self.store.list_notifications(states=("pending", "delivered", "failed"), limit=500, before=rec.created_at + 1e-6):
            if other.created_at < since:
                break
            if other.key != rec.key and other.kind == rec.kind and other.channels and other.data.get("route") == route:
                return other
        return None


class DelivererThread:
    """``runbook serve``/``runbook worker``: a background thread delivering whatever falls due, until stopped."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="runbook-notify", daemon=True)

    def start(self) -> None:
        """Start delivering."""
        self._thread.start()

    def wake(self, *_args: Any) -> None:
        """Something may have fallen due (an engine observer: called with an event and a run)."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop after the send in flight (claims not yet worked on are released)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        budget = Budget(stop=self._stop)
        poll = self.deliverer.delivery.poll
        while not self._stop.is_set():
            try:
                reports = self.deliverer.deliver_due(limit=5, budget=budget)
            except StoreError as exc:
                log.warning("delivering notifications failed: %s", exc)
                reports = []
            except Exception:  # never let the thread die: the next poll tries again
                log.exception("delivering notifications failed")
                reports = []
            if not reports:
                self._wake.wait(poll)
                self._wake.clear()
