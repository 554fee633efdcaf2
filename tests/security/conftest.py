"""Fixtures of the security suite: real servers in a throwaway project, stopped by PID at teardown."""

from __future__ import annotations

from tests.server.conftest import serve  # noqa: F401  (the server suite's fixture: `serve(config_text, **kw)`)

TOKEN = "sec-suite-api-token-0123456789abcdef"
