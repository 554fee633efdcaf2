"""``next`` is one function of a run's typed state: the same on the CLI, the Python API, HTTP and MCP, for every state.

For each state, the ``next`` of ``runbook status --json``, ``runner.Client.status``, ``GET /v1/runs/{id}`` (a real
``runbook serve`` without workers, on the same journal) and the MCP ``get_run`` tool (a real ``runbook mcp``) agree on
the action, the step and the person's command; then doing what ``next`` says moves the run on (or is a documented wait).
"""

from __future__ import annotations

import importlib.util
import shlex
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Project, kill, require
from tests.server.serverkit import ServerProcess, start_server

pytestmark = pytest.mark.anyio

RUNBOOKS = {
    "plain.yaml": "name: plain\nsteps:\n  - {id: a, shell: [echo, a]}\n  - {id: b, shell: [echo, b]}\n",
    "ask.yaml": "name: ask\nsteps:\n  - id: gate\n    approval: {message: go?, approvers: 2}\n  - {id: after, shell: [echo, after]}\n",
    "brief.yaml": "name: brief\nsteps:\n  - id: gate\n    approval: {message: go?, expires: 1s}\n  - {id: after, shell: [echo, after]}\n",
    "later.yaml": "name: later\nsteps:\n  - id: pause\n    wait: {for: 1h}\n  - {id: after, shell: [echo, after]}\n",
    "flaky.yaml": "name: flaky\nsteps:\n  - {id: try, shell: [test, -f, fixed.flag]}\n",
    "blind.yaml": "name: blind\nsteps:\n  - {id: act, shell: {script: 'echo act >> blind.log; sleep 30'}}\n  - {id: tail, shell: [echo, t]}\n",
    "long.yaml": "name: long\nsteps:\n  - {id: slow, shell: [sleep, '30']}\n",
    "unsized.yaml": "name: unsized\nsteps:\n  - {id: slow, shell: {script: 'sleep 3; echo slow >> unsized.log'}}\n  - {id: tail, shell: [echo, t]}\n",
    "big.yaml": "name: big\nsteps:\n  - {id: huge, expected: 40s, shell: [echo, huge]}\n",
    "locked.yaml": "name: locked\nlock: the-lock\nsteps:\n  - id: gate\n    approval: {message: go?}\n",
}

Surface = Callable[[str], Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def mcp_server(project: Project) -> Any:
    from tests.agents.agentkit import MCPServerProcess

    return MCPServerProcess(project)


@pytest.fixture
def world(project: Project) -> Any:
    require(importlib.util.find_spec("fastapi") is not None and importlib.util.find_spec("mcp") is not None, "fastapi and the mcp SDK")
    for name, text in RUNBOOKS.items():
        project.write(name, text)
    server = start_server(project, "", workers=0)
    yield project, server
    server.stop()


_GLOBAL = {"--path", "--store", "--inventory", "--known-hosts"}


def _bare(command: str | None) -> str | None:
    """A command without the global options a surface repeats to point at its runbooks and store."""
    if command is None:
        return None
    argv, out = shlex.split(command), []
    while argv:
        arg = argv.pop(0)
        if arg in _GLOBAL:
            argv.pop(0)
        elif arg != "--json":
            out.append(arg)
    return shlex.join(out)


def _fields(nxt: dict[str, Any]) -> tuple[Any, ...]:
    return nxt["action"], nxt["step"], _bare(nxt.get("human_command")), nxt.get("budget_fits"), _bare(nxt.get("command"))


async def _all_next(project: Project, server: ServerProcess, agent: Any, run_id: str) -> dict[str, Any]:
    """``next`` from the four surfaces; asserts they agree and returns the CLI's."""
    from runner.api import Client

    cli = project.run("status", run_id, "--json")
    assert cli.code == 0, cli
    with Client(project_dir=project.root) as client:
        api = client.status(run_id).next.model_dump(mode="json")
    http = server.client(None).get(f"/v1/runs/{run_id}").json()["next"]
    mcp = await agent.call("get_run", {"run_id": run_id})
    assert not mcp.is_error, mcp
    nexts = {"cli": cli.json()["next"], "api": api, "http": http, "mcp": mcp.data["next"]}
    seen = {name: _fields(n) for name, n in nexts.items()}
    assert len(set(seen.values())) == 1, f"the surfaces disagree on next: {seen}"
    return nexts["cli"]


def _do(project: Project, command: str) -> Any:
    argv = shlex.split(command)
    assert argv[0] == "runbook"
    return project.run(*argv[1:])


def _state(project: Project, run_id: str) -> str:
    return str(project.run("status", run_id, "--json").json()["state"])


async def test_next_is_the_same_on_every_surface_and_moves_the_run(world: Any, mcp_server: Any) -> None:
    project, server = world
    policy = project.root / "read-all.yaml"  # the MCP agent reads runs a person started: only where a policy grants it
    policy.write_text('runbooks:\n  "*": {agents_may_read: true}\n')
    async with mcp_server.connect("--policy", str(policy)) as agent:

        async def check(run_id: str, action: str) -> dict[str, Any]:
            nxt = await _all_next(project, server, agent, run_id)
            assert nxt["action"] == action, nxt
            return nxt

        # queued: resume drives it
        from runner.api import Client

        with Client(project_dir=project.root) as client:
            queued = client.start("plain", execute=False).run_id
        nxt = await check(queued, "resume")
        assert _do(project, nxt["command"]).code == 0 and _state(project, queued) == "succeeded"
        assert (await check(queued, "none"))["command"] is None  # succeeded

        # paused at a boundary: resume
        paused = project.run("run", "plain", "--max-steps", "1", "--json").json()["run_id"]
        nxt = await check(paused, "resume")
        assert _do(project, nxt["command"]).code == 0

        # waiting on time: wait until not_before, with resume
        later = project.run("run", "later", "--budget", "3s", "--json")
        assert later.code == 4, later
        nxt = await check(later.json()["run_id"], "wait")
        assert nxt["not_before"] and nxt["command"].split()[1] == "resume"

        # waiting on an approval: before a decision, with one of two, with the quorum, after expiry
        asked = project.run("run", "ask", "--json").json()["run_id"]
        nxt = await check(asked, "await_approval")
        assert nxt["human_command"].split()[1] == "approve" and " approve " not in nxt["command"]
        assert project.run("approve", asked, "--by", "alice").code == 0
        assert (await check(asked, "await_approval"))["approvals"]["approved_by"] == ["alice"]
        assert project.run("approve", asked, "--by", "bob").code == 0
        nxt = await check(asked, "resume")  # the quorum is reached: nobody is asked again
        assert _do(project, nxt["command"]).code == 0 and _state(project, asked) == "succeeded"
        brief = project.run("run", "brief", "--json").json()["run_id"]
        time.sleep(1.2)
        nxt = await check(brief, "resume")  # expired: resuming applies on_expiry, no approve command offered
        assert nxt["human_command"] is None and "on_expiry: deny" in nxt["reason"]
        assert _do(project, nxt["command"]).code == 1 and _state(project, brief) == "failed"

        # failed: a person records a retry after the fix; then resume
        flaky = project.run("run", "flaky", "--json").json()["run_id"]
        nxt = await check(flaky, "fix_and_retry")
        assert nxt["human_command"].split()[1:3] == ["retry", flaky]
        (project.root / "fixed.flag").touch()
        assert _do(project, nxt["human_command"]).code == 0
        nxt = await check(flaky, "resume")
        assert _do(project, nxt["command"]).code == 0 and _state(project, flaky) == "succeeded"

        # unknown: a person records a decision; the driver resumes
        proc = project.popen("run", "blind")
        _wait(lambda: (project.root / "blind.log").exists())
        kill(proc)
        blind = project.run("runs", "--runbook", "blind", "--json").json()["runs"][0]["run_id"]
        nxt = await check(blind, "resume")  # its executor is gone: resume recovers it
        recovered = _do(project, nxt["command"])
        assert recovered.code == 4, recovered
        nxt = await check(blind, "decide")
        assert nxt["human_command"].split()[1:5] == ["decide", blind, "--retry-step", "act"]
        skip = next(o for o in nxt["options"] if o["action"] == "skip_step")
        assert _do(project, skip["human_command"]).code == 0
        nxt = await check(blind, "resume")
        assert _do(project, nxt["command"]).code == 0 and _state(project, blind) == "succeeded"
        assert (project.root / "blind.log").read_text().split() == ["act"], "the decision never ran the step again"

        # running elsewhere: wait (status), never resume
        proc = project.popen("run", "long")
        long_id = _wait(
            lambda: next(
                iter(r["run_id"] for r in project.run("runs", "--runbook", "long", "--state", "running", "--json").json()["runs"]), None
            )
        )
        nxt = await check(long_id, "wait_elsewhere")
        assert nxt["command"].split()[1] == "status" and nxt["holder"] and nxt["until"]
        assert _do(project, nxt["command"]).code == 0  # a documented wait
        resumed = project.run("resume", long_id, "--json")  # a driver that resumes anyway gets the same answer, exit 6
        assert resumed.code == 6 and resumed.json()["next"]["action"] == "wait_elsewhere", resumed
        kill(proc, signal.SIGTERM)

        # a step with no estimate under a budget: a detached executor runs it; resume picks it up
        unsized = project.run("run", "unsized", "--budget", "2s", "--json")
        assert unsized.code == 3, unsized
        uid = unsized.json()["run_id"]
        nxt = await check(uid, "resume")
        done = _do(project, nxt["command"].replace("--budget 2s", "--budget 8s"))
        assert done.code == 0 and _state(project, uid) == "succeeded", done
        assert (project.root / "unsized.log").read_text().split() == ["slow"]

        # a budget that can never fit the next step: a hand-off naming the budget that fits
        big = project.run("run", "big", "--budget", "3s", "--json")
        assert big.code == 3, big
        nxt = await check(big.json()["run_id"], "handoff")
        assert nxt["budget_fits"] >= 41 and nxt["estimate"] == 40 and "--budget" not in nxt["command"]  # this reader has none
        caller = project.run("status", big.json()["run_id"], "--budget", "3s", "--json").json()["next"]
        assert caller["action"] == "handoff" and f"--budget {nxt['budget_fits']}s" in caller["command"], caller
        assert _do(project, nxt["human_command"]).code == 0

        # conflict: the lock is held by another run; every surface says which, and never to act on it
        holder = project.run("run", "locked", "--json").json()["run_id"]
        refused = project.run("run", "locked", "--json")
        assert refused.code == 6
        conflict = refused.json()["next"]
        assert conflict["action"] == "conflict" and conflict["holder"] == holder and conflict["command"].split()[1] == "status"
        http = server.client(None).post("/v1/runs", json={"runbook": "locked"})
        assert http.status_code == 409 and http.json()["next"]["holder"] == holder, http.text
        mcp = await agent.call("start_run", {"runbook": "locked"})
        assert mcp.is_error and mcp.data["next"]["action"] == "conflict", mcp

        # cancelled: nothing more
        assert project.run("cancel", holder).code == 0
        await check(holder, "none")


def _wait(fn: Callable[[], Any], timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")
