"""Approval expiry and quorum edge cases, through the real CLI: a late decision never counts."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from runbook_sqlite.store import SQLiteStore

from tests.conftest import Project

GATE = """
    name: {name}
    steps:
      - id: gate
        approval: {approval}
      - {{id: post, shell: [echo, post]}}
"""


def _write(project: Project, name: str, approval: str) -> None:
    project.write(f"{name}.yaml", GATE.format(name=name, approval=approval))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_approval_after_expiry_is_refused_and_on_expiry_decides(project: Project) -> None:
    _write(project, "exp", "{message: ok?, approvers: 2, expires: 4s}")  # room for alice on a loaded machine
    run_id = project.run("run", "exp", "--json").json()["run_id"]
    assert project.run("approve", run_id, "--by", "alice").code == 0  # in time: counts
    time.sleep(4.2)
    late = project.run("approve", run_id, "--by", "carol")
    assert late.code == 2, late
    assert run_id in late.err and "'gate'" in late.err and "expired at" in late.err, late.err
    res = project.run("resume", run_id, "--json")
    assert res.code == 1, res
    reason = res.json()["reason"]
    assert "expired" in reason and "1 of 2 approval(s)" in reason and "on_expiry: deny" in reason, reason
    assert [e["actor"] for e in project.run("events", run_id, "--json").json()["events"] if e["type"] == "request.approve"] == ["alice"]


def test_deny_after_expiry_is_refused_with_on_expiry_approve(project: Project) -> None:
    _write(project, "lenient", "{message: ok?, expires: 1s, on_expiry: approve}")
    run_id = project.run("run", "lenient", "--json").json()["run_id"]
    time.sleep(1.2)
    late = project.run("deny", run_id, "--by", "carol", "--json")
    assert late.code == 2, late
    error = late.json()["error"]
    assert "cannot deny" in error["message"] and run_id in error["message"] and "on_expiry: approve" in error["hint"], error
    res = project.run("resume", run_id, "--json")
    assert res.code == 0, res
    assert res.json()["steps"][0]["output"]["expired"] is True


def test_decision_recorded_after_expiry_is_not_counted(project: Project) -> None:
    """A decision that passed the check just before expiry but was recorded after it does not count."""
    _write(project, "race", "{message: ok?, expires: 1s}")
    run_id = project.run("run", "race", "--json").json()["run_id"]
    time.sleep(1.2)
    store = SQLiteStore(f"sqlite:///{project.journal}")
    try:  # what `runbook approve` records once its check passed
        store.request(run_id, "approve", actor="carol", reason="approved", data={"step_id": "gate", "comment": ""})
    finally:
        store.close()
    res = project.run("resume", run_id, "--json")
    assert res.code == 1, res
    assert "expired" in res.json()["reason"] and "on_expiry: deny" in res.json()["reason"]


def test_waiting_approval_is_polled_again_at_expiry(project: Project) -> None:
    _write(project, "soon", "{message: ok?, expires: 2s}")
    started = time.time()
    doc = project.run("run", "soon", "--json").json()
    assert doc["next"]["action"] == "await_approval"
    not_before = _epoch(doc["next"]["not_before"])
    assert started < not_before <= time.time() + 2.0, doc["next"]
    _write(project, "later", "{message: ok?, expires: 1h}")
    far = _epoch(project.run("run", "later", "--json").json()["next"]["not_before"])
    assert far <= time.time() + 30.5, "a long request is still re-polled as usual, not only at its expiry"


def test_quorum_stops_counting_and_waiting_reason_shows_progress(project: Project) -> None:
    _write(project, "two", "{message: ok?, approvers: 2}")
    run_id = project.run("run", "two", "--json").json()["run_id"]
    assert project.run("approve", run_id, "--by", "alice").code == 0
    still = project.run("resume", run_id, "--json")
    assert still.code == 4, still
    assert "waiting for 1 approval(s) (1 of 2 so far: alice): ok?" in still.json()["reason"]
    assert project.run("approve", run_id, "--by", "ALICE").code == 0  # identities match exactly: ALICE is a second approver
    past = project.run("approve", run_id, "--by", "bob", "--comment", "me too")  # past the quorum: refused, not dropped silently
    assert past.code == 2 and "already has the 2 approval(s) it needs (alice, ALICE)" in past.err, past
    quorum = project.run("status", run_id, "--json").json()["next"]
    assert quorum["action"] == "resume" and quorum["approvals"]["approved_by"] == ["alice", "ALICE"], quorum
    done = project.run("resume", run_id, "--json")
    assert done.code == 0, done
    gate = done.json()["steps"][0]
    assert gate["output"]["approved_by"] == ["alice", "ALICE"] and gate["reason"] == "approved by alice, ALICE", gate


def test_a_decision_recorded_after_expiry_is_reported_as_not_counting(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check passed on this clock, but the store's clock put the decision after the expiry: say so."""
    import runner.engine.requests as requests
    from runner.api import Client
    from runner.errors import UsageError

    _write(project, "skew", "{message: ok?, expires: 1s}")
    run_id = project.run("run", "skew", "--json").json()["run_id"]
    time.sleep(1.2)

    class Behind:  # this process's clock runs behind the store's
        @staticmethod
        def time() -> float:
            return time.time() - 60

    monkeypatch.setattr(requests, "time", Behind)
    client = Client(paths=[project.runbooks], project_dir=project.root, actor="carol")
    try:
        with pytest.raises(UsageError, match=r"recorded at .* after its approval request expired at .*: it does not count"):
            client.approve(run_id)
    finally:
        client.close()
    res = project.run("resume", run_id, "--json")
    assert res.code == 1 and "on_expiry: deny" in res.json()["reason"], res
