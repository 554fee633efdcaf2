"""``runbook list | show | validate | schema | plugins``: what runbooks and plugins there are."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from runner.cli.app import AppState, json_option, pass_state
from runner.cli.complete import complete_runbook

if TYPE_CHECKING:
    from runner.catalog import LoadedRunbook
    from runner.model import Check

__all__ = ["COMMANDS", "runbook_summary"]


def runbook_summary(rb: LoadedRunbook) -> dict[str, Any]:
    """JSON shape of one catalog entry (``list --json``, the HTTP catalog, MCP)."""
    from runner.catalog import summary_of

    return summary_of(rb).as_dict()


def _warn_problems(state: AppState) -> None:
    from runner.cli.output import err_console

    for problem in state.catalog.problems:
        err_console().print(f"[yellow]warning:[/] {problem}", markup=True, highlight=False)


@click.command("list")
@click.option("--tag", "tags", multiple=True, help="Only runbooks carrying this tag (repeatable).")
@json_option
@pass_state
def list_cmd(state: AppState, tags: tuple[str, ...]) -> int:
    """List the runbooks on the search path."""
    items = [rb for rb in state.catalog.summaries() if not tags or set(tags) <= set(rb.tags)]
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"runbooks": [rb.as_dict() for rb in items], "problems": [p.as_dict() for p in state.catalog.problems]})
        return 0
    from rich.table import Table

    from runner.cli.output import console

    _warn_problems(state)
    if not items:
        console().print("No runbooks found. Put YAML or Python runbooks in ./runbooks or pass --path.")
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("NAME", "PARAMS", "STEPS", "DESCRIPTION"):
        table.add_column(col, overflow="fold")
    for rb in items:
        params = ", ".join(f"{n}{'' if required else '?'}" for n, required in rb.params)
        table.add_row(rb.name, params or "-", str(rb.steps), rb.description.strip().splitlines()[0] if rb.description.strip() else "")
    console().print(table)
    return 0


def _check_text(check: Check, state: AppState) -> str:
    if check.expr is not None:
        return f"expr {check.expr}"
    step_type = state.host.step_types.get(check.type or "")
    text = f"{check.type}: {step_type.summary(check.config)}"
    if check.expect is not None:
        text += "  expect " + ", ".join(f"{k}={v}" for k, v in check.expect.model_dump(by_alias=True, exclude_none=True).items())
    return text


@click.command("show")
@click.argument("name", shell_complete=complete_runbook)
@json_option
@pass_state
def show_cmd(state: AppState, name: str) -> int:
    """Show a runbook: params with types, defaults and descriptions; steps with their checks."""
    rb = state.catalog.get(name)
    if state.json:
        from runner.cli.output import emit_json

        emit_json({**runbook_summary(rb), "runbook": rb.spec.model_dump(mode="json", by_alias=True), "content_hash": rb.content_hash})
        return 0
    from rich.table import Table

    from runner.cli.output import console
    from runner.durations import format_duration

    out = console()
    out.print(f"[bold]{rb.name}[/] v{rb.spec.version}  [dim]{rb.file}[/]")
    if rb.spec.description:
        out.print(rb.spec.description.strip())
    if rb.spec.lock:
        out.print(f"lock: {rb.spec.lock}")
    if rb.spec.params:
        table = Table(title="params", box=None, title_justify="left", header_style="bold")
        for col in ("NAME", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"):
            table.add_column(col, overflow="fold")
        for pname, spec in rb.spec.params.items():
            kind = "secret ref" if spec.secret else (f"one of {spec.enum}" if spec.enum else spec.type)
            default = "" if spec.is_required() else repr(spec.default)
            table.add_row(pname, kind, "yes" if spec.is_required() else "no", default, spec.description)
        out.print(table)
    out.print("[bold]steps[/]")
    for i, step in enumerate(rb.spec.steps, 1):
        st = state.host.step_types.get(step.action.type)
        extras = []
        if step.timeout is not None:
            extras.append(f"timeout {format_duration(step.timeout)}")
        if step.retry.attempts > 1:
            extras.append(f"retry {step.retry.attempts}x")
        if step.idempotent:
            extras.append("idempotent")
        if step.targets is not None:
            extras.append(f"targets {step.targets}")
        if step.for_each is not None:
            extras.append(f"for_each {step.for_each}")
        out.print(
            f"  {i}. [bold]{step.id}[/] {step.action.type}: {st.summary(step.action.config)}"
            + (f"  [dim]({', '.join(extras)})[/]" if extras else "")
        )
        if step.description:
            out.print(f"       {step.description}")
        if step.when is not None:
            out.print(f"       when: {step.when}")
        for label, checks in (("precondition", step.precondition), ("check", step.check)):
            for c in checks:
                out.print(f"       {label}: {_check_text(c, state)}")
        if step.verify is not None:
            for c in step.verify.checks:
                out.print(
                    f"       verify (within {format_duration(step.verify.within)}, every {format_duration(step.verify.every)}): {_check_text(c, state)}"
                )
        if step.rollback is not None:
            rst = state.host.step_types.get(step.rollback.type)
            out.print(f"       rollback: {step.rollback.type}: {rst.summary(step.rollback.config)}")
    return 0


def validate_files(state: AppState, paths: tuple[str, ...]) -> tuple[list[Any], list[Any], list[Path]]:
    """(loaded runbooks, problems, files checked) for ``paths`` (or the search path): everything compiling finds and
    everything :mod:`runner.analysis` finds statically, across runbooks."""
    from runner.analysis import check_catalog
    from runner.analysis.runbooks import subrunbook_steps
    from runner.catalog import Catalog, search_path

    project = search_path(state.settings.paths, state.host.runbook_sources.directories())
    elsewhere: list[Catalog] = []
    if paths:
        catalog = Catalog.load(state.host.step_types, [Path(p) for p in paths], cache=False)
        for p in paths:
            if not Path(p).exists():
                from runner.errors import Problem

                catalog.problems.append(Problem("no such file or directory", file=p))
        if any(next(subrunbook_steps(rb), None) for rb in [*catalog, *catalog.partial]):
            elsewhere = [Catalog.load(state.host.step_types, _beside(paths)), Catalog.load(state.host.step_types, project)]
    else:
        catalog = Catalog.load(state.host.step_types, project, cache=False)
    problems = [*catalog.problems, *check_catalog(catalog, state.host, elsewhere=elsewhere)]
    problems.sort(key=lambda p: (p.file or "", p.line or 0, p.column or 0))
    return list(catalog), problems, catalog.files


def _beside(paths: tuple[str, ...]) -> list[Path]:
    """The YAML runbooks next to each file of ``paths`` (not below, and no Python file is imported for this)."""
    out: set[Path] = set()
    for folder in {Path(p).parent for p in paths if Path(p).is_file()}:
        out.update(f for f in folder.iterdir() if f.suffix in (".yaml", ".yml") and not f.name.startswith((".", "_")) and f.is_file())
    return sorted(out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.command("validate")
@click.argument("paths", nargs=-1, type=click.Path())
@json_option
@pass_state
def validate_cmd(state: AppState, paths: tuple[str, ...]) -> int:
    """Check runbook files (default: the search path) and report every problem; exit 2 if any."""
    runbooks, problems, checked = validate_files(state, paths)
    bad_files = sorted({p.file for p in problems if p.file})
    files = len({*(str(f) for f in checked), *bad_files})  # included files with problems count as files checked
    if state.json:
        from runner.cli.output import emit_json

        emit_json({"valid": not problems, "files": files, "files_with_problems": bad_files,
                   "runbooks": [{"name": rb.name, "file": rb.file} for rb in runbooks],
                   "problems": [p.as_dict() for p in problems]})  # fmt: skip
    else:
        import sys

        for problem in problems:
            sys.stderr.write(f"error: {problem}\n")
        from runner.cli.output import console

        if problems:
            valid = sum(1 for rb in runbooks if rb.file not in bad_files)
            console().print(f"{_plural(files, 'file')}, {valid} runbook{'' if valid == 1 else 's'} valid: "
                            f"[red]{_plural(len(problems), 'problem')}[/] in {_plural(len(bad_files), 'file')}")  # fmt: skip
        else:
            console().print(f"{_plural(len(runbooks), 'runbook')} in {_plural(files, 'file')}: [green]ok[/]")
    return 2 if problems else 0


@click.command("schema")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to FILE instead of stdout.")
@json_option
@pass_state
def schema_cmd(state: AppState, output: str | None) -> int:
    """Print the JSON Schema (draft 2020-12) of runbook files, for editors and CI."""
    import json

    from runner.schema import runbook_schema

    text = json.dumps(runbook_schema(state.host.step_types), indent=2) + "\n"
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)
    return 0


@click.command("plugins")
@json_option
@pass_state
def plugins_cmd(state: AppState) -> int:
    """Show the loaded plugins, what each contributes and where it comes from."""
    infos = state.host.describe()
    from runner.plugin import disabled_plugins

    if state.json:
        from runner.cli.output import emit_json

        emit_json({"plugins": [i.as_dict() for i in infos], "disabled": disabled_plugins()})
        return 0
    from rich.table import Table

    from runner.cli.output import console

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("PLUGIN", "CONTRIBUTES", "FROM"):
        table.add_column(col, overflow="fold")
    for info in infos:
        what = "; ".join(f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in info.contributes.items()) or "-"
        table.add_row(info.name, what, info.distribution or info.location)
    console().print(table)
    if disabled_plugins():
        console().print(f"disabled by RUNBOOK_DISABLE_PLUGINS: {', '.join(disabled_plugins())}")
    return 0


COMMANDS = (list_cmd, show_cmd, validate_cmd, schema_cmd, plugins_cmd)
