"""Shared fixtures: a throwaway project directory and the real ``runbook`` CLI run as a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from runner.registry import StepTypeRegistry

pytest_plugins = ["harness.sshd", "harness.httpserver", "harness.postgres", "harness.smtpserver"]

IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, what: str) -> None:
    """Skip locally when a real component is missing; in CI (``CI`` set) a missing component is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available on this machine")


@dataclass
class Result:
    """A finished CLI invocation."""

    args: list[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as one JSON document."""
        try:
            return json.loads(self.out)
        except ValueError as exc:
            raise AssertionError(f"stdout is not one JSON document ({exc}):\n{self.out}\nstderr:\n{self.err}") from None

    def __repr__(self) -> str:
        return f"<runbook {' '.join(self.args)} exit={self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}>"


class Project:
    """A project directory with ``runbooks/`` and its own journal, driven through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runbooks = root / "runbooks"
        self.runbooks.mkdir(parents=True, exist_ok=True)
        keep = {"RUNBOOK_DISABLE_PLUGINS", "RUNBOOK_CACHE_DIR"}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k in keep}
        self.env.update(RUNBOOK_ACTOR="tester", PYTHONUNBUFFERED="1", COLUMNS="200")
        self.started: list[subprocess.Popen[str]] = []

    @property
    def journal(self) -> Path:
        """The default SQLite journal file."""
        return self.root / ".runbook" / "journal.db"

    def write(self, name: str, text: str) -> Path:
        """Write a runbook file (dedented) under ``runbooks/``."""
        path = self.runbooks / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def cmd(self, *args: str) -> list[str]:
        """argv of a ``runbook`` invocation through the real entry point."""
        return [sys.executable, "-m", "runner", *args]

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        """Run ``runbook ARGS`` in the project directory and wait for it."""
        proc = subprocess.run(self.cmd(*args), cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, input=input)  # fmt: skip
        return Result(list(args), proc.returncode, proc.stdout, proc.stderr)

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start ``runbook ARGS`` without waiting (for kill and signal tests)."""
        proc = subprocess.Popen(self.cmd(*args), cwd=self.root, env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.started.append(proc)
        return proc

    def reap(self) -> None:
        """Kill and reap every process :meth:`popen` started that a test left running, and close their pipes (a
        leftover would outlive the test, and its ResourceWarning would fail whichever test the GC ran in)."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.started.clear()


def kill(proc: subprocess.Popen[str], sig: int | None = None) -> tuple[str, str]:
    """Send ``sig`` (default SIGKILL) to ``proc``, reap it and close its pipes; returns (stdout, stderr)."""
    import signal

    proc.send_signal(sig if sig is not None else signal.SIGKILL)
    return proc.communicate(timeout=60)


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One compile cache for the whole suite, never the user's: tests that load a runbook again read it back."""
    path = tmp_path_factory.mktemp("compile-cache")
    previous = os.environ.get("RUNBOOK_CACHE_DIR")
    os.environ["RUNBOOK_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("RUNBOOK_CACHE_DIR", None)
    else:
        os.environ["RUNBOOK_CACHE_DIR"] = previous


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A fresh project directory (processes a test left running are reaped after it)."""
    made = Project(tmp_path / "proj")
    yield made
    made.reap()


@pytest.fixture
def registry() -> StepTypeRegistry:
    """The step types of the installed plugins (a module may define its own)."""
    from runner.plugin import PluginHost

    return PluginHost().step_types


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A compile cache of the test's own (``RUNBOOK_CACHE_DIR``)."""
    path = tmp_path / "cache"
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(path))
    return path
