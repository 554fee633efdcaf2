"""pytest plugin: a real SMTP server (aiosmtpd) on 127.0.0.1 that requires STARTTLS and a login.

Register it with ``pytest_plugins = [..., "harness.smtpserver"]``. The ``smtp_server`` fixture yields a
:class:`SMTPTestServer`: its certificate (to trust through ``ca_file``), the one user it accepts, and every
message it accepted, parsed. Messages and refused logins are recorded; ``wait_for(n)`` polls for ``n`` messages.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from harness.httpserver import make_tls_files
from harness.procs import free_port

__all__ = ["Received", "SMTPTestServer", "smtp_server"]

USER, PASSWORD = "runbook-mailer", "smtp-pass-0123456789"


@dataclass
class Received:
    """A message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    tls: bool
    login: str | None

    @property
    def body(self) -> str:
        """The plain-text body."""
        part = self.message.get_body(("plain",))
        return str(part.get_content()) if part is not None else ""


@dataclass
class SMTPTestServer:
    """The running server."""

    host: str
    port: int
    cert: Path
    user: str = USER
    password: str = PASSWORD
    received: list[Received] = field(default_factory=list)
    refused_logins: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def messages(self) -> list[Received]:
        """Messages accepted so far."""
        with self.lock:
            return list(self.received)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Poll until ``count`` messages arrived; ``AssertionError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} messages within {timeout}s, expected {count}")
            time.sleep(0.02)


class _Handler:
    def __init__(self, server: SMTPTestServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # aiosmtpd calls it by this name
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else session.auth_data
        with self.server.lock:
            self.server.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed,  # type: ignore[arg-type]
                                                 tls=session.ssl is not None, login=login))  # fmt: skip
        return "250 OK"


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SMTPTestServer]:
    """An SMTP server on 127.0.0.1 that requires STARTTLS, then a login (``USER``/``PASSWORD``), before mail."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = make_tls_files(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = SMTPTestServer("127.0.0.1", free_port(), cert)

    def authenticate(_smtp: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and data.login.decode() == server.user and data.password.decode() == server.password:
            return AuthResult(success=True, auth_data=data.login.decode())
        server.refused_logins.append(data.login.decode() if isinstance(data, LoginPassword) else mechanism)
        return AuthResult(success=False, handled=False)

    controller = Controller(_Handler(server), hostname=server.host, port=server.port, server_hostname="127.0.0.1", tls_context=tls,
                            require_starttls=True, auth_required=True, auth_require_tls=True, authenticator=authenticate)  # fmt: skip
    controller.start()
    try:
        yield server
    finally:
        controller.stop()
