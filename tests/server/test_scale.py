"""Issue 19 on the server path: TCP_NODELAY on accepted connections, workers woken by new work (not by polling),
the storm guard's lock granularity."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from tests.conftest import Project


def _nodelay_of_accepted(sock: socket.socket, connections: int = 2) -> list[int]:
    """Serve ``sock`` the way uvicorn does (``loop.create_server(sock=...)``) and read TCP_NODELAY of what it accepts."""
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            for n in range(1, connections + 1):
                _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
                for _ in range(1000):  # until the server side accepted it (an event loop turn or two)
                    if len(seen) >= n:
                        break
                    await asyncio.sleep(0.01)
                writer.close()

    asyncio.run(serve())
    assert len(seen) == connections, seen
    return seen


def test_accepted_connections_have_tcp_nodelay() -> None:
    """The listening socket is bound as TCP, so the event loop sets TCP_NODELAY on every connection it accepts
    (with ``proto=0`` it did not, and each kept-alive response waited ~40 ms for Nagle and the delayed ACK)."""
    from runbook_server.cli import _bind

    assert all(value != 0 for value in _nodelay_of_accepted(_bind("127.0.0.1", 0)))


def test_a_socket_bound_with_proto_0_gets_no_tcp_nodelay() -> None:
    """The control: the server's socket before the fix (so the test above can fail)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    assert _nodelay_of_accepted(sock) == [0, 0]


def test_idle_workers_are_woken_by_a_queued_run_not_by_their_poll(project: Project) -> None:
    """With a poll interval of an hour, only the store's work signal can explain that queued runs execute."""
    from harness.procs import wait_for
    from runbook_server.worker import WorkerPool
    from runbook_sqlite.store import SQLiteStore

    from runner.catalog import Catalog, search_path
    from runner.engine import Engine
    from runner.plugin import PluginHost
    from runner.settings import Settings
    from runner.store.records import RunState

    out = project.root / "out.log"
    project.write(
        "touch.yaml",
        f"""
        name: touch
        params: {{n: {{type: integer}}}}
        steps:
          - id: act
            shell: [sh, -c, 'echo "$0" >> {out}', "{{{{ params.n }}}}"]
    """,
    )
    url = f"sqlite:///{project.journal}"
    host = PluginHost()
    settings = Settings(paths=[str(project.runbooks)], store_url=url, project_dir=project.root, actor="tester")
    store = SQLiteStore(url)
    catalog = Catalog.load(host.step_types, search_path(settings.paths))
    pool = WorkerPool(lambda kind: Engine(host, store, catalog, settings, holder_kind=kind), 2, poll=3600)
    pool.start()
    try:
        queue = Engine(host, store, catalog, settings)
        ids = [queue.start("touch", {"n": n}, execute=False).run_id for n in range(6)]
        wait_for(lambda: all(store.get_run(r).state == RunState.SUCCEEDED for r in ids), 60, "the queued runs to be executed")
        assert sorted(out.read_text().split()) == [str(n) for n in range(6)], "each run executed once"
    finally:
        pool.stop()
        assert pool.join(timeout=60), "the pool stops at once: stop wakes the idle threads"
        store.close()


def test_the_storm_guard_locks_per_dedupe_key_unless_the_route_counts_a_budget() -> None:
    from runbook_server.config import RouteSpec
    from runbook_server.intake import _Prepared
    from runbook_server.routing import CompiledRoute, compile_matcher

    from runner.alerts import Alert, NewDecision

    def prepared(spec: dict[str, object], key: str) -> _Prepared:
        route_spec = RouteSpec.model_validate({"name": "r", "runbook": "rb", **spec})
        route = CompiledRoute(route_spec, compile_matcher({}), "server.yaml")
        return _Prepared(
            0, Alert(source="s", status="firing", fingerprint=key), NewDecision("d", 0, "s", "no_route", dedupe_key=key), route
        )

    assert prepared({}, "a").guard == ("r", "a") != prepared({}, "b").guard, "unrelated alerts do not wait for each other"
    assert prepared({"cooldown": "10m", "breaker": {"failures": 3, "within": "1h"}}, "a").guard == ("r", "a")
    assert prepared({"budget": {"runs": 5, "per": "1h"}}, "a").guard == ("r",) == prepared({"budget": {"runs": 5, "per": "1h"}}, "b").guard


def test_commands_of_worker_threads_start_without_holding_the_gil(tmp_path: Path) -> None:
    """``os.posix_spawnp`` holds the GIL until the child has exec'd (every other thread of a server stops); from
    a thread other than the main one the shell step starts commands through ``Popen``, which releases it."""
    import threading

    from runbook_shell import step

    def spawn() -> step._Child:
        out = os.open(tmp_path, os.O_RDWR | os.O_TMPFILE, 0o600)
        child = step._spawn(["sh", "-c", 'echo "$RUNBOOK_RUN_ID"'], env=None, cwd=None, stdin=None, out=out, err=out,
                            tag={"RUNBOOK_RUN_ID": "r-1"})  # fmt: skip
        assert child.wait(timeout=30) == 0 and os.pread(out, 100, 0) == b"r-1\n", "the tag reaches the command either way"
        os.close(out)
        return child

    assert spawn().popen is None, "the main thread (a CLI run) uses posix_spawnp"
    children: list[step._Child] = []
    worker = threading.Thread(target=lambda: children.append(spawn()))
    worker.start()
    worker.join(timeout=60)
    assert children and children[0].popen is not None
