"""Open-loop benchmark of ``runbook serve`` against a floor server, at several offered rates and history sizes.

    python bench/server_bench.py                                   # rates 50..1000/s, history 0 / 100k / 1M runs
    python bench/server_bench.py --rates 100,300,500 --histories 0,1000000 --duration 10
    python bench/server_bench.py --systems runbook --rates 100 --histories 1000000 --idle 20

For each history size (finished runs already in the journal, written by ``bench/gen_history.py`` and cached in
``--cache``) and each offered rate, a fresh server is started (its journal a copy of the history), left idle
for ``--idle`` seconds (its CPU then is the idle figure), then sent Alertmanager deliveries of one distinct
firing alert each at the offered rate for ``--duration`` seconds by ``bench/_loadgen.py`` in its own
process. Each delivery routes to a one-step runbook (``shell: ["true"]``). After the load the benchmark waits
until every accepted delivery's run has finished (or ``--drain`` seconds), then reads the journal.

The floor (``bench/floor_server.py``) runs on the same ASGI stack and commits one row per delivery, then spawns
``true`` on a worker thread: what any durable webhook-to-process server must do. It is measured at every rate
in the same run, with the same worker count.

Reported per point: accepted/s (200 answers over the sending window), executed/s (runs finished per second,
first scheduled delivery to last first step), ack and delivery → first-step p50/p99 from each delivery's
*scheduled* time, server CPU per delivery (its threads and its reaped ``true`` children, from sending to the
last run finished), the server's CPU share while loaded, and how long its threads waited for a CPU
(``run_delay``: the machine's contention), and ``grp``: journal writes per SQLite transaction of the serve
process (group commit, from its ``/metrics``). Results go to ``bench/results/server-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import FLOOR, TOKEN, Server, cpu_seconds, run_delay, start

BENCH = Path(__file__).resolve().parent


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def _history(cache: Path, runs: int) -> Path | None:
    if runs == 0:
        return None
    path = cache / f"history-{runs}.db"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"generating {runs} finished runs into {path} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(BENCH / "gen_history.py"), "--runs", str(runs), "--out", f"{path}.tmp"], check=True)
        os.replace(f"{path}.tmp", path)
    return path


def _cpu(server: Server) -> float:
    return sum(cpu_seconds(pid) for pid in server.pids)


def _delay(server: Server) -> float:
    return sum(run_delay(pid) for pid in server.pids)


def _idle(server: Server, seconds: float) -> dict[str, float]:
    time.sleep(2.0)  # start-up settles
    c0, t0 = _cpu(server), time.monotonic()
    time.sleep(seconds)
    used, wall = _cpu(server) - c0, time.monotonic() - t0
    return {"seconds": round(wall, 1), "cpu_s": round(used, 3), "core_percent": round(100 * used / wall, 2)}


def _grouping(server: Server) -> float | None:
    """Journal writes per transaction of the serve process (group commit: ``/metrics``); None for the floor."""
    if server.system == FLOOR:
        return None
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as r:
        text = r.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("runbook_journal_"))
    commits = float(values.get("runbook_journal_group_commits_total", 0))
    return round(float(values.get("runbook_journal_grouped_writes_total", 0)) / commits, 2) if commits else None


def _load(server: Server, rate: float, duration: float, drain: float, tag: str) -> dict[str, Any]:
    out = server.root / f"load-{rate:g}.json"
    c0, d0, t0 = _cpu(server), _delay(server), time.monotonic()
    load0 = os.getloadavg()[0]
    subprocess.run([sys.executable, str(BENCH / "_loadgen.py"), "--url", server.intake, "--token", TOKEN, "--rate", str(rate),
                    "--duration", str(duration), "--prefix", tag, "--out", str(out), "--drain", str(drain)], check=True)  # fmt: skip
    rec = json.loads(out.read_text())
    c_sent = _cpu(server)
    sent_wall = time.monotonic() - t0
    ids = [r for r in rec["run_id"] if r]
    end = time.monotonic() + drain
    while server.finished(ids) < len(ids) and time.monotonic() < end:
        time.sleep(0.25)
    cpu = _cpu(server) - c0
    delay = _delay(server) - d0
    wall = time.monotonic() - t0
    firsts = server.first_steps(ids)
    by_id = {rid: s for rid, s in zip(rec["run_id"], rec["sched"], strict=True) if rid}
    acked = [(a - s) * 1000 for a, s, st in zip(rec["ack"], rec["sched"], rec["status"], strict=True) if a is not None and st == 200]
    first = [(firsts[rid] - by_id[rid]) * 1000 for rid in ids if rid in firsts]
    accepted = len(ids)
    window = max(duration, max((a for a in rec["ack"] if a is not None), default=0) - rec["sched"][0]) if rec["sched"] else duration
    exec_window = (max(firsts.values()) - rec["sched"][0]) if firsts else None
    return {
        "offered_per_s": rate, "sent": rec["n"], "accepted": accepted, "errors": rec["error_count"], "error_sample": rec["errors"][:3],
        "accepted_per_s": round(accepted / window, 1), "executed": len(first),
        "executed_per_s": round(len(first) / exec_window, 1) if exec_window else None,
        "ack_ms": {"p50": _r(_pct(acked, 50)), "p99": _r(_pct(acked, 99)), "max": _r(max(acked, default=None))},
        "first_step_ms": {"p50": _r(_pct(first, 50)), "p99": _r(_pct(first, 99)), "max": _r(max(first, default=None))},
        "cpu_ms_per_delivery": round(1000 * cpu / accepted, 2) if accepted else None,
        "server_core_percent_loaded": round(100 * (c_sent - c0) / sent_wall, 1), "server_run_delay_percent": round(100 * delay / wall, 1),
        "client_cpu_s": rec["client_cpu_s"], "connections": rec["connections"], "loadavg_before": round(load0, 2),
        "writes_per_commit": _grouping(server),
        "loadavg_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _row(system: str, history: int, idle: dict[str, float] | None, point: dict[str, Any]) -> str:
    a, f = point["ack_ms"], point["first_step_ms"]
    idle_s = f"{idle['core_percent']:.2f}%" if idle else "-"
    return (f"{system:<10} {history:>8} {point['offered_per_s']:>6g} {point['accepted_per_s']:>8} {point['executed_per_s'] or '-':>8} "
            f"{a['p50'] or '-':>8} {a['p99'] or '-':>8} {f['p50'] or '-':>9} {f['p99'] or '-':>9} {point['cpu_ms_per_delivery'] or '-':>8} "
            f"{point['server_core_percent_loaded']:>7} {point['server_run_delay_percent']:>6} {idle_s:>7} {point['errors']:>5} "
            f"{point['writes_per_commit'] or '-':>5}")  # fmt: skip


HEADER = (f"{'system':<10} {'history':>8} {'offer':>6} {'acc/s':>8} {'exec/s':>8} {'ack p50':>8} {'ack p99':>8} {'1st p50':>9} "
          f"{'1st p99':>9} {'cpu ms':>8} {'core%':>7} {'wait%':>6} {'idle':>7} {'errs':>5} {'grp':>5}")  # fmt: skip


def main(argv: list[str]) -> int:
    """Run the matrix and print the table; the JSON goes to bench/results/."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--systems",
        default="floor,runbook,runbook-2p",
        help="floor, runbook (serve with worker threads) and runbook-2p (serve --workers 0 beside one runbook worker process)",
    )
    ap.add_argument("--rates", default="50,100,200,300,500,750,1000")
    ap.add_argument("--histories", default="0,100000,1000000", help="finished runs in the journal before the load")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per point")
    ap.add_argument("--workers", type=int, default=4, help="worker threads of both servers")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured before the first load of each server")
    ap.add_argument("--drain", type=float, default=180.0)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "runbook-bench-history")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    systems = args.systems.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    histories = [int(h) for h in args.histories.split(",")]
    report: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
                              "workers": args.workers, "duration_s": args.duration, "points": []}  # fmt: skip
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=BENCH, capture_output=True, text=True).stdout.strip()
    report["revision"] = rev
    print(HEADER, flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="rb-server-bench."))
    try:
        for history in histories:
            path = _history(args.cache, history)
            for system in systems:
                if system == FLOOR and history != histories[0]:
                    continue  # the floor keeps no history: measured once per rate
                for n, rate in enumerate(rates):
                    root = scratch / f"{system}-{history}-{rate:g}"
                    server = start(system, root, workers=args.workers, history=path if system != FLOOR else None)
                    try:
                        idle = _idle(server, args.idle) if n == 0 and args.idle > 0 else None
                        point = _load(server, rate, args.duration, args.drain, f"{system}-{history}-{rate:g}-{time.time_ns()}")
                    finally:
                        server.stop()
                    point.update(system=system, history=history, idle=idle)
                    report["points"].append(point)
                    print(_row(system, history, idle, point), flush=True)
                    shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    out = args.out or BENCH / "results" / f"server-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\n{out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
