"""The message of a notification: what happened, to which run and step, why, and the exact commands.

Built from the outbox row (the event's kept data, already redacted by the engine) and the run's record. Params
are never included (a secret param's reference is no one's business in a chat channel), and every text goes
through the deliverer's redactor, which knows the channels' own secrets and the server's tokens.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

from runner.notify.channel import KIND_TITLES, Message

if TYPE_CHECKING:
    from runner.notify.config import NotifyConfig
    from runner.notify.records import NotificationRecord
    from runner.secrets import Redactor
    from runner.store.records import RunRecord

__all__ = ["build_message", "commands_for", "context_of", "test_message"]


def context_of(rec: NotificationRecord, run: RunRecord | None) -> tuple[str | None, str | None, dict[str, str]]:
    """(runbook, route, alert labels) of a notification, for the rules and the message."""
    trigger = (run.trigger if run else None) or {}
    runbook = rec.runbook or (run.runbook if run else None)
    route = rec.data.get("route") or trigger.get("route")
    labels = rec.data.get("labels") or (trigger.get("alert") or {}).get("labels") or {}
    return runbook, route, {str(k): str(v) for k, v in labels.items()}


def commands_for(kind: str, run_id: str | None, step_id: str | None, route: str | None, command: str) -> dict[str, str]:
    """What a person may do about a notification of ``kind``, as exact command lines starting with ``command``.

    Like ``next.human_command``, each only *records* a decision (approve, deny, decide, retry) or reads the run: none
    runs a step in the person's terminal; the run's driver (an agent, a worker, a person) continues with ``resume``.
    """
    base = shlex.split(command) or ["runbook"]

    def cmd(*args: str) -> str:
        return shlex.join([*base, *args])

    step = ["--step", step_id] if step_id else []
    if run_id is None:
        return {"decisions": cmd("alerts", "decisions", "--route", route or "")} if route else {}
    out = {
        "waiting_approval": {"approve": cmd("approve", run_id, *step), "deny": cmd("deny", run_id, *step)},
        "unknown": {"retry_step": cmd("decide", run_id, "--retry-step", step_id or "STEP"),
                    "skip_step": cmd("decide", run_id, "--skip-step", step_id or "STEP")},
        "failed": {"retry": cmd("retry", run_id)},
    }.get(kind, {})  # fmt: skip
    out["status"] = cmd("status", run_id)
    if kind == "breaker_open" and route:
        out["reset"] = cmd("alerts", "reset", route)
    return out


def build_message(rec: NotificationRecord, run: RunRecord | None, config: NotifyConfig, redactor: Redactor) -> Message:
    """The message of outbox row ``rec`` about ``run`` (None for a decision without a run), masked by ``redactor``."""
    runbook, route, labels = context_of(rec, run)
    run_id = rec.run_id
    step = rec.step_id
    what = KIND_TITLES.get(rec.kind, rec.kind)
    if rec.kind in ("breaker_open", "storm_refused"):
        title = f"route '{route}': {what}" + (f" ({rec.data.get('decision')})" if rec.kind == "storm_refused" else "")
    else:
        title = f"{runbook} run {run_id} {what}" + (f" at step '{step}'" if step and rec.kind != "succeeded" else "")
    steps = rec.data.get("steps")
    reason = str(rec.data.get("reason") or (f"all {steps} steps done" if rec.kind == "succeeded" and steps is not None else ""))
    url = f"{config.console_url}/runs/{run_id}" if config.console_url and run_id else None
    message = Message(
        key=rec.key, kind=rec.kind, title=title, reason=reason, run_id=run_id, runbook=runbook, step_id=step,
        started_by=run.started_by if run else None, route=route, labels=labels,
        commands=commands_for(rec.kind, run_id, step, route, config.command), url=url, created_at=rec.created_at,
    )  # fmt: skip
    return mask(message, redactor)


def test_message(config: NotifyConfig, key: str, now: float, redactor: Redactor) -> Message:
    """The message ``runbook notify test`` sends: says what it is, with a sample command and the console's address."""
    command = shlex.join([*(shlex.split(config.command) or ["runbook"]), "notify", "test"])
    message = Message(key=key, kind="test", title="runbook test notification: this channel works", test=True,
                      reason="sent by `runbook notify test`; nothing needs to be done", commands={"again": command},
                      url=config.console_url, created_at=now)  # fmt: skip
    return mask(message, redactor)


def mask(message: Message, redactor: Redactor) -> Message:
    """``message`` with every secret ``redactor`` knows masked in every text."""
    if not redactor:
        return message
    from dataclasses import fields, replace

    changes: dict[str, Any] = {}
    for f in fields(message):
        value = getattr(message, f.name)
        if isinstance(value, str | dict):
            changes[f.name] = redactor.value(value)
    return replace(message, **changes)
