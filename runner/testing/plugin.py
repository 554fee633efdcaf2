"""The ``pytest-runbook`` pytest plugin (entry point ``runbook`` in the ``pytest11`` group).

Fixtures:

``runbook``
    a :class:`~runner.testing.RunbookHarness`: a throwaway journal in ``tmp_path`` and the runbooks of
    ``runbook_paths``; runs in-process or as the CLI does, fakes, faults, exactly-once assertions.
``runbook_paths``
    where the runbooks under test are: ``--runbook-path`` if given, else the test file's directory (its parent
    for a file in a ``tests/`` directory). Override it in a ``conftest.py`` to choose others.
``runbook_sshd`` (session)
    a real OpenSSH server on 127.0.0.1 (:mod:`runner.testing.sshd`); ``runbook.use_sshd(runbook_sshd, hosts)``
    points the runbook's ssh steps at it. Skipped where OpenSSH's server is missing, unless ``CI`` is set.

Options: ``--runbook-path DIR`` (repeatable), ``--record-http`` (record cassettes instead of replaying them).

Nothing here runs unless a test asks for one of these fixtures: other tests of a session are not affected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from runner.testing.harness import RunbookHarness
    from runner.testing.sshd import SSHServer

__all__ = ["pytest_addoption", "runbook", "runbook_paths", "runbook_sshd"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--runbook-path`` and ``--record-http``."""
    group = parser.getgroup("runbook", "testing runbooks (pytest-runbook)")
    group.addoption("--runbook-path", action="append", default=[], metavar="DIR",
                    help="where the runbooks under test are (repeatable; default: next to each test)")  # fmt: skip
    group.addoption("--record-http", action="store_true", default=False,
                    help="record the http cassettes tests name, instead of replaying them")  # fmt: skip


@pytest.fixture
def runbook_paths(request: pytest.FixtureRequest) -> list[Path]:
    """The search path of the runbooks under test."""
    given: list[str] = request.config.getoption("--runbook-path")
    if given:
        return [Path(p).resolve() for p in given]
    here = Path(str(request.path)).resolve().parent
    return [here.parent if here.name == "tests" else here]


@pytest.fixture
def runbook(tmp_path: Path, runbook_paths: list[Path], request: pytest.FixtureRequest) -> Iterator[RunbookHarness]:
    """A :class:`~runner.testing.RunbookHarness` on a fresh journal for this test."""
    from runner.testing.harness import RunbookHarness

    harness = RunbookHarness(tmp_path / "runbook", runbook_paths, record_http=bool(request.config.getoption("--record-http")))
    yield harness
    harness.close()


@pytest.fixture(scope="session")
def runbook_sshd() -> Iterator[SSHServer]:
    """A real OpenSSH server on 127.0.0.1 for the session (stopped at its end)."""
    from runner.testing.sshd import sshd_available, start_sshd

    if not sshd_available():
        if os.environ.get("CI"):
            pytest.fail("OpenSSH's server (/usr/sbin/sshd) is required in CI but is not installed")
        pytest.skip("OpenSSH's server (/usr/sbin/sshd) is not installed")
    server = start_sshd()  # in a directory of its own under /tmp (the login user reads keys there), removed by stop()
    try:
        yield server
    finally:
        server.stop()
