"""Write N finished alert-started runs into a SQLite journal, fast (about 20 s per 100k runs here).

    python bench/gen_history.py --runs 1000000 --out /tmp/history-1m.db
    python bench/gen_history.py --runs 100000 --out .runbook/journal.db --runbook noop --route bench

The journal is created by :class:`runbook_sqlite.store.SQLiteStore` (so its schema, indexes and settings are
the store's own), then filled with plain SQL in transactions of 10 000 runs. Every run looks like one that
``runbook serve`` started from an Alertmanager delivery and finished: its ``runs`` row (90 % ``succeeded``,
7 % ``failed``, 3 % ``cancelled``, finished, no lease), its runbook snapshot, one step row, the five events such
a run writes (``run.created``, ``run.started``, ``step.started``, ``step.finished``, ``run.<state>``), the
delivery and the ``started`` decision. Runs are spread evenly over ``--days`` days ending ``--age`` ago
(default: 30 days ending a day ago), with ULIDs of those times, so they sort and age like real ones.

Nothing here is a shortcut the server could take: it is only how the benchmark gets a big history quickly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["generate", "main"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BATCH = 10_000


def _ulid(ms: int, rnd: bytes) -> str:
    value = (ms << 80) | int.from_bytes(rnd, "big")
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _rows(i: int, ts: float, runbook: str, route: str, spec: str, hashes: str, prefix: str) -> Iterator[tuple[str, tuple[Any, ...]]]:
    run_id = _ulid(int(ts * 1000), os.urandom(10))
    state = "succeeded" if i % 100 < 90 else ("failed" if i % 100 < 97 else "cancelled")
    host = f"{prefix}-{i}:9100"
    fp = hashlib.sha256(f"{prefix}-{i}".encode()).hexdigest()[:16]
    labels = {"alertname": "BenchAlert", "instance": host, "job": "node", "severity": "critical"}
    alert = {"source": "alertmanager", "status": "firing", "labels": labels, "annotations": {"summary": f"bench alert {i}"},
             "fingerprint": fp, "starts_at": "2026-11-01T00:00:00Z", "ends_at": None}  # fmt: skip
    delivery = f"alertmanager:sha256:{hashlib.sha256(f'{prefix}-delivery-{i}'.encode()).hexdigest()[:40]}"
    key = f"alert:{route}:{hashlib.sha256(f'{prefix}-key-{i}'.encode()).hexdigest()[:32]}"
    trigger = {"source": "alertmanager", "alert": alert, "route": route, "delivery": delivery}
    t1, t2, t3 = ts + 0.004, ts + 0.005, ts + 0.007
    reason = {"succeeded": "", "failed": "step act failed: exit 1", "cancelled": "cancelled by alert resolution"}[state]
    yield "runs", (run_id, runbook, state, reason, _dumps({"host": host}), f"alert:alertmanager/{route}", _dumps(trigger), ts, t3, t3,
                   "c0ffee", f"runbooks/{runbook}.yaml", None, key, None, None, None, None, None, 2, 0, 0, None, "{}")  # fmt: skip
    yield "run_specs", (run_id, hashes, spec)
    step_state = "succeeded" if state == "succeeded" else ("failed" if state == "failed" else "pending")
    output = _dumps({"exit_code": 0 if state == "succeeded" else 1, "stdout": "", "stderr": ""})
    yield "steps", (run_id, "act", 0, step_state, 1, output, reason, t1, t2, None, "{}")
    actor = f"alert:alertmanager/{route}"
    for seq, (typ, step, t, data) in enumerate(
        [("run.created", None, ts, {"runbook": runbook, "params": {"host": host}, "content_hash": "c0ffee", "lock": None,
                                    "trigger": "alertmanager", "parent": None}),
         ("run.started", None, t1, {"executor": "worker-1 pid 1 on bench", "budget": None, "max_steps": None}),
         ("step.started", "act", t1, {"type": "shell"}),
         ("step.finished", "act", t2, {"state": step_state, "output": json.loads(output)}),
         (f"run.{state}", None, t3, {"reason": reason})], start=1):  # fmt: skip
        yield "events", (run_id, seq, t, typ, step, 1 if step else None, actor, _dumps(data))
    yield "alert_deliveries", (delivery, "alertmanager", hashlib.sha256(delivery.encode()).hexdigest(), ts, ts + 0.003, "done", 1,
                               _dumps({"delivery_id": delivery, "alerts": 1, "decisions": [{"decision": "started", "run_id": run_id}]}))  # fmt: skip
    yield "alert_decisions", (ts + 0.002, delivery, 0, "alertmanager", "started", route, fp, "firing", f"alertmanager:{fp}", run_id,
                              f"started run {run_id}", _dumps(alert))  # fmt: skip


_INSERT = {
    "runs": "INSERT INTO runs (id, runbook, state, reason, params, started_by, trigger, created_at, updated_at, finished_at,"
    " content_hash, file, cursor, idempotency_key, lock_key, parent_run_id, parent_step_id, holder, lease_expires_at, fence,"
    " pause_requested, cancel_requested, wake_at, options) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "run_specs": "INSERT INTO run_specs (run_id, step_hashes, spec) VALUES (?,?,?)",
    "steps": "INSERT INTO steps (run_id, step_id, idx, state, attempts, output, reason, started_at, finished_at, not_before, data)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    "events": "INSERT INTO events (run_id, seq, ts, type, step_id, attempt, actor, data) VALUES (?,?,?,?,?,?,?,?)",
    "alert_deliveries": "INSERT INTO alert_deliveries (id, source, body_sha256, received_at, finished_at, state, seen, result)"
    " VALUES (?,?,?,?,?,?,?,?)",
    "alert_decisions": "INSERT INTO alert_decisions (ts, delivery_id, idx, source, decision, route, fingerprint, status, dedupe_key,"
    " run_id, reason, alert) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
}


def generate(
    path: Path, runs: int, *, runbook: str = "noop", route: str = "bench", days: float = 30.0, age: float = 86400.0, prefix: str = "hist"
) -> float:
    """Append ``runs`` finished runs to the journal at ``path`` (created if missing); returns the seconds it took."""
    from runbook_sqlite.store import SQLiteStore

    t0 = time.monotonic()
    store = SQLiteStore(f"sqlite:///{path}")
    store.begin_delivery("bench:init", "bench", "-")  # creates the alert tables the way the server does
    with store._tx() as c:
        c.execute("DELETE FROM alert_deliveries WHERE id='bench:init'")
    store.close()
    spec = _dumps({"name": runbook, "params": {"host": {"type": "string"}}, "steps": [{"id": "act", "action": {"type": "shell",
                   "config": {"command": ["true"]}}}]})  # fmt: skip
    hashes = _dumps({"act": "5e1f"})
    end = time.time() - age
    start = end - days * 86400
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    for first in range(0, runs, _BATCH):
        batch: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _INSERT}
        for i in range(first, min(runs, first + _BATCH)):
            for table, row in _rows(i, start + (end - start) * i / max(1, runs), runbook, route, spec, hashes, prefix):
                batch[table].append(row)
        conn.execute("BEGIN")
        for table, rows in batch.items():
            conn.executemany(_INSERT[table], rows)
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - t0


def main(argv: list[str]) -> int:
    """Generate the history and print what was written."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True, help="journal file (created, or appended to)")
    ap.add_argument("--runbook", default="noop")
    ap.add_argument("--route", default="bench")
    ap.add_argument("--days", type=float, default=30.0, help="the runs are spread over this many days")
    ap.add_argument("--age", type=float, default=86400.0, help="seconds between the newest generated run and now")
    ap.add_argument("--prefix", default="hist", help="makes these runs' alerts and deliveries distinct from another batch's")
    args = ap.parse_args(argv)
    seconds = generate(args.out, args.runs, runbook=args.runbook, route=args.route, days=args.days, age=args.age, prefix=args.prefix)
    size = args.out.stat().st_size
    print(json.dumps({"runs": args.runs, "file": str(args.out), "bytes": size, "seconds": round(seconds, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
