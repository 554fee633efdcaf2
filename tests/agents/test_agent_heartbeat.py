"""must-show 2: a heartbeat-limited agent drives a long operation through the CLI, one short wake-up at a time.

The agent wakes every ``HEARTBEAT`` seconds and never acts on its own judgement: it reads the run's
``next`` (``runbook status RUN --json``), sleeps while ``next.not_before`` is in the future, and otherwise
runs ``next.command`` (which repeats its ``--budget 5s``). A human approves from a separate process
while the run waits. Every call is a separate ``runbook`` process whose wall time is measured.
"""

from __future__ import annotations

import shlex
import threading
import time
from typing import Any

from tests.agents.agentkit import lines, parse_time, timed
from tests.conftest import Project, Result

HEARTBEAT = 2.0
BUDGET = 5.0
EXIT_SLACK = 0.5
"""Seconds a budgeted process may take beyond its budget, from spawn to exit as the test sees it. The budget
counts from the process's own start time (interpreter start-up included) and the engine stops 0.15 s before
it; what is left is printing the JSON, closing the journal and interpreter shutdown (measured 30-80 ms), plus
scheduling noise on a loaded two-core CI machine."""
READY_AFTER = 20

RUNBOOK = """
name: maintenance
description: Drain, wait until the system is ready, ask a human, apply, undrain.
params:
  ready_at: {{type: integer, description: epoch second from which the system is ready}}
steps:
  - id: drain
    expected: 1s
    shell: {{script: "echo drain >> {log}; sleep 0.3"}}
  - id: ready
    wait:
      checks:
        - shell: {{command: [sh, -c, 'test "$(date +%s)" -ge "$0"', "{{{{ params.ready_at }}}}"]}}
      every: 2s
      within: 2m
  - id: confirm
    approval: {{message: "Apply the change?", distinct_from_starter: true}}
  - id: apply
    expected: 2s
    shell: {{script: "echo apply >> {log}; sleep 1"}}
  - id: undrain
    expected: 1s
    shell: {{script: "echo undrain >> {log}"}}
"""


class HeartbeatAgent:
    """Follows ``next``; records every call it makes with its wall time."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.calls: list[tuple[list[str], float, Result]] = []
        self.seen_actions: list[str] = []

    def call(self, *args: str) -> dict[str, Any]:
        result, elapsed = timed(self.project, *args)
        self.calls.append((list(args), elapsed, result))
        assert result.code in (0, 3, 4), result
        doc: dict[str, Any] = result.json()
        return doc

    def drive(self, first: list[str], on_view: Any, limit: float = 150) -> dict[str, Any]:
        """Run ``first``, then wake every HEARTBEAT seconds until ``next.action`` is ``none``."""
        last = self.call(*first)  # the latest budgeted view: its next.command carries the budget
        view = last
        give_up = time.monotonic() + limit
        while view["next"]["action"] != "none":
            assert time.monotonic() < give_up, "the operation did not finish"
            action = view["next"]["action"]
            assert action in ("resume", "wait", "await_approval"), f"the agent has no instruction for {action!r}"
            self.seen_actions.append(action)
            on_view(view)
            time.sleep(HEARTBEAT)  # the scheduler wakes the agent again
            view = self.call("status", view["run_id"], "--json")  # read-only: is there anything to do now?
            not_before = parse_time(view["next"]["not_before"])
            if view["next"]["action"] == "none" or (not_before is not None and not_before > time.time()):
                continue
            assert [*_without_json(view), "--budget", "5s"] == _without_json(last), "status and the last budgeted call agree"
            argv = shlex.split(last["next"]["command"])
            assert argv[0] == "runbook" and "--budget" in argv, argv
            view = last = self.call(*argv[1:])
        return view


def _without_json(view: dict[str, Any]) -> list[str]:
    return [a for a in shlex.split(view["next"]["command"]) if a != "--json"]


def test_heartbeat_agent_completes_a_long_wait_and_a_human_approval(project: Project) -> None:
    log = project.root / "effects.log"
    project.write("maintenance.yaml", RUNBOOK.format(log=log))
    ready_at = int(time.time()) + READY_AFTER
    agent = HeartbeatAgent(project)
    approvals: list[Result] = []
    human = threading.Event()

    def human_approves(run_id: str) -> None:
        approvals.append(project.run("approve", run_id, "--by", "human", "--comment", "go ahead"))

    def on_view(view: dict[str, Any]) -> None:
        if view["next"]["action"] == "await_approval" and not human.is_set():
            human.set()
            assert view["next"]["human_command"].startswith(f"runbook approve {view['run_id']} --by NAME")
            threading.Timer(1.0, human_approves, args=(view["run_id"],)).start()

    final = agent.drive(["run", "maintenance", "-p", f"ready_at={ready_at}", "--budget", "5s", "--json"], on_view)

    assert final["state"] == "succeeded", final
    assert len(approvals) == 1 and approvals[0].code == 0, approvals
    assert lines(log) == ["drain", "apply", "undrain"], "every acting step ran exactly once"
    steps = {s["id"]: s for s in final["steps"]}
    assert all(s["attempts"] == 1 for s in steps.values()), final["steps"]
    assert steps["confirm"]["output"]["approved_by"] == ["human"]
    waited = parse_time(steps["ready"]["finished_at"]) - parse_time(steps["ready"]["started_at"])  # type: ignore[operator]
    assert waited >= READY_AFTER - 3, f"the wait step lasted {waited:.1f}s"
    assert {"wait", "await_approval"} <= set(agent.seen_actions), agent.seen_actions
    budgeted = [(args, t) for args, t, _ in agent.calls if "--budget" in args]
    assert len(budgeted) >= 4, "a 20 s wait cannot be crossed in fewer than four 5 s wake-ups"
    slowest = max(t for _, t, _ in agent.calls)
    assert slowest < BUDGET + EXIT_SLACK, [(a[0], round(t, 2)) for a, t, _ in agent.calls]
