"""A real HTTP server on 127.0.0.1 for tests: ``http.server.ThreadingHTTPServer`` in a thread.

Routes answer with canned :class:`Reply` objects (a list is served in order, its last reply repeating),
or with a function of the recorded request. Replies can be delayed, redirect, or stream a large body
of filler bytes without building it in memory. Every request is recorded.

Register the fixtures with ``pytest_plugins = ["harness.httpserver"]`` in ``tests/conftest.py``::

    def test_x(http_server):
        http_server.route("/health", Reply(503), Reply(200, json={"ok": True}))
        url = http_server.url("/health")

``/echo`` is built in: it answers 200 with a JSON document describing the request
(method, path, query, headers, body).

PYTEST_DONT_REWRITE: test modules import the classes before pytest registers this module as a
plugin; it has no ``assert`` statements to rewrite.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

__all__ = ["HTTPTestServer", "Recorded", "Reply", "http_server", "https_server", "make_tls_files", "other_http_server"]

_UNSET: Any = object()
_FILL = b"x" * 65536


@dataclass
class Reply:
    """One canned response.

    :param status: HTTP status code.
    :param body: response body (``str`` is sent as UTF-8).
    :param json: a JSON value sent with ``Content-Type: application/json`` (instead of ``body``).
    :param headers: extra response headers.
    :param delay: seconds to wait before sending anything (the wait ends early when the server stops).
    :param size: stream this many bytes of filler instead of ``body`` (never held in memory at once).
    :param redirect: send ``Location: <redirect>`` (use with a 3xx ``status``).
    """

    status: int = 200
    body: bytes | str = b""
    json: Any = _UNSET
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    size: int | None = None
    redirect: str | None = None


@dataclass
class Recorded:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return jsonlib.loads(self.body)

    def describe(self) -> dict[str, Any]:
        """The JSON document ``/echo`` answers with."""
        return {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers, "body": self.text()}


Handler = Callable[[Recorded], Reply]


class HTTPTestServer:
    """The running server: add routes, read what it received, stop it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._routes: dict[str, list[Reply] | Handler] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests: list[Recorded] = []
        self.bytes_sent: dict[str, int] = {}  # path → body bytes written, for streamed replies
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                        name=f"http-test-server-{self.port}")  # fmt: skip
        self._thread.start()

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL of ``path`` on this server."""
        return self.base + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, *replies: Reply | Handler) -> None:
        """Answer ``path`` with ``replies`` in order (the last one repeats), or with a handler function."""
        if len(replies) == 1 and callable(replies[0]) and not isinstance(replies[0], Reply):
            entry: list[Reply] | Handler = replies[0]
        else:
            if not replies or not all(isinstance(r, Reply) for r in replies):
                raise TypeError("route() takes Reply objects or one handler function")
            entry = [r for r in replies if isinstance(r, Reply)]
        with self._lock:
            self._routes[path] = entry

    def redirect(self, path: str, to: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect to ``to`` (a path on this server or an absolute URL)."""
        self.route(path, Reply(status, redirect=to if "://" in to else self.url(to)))

    def requests_to(self, path: str) -> list[Recorded]:
        """Requests received for ``path`` so far."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Recorded]:
        """Poll until ``count`` requests for ``path`` arrived; raise ``AssertionError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.requests_to(path)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} requests to {path} within {timeout}s, expected {count}")
            time.sleep(0.02)

    def close(self) -> None:
        """Stop serving, wake delayed replies and close the listening socket."""
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ used by the handler

    def _record(self, req: Recorded) -> Reply:
        with self._lock:
            self.requests.append(req)
            entry = self._routes.get(req.path)
            if isinstance(entry, list):
                reply = entry.pop(0) if len(entry) > 1 else entry[0]
                return reply
        if entry is not None:
            return entry(req)
        if req.path == "/echo":
            return Reply(200, json=req.describe())
        return Reply(404, body=f"no route for {req.path}\n")

    def _count(self, path: str, n: int) -> None:
        with self._lock:
            self.bytes_sent[path] = self.bytes_sent.get(path, 0) + n


def _make_handler(server: HTTPTestServer) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest output stays readable
            return None

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Recorded(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                           {k.lower(): v for k, v in self.headers.items()}, body, time.time())  # fmt: skip
            reply = server._record(req)
            if reply.delay and server._stopping.wait(reply.delay):
                return
            try:
                self._send(reply, parts.path)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):  # the client stopped reading: expected
                self.close_connection = True

        def _send(self, reply: Reply, path: str) -> None:
            payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
            kind = "text/plain; charset=utf-8"
            if reply.json is not _UNSET:
                payload, kind = jsonlib.dumps(reply.json).encode(), "application/json"
            self.send_response(reply.status)
            headers = {"Content-Type": kind, "Content-Length": str(reply.size if reply.size is not None else len(payload))}
            if reply.redirect is not None:
                headers["Location"] = reply.redirect
            headers.update(reply.headers)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            if reply.size is None:
                self.wfile.write(payload)
                return
            left = reply.size
            while left > 0 and not server._stopping.is_set():
                chunk = _FILL[: min(left, len(_FILL))]
                self.wfile.write(chunk)
                server._count(path, len(chunk))
                left -= len(chunk)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return _Handler


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (an IP SAN) and its key: (cert.pem, key.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "runbook test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def http_server() -> Iterator[HTTPTestServer]:
    """A fresh HTTP server on 127.0.0.1 (random port), stopped after the test."""
    server = HTTPTestServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def other_http_server() -> Iterator[HTTPTestServer]:
    """A second HTTP server (another port, so another origin), for redirects that leave the origin."""
    server = HTTPTestServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[HTTPTestServer, Path]]:
    """An HTTPS server with a fresh self-signed certificate: (server, path of the certificate to trust)."""
    cert, key = make_tls_files(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = HTTPTestServer(tls)
    try:
        yield server, cert
    finally:
        with contextlib.suppress(OSError):
            server.close()
