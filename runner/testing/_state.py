"""The fakes and faults of one test, kept in a JSON file that every process of the test reads.

A run under test may go on in another process (the driver :func:`~runner.testing.RunbookHarness.run_until_killed`
starts, which then dies), so what the test arranged — fake replies and how many were used, failures to inject,
where to kill — lives in ``state.json`` of the test's directory, read at each action and updated under a lock.
The ledger of executed actions (``ledger.jsonl``) is appended to by every process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["State"]

_LOCK = threading.Lock()


class State:
    """``state.json`` and ``ledger.jsonl`` of one test directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / "state.json"
        self.ledger_path = self.directory / "ledger.jsonl"

    def read(self) -> dict[str, Any]:
        """The current state (empty sections when nothing was arranged)."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        data.setdefault("fail", [])
        data.setdefault("kill", None)
        data.setdefault("http", {"mode": "off", "routes": [], "requests": [], "recorded": []})
        data.setdefault("ssh", {"on": False, "routes": [], "commands": []})
        data.setdefault("paths", [])
        data.setdefault("env", {})
        return data

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Read, change and write the state atomically across threads and processes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with _LOCK, open(self.directory / "state.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self.read()
                yield data
                tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data), encoding="utf-8")
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def log(self, entry: dict[str, Any]) -> None:
        """Append one line to the ledger (one ``write`` of a short line: whole lines from every process)."""
        line = json.dumps({**entry, "pid": os.getpid()}) + "\n"
        fd = os.open(self.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger line so far."""
        try:
            text = self.ledger_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
