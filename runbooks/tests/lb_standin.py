"""A stand-in for the load balancer API drain-node talks to, for recording its exchanges (``--record-http``).

A pool's node is ``active`` until ``POST .../drain`` (then ``drained``, with no connections) and again after
``POST .../undrain`` (``healthy``). Requests without the bearer token are refused, as the real API would.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@contextmanager
def lb_standin(token: str) -> Iterator[str]:
    """Serve the stand-in on 127.0.0.1; yields its base URL."""
    nodes: dict[str, dict[str, Any]] = {}

    class Handler(BaseHTTPRequestHandler):
        def _node(self) -> dict[str, Any]:
            parts = self.path.strip("/").split("/")  # pools/POOL/nodes/NODE[/drain|/undrain]
            return nodes.setdefault("/".join(parts[:4]), {"state": "active", "active_connections": 12, "healthy": True})

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                return self._answer(401, {"error": "unauthorized"})
            return self._answer(200, self._node())

        def do_POST(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                return self._answer(401, {"error": "unauthorized"})
            node = self._node()
            if self.path.endswith("/drain"):
                node.update(state="drained", active_connections=0)
            elif self.path.endswith("/undrain"):
                node.update(state="active", healthy=True)
            return self._answer(200, {"ok": True, "state": node["state"]})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
