"""Shell completion through click's ``_RUNBOOK_COMPLETE`` protocol: runbook names, run ids, step ids, ``-p`` names
and choices, from the search path and the journal (never creating one), in bash, zsh and fish.

The protocol tests call ``runbook`` as each shell's script does (environment variables in, lines out); the
terminal tests type TAB into real interactive shells on a pseudo-terminal, where ``runbook`` is a stand-in that
completes for real and otherwise prints the argv it was given: the completed command line, word by word.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.procs import require
from harness.terminal import Terminal

from tests.conftest import Project

DEMO = """
name: demo
description: A demo with every kind of param
params:
  threshold: {type: integer, default: 5, description: Percent}
  mode: {type: string, enum: [fast, careful]}
  dry: {type: boolean, default: false}
steps:
  - {id: first, shell: [echo, one]}
  - {id: second, shell: [echo, two]}
"""
GATE = "name: gate\nsteps:\n  - id: ask\n    approval: {message: go?}\n"


@dataclass
class Runs:
    project: Project
    done: str
    waiting: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """A project with runbooks `demo` and `gate` (in `runbooks/`), `elsewhere` (in `other/`), a succeeded and a waiting run."""
    project = Project(tmp_path_factory.mktemp("completion") / "proj")
    project.write("demo.yaml", DEMO)
    project.write("gate.yaml", GATE)
    (project.root / "other").mkdir()
    (project.root / "other" / "elsewhere.yaml").write_text("name: elsewhere\nsteps:\n  - {id: a, shell: [echo]}\n")
    done = project.run("run", "demo", "-p", "mode=fast", "--json").json()["run_id"]
    waiting = project.run("run", "gate", "--json").json()["run_id"]
    yield Runs(project, done, waiting)


def complete(cwd: Path, shell: str, line: str) -> list[tuple[str, str]]:
    """(value, help) pairs ``runbook`` answers for ``line`` (the cursor at its end), as ``shell``'s script asks."""
    words = line.split()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "COMP_", "_RUNBOOK"))}
    env.update(RUNBOOK_CACHE_DIR=os.environ.get("RUNBOOK_CACHE_DIR", ""), _RUNBOOK_COMPLETE=f"{shell}_complete")
    if shell == "bash":  # our script: the line up to the cursor
        env.update(COMP_LINE=line, COMP_WORDBREAKS="\"'><=;|&(:")
    elif shell == "zsh":  # click's protocol: the words and the index of the one being completed
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) if line.endswith(" ") else len(words) - 1))
    else:  # fish: the line and the token being completed
        env.update(COMP_WORDS=line, COMP_CWORD="" if line.endswith(" ") else words[-1])
    proc = subprocess.run([sys.executable, "-m", "runner"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc
    if not proc.stdout.strip():  # nothing to offer: click writes one empty line
        return []
    if shell == "zsh":  # type, value, help (or "_") per item
        lines = proc.stdout.splitlines()
        return [(lines[i + 1].replace("\\:", ":"), "" if lines[i + 2] == "_" else lines[i + 2]) for i in range(0, len(lines), 3)]
    pairs = []
    for item in proc.stdout.splitlines():
        kind, _, rest = item.partition(",")
        assert kind == "plain", item
        value, _, about = rest.partition("\t")
        pairs.append((value, about))
    return pairs


def described(shell: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` as ``shell`` shows them: bash shows no descriptions."""
    return [(v, "") for v, _ in pairs] if shell == "bash" else pairs


def values(cwd: Path, shell: str, line: str) -> list[str]:
    return [v for v, _ in complete(cwd, shell, line)]


SHELLS = ["bash", "zsh", "fish"]


@pytest.mark.parametrize("shell", SHELLS)
def test_runbook_names_for_run_show_and_plan(runs: Runs, shell: str) -> None:
    root = runs.project.root
    assert complete(root, shell, "runbook run ") == described(shell, [("demo", "runbooks/demo.yaml"), ("gate", "runbooks/gate.yaml")])
    assert values(root, shell, "runbook show d") == ["demo"]
    assert values(root, shell, "runbook plan g") == ["gate"]
    assert values(root, shell, "runbook --path other run ") == ["elsewhere"], "the search path typed on the line"
    assert values(root, shell, "runbook runs --runbook ") == ["demo", "gate"]


@pytest.mark.parametrize("shell", SHELLS)
def test_param_names_then_their_choices(runs: Runs, shell: str) -> None:
    root = runs.project.root
    names = complete(root, shell, "runbook run demo -p ")
    assert names == described(shell, [("threshold=", "integer, default 5: Percent"), ("mode=", "string, required"),
                                      ("dry=", "boolean, default False")])  # fmt: skip
    assert values(root, shell, "runbook run demo -p th") == ["threshold="]
    assert values(root, shell, "runbook run demo -p threshold=3 -p ") == ["mode=", "dry="], "params already given are left out"
    assert values(root, shell, "runbook plan demo --param d") == ["dry="]
    choices = ["fast", "careful"] if shell == "bash" else ["mode=fast", "mode=careful"]  # bash replaces only after '='
    assert values(root, shell, "runbook run demo -p mode=") == choices
    assert values(root, shell, "runbook run demo -p mode=c") == choices[1:]
    assert values(root, shell, "runbook run demo -p dry=t") == (["true"] if shell == "bash" else ["dry=true"])
    assert values(root, shell, "runbook run nosuch -p ") == [], "an unknown runbook completes nothing, quietly"


@pytest.mark.parametrize("shell", SHELLS)
def test_run_ids_newest_first_and_by_what_the_command_acts_on(runs: Runs, shell: str) -> None:
    root = runs.project.root
    listed = complete(root, shell, "runbook status ")
    assert [v for v, _ in listed] == [runs.waiting, runs.done]
    if shell != "bash":  # zsh and fish show what each candidate is
        assert listed[0][1].startswith("gate waiting ") and listed[1][1].startswith("demo succeeded ")
    assert values(root, shell, "runbook logs ") == [runs.waiting, runs.done]
    assert values(root, shell, "runbook approve ") == [runs.waiting], "only a waiting run can be approved"
    assert values(root, shell, "runbook resume ") == [runs.waiting], "a succeeded run has nothing to resume"
    assert values(root, shell, f"runbook events {runs.done[:12].lower()}") == [runs.done], "prefixes are case-insensitive"
    assert values(root, shell, f"runbook logs {runs.done} ") == ["first", "second"], "then the run's steps"
    assert values(root, shell, f"runbook decide {runs.waiting} --skip-step ") == ["ask"]


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_never_creates_a_journal(tmp_path: Path, shell: str) -> None:
    assert values(tmp_path, shell, "runbook status ") == []
    assert values(tmp_path, shell, "runbook --store sqlite:///sub/j.db logs ") == []
    assert values(tmp_path, shell, "runbook run ") == []
    assert list(tmp_path.iterdir()) == []


def test_the_store_typed_on_the_line_is_the_one_read(runs: Runs, tmp_path: Path) -> None:
    journal = runs.project.journal
    assert values(tmp_path, "zsh", f"runbook --store sqlite:///{journal} status ") == [runs.waiting, runs.done]


@pytest.mark.parametrize(
    ("shell", "needles"),
    [
        ("bash", ['COMP_LINE="${COMP_LINE:0:COMP_POINT}"', "compopt -o nospace", "complete -o nosort -F _runbook_completion runbook"]),
        ("zsh", ["#compdef runbook", "compadd -U -S '' -V unsorted -a nospace", "compdef _runbook_completion runbook"]),
        ("fish", ["complete --no-files --command runbook"]),
    ],
)
def test_the_scripts_come_from_the_same_variable(tmp_path: Path, shell: str, needles: list[str]) -> None:
    env = {**os.environ, "_RUNBOOK_COMPLETE": f"{shell}_source"}
    proc = subprocess.run([sys.executable, "-m", "runner"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc
    for needle in needles:
        assert needle in proc.stdout


def test_click_own_bash_protocol_still_answers(runs: Runs) -> None:
    """A script generated by an older version (click's: COMP_WORDS and COMP_CWORD) keeps working."""
    env = {**os.environ, "_RUNBOOK_COMPLETE": "bash_complete", "COMP_WORDS": "runbook show ", "COMP_CWORD": "2"}
    env.pop("COMP_LINE", None)
    proc = subprocess.run([sys.executable, "-m", "runner"], cwd=runs.project.root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines() == ["plain,demo", "plain,gate"], proc


# ---------------------------------------------------------------------- real shells, real TAB

SETUP = {
    "bash": (["bash", "--norc", "--noprofile", "-i"], 'PS1="$ "; eval "$(_RUNBOOK_COMPLETE=bash_source runbook)"; echo READY\r'),
    "zsh": (
        ["zsh", "-f", "-i"],
        'PS1="$ "; autoload -Uz compinit && compinit -u -D; eval "$(_RUNBOOK_COMPLETE=zsh_source runbook)"; echo READY\r',
    ),
    "fish": (["fish", "--no-config", "-i"], "env _RUNBOOK_COMPLETE=fish_source runbook | source; echo READY\r"),
}


@pytest.fixture
def terminal(runs: Runs, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Terminal]:
    shell = request.param
    require(shutil.which(shell) is not None, f"the {shell} shell (Debian package {shell})")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / "runbook"
    stand_in.write_text(
        "#!/bin/sh\n"
        f'if [ -n "$_RUNBOOK_COMPLETE" ]; then exec {sys.executable} -m runner "$@"; fi\n'
        "printf 'ARGV:'; printf '[%s]' \"$@\"; printf '\\n'\n"
    )
    stand_in.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "TERM": "xterm", "LANG": "C.UTF-8",
           "RUNBOOK_CACHE_DIR": os.environ.get("RUNBOOK_CACHE_DIR", ""), "fish_greeting": ""}  # fmt: skip
    argv, setup = SETUP[shell]
    term = Terminal(argv, cwd=runs.project.root, env=env)
    try:
        term.send(setup)
        term.expect(r"\nREADY\n")
        yield term
    finally:
        term.close()


def typed(term: Terminal, keys: str) -> str:
    """Type ``keys`` and Enter: the argv the completed line ran with, as ``[word][word]...``."""
    term.send(keys + "\r")
    return term.expect(r"ARGV:([^\n]*)\n").group(1)


@pytest.mark.parametrize("terminal", SHELLS, indirect=True)
def test_tab_in_a_real_shell(terminal: Terminal, runs: Runs) -> None:
    assert typed(terminal, "runbook run de\t") == "[run][demo]"
    assert typed(terminal, "runbook run demo -p th\t7") == "[run][demo][-p][threshold=7]", "no space after key="
    assert typed(terminal, "runbook run demo -p mode=f\t") == "[run][demo][-p][mode=fast]", "the value after '='"
    assert typed(terminal, "runbook run demo -p mo\tc\t") == "[run][demo][-p][mode=careful]"
    assert typed(terminal, "runbook approve \t") == f"[approve][{runs.waiting}]"
    assert typed(terminal, f"runbook logs {runs.done} s\t") == f"[logs][{runs.done}][second]"
