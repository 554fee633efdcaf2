"""The floor server of ``bench/server_bench.py``: the least a durable alert webhook that runs ``true`` must do.

The same ASGI stack as ``runbook serve`` (FastAPI on uvicorn, the handler's store work in Starlette's thread
pool): check the bearer token, parse the JSON body, commit one SQLite row for the delivery (WAL,
``synchronous=NORMAL``, as runbook's journal), answer 200; ``--workers`` threads take the deliveries from an
in-memory queue and spawn ``true`` each. No routing, no runs, no journal of steps. When each spawn started is
kept in memory and served at ``GET /starts`` for the benchmark::

    python bench/floor_server.py --listen 127.0.0.1:8081 --db /tmp/floor.db --workers 4 --token T
"""

from __future__ import annotations

import argparse
import hmac
import itertools
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

__all__ = ["main"]


def _app(db: str, token: str, workers: int) -> Any:
    local = threading.local()
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    starts: dict[str, float] = {}
    ids = itertools.count(1)
    expected = f"Bearer {token}".encode()

    def conn() -> sqlite3.Connection:
        c = getattr(local, "c", None)
        if c is None:
            c = local.c = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
        return c

    conn().execute("CREATE TABLE IF NOT EXISTS deliveries (id TEXT PRIMARY KEY, received_at REAL, body TEXT)")

    def commit(run_id: str, raw: bytes) -> None:
        conn().execute("INSERT INTO deliveries VALUES (?,?,?)", (run_id, time.time(), raw.decode()))

    def worker() -> None:
        while True:
            run_id = work.get()
            starts[run_id] = time.time()
            subprocess.run(["true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    for _ in range(workers):
        threading.Thread(target=worker, daemon=True).start()
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/starts")
    def get_starts() -> dict[str, float]:
        return dict(starts)

    @app.post("/v1/alerts/alertmanager")
    async def receive(request: Request) -> JSONResponse:
        raw = await request.body()
        if not hmac.compare_digest(request.headers.get("authorization", "").encode(), expected):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        body = json.loads(raw)
        run_id = f"floor-{next(ids)}-{len(body['alerts'])}"
        await run_in_threadpool(commit, run_id, raw)
        work.put(run_id)
        return JSONResponse({"run_id": run_id})

    return app


def main(argv: list[str]) -> int:
    """Serve until SIGTERM."""
    import uvicorn

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:8081")
    ap.add_argument("--db", required=True)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--token", default=os.environ.get("BENCH_TOKEN", ""))
    args = ap.parse_args(argv)
    host, port = args.listen.rsplit(":", 1)
    # uvicorn binds the socket itself here (asyncio sets TCP_NODELAY on the connections it accepts)
    uvicorn.run(_app(args.db, args.token, args.workers), host=host, port=int(port), log_level="warning", access_log=False,
                lifespan="off", server_header=False, proxy_headers=False)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
