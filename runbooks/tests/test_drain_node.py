"""drain-node: its load balancer exchanges, recorded once and replayed offline; the approval; the rollback."""

from __future__ import annotations

import json
from pathlib import Path

from lb_standin import lb_standin

from runner.testing import Reply, RunbookHarness

CASSETTE = Path(__file__).parent / "cassettes" / "drain-node.json"
TOKEN = "lb-token-for-tests-0b9e"
PARAMS = {"lb_url": "https://lb.internal", "pool": "web", "node": "web-3"}
NODE = "https://lb.internal/pools/web/nodes/web-3"


def drive(runbook: RunbookHarness) -> str:
    """Run drain-node to its approval, approve it, and finish it; returns the run id."""
    runbook.setenv("LB_API_TOKEN", TOKEN)
    waiting = runbook.run("drain-node", PARAMS)
    assert waiting.state == "waiting" and waiting.exit_code == 4, waiting.reason
    assert waiting.next_action == "await_approval" and waiting.step("maintenance-done").state == "waiting"
    assert waiting.states() == {"drain": "succeeded", "connections-drained": "succeeded", "maintenance-done": "waiting",
                                "undrain": "pending"}  # fmt: skip
    runbook.approve(waiting.run_id, by="oncall-lead")
    done = runbook.resume(waiting.run_id)
    assert done.state == "succeeded" and done.exit_code == 0, done.reason
    assert done.output("maintenance-done")["approved_by"] == ["oncall-lead"]
    return done.run_id


def test_drain_node_replays_its_recorded_exchanges_offline(runbook: RunbookHarness) -> None:
    """The load balancer's answers come from a cassette recorded against a stand-in (`runbook test --record-http`):
    nothing leaves the machine, and lb.internal does not even resolve here."""
    if runbook.record_http:
        with lb_standin(TOKEN) as base:
            runbook.http.cassette(CASSETTE, upstream={"https://lb.internal": base})
            drive(runbook)
        return
    runbook.http.cassette(CASSETTE)
    run_id = drive(runbook)
    sent = [(r["method"], r["url"], r["step"]) for r in runbook.http.requests]
    assert sent == [
        ("GET", NODE, "drain"), ("POST", f"{NODE}/drain", "drain"),
        ("GET", NODE, "connections-drained"),
        ("GET", NODE, "undrain"), ("POST", f"{NODE}/undrain", "undrain"), ("GET", NODE, "undrain"),
    ]  # fmt: skip
    assert all(r["headers"]["Authorization"] == "***" for r in runbook.http.requests), "credentials never shown"
    runbook.assert_exactly_once(run_id, "drain")
    runbook.assert_exactly_once(run_id, "undrain")
    assert TOKEN not in CASSETTE.read_text(), "a cassette keeps no secret"


def test_record_then_replay_round_trip(tmp_path: Path, runbook_paths: list[Path]) -> None:
    """Recording against the stand-in and replaying in a fresh test give the same run."""
    cassette = tmp_path / "drain.json"
    recording = RunbookHarness(tmp_path / "rec", runbook_paths)
    with lb_standin(TOKEN) as base:
        recording.http.record(cassette, upstream={"https://lb.internal": base})
        drive(recording)
        recording.close()
    doc = json.loads(cassette.read_text())
    assert [i["request"]["method"] for i in doc["interactions"]] == ["GET", "POST", "GET", "GET", "POST", "GET"]
    assert all(i["request"]["url"].startswith(NODE) for i in doc["interactions"]), "the runbook's own URLs are kept"
    assert TOKEN not in cassette.read_text()
    replaying = RunbookHarness(tmp_path / "replay", runbook_paths)
    replaying.http.replay(cassette)
    drive(replaying)


def test_a_denied_maintenance_rolls_the_drain_back(runbook: RunbookHarness) -> None:
    runbook.setenv("LB_API_TOKEN", TOKEN)
    runbook.http.reply("GET", NODE, Reply(json={"state": "active", "active_connections": 3}),
                       Reply(json={"state": "drained", "active_connections": 0}))  # fmt: skip
    runbook.http.reply("POST", f"{NODE}/drain", Reply(json={"ok": True}))
    runbook.http.reply("POST", f"{NODE}/undrain", Reply(json={"ok": True}))
    waiting = runbook.run("drain-node", PARAMS)
    runbook.deny(waiting.run_id, by="oncall-lead", comment="hardware not replaced yet")
    failed = runbook.resume(waiting.run_id)
    assert failed.state == "failed" and failed.exit_code == 1
    assert failed.step("maintenance-done").state == "failed" and "hardware not replaced yet" in failed.step("maintenance-done").reason
    assert failed.step("drain").state == "rolled_back"
    assert [(r["method"], r["url"]) for r in runbook.http.requests][-1] == ("POST", f"{NODE}/undrain")


def test_the_token_never_goes_to_a_host_the_caller_picks(runbook: RunbookHarness) -> None:
    """lb_url is the caller's: a value outside the pattern is refused before anything runs."""
    runbook.setenv("LB_API_TOKEN", TOKEN)
    result = runbook.cli("run", "drain-node", "-p", "lb_url=https://evil.example", "-p", "pool=web", "-p", "node=web-3", "--json")
    assert result.code == 2 and "lb_url" in result.json()["error"]["message"]
    assert runbook.http.requests == []
