"""Test kit for the web console in process: the real app (``create_app``) over a real SQLite journal, driven by httpx.

No worker pool: a test drives runs itself with the server's own engine (``drive``), so what a page shows is
known exactly. Clients send ``Host: 127.0.0.1:8080`` (the listen address) like a browser on that address.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from runbook_server.state import ServerState
    from starlette.testclient import TestClient

__all__ = ["BASE", "ConsoleApp", "console_app", "csrf_of"]

BASE = "http://127.0.0.1:8080"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    m = _CSRF.search(html)
    assert m, f"no CSRF token in the page:\n{html[:2000]}"
    return m.group(1)


@dataclass
class ConsoleApp:
    """An in-process server app with its state."""

    state: ServerState
    app: Any
    root: Path
    clients: list[TestClient] = field(default_factory=list)

    def client(self, token: str | None = None) -> TestClient:
        """A browser-like client (cookies kept, redirects not followed); with ``token``, logged in with it."""
        from starlette.testclient import TestClient

        c = TestClient(self.app, base_url=BASE, follow_redirects=False)
        self.clients.append(c)
        if token is not None:
            self.login(c, token)
        return c

    def login(self, c: TestClient, token: str) -> None:
        """Log ``c`` in through the login form."""
        page = c.get("/login")
        assert page.status_code == 200, page.text
        r = c.post("/login", data={"csrf_token": csrf_of(page.text), "token": token, "next": "/"})
        assert r.status_code == 303, r.text

    def post(self, c: TestClient, path: str, data: dict[str, str] | None = None, *, page: str | None = None,
             headers: dict[str, str] | None = None) -> Any:  # fmt: skip
        """POST a console form the way its page does: with the CSRF token of ``page`` (default: ``path``'s run page)."""
        source = c.get(page or "/")
        return c.post(path, data={"csrf_token": csrf_of(source.text), **(data or {})}, headers=headers)

    def start(self, runbook: str, params: dict[str, Any] | None = None, *, by: str = "alert:alertmanager/test",
              execute: bool = True) -> str:  # fmt: skip
        """Start a run with the server's engine (driven here until it stops, unless ``execute`` is false)."""
        view = self.state.api_engine.start(runbook, params or {}, started_by=by, execute=execute)
        return view.run_id

    def drive(self, run_id: str) -> str:
        """Drive a run as a worker would (after an approval); returns its state."""
        from runner.engine import DriveOptions

        return str(self.state.api_engine.drive(run_id, DriveOptions(actor="worker")).state)

    def events(self, run_id: str, *types: str) -> list[Any]:
        """The run's journal events (of ``types``)."""
        return self.state.store.events(run_id, types=types, limit=10000)


@contextmanager
def console_app(root: Path, runbooks: dict[str, str], config: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                *, policy: str | None = None) -> Iterator[ConsoleApp]:  # fmt: skip
    """Write ``runbooks`` and the server ``config`` under ``root`` and build the app (env set only meanwhile)."""
    from runbook_server.app import create_app
    from runbook_server.config import load_config
    from runbook_server.state import build_state

    from runner.catalog import Catalog, search_path
    from runner.plugin import PluginHost
    from runner.settings import Settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    (root / "runbooks").mkdir(parents=True, exist_ok=True)
    for name, text in runbooks.items():
        (root / "runbooks" / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    text = textwrap.dedent(config).lstrip()
    if policy is not None:
        (root / "policy.yaml").write_text(textwrap.dedent(policy).lstrip(), encoding="utf-8")
        text += f"agent_policy: {root / 'policy.yaml'}\n"
    (root / "server.yaml").write_text(text, encoding="utf-8")
    host = PluginHost()
    settings = Settings(paths=[str(root / "runbooks")], store_url=f"sqlite:///{root / 'journal.db'}", actor="server-user")
    catalog = Catalog.load(host.step_types, search_path(settings.paths, host.runbook_sources.directories()))
    store = host.stores.open(settings.resolved_store_url())
    state = build_state(host, settings, store, catalog, load_config(root / "server.yaml"), ("127.0.0.1", 8080))
    console = ConsoleApp(state, create_app(state), root)
    try:
        yield console
    finally:
        for c in console.clients:
            c.close()
        store.close()
