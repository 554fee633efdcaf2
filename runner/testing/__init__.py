"""``pytest-runbook``: test runbooks for real, without a production.

The pytest plugin (``runner.testing.plugin``, registered in the ``pytest11`` entry-point group, so pytest loads
it wherever ``runbook`` is installed) gives a test the ``runbook`` fixture — a :class:`RunbookHarness` with a
throwaway journal and the runbooks next to the test — and ``runbook_sshd``, a real OpenSSH server on
127.0.0.1. ``runbook test`` runs these tests. See docs/testing-runbooks.md.

::

    def test_rotate_runs_once_across_a_crash(runbook, tmp_path):
        killed = runbook.run_until_killed("rotate-log", {"file": str(log)}, at="rotate", when="after")
        outcome = runbook.resume(killed.run_id)
        assert outcome.state == "succeeded"
        runbook.assert_exactly_once(outcome, "rotate")

Names are imported on first use, so that loading the pytest plugin costs a test session nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.testing.fakes import FakeHTTP, FakeSSH, Reply
    from runner.testing.harness import CliResult, Killed, RunbookHarness
    from runner.testing.results import Event, Outcome, StepOutcome
    from runner.testing.sshd import SSHServer

__all__ = ["CliResult", "Event", "FakeHTTP", "FakeSSH", "Killed", "Outcome", "Reply", "RunbookHarness", "SSHServer", "StepOutcome"]

_LAZY = {
    "FakeHTTP": "runner.testing.fakes",
    "FakeSSH": "runner.testing.fakes",
    "Reply": "runner.testing.fakes",
    "CliResult": "runner.testing.harness",
    "Killed": "runner.testing.harness",
    "RunbookHarness": "runner.testing.harness",
    "Event": "runner.testing.results",
    "Outcome": "runner.testing.results",
    "StepOutcome": "runner.testing.results",
    "SSHServer": "runner.testing.sshd",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runner.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
