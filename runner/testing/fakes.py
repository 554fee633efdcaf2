"""Fake ``http`` and ``ssh`` for runbook tests: canned replies, recorded exchanges replayed offline, and a log
of what the runbook asked for. Arranged through :attr:`RunbookHarness.http <runner.testing.RunbookHarness.http>` and
:attr:`RunbookHarness.ssh <runner.testing.RunbookHarness.ssh>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.testing._http import CASSETTE_VERSION, cassette_routes

if TYPE_CHECKING:
    from runner.testing.harness import RunbookHarness

__all__ = ["FakeHTTP", "FakeSSH", "Reply"]

_UNSET: Any = object()


@dataclass(frozen=True)
class Reply:
    """A canned HTTP response: ``Reply(200, json={"state": "active"})``, ``Reply(503, body="busy")``."""

    status: int = 200
    json: Any = _UNSET
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The stored form (as in a cassette)."""
        out: dict[str, Any] = {"status": self.status, "headers": dict(self.headers)}
        if self.json is not _UNSET:
            out["json"] = self.json
        else:
            out["body"] = self.body
        return out


class FakeHTTP:
    """``http`` steps answered by the test: canned replies, or a cassette replayed (or recorded).

    Once anything is arranged, every ``http`` action and probe of the run is answered here and none reaches the
    network; a request nothing answers fails its step, naming it. The http step's own refusals (secrets in URLs,
    secrets to templated hosts, allow-lists) still apply.
    """

    def __init__(self, harness: RunbookHarness) -> None:
        self.harness = harness
        self._cassette: Path | None = None

    def reply(self, method: str, url: str, *replies: Reply, body: Any = None) -> None:
        """Answer ``METHOD URL`` (the final URL, query included) with ``replies`` in order, the last one repeating.

        ``body``: answer only a request with this JSON body (default: any body).
        """
        if not replies:
            replies = (Reply(),)
        key = json.dumps(body, sort_keys=True, separators=(",", ":")) if body is not None else None
        route = {"method": method.upper(), "url": url, "body": key, "replies": [r.as_dict() for r in replies], "used": 0}
        with self.harness.state.update() as data:
            data["http"]["mode"] = "fake"
            data["http"]["routes"].append(route)

    def replay(self, cassette: str | Path) -> None:
        """Answer from a recorded cassette (each request's exchanges in recorded order), offline."""
        path = Path(cassette)
        try:
            routes = cassette_routes(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise FileNotFoundError(f"no http cassette at {path}: record it with `runbook test --record-http`") from None
        with self.harness.state.update() as data:
            data["http"]["mode"] = "fake"
            data["http"]["routes"] += routes

    def record(self, cassette: str | Path, upstream: dict[str, str] | None = None) -> None:
        """Send the requests for real and keep every exchange, written to ``cassette`` when the test ends.

        ``upstream`` maps an origin the runbook names to one that answers in its place while recording
        (``{"https://lb.internal": "http://127.0.0.1:8080"}``): the cassette keeps the runbook's own URLs.
        """
        self._cassette = Path(cassette)
        with self.harness.state.update() as data:
            data["http"].update(mode="record", upstream=dict(upstream or {}), recorded=[])

    def cassette(self, path: str | Path, upstream: dict[str, str] | None = None) -> None:
        """Replay ``path``; with ``runbook test --record-http`` (pytest ``--record-http``), record it afresh."""
        if self.harness.record_http:
            self.record(path, upstream)
        else:
            self.replay(path)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every http request of the test so far (method, url, headers and body, secrets masked, step)."""
        return list(self.harness.state.read()["http"]["requests"])

    def save(self) -> None:
        """Write the recorded exchanges (recording mode only)."""
        if self._cassette is None:
            return
        recorded = self.harness.state.read()["http"]["recorded"]
        if not recorded:
            raise AssertionError(f"recording {self._cassette}: the test made no http request")
        self._cassette.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": CASSETTE_VERSION, "interactions": recorded}
        self._cassette.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class FakeSSH:
    """``ssh`` steps answered by the test instead of a host: each command's exit code and output, and a log.

    Once a reply is arranged, every ``ssh`` action and probe is answered here; a command nothing answers fails its
    step, naming the host and command. For a real server, use the ``runbook_sshd`` fixture instead.
    """

    def __init__(self, harness: RunbookHarness) -> None:
        self.harness = harness

    def reply(self, command: list[str], *, host: str | None = None, exit_code: int = 0, stdout: str = "", stderr: str = "",
              prefix: bool = False, then: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
        """Answer ``command`` (the rendered argv; with ``prefix``, any command starting so) on ``host`` (any host).

        ``then``: later replies (``{"exit_code": 0, "stdout": ...}``) in order, the last one repeating.
        """
        first = {"exit_code": exit_code, "stdout": stdout, "stderr": stderr}
        route = {"host": host, "command": list(command), "prefix": prefix, "replies": [first, *(then or [])], "used": 0}
        with self.harness.state.update() as data:
            data["ssh"]["on"] = True
            data["ssh"]["routes"].append(route)

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Every ssh command of the test so far: ``{"host", "command", "step", "sudo"}``."""
        return list(self.harness.state.read()["ssh"]["commands"])
