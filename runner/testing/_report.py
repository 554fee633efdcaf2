"""A pytest plugin ``runbook test`` loads (``-p runner.testing._report``): the session's counts as JSON in the file
``RUNBOOK_TEST_REPORT`` names, for ``runbook test --json``."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

__all__ = ["pytest_runtest_logreport", "pytest_sessionfinish"]

_COUNTS: dict[str, Any] = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "errors": 0, "failures": []}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each test once: its call, or the setup or teardown that failed or skipped it."""
    if report.when == "call" or report.outcome != "passed":
        if report.when in ("setup", "call"):  # a test that got past setup reports its call; one that did not, its setup
            _COUNTS["tests"] += 1
        key = {"passed": "passed", "skipped": "skipped"}.get(report.outcome, "failed" if report.when == "call" else "errors")
        _COUNTS[key] += 1
        if report.failed:
            _COUNTS["failures"].append({"test": report.nodeid, "when": report.when, "message": str(report.longrepr)[-2000:]})


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the counts."""
    path = os.environ.get("RUNBOOK_TEST_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_COUNTS, f)
