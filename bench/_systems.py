"""The systems compared: each writes its workload of N ``true`` commands, names its command, and checks its result.

Every run gets a fresh directory (a fresh journal for the floor and for runbook),
so no repetition is helped by state a previous one left behind.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _measure import Sample

__all__ = ["RUNBOOK_NAME", "System", "available_systems", "clean_env"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNBOOK_NAME = "bench-true"


@dataclass
class System:
    """One contender: how to prepare a run of N steps, its argv, and how to tell it really succeeded."""

    name: str
    version: str
    prepare: Callable[[Path, int], list[str]]  # writes the workload into a fresh dir, returns argv
    verify: Callable[[Sample, Path, int], str | None]  # None if N steps succeeded, else what went wrong
    env: dict[str, str]


def clean_env() -> dict[str, str]:
    """The benchmark's environment without ``RUNBOOK_*`` or Python variables that change how a run behaves."""
    drop = ("RUNBOOK_", "PYTHONPROFILEIMPORTTIME", "PYTHONTRACEMALLOC", "PYTHONDEVMODE", "PYTHONWARNINGS", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["RUNBOOK_ACTOR"] = "bench"
    return env


def _failed(sample: Sample) -> str | None:
    if sample.timed_out:
        return "timed out"
    if sample.code != 0:
        return f"exit {sample.code}: {(sample.stderr or sample.stdout).strip()[-800:]}"
    return None


# ---------------------------------------------------------------------- raw floor


def _raw_prepare(workdir: Path, n: int) -> list[str]:
    return [sys.executable, str(HERE / "raw_floor.py"), str(n), str(workdir / "floor.db")]


def _raw_verify(sample: Sample, workdir: Path, n: int) -> str | None:
    if (bad := _failed(sample)) is not None:
        return bad
    with sqlite3.connect(workdir / "floor.db") as conn:
        rows = conn.execute("SELECT COUNT(*) FROM steps WHERE exit_code = 0").fetchone()[0]
    if sample.stdout.strip() != f"steps={n}" or rows != n:
        return f"expected {n} committed steps, journal has {rows}; stdout {sample.stdout.strip()!r}"
    return None


# ---------------------------------------------------------------------- runbook


def runbook_yaml(n: int) -> str:
    """A runbook of ``n`` steps ``shell: ["true"]``."""
    lines = [f"name: {RUNBOOK_NAME}", f"description: {n} steps that run true (benchmark workload)", "steps:"]
    for i in range(n):
        lines += [f"  - id: s{i}", '    shell: ["true"]']
    return "\n".join(lines) + "\n"


def _runbook_prepare(workdir: Path, n: int) -> list[str]:
    (workdir / ".runbook").mkdir()  # marks the project root, so no .runbook/ in a parent directory is picked up
    (workdir / "runbooks").mkdir()
    (workdir / "runbooks" / f"{RUNBOOK_NAME}.yaml").write_text(runbook_yaml(n), encoding="utf-8")
    return [sys.executable, "-m", "runner", "run", RUNBOOK_NAME, "--json"]


def _runbook_verify(sample: Sample, workdir: Path, n: int) -> str | None:
    """Exit 0, the JSON view says N steps succeeded, and so does the journal on disk."""
    try:
        view = json.loads(sample.stdout)
    except ValueError:
        return _failed(sample) or f"stdout is not JSON: {sample.stdout[:300]!r}"
    ok = [s for s in view.get("steps", []) if s.get("state") == "succeeded"]
    if view.get("state") != "succeeded" or len(ok) != n:
        return f"exit {sample.code}, run {view.get('state')}: {len(ok)}/{n} steps succeeded ({view.get('reason') or view.get('error')})"
    if (bad := _failed(sample)) is not None:
        return bad
    with sqlite3.connect(workdir / ".runbook" / "journal.db") as conn:
        runs = conn.execute("SELECT state FROM runs").fetchall()
        done = conn.execute("SELECT COUNT(*) FROM steps WHERE state = 'succeeded'").fetchone()[0]
    if runs != [("succeeded",)] or done != n:
        return f"journal: runs {runs}, {done}/{n} steps succeeded"
    return None


# ---------------------------------------------------------------------- pyinfra


def _pyinfra(exe: Path) -> tuple[Callable[[Path, int], list[str]], Callable[[Sample, Path, int], str | None]]:
    def prepare(workdir: Path, n: int) -> list[str]:
        ops = "".join(f'server.shell(name="s{i}", commands=["true"])\n' for i in range(n))
        (workdir / "deploy.py").write_text("from pyinfra.operations import server\n\n" + ops, encoding="utf-8")
        return [str(exe), "-y", "@local", "deploy.py"]

    def verify(sample: Sample, _workdir: Path, n: int) -> str | None:
        if (bad := _failed(sample)) is not None:
            return bad
        log = sample.stdout + sample.stderr  # pyinfra logs its progress and results table on stderr
        ok = log.count("[@local] Success")
        total = re.search(r"Grand total\s+\d+\s+(\d+)\s+(\S+)", log)
        if ok != n or total is None or int(total.group(1)) != n or total.group(2) != "-":
            return f"expected {n} successful operations, saw {ok}: {log.strip()[-400:]}"
        return None

    return prepare, verify


# ---------------------------------------------------------------------- ansible


def _ansible(exe: Path, home: Path) -> tuple[Callable[[Path, int], list[str]], Callable[[Sample, Path, int], str | None]]:
    python = exe.parent / "python"

    def prepare(workdir: Path, n: int) -> list[str]:
        tasks = "".join(f'    - name: s{i}\n      ansible.builtin.command:\n        argv: ["true"]\n' for i in range(n))
        (workdir / "playbook.yml").write_text(f"- hosts: localhost\n  gather_facts: false\n  tasks:\n{tasks}", encoding="utf-8")
        return [str(exe), "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={python}", "playbook.yml"]

    def verify(sample: Sample, _workdir: Path, n: int) -> str | None:
        if (bad := _failed(sample)) is not None:
            return bad
        recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=0", sample.stdout)
        if recap is None or int(recap.group(1)) != n:
            return f"expected ok={n} failed=0 in the recap: {sample.stdout.strip()[-400:]}"
        return None

    home.mkdir(parents=True, exist_ok=True)
    return prepare, verify


# ---------------------------------------------------------------------- discovery


def find_peer(command: str, peer_dirs: list[Path]) -> Path | None:
    """``command`` in the benchmark venv's bin directory or a ``--peers-bin`` directory (never a PATH shim)."""
    for directory in (Path(sys.executable).parent, *peer_dirs):
        candidate = directory / command
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _version(argv: list[str], env: dict[str, str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = out.strip().splitlines()[0] if out.strip() else "unknown"
    return first.replace("pyinfra: ", "")


def available_systems(names: list[str], peer_dirs: list[Path], scratch: Path) -> tuple[list[System], list[str]]:
    """The requested systems that can run here, and a note for each one skipped."""
    env = clean_env()
    systems: list[System] = []
    notes: list[str] = []
    for name in names:
        if name == "raw":
            systems.append(
                System("raw", f"python {sys.version.split()[0]} + sqlite {sqlite3.sqlite_version}", _raw_prepare, _raw_verify, env)
            )
        elif name in ("runbook", "runbook-nocache"):
            # The compile cache is the benchmark's own (filled by the unmeasured warm-up run, as the .pyc files of
            # both Python processes are), never the user's; runbook-nocache compiles the runbook in every run.
            cache = "off" if name == "runbook-nocache" else str(scratch / "compile-cache")
            renv = {**env, "RUNBOOK_CACHE_DIR": cache}
            version = _version([sys.executable, "-m", "runner", "--version"], renv).replace("runbook ", "")
            systems.append(System(name, version, _runbook_prepare, _runbook_verify, renv))
        elif name == "pyinfra":
            exe = find_peer("pyinfra", peer_dirs)
            if exe is None:
                notes.append("pyinfra: not installed (pip install -e '.[bench]', or --peers-bin DIR); skipped")
                continue
            systems.append(System("pyinfra", _version([str(exe), "--version"], env), *_pyinfra(exe), env))
        elif name == "ansible":
            exe = find_peer("ansible-playbook", peer_dirs)
            if exe is None:
                notes.append("ansible: ansible-playbook not installed (pip install -e '.[bench]', or --peers-bin DIR); skipped")
                continue
            home = scratch / "ansible-home"
            aenv = {**env, "ANSIBLE_HOME": str(home), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
                    "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "False"}  # fmt: skip
            systems.append(System("ansible", _version([str(exe), "--version"], aenv), *_ansible(exe, home), aenv))
        else:
            raise SystemExit(f"unknown system '{name}'; choose from raw, runbook, pyinfra, ansible")
    return systems, notes
