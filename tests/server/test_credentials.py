"""The server's own credentials (API tokens, webhook secrets) never reach the steps it runs, nor the journal."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Project
from tests.server.conftest import TOKEN
from tests.server.serverkit import ServerProcess

ENVDUMP = """
name: envdump
params:
  file: {type: string}
steps:
  - id: dump
    shell: [sh, -c, 'env; echo "file: $(cat "$1")"', sh, "{{ params.file }}"]
"""

CONFIG = """
tokens:
  - {name: admin, token: env:T_ADMIN, scopes: [admin]}
  - {name: bot, token: env:T_RUN, scopes: [read, run]}
  - {name: filed, token: file:FILE, scopes: [read]}
sources:
  generic: {auth: {hmac_secret: env:GEN_SECRET}}
  pagerduty: {auth: {hmac_secrets: [env:PD_SECRET]}}
  alertmanager: {auth: {basic: {username: am, password: env:AM_PASSWORD}}}
"""
ENV = {"T_ADMIN": TOKEN, "T_RUN": "run-token-4f1b2c3d", "GEN_SECRET": "generic-hmac-9a8b7c", "PD_SECRET": "pagerduty-hmac-5e6f",
       "AM_PASSWORD": "am-basic-pass-1d2e"}  # fmt: skip
FILED = "filed-token-77c3a1"


def test_steps_inherit_no_server_credential_and_their_output_masks_them(project: Project, serve: Callable[..., ServerProcess]) -> None:
    secret_file = project.root / "filed-token"
    secret_file.write_text(FILED + "\n")
    project.write("envdump.yaml", ENVDUMP)
    server = serve(CONFIG.replace("FILE", str(secret_file)), env=ENV, token=TOKEN)
    bot = server.client(ENV["T_RUN"])

    r = bot.post("/v1/runs", json={"runbook": "envdump", "params": {"file": str(secret_file)}, "wait": 30})
    assert r.status_code == 201, r.text
    view = r.json()
    assert view["state"] == "succeeded", view
    events = bot.get(f"/v1/runs/{view['run_id']}/events").text
    logs = bot.get(f"/v1/runs/{view['run_id']}/logs").json()["lines"]  # the whole output (views show its tail)
    stdout = "\n".join(line["line"] for line in logs if line["stream"] == "stdout")
    assert "PATH=" in stdout, "the step's environment was dumped"
    for name in ENV:
        assert f"{name}=" not in stdout, f"the step inherited {name}, read by the server's configuration"
    assert "file: ***" in stdout, "a credential the step could still read (a file) is masked in its output"
    values = [*ENV.values(), FILED]
    for text in (r.text, events):
        assert not [v for v in values if v in text]
    journal = b"".join(p.read_bytes() for p in project.journal.parent.glob("journal.db*"))
    assert not [v for v in values if v.encode() in journal], "no credential in the SQLite journal (db, wal)"
