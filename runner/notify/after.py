"""The CLI's best-effort send: after ``run``/``resume``/``step``/``cancel`` stopped, deliver that run's notifications.

Bounded by ``delivery.cli_wait`` (default 5 s; retries that fall due within it are made); whatever is left stays in
the outbox for the next deliverer (``runbook serve``, ``runbook worker``, ``runbook notify deliver``). Nothing
here can change the command's outcome or exit code: problems are one line on stderr. Without a configuration
file this costs a few ``stat`` calls and imports nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runner.cli.app import AppState

__all__ = ["send_after"]


def send_after(state: AppState, run_ids: list[str]) -> None:
    """Deliver the notifications of ``run_ids`` now, for at most ``delivery.cli_wait`` seconds."""
    from runner.notify.files import config_files

    if not any(path.is_file() for path in config_files(state.settings)):
        return
    from runner.cli.render import stderr_line
    from runner.errors import RunbookError

    try:
        _send(state, run_ids)
    except RunbookError as exc:
        stderr_line(f"notifications were not sent: {exc}")
    except KeyboardInterrupt:
        stderr_line("notifications: interrupted; what was not sent is left for the next deliverer")
    except Exception as exc:  # a notifier's or the store's unexpected failure must not change the command's outcome
        stderr_line(f"notifications were not sent: internal error: {type(exc).__name__}: {exc}")


def _send(state: AppState, run_ids: list[str]) -> None:
    from runner.cli.render import stderr_line
    from runner.notify.config import load_notify
    from runner.notify.deliver import Deliverer, holder_name

    notify = load_notify(state.host.notifiers, state.host.secret_providers, state.settings)
    if notify is None or not notify.config.rules or notify.config.delivery.cli_wait <= 0:
        return
    deliverer = Deliverer(state.store, notify, holder=holder_name("cli"))
    for report in deliverer.deliver_runs(run_ids, notify.config.delivery.cli_wait):
        if report.state in ("pending", "failed"):
            later = "; left for the next deliverer (runbook serve, worker or notify deliver)" if report.state == "pending" else ""
            stderr_line(f"notification {report.key} ({report.kind}) {'not yet ' if later else 'not '}delivered: {report.note}{later}")
