"""``runbook init [NAME]``: a commented starter runbook and the project's ``.runbook/`` directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from runner.cli.app import AppState, json_option, pass_state

__all__ = ["COMMANDS", "STARTER"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")

STARTER = """\
# A starter runbook written by `runbook init`. Try it:
#   runbook show __NAME__         what it takes and what it does
#   runbook plan __NAME__         what a run would do, from read-only probes (nothing changes)
#   runbook run __NAME__          run it; run it again: its step is `satisfied`, nothing is done twice
#   runbook validate             after every edit: every problem, at file:line:column
# Format: docs/runbooks.md. Editor completion: `runbook schema -o runbook.schema.json`, then a first line
# `# yaml-language-server: $schema=../runbook.schema.json`.
name: __NAME__
description: Make a file hold a greeting, once, and prove it does.
version: "1"
params:                                 # -p key=value; typed and checked before anything runs
  file: {type: string, default: greeting.txt, description: The file to write (relative to where runbook runs)}
  greeting: {type: string, default: "hello, world", description: The line the file must hold}
# lock: "__NAME__:{{ params.file }}"    # at most one active run per key
steps:
  - id: write-greeting
    description: Make the file hold exactly the greeting
    precondition:                       # must hold before acting; else the step is `blocked`, nothing changes
      - shell:
          script: test -d "$(dirname "$file")"     # params reach scripts as environment variables
        description: the file's directory exists
    check:                              # already done? then the step is `satisfied` and the action is skipped
      - shell:
          script: test "$(cat "$file" 2>/dev/null)" = "$greeting"
        description: the file already holds the greeting
    shell:                              # the action (one step type per step: shell, ssh, http, python, ...)
      script: |
        printf '%s\\n' "$greeting" > "$file"
        echo "wrote '$greeting' to $file"
    timeout: 30s
    verify:                             # after acting: polled until it holds, or the step fails
      within: 10s
      every: 1s
      checks:
        - shell: [grep, -qxF, "{{ params.greeting }}", "{{ params.file }}"]   # argv lists: one literal argument each
          description: the file holds the greeting

  # An approval: the run waits (exit 4) until someone runs `runbook approve RUN --by NAME`;
  # `runbook resume RUN` then goes on. Uncomment these lines to try it.
  # - id: confirm
  #   approval: {message: "The greeting is in {{ params.file }}. Go on?", approvers: 1, expires: 1h}
  #
  # - id: show
  #   description: Print the file (`runbook logs RUN` shows everything steps printed)
  #   shell: [cat, "{{ params.file }}"]
  #   idempotent: true                  # only reads: safe to run again after a crash
"""

CONFIG = """\
# Configuration of the runbook project in the directory above, read by every command run in it (and by
# `runbook serve` and `runbook worker` started there). It is empty: each section is documented where its
# feature is (notify: docs/notifications.md). The journal of runs, journal.db, lives next to this file and
# stays out of version control (.gitignore here); this file belongs in it.
"""

GITIGNORE = """\
# the journal of runs (and its WAL files) is this machine's state, not source
journal.db*
"""


def _files(root: Path, runbooks: Path, name: str) -> list[tuple[Path, str, str]]:
    """(path, content, what it is) of everything init writes."""
    return [
        (
            runbooks / f"{name}.yaml",
            STARTER.replace("__NAME__", name),
            "a starter runbook: params, a precondition, a check, an action, a verify",
        ),
        (root / ".runbook" / "config.yaml", CONFIG, "the project's configuration (empty, commented)"),
        (root / ".runbook" / ".gitignore", GITIGNORE, "keeps the journal out of version control"),
    ]


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


@click.command("init")
@click.argument("name", default="hello")
@json_option
@pass_state
def init_cmd(state: AppState, name: str) -> int:
    """Start a project here: runbooks/NAME.yaml (a commented starter runbook) and .runbook/ (its configuration).

    NAME defaults to 'hello'. An existing runbook file, or a runbook of that name elsewhere, is never
    overwritten (exit 2, nothing written); existing .runbook/ files are kept as they are.
    """
    from runner.errors import UsageError

    if not _NAME.match(name):
        raise UsageError(f"'{name}' is not a runbook name: expected lower-case letters, digits, '.', '_' or '-' (at most 128)")
    root = Path.cwd()
    runbooks = Path(state.settings.paths[0]) if state.settings.paths else root / "runbooks"
    if runbooks.suffix in (".yaml", ".yml", ".py"):
        raise UsageError(f"--path {runbooks} names a file; give the directory the starter runbook goes into")
    files = _files(root, runbooks.absolute(), name)
    target = files[0][0]
    if target.exists():
        raise UsageError(f"{_shown(target, root)} already exists; nothing was written", hint="choose another name: `runbook init NAME`")
    clash = next((rb for rb in state.catalog if rb.name == name), None)
    if clash is not None:
        raise UsageError(f"a runbook named '{name}' already exists in {clash.file}; nothing was written",
                         hint="choose another name: `runbook init NAME`")  # fmt: skip
    created, kept = [], []
    for path, text, what in files:
        if path.exists():
            kept.append({"file": _shown(path, root), "what": what})
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as f:  # "x": never overwrite, even a file that appeared meanwhile
            f.write(text)
        created.append({"file": _shown(path, root), "what": what})
    return _report(state, name, created, kept)


def _report(state: AppState, name: str, created: list[dict[str, str]], kept: list[dict[str, str]]) -> int:
    import shlex

    prefix = " ".join(["runbook", *(f"--path {shlex.quote(p)}" for p in state.settings.paths)])
    tries = [
        {"command": f"{prefix} show {name}", "what": "what it takes and what it does"},
        {"command": f"{prefix} plan {name}", "what": "what a run would do, from read-only probes"},
        {"command": f"{prefix} run {name}", "what": "run it (twice: the second run finds it done)"},
    ]
    if state.json:
        from runner.cli.output import emit_json

        document: dict[str, Any] = {"runbook": name, "created": created, "kept": kept, "try": tries}
        emit_json(document)
        return 0
    from runner.cli.output import console

    out = console()
    width = max(len(f["file"]) for f in created + kept)
    for verb, items in (("created", created), ("kept", kept)):
        for f in items:
            out.print(f"{verb:<7} {f['file']:<{width}}  [dim]{f['what']}[/]", highlight=False)
    out.print("next:", highlight=False)
    width = max(len(t["command"]) for t in tries)
    for t in tries:
        out.print(f"  {t['command']:<{width}}  [dim]{t['what']}[/]", highlight=False)
    return 0


COMMANDS = (init_cmd,)
