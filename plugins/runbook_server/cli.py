"""``runbook serve``, ``runbook worker``, ``runbook alerts`` and ``runbook schedules``: the server's command line.

FastAPI and uvicorn (the ``server`` extra) are imported only inside ``serve``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from runbook_server.schedules_cli import schedules_cmd
from runner.cli.app import AppState, existing_journal, json_option, pass_state, settle_startup

if TYPE_CHECKING:
    import socket

    from runbook_server.scheduler import Scheduler
    from runbook_server.state import ServerState
    from runbook_server.worker import WorkerPool

__all__ = ["COMMANDS"]


def _logging(level: str) -> None:
    import logging

    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _prime(state: AppState) -> None:
    """Build the plugin registries before worker threads start (they are filled on first use) and the catalog,
    live (:class:`~runner.livecatalog.LiveCatalog`); from here on this is a long-lived process, so start-up's
    deferred garbage collection ends (``settle_startup``)."""
    host = state.host
    for registry in (host.step_types, host.stores, host.secret_providers, host.alert_sources, host.template_filters):
        registry.names()
    state.session.watch_catalog()  # runbook files added or edited later are served without a restart
    _ = state.catalog, state.store
    state.store.long_running()  # e.g. SQLite checkpoints its WAL on a thread of its own from now on
    settle_startup()


@contextlib.contextmanager
def _on_signals(handler: Callable[[int], None]) -> Iterator[None]:
    import signal

    previous = {sig: signal.signal(sig, lambda signum, _frame: handler(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _bind(host: str, port: int) -> socket.socket:
    import socket

    from runner.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a socket it knows is TCP, and
    # without it every kept-alive response waits for Nagle and the client's delayed ACK (~40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Any, level: str, on_signal: Callable[[int], None], limits: Any) -> Any:
    import uvicorn

    from runbook_server.connguard import guarded_protocol, raise_open_files_limit

    class Server(uvicorn.Server):
        """uvicorn's server; SIGINT/SIGTERM also stop the worker pool, and are not re-raised at exit."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            def handle(signum: int) -> None:
                on_signal(signum)
                self.handle_exit(signum, None)

            with _on_signals(handle):
                yield

    raise_open_files_limit(limits.max_connections + 1024)  # room for the connections, the journal and the steps
    http = guarded_protocol(float(limits.header_timeout), float(limits.body_timeout), limits.max_connections)
    config = uvicorn.Config(app, log_level=level.lower(), access_log=level.lower() == "debug", lifespan="off", http=http,
                            timeout_graceful_shutdown=10, server_header=False, proxy_headers=False)  # fmt: skip
    return Server(config)


@click.command("serve")
@click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="Server configuration (YAML); see docs/server.md."
)
@click.option(
    "--listen", metavar="HOST:PORT", help="Address to bind (default: the config's listen, else 127.0.0.1:8080; port 0 picks one)."
)
@click.option("--workers", type=click.IntRange(0, 64), help="Worker threads executing queued runs (default: the config's, else 2).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@pass_state
def serve_cmd(state: AppState, config_file: str | None, listen: str | None, workers: int | None, log_level: str) -> int:
    """Serve the HTTP API and alert webhooks, and execute queued runs on a worker pool."""
    from runner.errors import MissingExtra

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("runbook serve", "server", exc.name or "fastapi") from None
    from runbook_server.app import create_app
    from runbook_server.config import load_config, parse_listen
    from runbook_server.notifying import start_notifications
    from runbook_server.retention import check_retention, start_retention
    from runbook_server.state import build_state, install_log_redaction
    from runbook_server.worker import WorkerPool

    config = load_config(config_file)
    check_retention(config)
    address = parse_listen(listen or config.listen)
    _prime(state)
    srv = build_state(state.host, state.settings, state.store, state.catalog, config, address)
    srv.pool = WorkerPool(srv.make_engine, config.workers if workers is None else workers)
    notifier = start_notifications(state, "serve", config=config, redactor=srv.redactor, engines=srv.pool.engines)
    srv.scheduler = _scheduler(srv)
    app = create_app(srv)
    sock = _bind(*address)
    server = _uvicorn_server(app, log_level, lambda _sig: _stop(srv), config.limits)
    _logging(log_level)
    install_log_redaction(srv.redactor)
    bound = sock.getsockname()
    host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    click.echo(f"runbook serve: listening on http://{host}:{bound[1]} with {srv.pool.size} worker(s); store {state.store.url}", err=True)
    srv.pool.start()
    if srv.scheduler is not None:
        srv.scheduler.start(srv.shutdown)
    start_retention(srv)
    try:
        server.run(sockets=[sock])
    finally:
        _stop(srv, quiet=True)
        _drain(srv.pool)
        if srv.scheduler is not None:
            srv.scheduler.join(10)
        if notifier is not None:
            notifier.stop()
        sock.close()
        state.store.close()
    return 0


def _scheduler(srv: ServerState) -> Scheduler | None:
    """The server's scheduler (None without ``schedules:``): decisions counted in metrics, started runs wake the workers."""
    from runbook_server.scheduler import build_scheduler

    return build_scheduler(srv.config, srv.make_engine("scheduler"), on_decision=lambda d: srv.metrics.decision(d.route, d.decision),
                           on_started=srv.wake_workers)  # fmt: skip


def _stop(srv: ServerState, *, quiet: bool = False) -> None:
    """First call: stop claiming and finish current steps; a second signal stops the steps themselves."""
    if quiet and srv.shutdown.is_set():
        return
    first = not srv.shutdown.is_set()
    srv.shutdown.set()
    if srv.pool is not None:
        srv.pool.stop()
    if not quiet:
        what = "finishing current steps, then stopping (send again to stop them now)" if first else "stopping current steps now"
        click.echo(f"runbook serve: {what}", err=True)


def _drain(pool: WorkerPool) -> None:
    while not pool.join(timeout=0.5):
        pass


@click.command("worker")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="Worker threads.")
@click.option("--poll", type=click.FloatRange(0.05, 60), default=0.5, show_default=True, help="Seconds between claims when idle.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Server configuration whose `schedules:` this worker also fires (its other keys are not used).")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)
@pass_state
def worker_cmd(state: AppState, workers: int, poll: float, config_file: str | None, log_level: str) -> int:
    """Execute queued and due runs from the store (no HTTP); run one per host against a shared store."""
    import threading

    from runbook_server.notifying import start_notifications
    from runbook_server.worker import WorkerPool
    from runner.engine import Engine

    _logging(log_level)
    _prime(state)
    pool = WorkerPool(lambda kind: Engine(state.host, state.store, state.catalog, state.settings, holder_kind=kind), workers, poll=poll)
    scheduler = _worker_scheduler(state, config_file, pool)
    stopped = threading.Event()
    signals = 0

    def on_signal(_signum: int) -> None:
        nonlocal signals
        signals += 1
        msg = "finishing current steps, then stopping (send again to stop them now)" if signals == 1 else "stopping current steps now"
        click.echo(f"runbook worker: {msg}", err=True)
        stopped.set()
        pool.stop()

    fires = f"; firing {len(scheduler.schedules)} schedule(s)" if scheduler is not None else ""
    click.echo(f"runbook worker: {workers} worker(s) on store {state.store.url}{fires}", err=True)
    notifier = start_notifications(state, "worker", engines=pool.engines)
    with _on_signals(on_signal):
        pool.start()
        if scheduler is not None:
            scheduler.start(stopped)
        _drain(pool)
    stopped.set()
    if scheduler is not None:
        scheduler.join(10)
    if notifier is not None:
        notifier.stop()
    state.store.close()
    return 0


def _worker_scheduler(state: AppState, config_file: str | None, pool: WorkerPool) -> Scheduler | None:
    """``runbook worker --config FILE``: a scheduler for the file's schedules (None without the option or schedules)."""
    if config_file is None:
        return None
    from runbook_server.config import load_config
    from runbook_server.scheduler import build_scheduler
    from runner.engine import Engine

    engine = Engine(state.host, state.store, state.catalog, state.settings, holder_kind="scheduler")
    return build_scheduler(load_config(config_file), engine, on_started=pool.wake)


# ---------------------------------------------------------------------- alerts


@click.group("alerts")
def alerts_group() -> None:
    """Alert decisions recorded by `runbook serve`."""


@alerts_group.command("decisions")
@click.option("--route", help="Only this route.")
@click.option("--source", help="Only this alert source.")
@click.option("--decision", help="Only this decision (started, deduped, over_budget, ...).")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only decisions about this run.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--before", type=int, metavar="ID", help="Page: decisions older than this id.")
@json_option
@pass_state
@existing_journal
def decisions_cmd(state: AppState, route: str | None, source: str | None, decision: str | None, run_id: str | None, limit: int,
                  before: int | None) -> int:  # fmt: skip
    """List what alert intake decided for each alert, newest first."""
    from runner.errors import JournalNotFound
    from runner.views import iso

    empty = "no decisions recorded"
    try:
        rows = state.store.list_decisions(route=route, source=source, decision=decision, run_id=run_id, limit=limit, before=before)
    except JournalNotFound as exc:  # never creates one; without one, no alert was decided yet
        if exc.missing_dir is not None:
            raise  # a store URL naming a directory that does not exist is a mistake, not an empty journal
        rows, empty = [], f"no decisions recorded: no journal at {exc.where} (`runbook serve` creates it)"
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"decisions": [r.model_dump(mode="json") for r in rows], "next_before": rows[-1].id if len(rows) == limit else None})
        return 0
    from rich.table import Table

    from runner.cli.output import console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("ID", "TIME", "SOURCE", "ROUTE", "STATUS", "DECISION", "RUN", "REASON"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r.id), iso(r.ts) or "", r.source, r.route or "-", r.status or "-", r.decision, r.run_id or "-", r.reason)
    console().print(table if rows else empty)
    return 0


@alerts_group.command("reset")
@click.argument("route")
@click.option("--by", metavar="NAME", help="Who resets (default: RUNBOOK_ACTOR or user@host).")
@json_option
@pass_state
def reset_cmd(state: AppState, route: str, by: str | None) -> int:
    """Close ROUTE's circuit breaker: failures before now no longer count."""
    import time

    from runner.alerts import NewDecision

    who = by or state.settings.actor
    rows = state.store.record_decisions([NewDecision(f"cli:reset:{route}:{time.time_ns()}", 0, "cli", "breaker_reset", route=route,
                                                     reason=f"reset by {who}")])  # fmt: skip
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"decisions": [r.model_dump(mode="json") for r in rows]})
    else:
        click.echo(f"breaker of route '{route}' reset by {who}")
    return 0


COMMANDS = (serve_cmd, worker_cmd, alerts_group, schedules_cmd)
