"""``retention:`` in the server config: finished runs are pruned in the background; active ones are kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Project
from tests.server.conftest import TOKEN, hello_runbook
from tests.server.serverkit import ServerProcess, poll
from tests.server.test_config import serve_once

HOLD = """
name: hold
steps:
  - id: confirm
    approval: {message: "go on?"}
"""


def test_finished_runs_are_pruned_in_the_background_and_active_ones_kept(project: Project, serve: Callable[..., ServerProcess]) -> None:
    hello_runbook(project)
    project.write("hold.yaml", HOLD)
    server = serve("""
        tokens: [{name: admin, token: env:T_ADMIN, scopes: [admin]}]
        retention: {older_than: 1s, every: 200ms, pause: 0s, idempotency_window: 0s, alert_window: 0s}
    """, env={"T_ADMIN": TOKEN}, token=TOKEN)  # fmt: skip
    c = server.client()
    done = [c.post("/v1/runs", json={"runbook": "hello", "params": {"who": f"w{i}"}}).json()["run_id"] for i in range(3)]
    waiting = c.post("/v1/runs", json={"runbook": "hold"}).json()["run_id"]
    for rid in done:
        server.wait_state(rid, "succeeded")
    server.wait_state(waiting, "waiting")
    poll(lambda: all(c.get(f"/v1/runs/{rid}").status_code == 404 for rid in done), timeout=60, what="the finished runs to be pruned")
    assert c.get(f"/v1/runs/{waiting}").json()["state"] == "waiting", "a waiting run is never pruned, however old"
    assert [r["run_id"] for r in c.get("/v1/runs").json()["runs"]] == [waiting]
    assert "retention: deleted" in server.log(), "each pass that deletes something says so"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("routes:\n  - {name: r, runbook: hello, cooldown: 1h}\nretention: {older_than: 10m}\n",
         "server.yaml:3:25 (retention.older_than): 600s is shorter than route 'r's cooldown (3600s)"),
        ("retention: {older_than: 30d, states: [running]}\n", "(retention.states.0)"),
        ("retention: {keep_last: 3}\n", "(retention.older_than)"),
    ],
    ids=["shorter-than-a-route-window", "not-a-finished-state", "no-age"],
)  # fmt: skip
def test_a_retention_setting_that_would_break_the_storm_guard_is_refused(project: Project, config: str, needle: str) -> None:
    code, err = serve_once(project, config)
    assert code == 2, err
    assert needle in err and "Traceback" not in err
