"""Printing for the CLI: one JSON document for machines, rich text for humans, one line per error."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console

    from runner.views import RunView

__all__ = ["PIPE_WIDTH", "console", "emit_json", "err_console", "report_error"]

_consoles: dict[str, Console] = {}


PIPE_WIDTH = 1000
"""Width of output that is not a terminal (and has no ``COLUMNS``): wide enough that a table never wraps a run
id or a reason across lines, so ``runbook runs | awk '{print $1}'`` and ``grep`` see whole values."""


def _console(stream: TextIO, *, stderr: bool) -> Console:
    from rich.console import Console

    width = None if stream.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def console() -> Console:
    """Console on stdout (colours only on a terminal; plain, unwrapped text otherwise)."""
    if "out" not in _consoles:
        _consoles["out"] = _console(sys.stdout, stderr=False)
    return _consoles["out"]


def err_console() -> Console:
    """Console on stderr."""
    if "err" not in _consoles:
        _consoles["err"] = _console(sys.stderr, stderr=True)
    return _consoles["err"]


def emit_json(document: Any) -> None:
    """Write ``document`` as one JSON document on stdout: indented on a terminal, compact otherwise.

    Programs and agents read it through a pipe, where the compact form is smaller (fewer tokens for an
    agent) and is written by the C encoder instead of the pure-Python indenting one; people at a terminal
    get it indented. Pipe through ``python -m json.tool`` or ``jq .`` to indent it elsewhere.
    """
    if sys.stdout.isatty():
        text = json.dumps(document, indent=2, ensure_ascii=False, default=str)
    else:
        text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, default=str)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit_view(view: RunView) -> None:
    """Write a run view as :func:`emit_json` would write its JSON form, serialized straight from the model.

    Through a pipe it is written a step at a time (the view's fields before ``steps``, each step, the fields
    after): a 5000-step run's view is never one more string, nor a tree of dicts (issue 19: memory per run). A
    step's view is made from its journal record, which is JSON a store could write (a lone surrogate is kept as
    its escape: runner/store/jsontext.py), so writing it does not fail half-way.
    """
    if sys.stdout.isatty():
        sys.stdout.write(view.model_dump_json(indent=2, fallback=str) + "\n")
    else:
        names = list(type(view).model_fields)
        at = names.index("steps")
        before = view.model_dump_json(include=set(names[:at]), fallback=str)
        after = view.model_dump_json(include=set(names[at + 1 :]), fallback=str)
        out = sys.stdout
        out.write(before[:-1] + ',"steps":[')
        for i, step in enumerate(view.steps):
            part = step.model_dump_json(fallback=str)
            out.write("," + part if i else part)
        out.write("]," + after[1:] + "\n")
    sys.stdout.flush()


def error_document(exc: BaseException) -> dict[str, Any]:
    """The JSON shape of an error (see :func:`runner.views.error_document`); a click usage error is exit 2."""
    from runner.errors import RunbookError
    from runner.views import error_document as document

    doc = document(exc, nxt=getattr(exc, "next", None))
    if not isinstance(exc, RunbookError) and _is_click_usage(exc):
        doc["error"]["exit_code"] = 2
        doc["error"]["message"] = _click_message(exc) or str(exc)
    return doc


def _is_click_usage(exc: BaseException) -> bool:
    import click

    return isinstance(exc, click.ClickException)


def _click_message(exc: BaseException) -> str | None:
    import click

    if isinstance(exc, click.ClickException):
        return exc.format_message()
    return None


def report_error(exc: BaseException, *, as_json: bool, debug: bool) -> None:
    """One clear line per problem on stderr (and the JSON error document on stdout with ``--json``)."""
    from runner.errors import RunbookError, ValidationError

    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if as_json:
        emit_json(error_document(exc))
    if isinstance(exc, ValidationError):
        for problem in exc.problems:
            sys.stderr.write(f"error: {problem}\n")
    elif isinstance(exc, RunbookError):
        sys.stderr.write(f"error: {exc}\n")
    elif _is_click_usage(exc):
        import click

        assert isinstance(exc, click.ClickException)
        ctx = getattr(exc, "ctx", None)
        where = f" ({ctx.command_path})" if ctx is not None else ""
        sys.stderr.write(f"error{where}: {exc.format_message()}\n")
    else:
        hint = "" if debug else " (run with --debug for the traceback)"
        sys.stderr.write(f"internal error: {type(exc).__name__}: {exc}{hint}\n")
    sys.stderr.flush()
