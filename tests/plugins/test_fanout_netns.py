"""Fan-out over SSH hosts in network namespaces: batch limits, a network partition, and resume.

Must-show (issue 4): with ``batch: {max_concurrency: 2, max_failures: 1}`` over 4 hosts, two of them
partitioned, the journal shows which targets ran, which failed and which were not started; after
the partition heals, ``runbook resume RUN --retry`` runs only the remaining targets, and the host
that already succeeded ran exactly once (its log, written over SSH, has one line).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from harness.netns import NetnsHosts

RUNBOOK = """
name: fleet-touch
params:
  dir: {type: string}
steps:
  - id: touch
    targets: group:fleet
    batch: {max_concurrency: 2, max_failures: 1}
    ssh:
      connect_timeout: 1s
      # Each host appends its own eth0 address (seen from inside its namespace) to its log,
      # then takes `vars.delay` seconds, so the run's timing is fixed by the inventory.
      command: [sh, -c, 'ip -4 -o addr show dev eth0 >> "$1" && sleep "$2"', sh,
                "{{ params.dir }}/{{ target.name }}.log", "{{ target.vars.delay | default(0) }}"]
"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def target_events(events: list[dict[str, Any]], kind: str) -> list[str]:
    return sorted(e["data"]["target"] for e in events if e["type"] == kind and "target" in (e.get("data") or {}))


def test_partitioned_fanout_stops_at_the_failure_limit_and_resume_runs_only_the_rest(healed: NetnsHosts, project: Any) -> None:
    hosts = healed
    h1, h2, h3, h4 = (h.name for h in hosts.hosts[:4])
    # h1 succeeds but is slow (3 s): h2 fails at ~1 s (connect timeout), h3 starts in its place and
    # fails at ~2 s, which exceeds max_failures=1 while h1 still runs, so h4 is never started.
    inventory = project.root / "inventory.yaml"
    inventory.write_text(hosts.inventory_yaml("fleet", {h1: {"delay": 3}}), encoding="utf-8")
    project.write("fleet.yaml", RUNBOOK)
    logs = hosts.workdir("fanout-" + uuid.uuid4().hex[:8])
    hosts.partition(h2)
    hosts.partition(h3)

    first = project.run("--inventory", str(inventory), "run", "fleet-touch", "-p", f"dir={logs}", "--json")
    assert first.code == 1, first
    run_id = first.json()["run_id"]

    status = project.run("--inventory", str(inventory), "status", run_id, "--json")
    view = status.json()
    assert (view["state"], view["exit_code"]) == ("failed", 1), status
    step = view["steps"][0]
    targets = step["targets"]
    assert {n: t["state"] for n, t in targets.items()} == {h1: "succeeded", h2: "failed", h3: "failed", h4: "not_started"}, targets
    for name in (h2, h3):
        assert "timed out" in targets[name]["reason"] and hosts[int(name[1:]) - 1].address in targets[name]["reason"], targets[name]
    assert "more than 1 target(s) failed" in targets[h4]["reason"]
    assert view["next"]["action"] == "fix_and_retry" and f"retry {run_id}" in view["next"]["human_command"]
    assert any(f"resume {run_id} --retry" in o["command"] for o in view["next"]["options"])

    events = project.run("events", run_id, "--json").json()["events"]
    assert target_events(events, "step.started") == [h1, h2, h3]  # h4 never started
    finished = [e for e in events if e["type"] == "step.finished" and "by_state" in e["data"]]
    assert finished[-1]["data"]["by_state"] == {"succeeded": [h1], "failed": [h2, h3], "not_started": [h4]}
    assert lines(logs / f"{h1}.log") != [] and all(not (logs / f"{n}.log").exists() for n in (h2, h3, h4))

    hosts.heal(h2)
    hosts.heal(h3)
    resumed = project.run("--inventory", str(inventory), "resume", run_id, "--retry", "--json")
    assert resumed.code == 0, resumed
    assert {n: t["state"] for n, t in resumed.json()["steps"][0]["targets"].items()} == dict.fromkeys((h1, h2, h3, h4), "succeeded")

    after = project.run("events", run_id, "--json").json()["events"]
    resumed_at = max(e["seq"] for e in after if e["type"] == "run.resumed")
    started_again = target_events([e for e in after if e["seq"] > resumed_at], "step.started")
    assert started_again == [h2, h3, h4]
    for host in hosts.hosts[:4]:
        log = lines(logs / f"{host.name}.log")
        assert len(log) == 1, (host.name, log)  # every host ran exactly once across both drives
        assert f"inet {host.address}/30" in log[0]  # ... and it ran inside that host's namespace
