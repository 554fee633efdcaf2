"""A heartbeat-limited agent: a fresh process per wake-up with a hard 5 s limit, keeping only the run id.

It drives, over the CLI and over MCP, a runbook with a step longer than its budget that declares no duration, a
sub-runbook whose step also outlives the budget, an approval, a step killed mid-action (unknown: a person decides)
and a failure a person fixes (``retry``). It only follows ``next``; the person's commands only record decisions.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import Project

WAKE_LIMIT = 5.0
BUDGET = "3.5s"
"""The CLI's budget counts from process start: the whole wake-up fits in it."""
MCP_BUDGET = "2s"
"""An MCP call's budget counts from the call: spawning `runbook mcp` (about 1 s, more on a loaded machine) comes on top."""

JOURNEY = """
name: journey
steps:
  - id: prepare
    check: [{{shell: [grep, -qx, prepare, "{log}"]}}]
    shell: {{script: "echo prepare >> {log}"}}
  - id: long
    check: [{{shell: [grep, -qx, long, "{log}"]}}]
    shell: {{script: "sleep 6; echo long >> {log}"}}
  - id: sub
    runbook: {{name: journey-child}}
  - id: approve
    approval: {{message: go on?}}
  - id: blind
    shell: {{script: "echo blind >> {log}; sleep 5; echo blind-end >> {log}"}}
  - id: flaky
    check: [{{shell: [grep, -qx, flaky, "{log}"]}}]
    shell: {{script: "test -f {fixed} && echo flaky >> {log}"}}
  - id: finish
    check: [{{shell: [grep, -qx, finish, "{log}"]}}]
    shell: {{script: "echo finish >> {log}"}}
"""

CHILD = """
name: journey-child
steps:
  - id: inner
    check: [{{shell: [grep, -qx, inner, "{log}"]}}]
    shell: {{script: "sleep 6; echo inner >> {log}"}}
"""


class Person:
    """A person at a terminal: records decisions with the CLI; their processes are remembered."""

    def __init__(self, project: Project) -> None:
        self.project, self.pids, self.commands = project, [], []  # type: ignore[var-annotated]

    def run(self, command: str) -> Any:
        argv = shlex.split(command.replace("NAME", "pat"))
        assert argv[0] == "runbook"
        proc = subprocess.Popen(self.project.cmd(*argv[1:]), cwd=self.project.root, env={**self.project.env, "RUNBOOK_ACTOR": "pat"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.pids.append(proc.pid)
        out, err = proc.communicate(timeout=60)
        self.commands.append(argv[1:3])
        assert proc.returncode == 0, (command, out, err)
        return out


def _setup(project: Project) -> tuple[Path, Path]:
    log, fixed = project.root / "journey.log", project.root / "fixed.flag"
    project.write("journey.yaml", JOURNEY.format(log=log, fixed=fixed))
    project.write("journey-child.yaml", CHILD.format(log=log))
    assert project.run("list").code == 0  # the agent's machine has used runbook before: its compile cache is warm
    return log, fixed


def _kill_executor(view: dict[str, Any]) -> bool:
    """While step ``blind`` runs (in a detached executor), the host loses that executor: kill -9."""
    executor = view.get("executor") or ""
    step = view["next"].get("step")
    if view["state"] != "running" or step != "blind" or not executor.startswith("detached pid "):
        return False
    os.kill(int(executor.split()[2]), signal.SIGKILL)
    return True


def _check_outcome(project: Project, person: Person, log: Path, run_id: str, walls: list[float], final: dict[str, Any]) -> None:
    assert final["state"] == "succeeded", final
    assert max(walls) < WAKE_LIMIT, f"a wake-up took {max(walls):.2f}s: {walls}"
    lines = log.read_text().split()
    for checked in ("prepare", "long", "inner", "flaky", "finish"):
        assert lines.count(checked) == 1, f"{checked} ran {lines.count(checked)} times: {lines}"
    assert lines.count("blind") == 1 and "blind-end" not in lines, "the killed step was skipped by a person's decision, not re-run"
    assert sorted(c[0] for c in person.commands) == ["approve", "decide", "retry"], person.commands
    events = project.run("events", run_id, "--json").json()["events"]
    drivers = [e["data"].get("executor", "") for e in events if e["type"] in ("run.started", "run.resumed", "step.started")]
    person_labels = {f"pid {pid} " for pid in person.pids}
    assert not [d for d in drivers if any(p in d + " " for p in person_labels)], "a person's command drove the run"


def _after(view: dict[str, Any], person: Person, fixed: Path) -> str | None:
    """What the agent does with ``next``: the command to run at the next wake-up (None: stop)."""
    nxt = view["next"]
    action = nxt["action"]
    if action == "none":
        return None
    if action == "await_approval":
        person.run(nxt["human_command"])
    elif action == "decide":
        skip = next(o for o in nxt["options"] if o["action"] == "skip_step")
        person.run(skip["human_command"])
    elif action == "fix_and_retry":
        fixed.touch()
        person.run(nxt["human_command"])
    elif action == "handoff":
        raise AssertionError(f"no step of this runbook should need a hand-off: {nxt}")
    return "resume"


def test_a_5s_heartbeat_agent_drives_everything_over_the_cli(project: Project) -> None:
    import json

    log, fixed = _setup(project)
    person = Person(project)
    walls: list[float] = []
    killed = False

    def wake(*args: str) -> dict[str, Any]:
        started = time.monotonic()
        proc = subprocess.run(project.cmd(*args), cwd=project.root, env=project.env, capture_output=True, text=True, timeout=30)
        walls.append(time.monotonic() - started)
        return dict(json.loads(proc.stdout))

    view = wake("run", "journey", "--budget", BUDGET, "--json")
    run_id = view["run_id"]
    for _ in range(80):
        if not killed:
            killed = _kill_executor(view)
        what = _after(view, person, fixed)
        if what is None:
            break
        if view["next"].get("not_before"):
            time.sleep(0.5)
        view = wake("resume", run_id, "--budget", BUDGET, "--json")
    assert killed, "the scenario killed the executor of step blind"
    _check_outcome(project, person, log, run_id, walls, view)


def test_a_5s_heartbeat_agent_drives_everything_over_mcp(project: Project) -> None:
    import importlib.util

    from tests.agents.agentkit import MCPServerProcess
    from tests.conftest import require

    require(importlib.util.find_spec("mcp") is not None, "the mcp SDK")
    log, fixed = _setup(project)
    person = Person(project)
    walls: list[float] = []
    server = MCPServerProcess(project)

    async def wake(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        async with server.connect("--budget", MCP_BUDGET) as agent:  # a fresh `runbook mcp` process per wake-up
            result = await agent.call(tool, args)
        walls.append(time.monotonic() - started)
        assert not result.is_error, result
        return dict(result.data)

    async def scenario() -> dict[str, Any]:
        killed = False
        view = await wake("start_run", {"runbook": "journey"})
        for _ in range(80):
            if not killed:
                killed = _kill_executor(view)
            if _after(view, person, fixed) is None:
                break
            if view["next"].get("not_before"):
                await anyio.sleep(0.5)
            view = await wake("resume_run", {"run_id": view["run_id"]})
        assert killed, "the scenario killed the executor of step blind"
        return view

    final = anyio.run(scenario)
    _check_outcome(project, person, log, final["run_id"], walls, final)


@pytest.fixture(autouse=True)
def _no_leftover_processes(project: Project) -> Any:
    yield
    subprocess.run(["pkill", "-f", str(project.root)], check=False)
    _ = sys.executable
