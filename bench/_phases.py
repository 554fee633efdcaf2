"""Run the real ``runbook`` CLI in this process with timers around the functions that matter.

Used by ``profile_runbook.py``, not on its own. Two modes::

    python _phases.py --list-modules OUT -- run NAME --json     # which modules a run imports
    python _phases.py --modules FILE --report OUT -- run NAME --json

The second mode imports every listed module first (timed as "imports"), then
wraps each function in ``TARGETS`` that exists (and every alias a ``from x import
f`` made of it) with an inclusive wall-clock timer that costs about a
microsecond per call, far below the milliseconds it measures. Targets the code
no longer has are reported as missing, not fatal: the engine changes.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

T0 = time.perf_counter()

TARGETS = [
    # start-up and loading
    "runner.cli.app:build_cli", "runner.plugin:get_plugin_manager", "runner.plugin:PluginHost._fill",
    "runner.cli.app:AppState.settings", "runner.cli.app:AppState.catalog", "runner.cli.app:AppState.store",
    "runner.cli.app:AppState.engine", "runner.catalog:Catalog.load", "runner.params:parse_cli_params",
    # the run
    "runner.engine.engine:Engine.start", "runner.engine.engine:Engine.drive", "runner.engine.engine:Engine.view",
    "runner.engine.execution:Execution._prepare", "runner.engine.execution:Execution._loop",
    "runner.engine.execution:Execution.commit", "runner.engine.execution:Execution.save",
    "runner.engine.execution:Execution.make_ctx", "runner.engine.execution:Execution.template_ctx",
    "runner.engine.execution:Execution._boundary", "runner.engine.execution:Execution._record_output",
    "runbook_sqlite.store:SQLiteStore.__init__", "runbook_sqlite.store:SQLiteStore.commit",
    "runbook_sqlite.store:SQLiteStore.create_run", "runbook_sqlite.store:SQLiteStore.acquire",
    "runbook_sqlite.store:SQLiteStore.release", "runbook_sqlite.store:SQLiteStore.get_run",
    "runbook_sqlite.store:SQLiteStore.get_steps", "runbook_sqlite.store:SQLiteStore._patch_step",
    "runbook_sqlite.store:SQLiteStore._append", "runbook_sqlite.store:_dumps",
    # one step
    "runner.engine.steprunner:StepRunner.run", "runner.engine.steprunner:StepRunner._act",
    "runner.engine.steprunner:StepRunner._invoke", "runner.engine.steprunner:StepRunner._finish",
    "runner.engine.steprunner:Unit.event", "runner.engine.probes:Prober.invoke", "runner.engine.probes:Prober.render_config",
    "runner.templating:Renderer.render", "runner.plugin:PluginHost.execute_action", "runner.plugin:PluginHost.on_event",
    "runbook_shell.step:ShellStep.execute", "runbook_shell.step:ShellStep.summary", "runbook_shell.step:run_process",
    "subprocess:Popen.__init__", "subprocess:Popen.wait", "tempfile:TemporaryFile",
    "runner.engine.expect:evaluate", "runner.engine.probes:evidence_of", "runner.secrets:Redactor.value",
    "runner.steptypes:ActionResult.as_output", "runner.context:Context.__init__", "runner.store.records:StepPatch.of",
    "runner.engine.runtime:Heartbeat.__enter__", "runner.engine.runtime:Heartbeat.__exit__",
    # the answer
    "runner.views:build_view", "runner.cli.output:emit_json",
]  # fmt: skip

STATS: dict[str, list[float]] = {}  # target -> [calls, inclusive seconds]


def _timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    depth = 0
    stat = STATS.setdefault(label, [0, 0.0])

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal depth
        depth += 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth -= 1
            if depth == 0:  # recursion counts once
                stat[0] += 1
                stat[1] += time.perf_counter() - start

    return wrapper


def _install(target: str) -> bool:
    module_name, _, qual = target.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
    except ImportError:
        return False
    *path, attr = qual.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return False
    raw = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
    if raw is None:
        return False
    if isinstance(raw, functools.cached_property):
        raw.func = _timed(target, raw.func)
    elif isinstance(raw, (staticmethod, classmethod)):
        setattr(owner, attr, type(raw)(_timed(target, raw.__func__)))
    elif callable(raw):
        wrapped = _timed(target, raw)
        setattr(owner, attr, wrapped)
        if not isinstance(owner, type):
            _rebind_aliases(raw, wrapped)
    else:
        return False
    return True


def _rebind_aliases(original: Any, wrapped: Any) -> None:
    """``from x import f`` copied ``f`` into other modules: time those calls too."""
    for module in list(sys.modules.values()):
        for name, value in list(getattr(module, "__dict__", {}).items()):
            if value is original:
                setattr(module, name, wrapped)


def main(argv: list[str]) -> int:
    """See the module docstring."""
    split = argv.index("--")
    opts, cli_args = argv[:split], argv[split + 1 :]
    if opts[0] == "--list-modules":
        from runner.cli import run

        code = run(cli_args)
        with open(opts[1], "w", encoding="utf-8") as f:
            json.dump(sorted(sys.modules), f)
        return code
    with open(opts[1], encoding="utf-8") as f:
        modules = json.load(f)
    before = time.perf_counter()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:
            continue
    imported = time.perf_counter() - before
    missing = [t for t in TARGETS if not _install(t)]
    from runner.cli import run

    start = time.perf_counter()
    code = run(cli_args)
    total = time.perf_counter() - start
    report = {"code": code, "interpreter_to_main_s": before - T0, "imports_s": imported, "cli_run_s": total,
              "missing": missing, "stats": {k: {"calls": int(v[0]), "seconds": v[1]} for k, v in STATS.items() if v[0]}}  # fmt: skip
    with open(opts[3], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
