"""The worked example of docs/agents.md runs as written: its runbook and its scheduler tick script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Project

DOC = Path(__file__).resolve().parents[2] / "docs" / "agents.md"


def block(name: str) -> str:
    """The fenced code block that follows ``<!-- name -->`` in docs/agents.md."""
    found = re.search(rf"<!-- {re.escape(name)} -->\n```\w+\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)
    assert found, f"docs/agents.md has no block marked {name}"
    return found.group(1) + "\n"


def test_agent_tick_script_drives_the_example_to_the_end(project: Project, tmp_path: Path) -> None:
    marker = tmp_path / "backup.done"
    # The example polls every 10 s; the test polls every second so that it stays short.
    project.write("rotate-logs.yaml", block("file: runbooks/rotate-logs.yaml").replace("every: 10s", "every: 1s"))
    script = project.root / "agent_tick.py"
    script.write_text(block("agent_tick.py").replace('BUDGET = "20s"', 'BUDGET = "5s"'))
    env = {**project.env, "RUNBOOK_ACTOR": "ops-agent", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ticks: list[subprocess.CompletedProcess[str]] = []

    def tick() -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, str(script), "rotate-logs", "service=billing", f"backup_marker={marker}"],
                              cwd=project.root, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        ticks.append(proc)
        return proc

    state = project.root / ".agent" / "rotate-logs.json"
    state.parent.mkdir()
    state.write_text('{"idempotency_key": "rotate-logs-test"}')
    first = tick()
    assert first.returncode == 4 and "next wait at" in first.stdout, first
    state.write_text('{"idempotency_key": "rotate-logs-test"}')  # as if the first tick died before saving the view
    again = tick()
    assert again.returncode == 4 and again.stdout.split()[1] == first.stdout.split()[1], "the same run, not a second one"
    marker.touch()  # the nightly backup finishes
    deadline = time.monotonic() + 60
    approved = False
    while ticks[-1].returncode != 0:
        assert time.monotonic() < deadline and ticks[-1].returncode in (3, 4), ticks[-1]
        if "waits for a person" in ticks[-1].stdout and not approved:
            rid = ticks[-1].stdout.split()[1]
            assert f"runbook approve {rid} --by NAME" in ticks[-1].stdout
            assert project.run("approve", rid, "--by", "ops-agent").code == 2, "the agent cannot approve its own request"
            assert project.run("approve", rid, "--by", "alice", "--comment", "backup verified").code == 0
            approved = True
        time.sleep(1)  # the scheduler's heartbeat
        tick()
    assert approved and "succeeded: all 4 steps done" in ticks[-1].stdout, ticks[-1]
    assert not state.exists(), "a finished run leaves no agent state"
    run = project.run("runs", "--json").json()["runs"]
    assert len(run) == 1 and run[0]["state"] == "succeeded"
    steps = project.run("status", run[0]["run_id"], "--json").json()["steps"]
    assert [(s["id"], s["attempts"]) for s in steps] == [("snapshot", 1), ("backup-done", 1), ("sign-off", 1), ("rotate", 1)]
