"""Shell completion: runbook names, run ids, step ids and ``-p`` param names (and their choices).

click's ``_RUNBOOK_COMPLETE`` protocol drives it (docs/cli.md#shell-completion): the shell runs ``runbook`` with
that variable set, and these callbacks answer. They only read: the runbooks on the search path and, when there is a
journal, its most recent runs (never creating one); any trouble completes nothing rather than printing an error
into someone's command line. The shells' own side is :mod:`runner.cli.shells`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from runner.cli.app import AppState

__all__ = ["complete_param", "complete_run_id", "complete_runbook", "complete_step"]

RECENT = 50
"""How many of the newest runs a run id is completed from (one indexed query)."""

_ACTIVE = ("queued", "running", "paused", "waiting", "failed", "interrupted")
_RUN_STATES: dict[str, tuple[str, ...]] = {
    "approve": ("waiting",), "deny": ("waiting",), "decide": ("waiting", "failed"), "retry": ("failed",),
    "pause": ("queued", "running", "waiting"), "resume": _ACTIVE, "step": _ACTIVE, "cancel": _ACTIVE,
}  # fmt: skip
"""Commands that only make sense for runs in some states complete only those (others: every run)."""

Completer = Callable[[click.Context, click.Parameter, str], "list[CompletionItem]"]


def _quiet(fn: Completer) -> Completer:
    """A completer that completes nothing instead of failing (no traceback in the middle of a command line)."""

    def guarded(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        try:
            return fn(ctx, param, incomplete)
        except Exception:
            return []

    guarded.__doc__ = fn.__doc__
    return guarded


def _state(ctx: click.Context) -> AppState:
    """The command's state from the global options typed so far (completion runs no group callback)."""
    from runner.cli.app import AppState

    root = ctx.find_root()
    options = root.params
    state = AppState(root.command.host, paths=tuple(options.get("paths") or ()), store=options.get("store"),  # type: ignore[attr-defined]
                     inventory=None, known_hosts=None, debug=False, json_output=False)  # fmt: skip
    state.create_journal = False
    return state


@_quiet
def complete_runbook(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Names of the runbooks on the search path, with their file (read from the files' text: nothing is compiled)."""
    from click.shell_completion import CompletionItem

    from runner.catalog import declared_runbooks, search_path

    state = _state(ctx)
    found = declared_runbooks(search_path(state.settings.paths, state.host.runbook_sources.directories()))
    return [CompletionItem(name, help=file) for name, file in sorted(found.items()) if name.startswith(incomplete)]


@_quiet
def complete_run_id(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Ids of the newest runs (in the states the command acts on), with runbook, state and age; none without a journal."""
    from click.shell_completion import CompletionItem

    from runner.errors import JournalNotFound
    from runner.store.records import RunState

    state = _state(ctx)
    try:
        store = state.store
    except JournalNotFound:
        return []
    wanted = [RunState(s) for s in _RUN_STATES.get(ctx.command.name or "", ())]
    prefix = incomplete.upper()
    runs = [r for r in store.list_runs(states=wanted, limit=RECENT) if r.id.startswith(prefix)]
    if not runs and len(prefix) >= 6:  # an older run, typed far enough to be found by its prefix
        runs = [store.get_run(i) for i in store.find_run_ids(prefix)[:RECENT]]
    return [CompletionItem(r.id, help=f"{r.runbook} {r.state} {_age(r.created_at)} ago") for r in runs]


def _typed(ctx: click.Context, key: str) -> Any:
    """The value of param ``key`` from the words before the one being completed.

    click assigns no positional argument when the last word is an option still waiting for its value (``run NAME -p``
    or ``decide RUN --skip-step``): the command's words are then parsed again without that option."""
    if ctx.params.get(key) is not None or ctx.parent is None:
        return ctx.params.get(key)
    words = list(ctx.parent.args)
    if words and words[-1].startswith("-"):
        words.pop()
    return ctx.command.make_context(ctx.info_name, words, parent=ctx.parent, resilient_parsing=True).params.get(key)


def _age(ts: float) -> str:
    import time

    from runner.durations import format_duration

    return format_duration(max(0.0, time.time() - ts))


@_quiet
def complete_step(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Step ids of the run named earlier on the line (``logs RUN STEP``, ``decide RUN --skip-step STEP``)."""
    from click.shell_completion import CompletionItem

    run_id = _typed(ctx, "run_id")
    if not run_id:
        return []
    from runner.errors import JournalNotFound

    state = _state(ctx)
    try:
        engine = state.engine
        steps = state.store.get_steps(engine.resolve_id(run_id))
    except JournalNotFound:
        return []
    return [CompletionItem(s.step_id, help=str(s.state)) for s in steps if s.step_id.startswith(incomplete)]


@_quiet
def complete_param(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``-p``: ``key=`` for each param of the runbook named earlier on the line not given yet; after ``key=``, the
    param's choices (an enum's values, true/false)."""
    from click.shell_completion import CompletionItem

    name = _typed(ctx, "name")
    if not name:
        return []
    spec = _state(ctx).catalog.get(name).spec
    key, eq, value = incomplete.partition("=")
    if not eq:
        given = {pair.partition("=")[0] for pair in _typed(ctx, "pairs") or ()}
        return [CompletionItem(f"{n}=", help=_about(p)) for n, p in spec.params.items() if n.startswith(key) and n not in given]
    param = spec.params.get(key)
    if param is None:
        return []
    choices = [str(c) for c in param.enum] if param.enum else (["true", "false"] if param.type == "boolean" else [])
    return [CompletionItem(f"{key}={c}") for c in choices if c.startswith(value)]


def _about(param: Any) -> str:
    kind = "secret ref" if param.secret else param.type
    need = "required" if param.is_required() else f"default {param.default!r}"
    return f"{kind}, {need}" + (f": {param.description}" if param.description else "")
