"""The benchmark itself works: it runs each system for real, checks every run did its N steps, and reports.

No timing is asserted here (speed targets live in ``bench/``, judged by the benchmark's own run); these tests
fail when the benchmark could no longer measure, or would count a run that did not do its work.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

from _measure import Sample  # noqa: E402
from _systems import System, available_systems, clean_env  # noqa: E402


def _sample(stdout: str = "", code: int = 0) -> Sample:
    return Sample(wall_ms=1.0, cpu_ms=1.0, maxrss_mib=1.0, code=code, stdout=stdout, stderr="", timed_out=False, delay=0.0)


def test_small_run_measures_raw_and_runbook_and_reports_every_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in clean_env().items() if k != "RUNBOOK_BENCH_PEERS_BIN"}
    res = subprocess.run(
        [sys.executable, str(BENCH / "run_bench.py"), "--systems", "raw,runbook", "--ns", "1,3", "--reps", "1",
         "--patience", "5", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # 0: targets pass, 1: a target fails or needs N=100 (not run here); 2 would mean a run did not do its steps
    assert res.returncode in (0, 1), res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["config"]["systems"] == ["raw", "runbook"]
    for system in ("raw", "runbook"):
        per_n = report["results"][system]["per_n"]
        assert set(per_n) == {"1", "3"}
        for n, summary in per_n.items():
            assert summary["samples"] >= 1 and summary["median_ms"] > 0, (system, n, summary)
        assert all(s["code"] == 0 and not s["timed_out"] for samples in report["samples"][system].values() for s in samples)
        assert report["results"][system]["peak_rss_mib"] > 5
    assert [t["name"] for t in report["targets"]] == ["per-step overhead", "100-step run, whole process", "peak memory"]
    assert "x floor slope" in res.stdout and "runbook" in res.stdout


def _system(name: str, tmp_path: Path) -> System:
    systems, _notes = available_systems([name], [], tmp_path)
    assert [s.name for s in systems] == [name]
    return systems[0]


def test_runbook_check_refuses_a_run_that_did_not_do_its_steps(tmp_path: Path) -> None:
    system = _system("runbook", tmp_path / "scratch")
    work = tmp_path / "w"
    work.mkdir()
    argv = system.prepare(work, 3)
    done = subprocess.run(argv, cwd=work, env=system.env, capture_output=True, text=True, timeout=120)
    sample = _sample(done.stdout, done.returncode)
    assert system.verify(sample, work, 3) is None, done.stderr[-2000:]
    # the same output judged against more steps than ran, a failed exit, and a journal that disagrees
    assert "3/4 steps succeeded" in (system.verify(sample, work, 4) or "")
    assert system.verify(_sample(done.stdout, 1), work, 3) is not None
    with sqlite3.connect(work / ".runbook" / "journal.db") as conn:
        conn.execute("UPDATE steps SET state='failed' WHERE step_id='s1'")
    assert "journal" in (system.verify(sample, work, 3) or "")


def test_raw_floor_check_counts_committed_rows(tmp_path: Path) -> None:
    system = _system("raw", tmp_path / "scratch")
    argv = system.prepare(tmp_path, 2)
    done = subprocess.run(argv, cwd=tmp_path, env=system.env, capture_output=True, text=True, timeout=60)
    assert system.verify(_sample(done.stdout, done.returncode), tmp_path, 2) is None, done.stderr
    assert system.verify(_sample(done.stdout, done.returncode), tmp_path, 3) is not None


@pytest.mark.parametrize("peer", ["pyinfra", "ansible"])
def test_a_missing_peer_is_skipped_with_a_note(peer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import _systems

    monkeypatch.setattr(_systems, "find_peer", lambda *_: None)
    systems, notes = available_systems([peer], [], tmp_path)
    assert systems == [] and len(notes) == 1 and peer in notes[0] and "skipped" in notes[0]


def test_mcp_wakeup_bench_measures_both_transports(tmp_path: Path) -> None:
    """bench/mcp_wakeup.py runs a real server and real stdio processes and reports both (no timing asserted)."""
    import importlib.util

    from tests.conftest import require

    require(importlib.util.find_spec("mcp") is not None and importlib.util.find_spec("fastapi") is not None, "the agent and server extras")
    out = tmp_path / "mcp.json"
    res = subprocess.run([sys.executable, str(BENCH / "mcp_wakeup.py"), "--wakeups", "2", "--target-ms", "1e9", "--out", str(out)],
                         cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["http"]["n"] == report["stdio"]["n"] == 2 and report["http_p95_within_target"] is True


@pytest.mark.timeout(900)  # some thirty whole runs, workers and a PostgreSQL server: minutes on a loaded machine
def test_store_benchmark_runs_both_stores_side_by_side(tmp_path: Path, pg_dsn: str) -> None:
    """bench/store_bench.py on a tiny workload: every part measured on both stores, the targets judged."""
    out = tmp_path / "store.json"
    res = subprocess.run(
        [sys.executable, str(BENCH / "store_bench.py"), "--pg", pg_dsn, "--reps", "1", "--ns", "2,4", "--runs", "6",
         "--steps", "2", "--processes", "1,2", "--scaling-ns", "2,5", "--patience", "0", "--out", str(out)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stdout[-2000:] + res.stderr[-2000:]
    doc = json.loads(out.read_text())
    steps, workers = doc["parts"]["steps"], doc["parts"]["workers"]
    assert {"sqlite", "postgresql"} <= set(steps) and isinstance(steps["ratio"], float)  # one noisy sample: any sign
    assert all(doc["parts"]["queue"][k]["median_ms"] > 0 for k in ("sqlite", "postgresql"))
    for kind in ("sqlite", "postgresql"):
        assert set(workers[kind]["by_processes"]) == {"1", "2"} and all(r["runs_per_s"] > 0 for r in workers[kind]["by_processes"].values())
    assert "PostgreSQL per-step cost" in res.stdout and "2 PostgreSQL worker processes against 1" in res.stdout
    assert set(doc["parts"]["scaling"]["postgresql"]["ms_per_step_between"]) == {"2-5"}
    schemas = subprocess.run([sys.executable, "-c", "import psycopg,sys; print(psycopg.connect(sys.argv[1]).execute("
                              "\"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'bench_%'\").fetchone()[0])", pg_dsn],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert schemas.stdout.strip() == "0", "every journal the benchmark made is dropped"


def test_catalog_benchmark_measures_every_project(tmp_path: Path) -> None:
    out = tmp_path / "catalog.json"
    res = subprocess.run(
        [sys.executable, str(BENCH / "catalog_bench.py"), "--reps", "1", "--big-steps", "50", "--others", "5",
         "--patience", "0", "--out", str(out)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode in (0, 1), res.stdout[-2000:] + res.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert set(rows) == {"alone", "big", "many", "both"} and rows["alone"]["ratio"] == 1.0
    assert all(r["median_ms"] > 0 for r in rows.values())


def test_memory_benchmark_measures_each_n_through_its_launcher(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    res = subprocess.run(
        [sys.executable, str(BENCH / "memory_bench.py"), "--ns", "2,4", "--reps", "1", "--out", str(out)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]  # no N=5000: no verdict, exit 0
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"2", "4"}
    for row in doc["results"].values():
        # a run's own peak (the launcher's fork starts far below it), and its cold (compiling) run's
        assert row["rss_mib"] > 2 * row["launcher_floor_mib"] and row["cold_rss_mib"] > 5, row
        assert row["median_ms"] > 0 and len(row["samples"]) == 1
    assert "peak MiB" in res.stdout and "no verdict" in res.stdout
