"""The raw floor: the least a durable runner of ``true`` steps can do in Python.

A plain loop: spawn ``true``, then commit one row saying it succeeded, N times.
The journal is SQLite in WAL mode with ``synchronous=NORMAL``, the durability
the runbook SQLite store uses by default (a committed step survives a killed
process; ``synchronous=FULL`` would also survive power loss at ~0.3 ms more per
commit, for both). No framework, no validation, no events: anything ``runbook
run`` spends beyond this is overhead.

Usage: ``python raw_floor.py N JOURNAL.db`` prints ``steps=N`` on success.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    """Run N ``true`` steps, committing each outcome; exit 1 on the first failure."""
    n, path = int(argv[0]), argv[1]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS steps (idx INTEGER PRIMARY KEY, exit_code INTEGER NOT NULL, ts REAL NOT NULL)")
    for idx in range(n):
        code = subprocess.run(["true"], check=False).returncode
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO steps (idx, exit_code, ts) VALUES (?, ?, ?)", (idx, code, time.time()))
        conn.execute("COMMIT")
        if code != 0:
            print(f"step {idx}: true exited {code}", file=sys.stderr)
            return 1
    done = conn.execute("SELECT COUNT(*) FROM steps WHERE exit_code = 0").fetchone()[0]
    conn.close()
    print(f"steps={done}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
