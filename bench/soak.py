"""Endurance soak: random ``kill -9`` of executors, workers and servers on SQLite and PostgreSQL, ``kill -9`` of the
PostgreSQL server under load, SIGSTOP past lease expiry; then the journal and a ledger of side effects are audited.

    python bench/soak.py                          # 1000 kills (RUNBOOK_SOAK_KILLS), both stores, ~15-30 min
    python bench/soak.py --kills 40 --stores sqlite --out /tmp/soak.json

Prints a table of figures and writes them as JSON (``--out``). Exit 0 when every check holds (no completed step
run again, no checked step run twice, no acknowledged delivery lost, no run stuck ``running``, every run
terminal or resumable, no run failed), 1 when one fails, 2 when the soak could not run. See docs/durability.md ("The soak").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the harness that starts PostgreSQL clusters

from _soak_audit import audit  # noqa: E402
from _soak_chaos import Chaos, Plan  # noqa: E402
from _soak_parts import SoakProject  # noqa: E402

ZERO = ("reruns_of_completed_steps", "checked_steps_run_twice", "lost_deliveries", "stuck_runs", "not_terminal",
        "unfinished_steps_in_succeeded_runs", "actions_of_unknown_runs", "failed_runs")  # fmt: skip
"""Figures that must be 0 (the soak's runbook cannot fail: a failed run means a step was failed wrongly)."""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def soak_store(kind: str, url: str, root: Path, plan: Plan, rng: random.Random, ttl: float, pg: Any = None) -> dict[str, Any]:
    """Run the chaos on one store, drain, audit; the store's figures."""
    t0 = time.monotonic()
    project = SoakProject(root, url, ttl, port=_free_port())
    chaos = Chaos(project, rng, plan, prefix=kind[:2], pg=pg)
    sender = chaos.start()
    try:
        chaos.run()
        chaos_s = time.monotonic() - t0
        chaos.drain(sender)
    finally:
        sender.stop()
        final_codes = chaos.stop_all()
    result = audit(chaos.store(), project.ledger, sender.acked)
    chaos.store().close()
    acked = sender.acked
    return {
        "store": kind,
        "kills": dict(chaos.kills),
        "kills_total": chaos.killed,
        "sigstops": len(chaos.sigstops),
        "sigstops_taken_over": sum(1 for s in chaos.sigstops if s["taken_over"]),
        "sigstops_fenced": chaos.fenced(),
        "sigstops_froze_sqlite_journal": sum(1 for s in chaos.sigstops if s["froze_journal"]),
        "sigstop_detail": chaos.sigstops,
        "postgres_outages_s": chaos.pg_outages,
        "unplanned_exits": dict(chaos.exits),
        "driver_read_errors": dict(chaos.read_errors),
        "cli_exit_codes": {str(k): v for k, v in sorted(chaos.cli_codes.items())},
        "resumed_by_hand_at_end": dict(chaos.resumed_at_end),
        "log_problems": log_problems(root / "logs"),
        "final_exit_codes": final_codes,
        "deliveries_acked": sum(1 for s in acked if s.kind == "alert"),
        "api_runs_acked": sum(1 for s in acked if s.kind == "api"),
        "requests_retried": sum(1 for s in acked if s.attempts > 1),
        "requests_unacknowledged": len(sender.unacked),
        "sender_errors": dict(sender.errors),
        **result.figures(),
        "chaos_s": round(chaos_s, 1),
        "duration_s": round(time.monotonic() - t0, 1),
    }


def log_problems(logs: Path) -> dict[str, int]:
    """Distinct error lines the components wrote (internal errors, tracebacks), with how often each appeared.

    Run ids and ports are blanked so that one kind of error is one line."""
    import re

    found: dict[str, int] = {}
    for path in sorted(logs.glob("*.log")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if ("internal error" in line and not line.startswith("{")) or line.startswith("Traceback") or " ERROR " in line:
                key = re.sub(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", "RUN", re.sub(r":\d{4,5}\b", ":PORT", line.strip()))[:300]
                found[key] = found.get(key, 0) + 1
    return found


def _row(label: str, values: list[Any]) -> str:
    return f"{label:<52}" + "".join(f"{v!s:>14}" for v in values)


def render(report: dict[str, Any]) -> str:
    """The figures as a table, one column per store and a total."""
    stores = report["stores"]
    cols = [*stores, "total"]

    def vals(fn: Any, total: bool = True) -> list[Any]:
        xs = [fn(s) for s in stores.values()]
        return [*xs, round(sum(xs), 1) if total else ""]

    def k(kind: str) -> Any:
        return lambda s: s["kills"].get(kind, 0)

    lines = [f"soak: seed {report['seed']}, lease TTL {report['lease_ttl']} s, {report['duration_s']} s in all", _row("", cols)]
    rows: list[tuple[str, Any]] = [
        ("kill -9: CLI executors (run/resume)", k("cli")), ("kill -9: runbook worker", k("worker")),
        ("kill -9: runbook serve", k("serve")), ("kill -9: all of the above", lambda s: s["kills_total"]),
        ("kill -9: PostgreSQL server under load", k("postgres")),
        ("SIGSTOP past lease expiry", lambda s: s["sigstops"]),
        ("  ... run taken over by another executor", lambda s: s["sigstops_taken_over"]),
        ("  ... fenced after SIGCONT (logged: taken over)", lambda s: s["sigstops_fenced"]),
        ("  ... froze the SQLite journal (stopped in a commit)", lambda s: s["sigstops_froze_sqlite_journal"]),
        ("runs", lambda s: s["runs"]), ("  started by the CLI", lambda s: s["runs_by_origin"].get("cli", 0)),
        ("  started by alert deliveries", lambda s: s["runs_by_origin"].get("am", 0)),
        ("  queued over the API, run by workers", lambda s: s["runs_by_origin"].get("api", 0)),
        ("  succeeded", lambda s: s["runs_by_state"].get("succeeded", 0)),
        ("steps completed", lambda s: s["steps_completed"]), ("step actions run (ledger)", lambda s: s["step_actions"]),
        ("steps recovered after a kill", lambda s: sum(s["recoveries"].values())),
        ("deliveries acknowledged (2xx)", lambda s: s["deliveries_acked"] + s["api_runs_acked"]),
        ("  acknowledged only after a retry", lambda s: s["requests_retried"]),
        ("re-runs of completed steps", lambda s: s["reruns_of_completed_steps"]),
        ("checked steps whose action ran twice", lambda s: s["checked_steps_run_twice"]),
        ("lost deliveries", lambda s: s["lost_deliveries"]), ("stuck runs (running)", lambda s: s["stuck_runs"]),
        ("runs neither terminal nor resumed", lambda s: s["not_terminal"]), ("failed runs", lambda s: s["failed_runs"]),
        ("internal errors and tracebacks in the logs", lambda s: sum(s["log_problems"].values())),
        ("duration (s)", lambda s: s["duration_s"]),
    ]  # fmt: skip
    lines += [_row(label, vals(fn)) for label, fn in rows]
    lines.append("verdict: " + ("PASS" if report["passed"] else "FAIL: " + ", ".join(report["failures"])))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse options, soak each store, print and write the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=int(os.environ.get("RUNBOOK_SOAK_KILLS", "1000")),
                    help="kill -9s of executors, workers and servers in all, split between the stores (default 1000)")  # fmt: skip
    ap.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--sigstops", type=int, default=None, help="SIGSTOPs past lease expiry per store (default kills/100, at least 1)")
    ap.add_argument("--pg-kills", type=int, default=None, help="kill -9s of the PostgreSQL server (default kills/250, at least 1)")
    ap.add_argument("--lease-ttl", type=float, default=3.0, help="RUNBOOK_LEASE_TTL of every component (default 3 s)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("RUNBOOK_SOAK_SEED", "20261207")))
    ap.add_argument("--drain-timeout", type=float, default=300.0, help="seconds for the runs to finish after the last kill")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the projects and logs here (default: a temporary directory)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the components and the cluster on the way out
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or set(stores) - {"sqlite", "postgresql"}:
        ap.error("--stores takes sqlite and/or postgresql")
    per_store = max(1, args.kills // len(stores))
    sigstops = args.sigstops if args.sigstops is not None else max(1, args.kills // 100)
    pg_kills = args.pg_kills if args.pg_kills is not None else max(1, args.kills // 250)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rb-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    report: dict[str, Any] = {"seed": args.seed, "lease_ttl": args.lease_ttl, "kills_asked": args.kills, "stores": {}}
    t0 = time.monotonic()
    for kind in stores:
        plan = Plan(per_store, max(1, sigstops // len(stores)), pg_kills if kind == "postgresql" else 0, args.drain_timeout)
        if kind == "sqlite":
            root = work / "sqlite"
            report["stores"][kind] = soak_store(kind, f"sqlite:///{root}/journal.db", root, plan, rng, args.lease_ttl)
            continue
        from harness.postgres import pg_bin, start_postgres

        bin_dir = pg_bin()
        if bin_dir is None:
            print("soak: no PostgreSQL server binaries (apt-get install postgresql)", file=sys.stderr)
            return 2
        pg_dir = Path(tempfile.mkdtemp(prefix="rb-soak-pg-", dir="/tmp"))
        server = start_postgres(pg_dir, bin_dir)
        try:
            url = server.dsn(server.create_database())
            report["stores"][kind] = soak_store(kind, url, work / "postgresql", plan, rng, args.lease_ttl, pg=server)
        finally:
            server.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - t0, 1)
    failures = [f"{kind}: {key} = {fig[key]}" for kind, fig in report["stores"].items() for key in ZERO if fig[key]]
    failures += [
        f"{kind}: {fig['kills_total']} kills < {per_store}" for kind, fig in report["stores"].items() if fig["kills_total"] < per_store
    ]
    report["failures"], report["passed"] = failures, not failures
    print(render(report), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, sort_keys=True), encoding="utf-8")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
