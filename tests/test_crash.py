"""Crash safety: SIGKILL at random points, then resume, until the run finishes.

Each step appends its id to a file. Steps with a ``check`` (the line is already there) must have run
their action at most once; every step must have run at least once; no run may be left ``running``.
``RUNBOOK_SOAK=1`` multiplies the number of kills by ten.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, kill

KILLS = 500 if os.environ.get("RUNBOOK_SOAK") else 52
MAX_RUNS = KILLS + 8  # a run takes at least one kill on average by far (about 3); this only bounds a broken killer


def runbook(name: str, log: Path) -> str:
    lines = [f"name: {name}", "steps:"]
    for i in range(10):
        sid = f"s{i}"
        action = f'shell: {{script: "echo {sid} >> {log}; sleep 0.15"}}'
        if i in (3, 7):  # idempotent, no check: may run again after a crash
            lines.append(f"  - {{id: {sid}, idempotent: true, {action}}}")
        elif i == 5:  # neither: a crash inside it needs a decision
            lines.append(f"  - {{id: {sid}, {action}}}")
        else:
            lines.append(f"  - {{id: {sid}, {action}, check: [{{shell: [grep, -qx, {sid}, {log}]}}]}}")
    return "\n".join(lines) + "\n"


def drive_with_kills(project: Project, name: str, rng: random.Random, kills: int) -> tuple[str, int]:
    """Start the run, kill it ``kills`` times at random points, then let it finish. Returns (run id, kills done)."""
    done = 0
    run_id = None
    for _ in range(kills * 4):
        if done >= kills:
            break
        args = ["run", name, "--json"] if run_id is None else ["resume", run_id, "--json"]
        proc = project.popen(*args)
        if run_id is None:  # on a loaded machine start-up alone can outlast the random delay: kill a run, not a start-up
            _until(lambda p=proc: p.poll() is not None or project.run("runs", "--runbook", name, "--json").json()["runs"])
        time.sleep(rng.uniform(0.2, 1.2))
        finished = proc.poll() is not None
        if finished:
            proc.communicate()
        else:
            kill(proc)
            done += 1
        if run_id is None:
            runs = project.run("runs", "--runbook", name, "--json").json()["runs"]
            run_id = runs[0]["run_id"] if runs else None
        if finished and proc.returncode == 0:
            break
        if run_id is not None:
            _decide_unknown(project, run_id)
    assert run_id is not None, "the run was never created"
    for _ in range(10):
        res = project.run("resume", run_id, "--json")
        if res.code == 0:
            break
        assert res.code in (4,), res
        _decide_unknown(project, run_id)
    return run_id, done


def _until(condition: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.05)


def _decide_unknown(project: Project, run_id: str) -> None:
    doc = project.run("status", run_id, "--json").json()
    if doc["next"]["action"] == "decide":
        step = doc["next"]["step"]
        res = project.run("resume", run_id, "--retry-step", step, "--max-steps", "1", "--json")
        assert res.code in (0, 3, 4), res


@pytest.mark.timeout(1800)
def test_sigkill_at_random_points_never_reruns_a_checked_step(project: Project) -> None:
    rng = random.Random(int(os.environ.get("RUNBOOK_CRASH_SEED", "20261122")))
    total, n = 0, 0
    while total < KILLS:
        assert n < MAX_RUNS, f"only {total} kills landed in {n} runs"
        log = project.root / f"log{n}"
        log.touch()
        project.write(f"crashy{n}.yaml", runbook(f"crashy{n}", log))
        run_id, kills = drive_with_kills(project, f"crashy{n}", rng, 12)
        total += kills
        status = project.run("status", run_id, "--json").json()
        assert status["state"] == "succeeded", json.dumps(status, indent=1)
        counts = Counter(log.read_text().split())
        for i in range(10):
            sid = f"s{i}"
            assert counts[sid] >= 1, f"run {n}: step {sid} never ran ({counts})"
            if i not in (3, 5, 7):
                assert counts[sid] == 1, f"run {n}: checked step {sid} ran its action {counts[sid]} times"
        n += 1
    leftover = project.run("runs", "--state", "running", "--json").json()["runs"]
    assert leftover == [], "no run is left running"
