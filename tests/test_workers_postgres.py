"""Many ``runbook worker`` processes on "many hosts" share one PostgreSQL journal.

Each worker runs in its own UTS namespace with its own hostname (``unshare --uts``), so the workers are
different hosts to each other: a dead one cannot be detected by pid and is taken over only when its lease
expires, exactly as across real machines. Every run's step appends ``HOST PID`` to a file of its own, which
proves each run executed once and shows which worker executed it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from harness.procs import free_port, wait_for
from runbook_postgres.store import PostgresStore

from runner.engine import Engine
from runner.plugin import PluginHost
from runner.settings import Settings
from runner.store.records import RunState
from tests.conftest import Project

WORK = """
name: work
params:
  n: {type: integer}
  out: {type: string}
  hold: {type: number, default: 0.3}
steps:
  - id: act
    shell:
      script: |
        echo "$(hostname) $PPID $$" >> "$out/run-$n.log"
        sleep "$hold"
    check:
      - shell: [test, -s, "{{ params.out }}/run-{{ params.n }}.log"]
  - id: after
    shell: [sh, -c, 'echo done >> "$0"', "{{ params.out }}/run-{{ params.n }}.done"]
"""
LEASE_TTL = "3"


def _uts_namespaces() -> bool:
    with contextlib.suppress(OSError):
        return subprocess.run(["unshare", "--uts", "true"], capture_output=True, timeout=10).returncode == 0
    return False


class Cluster:
    """A project whose journal is a PostgreSQL database, its ``runbook worker`` processes, and an engine to queue runs."""

    def __init__(self, project: Project, dsn: str) -> None:
        self.project, self.dsn = project, dsn
        self.out = project.root / "out"
        self.out.mkdir(parents=True)
        project.write("work.yaml", WORK)
        project.env.update(RUNBOOK_STORE=dsn, RUNBOOK_LEASE_TTL=LEASE_TTL)
        self.store = PostgresStore(dsn)
        from runner.catalog import Catalog, search_path

        host = PluginHost()
        settings = Settings(paths=[str(project.runbooks)], store_url=dsn, project_dir=project.root, actor="tester")
        self.engine = Engine(host, self.store, Catalog.load(host.step_types, search_path(settings.paths)), settings)
        self.workers: dict[str, subprocess.Popen[str]] = {}
        self.separate_hosts = _uts_namespaces()

    def start_worker(self, name: str, threads: int = 2, poll: float = 0.1) -> subprocess.Popen[str]:
        """``runbook worker`` as host ``name`` (its own UTS namespace, when the machine allows it)."""
        argv = self.project.cmd("worker", "--workers", str(threads), "--poll", str(poll))
        if self.separate_hosts:
            argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv]
        log = open(self.project.root / f"{name}.log", "w", encoding="utf-8")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(argv, cwd=self.project.root, env=self.project.env, stdout=subprocess.DEVNULL, stderr=log, text=True)
        log.close()
        self.workers[name] = proc
        return proc

    def queue(self, n: int, hold: float = 0.3) -> str:
        """Create a queued run (no executor): the workers pick it up."""
        return self.engine.start("work", {"n": n, "out": str(self.out), "hold": hold}, execute=False).run_id

    def lines(self, n: int, suffix: str = "log") -> list[str]:
        path = self.out / f"run-{n}.{suffix}"
        return path.read_text().splitlines() if path.exists() else []

    def wait_states(self, run_ids: list[str], state: RunState, timeout: float = 90) -> None:
        def done() -> bool:
            for name, proc in self.workers.items():
                assert proc.poll() is None or proc.returncode == -signal.SIGKILL, f"worker {name} exited: {self.log(name)}"
            return all(self.store.get_run(rid).state == state for rid in run_ids)

        wait_for(done, timeout, f"{len(run_ids)} runs to be {state}", interval=0.1)

    def log(self, name: str) -> str:
        path = self.project.root / f"{name}.log"
        return path.read_text() if path.exists() else "(no log)"

    def close(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.workers.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                raise AssertionError(f"worker {name} did not stop on SIGTERM: {self.log(name)}") from None
        self.store.close()


@pytest.fixture
def cluster(project: Project, pg_dsn: str) -> Iterator[Cluster]:
    c = Cluster(project, pg_dsn)
    try:
        yield c
    finally:
        c.close()


def test_workers_on_three_hosts_share_the_queue_and_run_each_run_once(cluster: Cluster) -> None:
    for name in ("host-1", "host-2", "host-3"):
        cluster.start_worker(name)
    ids = [cluster.queue(n) for n in range(20)]
    cluster.wait_states(ids, RunState.SUCCEEDED)
    executed_by = {}
    for n in range(20):
        lines = cluster.lines(n)
        assert len(lines) == 1 and cluster.lines(n, "done") == ["done"], f"run {n} executed {lines}"
        executed_by[n] = lines[0].split()[1]  # the worker process (the step's parent)
    workers = {str(p.pid) for p in cluster.workers.values()}
    assert set(executed_by.values()) == workers, f"every worker took a share: {sorted(executed_by.values())} of {workers}"
    if cluster.separate_hosts:
        assert {cluster.lines(n)[0].split()[0] for n in range(20)} == {"host-1", "host-2", "host-3"}
    for proc in cluster.workers.values():
        proc.send_signal(signal.SIGTERM)
    assert all(proc.wait(timeout=30) == 0 for proc in cluster.workers.values())
    assert all("on store postgresql://rb@127.0.0.1:" in cluster.log(name) for name in cluster.workers)


def test_a_worker_killed_mid_step_is_recovered_by_another_with_nothing_run_twice(cluster: Cluster, project: Project) -> None:
    for name in ("host-1", "host-2"):
        cluster.start_worker(name, threads=1)
    slow = cluster.queue(0, hold=60)
    wait_for(lambda: bool(cluster.lines(0)), 60, "the slow step to start")
    host, worker_pid, step_pid = cluster.lines(0)[0].split()
    (victim,) = [name for name, p in cluster.workers.items() if str(p.pid) == worker_pid]
    cluster.workers[victim].kill()  # kill -9 mid-step: no checkpoint, no lease release
    cluster.workers[victim].wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(step_pid), signal.SIGKILL)  # the step's own process group outlives its worker
    quick = [cluster.queue(n) for n in range(1, 6)]
    cluster.wait_states([slow, *quick], RunState.SUCCEEDED)

    assert cluster.lines(0) == [f"{host} {worker_pid} {step_pid}"], "the interrupted step was not run again"
    assert cluster.lines(0, "done") == ["done"]
    assert all(len(cluster.lines(n)) == 1 for n in range(1, 6))
    status = project.run("status", slow, "--json")  # the CLI reads the same journal
    assert status.code == 0, status
    act = status.json()["steps"][0]
    assert act["state"] == "satisfied", act
    events = cluster.store.events(slow)
    drives = [e.data["executor"] for e in events if e.type in ("run.started", "run.resumed")]
    assert len(drives) == 2 and f"pid {worker_pid} on {host}" in drives[0] and f"pid {worker_pid} " not in drives[1], drives
    assert [e.data["decision"] for e in events if e.type == "step.recovered"] == ["check"]
    assert [e.type for e in events if e.step_id == "act"][-2:] == ["probe", "step.finished"]


def test_the_cli_runs_and_reads_runs_in_postgresql(cluster: Cluster, project: Project) -> None:
    res = project.run("run", "work", "-p", "n=7", "-p", f"out={cluster.out}", "-p", "hold=0", "--json")
    assert res.code == 0, res
    doc = res.json()
    assert doc["state"] == "succeeded" and [s["state"] for s in doc["steps"]] == ["succeeded", "succeeded"]
    assert cluster.store.get_run(doc["run_id"]).state == RunState.SUCCEEDED, "the run is in the PostgreSQL journal"
    listed = project.run("runs", "--json").json()["runs"]
    assert [r["run_id"] for r in listed] == [doc["run_id"]]
    assert not (project.root / ".runbook" / "journal.db").exists(), "no SQLite journal on the side"


def test_the_cli_never_shows_the_store_password(cluster: Cluster, project: Project) -> None:
    down = f"postgresql://rb:pw-s3cret@127.0.0.1:{free_port()}/x"
    res = project.run("runs", "--json", env={"RUNBOOK_STORE": down})
    assert res.code == 1 and "pw-s3cret" not in res.out + res.err and "rb:***@127.0.0.1" in res.err, res
    assert res.err.count("\n") == 1, "one clear line, no traceback"
    up = cluster.dsn.replace("rb@", "rb:pw-s3cret@")  # trust auth ignores it; the banner must not print it
    worker = subprocess.Popen(project.cmd("--store", up, "worker", "--workers", "1"), cwd=project.root, env=project.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    cluster.workers["with-password"] = worker  # stopped at teardown if the test fails first
    assert worker.stderr is not None
    banner = worker.stderr.readline()
    cluster.wait_states([cluster.queue(1, hold=0)], RunState.SUCCEEDED)  # it is working: its SIGTERM handler is set
    worker.send_signal(signal.SIGTERM)
    _, rest = worker.communicate(timeout=30)
    assert "on store postgresql://rb:***@127.0.0.1" in banner and "pw-s3cret" not in banner + rest, banner + rest
    assert worker.returncode == 0


def test_an_idle_worker_is_woken_by_a_run_queued_by_another_process(cluster: Cluster) -> None:
    """The worker polls only every 60 s; LISTEN/NOTIFY brings each queued run to it at once."""
    cluster.start_worker("host-1", threads=1, poll=60)
    first = cluster.queue(0, hold=0)  # picked up by the worker's first claim, whenever it starts
    cluster.wait_states([first], RunState.SUCCEEDED, timeout=60)
    for n in (1, 2):  # the worker is idle (or about to be) after each run: only a wake-up brings the next one in time
        run_id = cluster.queue(n, hold=0)
        cluster.wait_states([run_id], RunState.SUCCEEDED, timeout=30)
        assert cluster.lines(n, "done") == ["done"]


def _intake_rows(dsn: str) -> tuple[int, ...]:
    """How many runs, alert decisions, deliveries and finished deliveries the journal holds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM alert_decisions),"
                           " (SELECT count(*) FROM alert_deliveries), (SELECT count(*) FROM alert_deliveries WHERE state = 'done')").fetchone()  # fmt: skip
    assert row is not None
    return tuple(row)


def test_alert_intake_on_postgresql_commits_a_delivery_whole_or_not_at_all(cluster: Cluster, project: Project) -> None:
    """A delivery that fails half-way (fault injection: after its run and decision, before its ``done`` mark) leaves
    nothing in the PostgreSQL journal (``Store.batch``); the sender's retry starts the run once."""
    import importlib.util

    from tests.conftest import require
    from tests.server.alertkit import am_alert, am_body
    from tests.server.serverkit import start_server

    require(importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("uvicorn") is not None,
            "fastapi and uvicorn (pip install 'runbook[server]')")  # fmt: skip
    config = f"""
    routes:
      - name: work
        source: alertmanager
        match: {{alertname: Work}}
        runbook: work
        params: {{n: 1, out: "{cluster.out}", hold: 0}}
    """
    server = start_server(project, config, env={"RUNBOOK_TEST_FAIL_DELIVERIES": "1"})
    try:
        body, headers = am_body(am_alert({"alertname": "Work"})), {"content-type": "application/json"}
        failed = server.client(None).post("/v1/alerts/alertmanager", content=body, headers=headers)
        assert failed.status_code == 503, failed.text
        assert _intake_rows(cluster.dsn) == (0, 0, 0, 0), "the delivery, its decision and its run commit together, or none of them"
        ok = server.client(None).post("/v1/alerts/alertmanager", content=body, headers=headers)
        assert ok.status_code == 200 and [d["decision"] for d in ok.json()["decisions"]] == ["started"], ok.text
        run_id = ok.json()["decisions"][0]["run_id"]
        cluster.wait_states([run_id], RunState.SUCCEEDED)
        assert [r.id for r in cluster.store.list_runs()] == [run_id] and len(cluster.lines(1)) == 1
        assert _intake_rows(cluster.dsn) == (1, 1, 1, 1)
    finally:
        server.stop()
