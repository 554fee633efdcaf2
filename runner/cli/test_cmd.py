"""``runbook test [PATHS]``: run the tests written next to the runbooks, with pytest and ``pytest-runbook``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from runner.cli.app import AppState, json_option, pass_state

__all__ = ["COMMANDS", "PYTEST_EXIT"]

PYTEST_EXIT = {0: 0, 1: 1, 2: 130, 3: 1, 4: 2, 5: 0}
"""pytest's exit status → ours: passed 0, failed 1, interrupted 130, internal error 1, usage 2, no tests 0."""


def test_targets(state: AppState, paths: tuple[str, ...]) -> list[Path]:
    """What pytest collects from: ``paths``, else each directory of the search path that exists."""
    from runner.catalog import search_path
    from runner.errors import UsageError

    if paths:
        missing = [p for p in paths if not Path(p).exists()]
        if missing:
            raise UsageError(f"no such file or directory: {', '.join(missing)}")
        return [Path(p) for p in paths]
    return [p for p in search_path(state.settings.paths, state.host.runbook_sources.directories()) if p.exists()]


@click.command("test", context_settings={"ignore_unknown_options": True})
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("-k", "keyword", metavar="EXPR", help="Only tests matching EXPR (pytest -k).")
@click.option("--record-http", is_flag=True, help="Record the http cassettes the tests name instead of replaying them.")
@json_option
@pass_state
def test_cmd(state: AppState, paths: tuple[str, ...], keyword: str | None, record_http: bool) -> int:
    """Run the tests next to the runbooks (test_*.py beside them, tests/ directories) with pytest.

    Tests use the `runbook` fixture of pytest-runbook (docs/testing-runbooks.md). Other pytest options may be
    given in their --option=value form (`runbook test -x --maxfail=2`). Exit 0 if the tests pass (or there are
    none), 1 if one fails.
    """
    import subprocess
    import sys
    import tempfile

    try:
        import pytest  # noqa: F401  # only to say clearly when it is missing
    except ImportError:
        from runner.errors import MissingExtra

        raise MissingExtra("runbook test", "test", "pytest") from None
    pytest_args = [p for p in paths if p.startswith("-")]
    targets = test_targets(state, tuple(p for p in paths if not p.startswith("-")))
    if not targets:
        return _report(state, {"exit_code": 0, "pytest_exit": 5, "tests": 0, "passed": 0, "failed": 0, "skipped": 0, "errors": 0,
                               "paths": [], "failures": []})  # fmt: skip
    search = [p for p in (Path(x) for x in state.settings.paths or []) if p.exists()] or targets
    argv = [sys.executable, "-m", "pytest", *(str(t) for t in targets), "-p", "runner.testing._report"]
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        argv += ["-p", "runner.testing.plugin"]
    argv += [a for p in search if p.is_dir() for a in ("--runbook-path", str(p.resolve()))]
    if keyword:
        argv += ["-k", keyword]
    if record_http:
        argv.append("--record-http")
    argv += list(pytest_args)
    with tempfile.TemporaryDirectory(prefix="runbook-test-") as tmp:
        report = Path(tmp) / "report.json"
        env = {**os.environ, "RUNBOOK_TEST_REPORT": str(report)}
        if state.json:  # pytest's own output goes to stderr; stdout carries the one JSON document
            proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
            sys.stderr.write(proc.stdout)
        else:
            proc = subprocess.run(argv, env=env, text=True)
        summary = _read(report)
    summary.update(exit_code=PYTEST_EXIT.get(proc.returncode, 1), pytest_exit=proc.returncode, paths=[str(t) for t in targets])
    return _report(state, summary)


def _read(report: Path) -> dict[str, Any]:
    import json

    try:
        data: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    for key in ("tests", "passed", "failed", "skipped", "errors"):
        data.setdefault(key, 0)
    data.setdefault("failures", [])
    return data


def _report(state: AppState, summary: dict[str, Any]) -> int:
    code = int(summary["exit_code"])
    if state.json:
        from runner.cli.output import emit_json

        emit_json(summary)
    elif summary["tests"] == 0 and summary["pytest_exit"] == 5:
        from runner.cli.output import err_console

        where = ", ".join(summary["paths"]) or "the runbook search path (nothing there)"
        err_console().print(f"no runbook tests found in {where} (test_*.py beside the runbooks, or a tests/ directory)")
    return code


COMMANDS = (test_cmd,)
