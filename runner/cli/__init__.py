"""The ``runbook`` command line. ``main`` maps every error to one line and an exit code.

Start-up stays light: this package imports click and the command modules only;
each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

__all__ = ["main"]


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``runbook`` console script.

    Exits with ``os._exit`` once output is flushed: every write that matters is already committed to the
    journal, and tearing the interpreter's objects down one by one would add tens of milliseconds to
    every invocation (agents call ``runbook`` in tight loops).
    """
    code = run(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = code or 1
    sys.stderr.flush()
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)  # a profiler or coverage tool writes its data at interpreter exit
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    os._exit(code)


def run(args: list[str]) -> int:
    """Run the CLI with ``args`` and return the exit code (used by ``main`` and tests)."""
    from runner._startup import deferred

    with deferred():  # no young-generation collections over what start-up builds (see runner._startup)
        return _run(args)


def _run(args: list[str]) -> int:
    from runner._pydantic import skip_plugin_discovery

    skip_plugin_discovery()  # before the first pydantic model is built

    import click

    from runner.cli.app import build_cli
    from runner.cli.output import report_error
    from runner.errors import ExitCode, RunbookError

    if os.environ.get("_RUNBOOK_COMPLETE"):  # a shell asks for completions (docs/cli.md#shell-completion)
        from runner.cli.shells import register

        register()
    debug = "--debug" in args or os.environ.get("RUNBOOK_DEBUG") == "1"
    as_json = "--json" in args
    try:
        cli = build_cli()
        result = cli.main(args, prog_name="runbook", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        report_error(exc, as_json=as_json, debug=debug)
        return int(ExitCode.USAGE)
    except RunbookError as exc:
        report_error(exc, as_json=as_json, debug=debug)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.FAILED)
    except Exception as exc:  # a bug: one line, traceback only with --debug
        report_error(exc, as_json=as_json, debug=debug)
        return int(ExitCode.FAILED)
    return int(result) if isinstance(result, int) else 0
