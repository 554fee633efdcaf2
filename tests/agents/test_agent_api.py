"""The Python API (``runner.start`` ..., ``runner.Client``) in-process against a real SQLite journal and real plugins.

Its results are the documented ``--json`` shapes: each is compared with what the CLI prints for the same run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import runner
from runner.api import Client, RunResult
from runner.errors import PolicyDenied, RunNotFound, UsageError
from runner.policy import parse_policy
from tests.agents.agentkit import lines
from tests.conftest import Project


@pytest.fixture
def here(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """The test project as the current directory, with only the environment a CLI invocation there would get."""
    for key in [k for k in os.environ if k.startswith("RUNBOOK_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RUNBOOK_ACTOR", "tester")
    monkeypatch.chdir(project.root)
    yield project
    runner.api.default_client().close()


def three_steps(project: Project) -> Path:
    log = project.root / "steps.log"
    project.write(
        "three.yaml",
        f"""
        name: three
        description: Three short steps.
        params:
          who: {{type: string, default: world}}
        steps:
          - {{id: a, expected: 1s, shell: {{script: "echo a >> {log}; sleep 0.6"}}}}
          - {{id: b, expected: 1s, shell: {{script: "echo b >> {log}; sleep 0.6"}}}}
          - {{id: c, expected: 1s, shell: {{script: "echo c >> {log}"}}}}
    """,
    )
    return log


def test_module_functions_drive_a_run_and_match_the_cli_json(here: Project) -> None:
    log = three_steps(here)
    view = runner.start("three", {"who": "you"}, budget=1.5)
    assert isinstance(view, RunResult) and isinstance(view, runner.RunView)
    assert view.state == "paused" and view.next.action == "resume" and view.exit_code == 3
    assert view.next.command == f"runbook resume {view.run_id} --budget 1.5s --json"
    views = [view]
    while views[-1].next.action != "none":
        assert len(views) < 6
        views.append(runner.resume(views[-1].run_id, budget="1.5s"))
    assert views[-1].state == "succeeded" and lines(log) == ["a", "b", "c"]
    rid = view.run_id
    assert runner.status(rid).model_dump(mode="json") == here.run("status", rid, "--json").json()
    assert runner.status(rid[:10]).run_id == rid, "unambiguous prefixes are accepted"
    assert runner.list_runs().model_dump(mode="json") == here.run("runs", "--json").json()
    assert runner.events(rid, after=3).model_dump(mode="json") == here.run("events", rid, "--after", "3", "--json").json()
    assert runner.plan("three").model_dump(mode="json") == here.run("plan", "three", "--json").json()
    result = views[-1].model_dump(mode="json")
    assert set(result) == set(here.run("status", rid, "--json").json()) | {"notices"}, "run/resume --json add notices"


def test_step_pause_cancel_and_errors(here: Project) -> None:
    log = three_steps(here)
    queued = runner.start("three", execute=False)
    assert queued.state == "queued" and lines(log) == []
    one = runner.step(queued.run_id)
    assert one.state == "paused" and [s.state for s in one.steps] == ["succeeded", "pending", "pending"]
    assert one.next.command == f"runbook step {queued.run_id} --json"
    cancelled = runner.cancel(queued.run_id, reason="not today")
    assert cancelled.state == "cancelled" and cancelled.reason == "not today" and lines(log) == ["a"]
    with pytest.raises(RunNotFound):
        runner.status("01NOSUCHRUN0000000000000000"[:26])
    with pytest.raises(UsageError, match="budget: expected a duration"):
        runner.start("three", budget="soon")
    with pytest.raises(UsageError, match="invalid params for runbook 'three'"):
        runner.start("three", {"nope": 1})
    with pytest.raises(UsageError, match="states: queued, running"):
        runner.list_runs(states=["bogus"])


def test_agent_client_applies_the_policy_and_cannot_approve_its_gate(here: Project) -> None:
    log = three_steps(here)
    policy = parse_policy("runbooks:\n  three:\n    params:\n      who: {values: [world]}\n    require_approval: [b]\n", "inline.yaml")
    agent = Client(agent=True, policy=policy)
    assert agent.actor == "agent:tester"
    with pytest.raises(PolicyDenied, match=r"param 'who' = 'you' is not allowed .* in inline.yaml; allowed values: 'world'"):
        agent.start("three", {"who": "you"})
    view = agent.start("three", budget=10)
    assert view.state == "waiting" and view.next.action == "await_approval" and view.next.step == "b"
    assert view.started_by == "agent:tester" and lines(log) == ["a"]
    with pytest.raises(PolicyDenied, match="agents may not approve or deny runs of 'three'"):
        agent.approve(view.run_id)
    human = Client(actor="human")
    approved = human.approve(view.run_id, comment="ok")
    assert approved.next.action == "resume" and approved.next.approvals["approved_by"] == ["human"], "approved: nobody is asked again"
    assert agent.resume(view.run_id, budget=10).state == "succeeded" and lines(log) == ["a", "b", "c"]
    agent.close()
    human.close()


def test_client_for_another_project_and_store(tmp_path: Path, project: Project) -> None:
    """A client configured explicitly (project, store, actor) needs no cwd or environment; next.command repeats them."""
    three_steps(project)
    store = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    with Client(project_dir=project.root, store=store, actor="script") as client:
        assert [rb.name for rb in client.runbooks().runbooks] == ["three"]
        assert client.describe("three").params_schema["properties"]["who"]["default"] == "world"
        view = client.start("three", max_steps=1)
        assert view.started_by == "script" and view.state == "paused"
        assert f"--store {store}" in view.next.command and "--max-steps 1" in view.next.command
    assert (tmp_path / "elsewhere.db").exists() and not project.journal.exists()


def test_start_on_created_holds_the_run_for_the_call_and_a_pause_asked_there_stops_it_before_any_step(here: Project) -> None:
    """``Client.start(on_created=...)``: the new run is already leased to the call when the hook sees it (no worker may
    claim it), and a pause asked in the hook (an MCP call cancelled meanwhile) leaves it paused with no step run."""
    log = three_steps(here)
    seen: list[tuple[str, bool | str]] = []
    with Client(actor="script") as client:

        def created(run_id: str) -> None:
            run = client.store.get_run(run_id)
            seen.append((str(run.state), run.holder is not None and run.lease_expires_at is not None))
            client.pause(run_id, reason="the caller changed its mind")

        view = client.start("three", budget="30s", on_created=created)
        again = client.start("three", idempotency_key="k", on_created=lambda _: None)
        repeated = client.start("three", idempotency_key="k", on_created=lambda rid: seen.append(("again", rid)))
    assert seen == [("queued", True)], "held by this call's engine when created; a repeated key is not created again"
    assert view.state == "paused" and [s.attempts for s in view.steps] == [0, 0, 0], view
    assert again.state == "succeeded" and repeated.run_id == again.run_id and repeated.state == "succeeded"
    assert lines(log) == ["a", "b", "c"], "only the second run's steps ran"
