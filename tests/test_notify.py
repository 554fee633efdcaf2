"""Notifications end to end through the real CLI, a real HTTP receiver and a real SMTP server (STARTTLS + login).

A run that waits for approval and a run that fails each produce exactly one message per channel with the right
content; a receiver answering 503 three times still gets exactly one delivery; what the CLI could not deliver in
its time is delivered once by the next deliverer; secrets never reach a message.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from harness.httpserver import HTTPTestServer, Recorded, Reply
from harness.smtpserver import SMTPTestServer
from runbook_alerts.generic import GenericAuth, GenericSource

from tests.conftest import Project, kill
from tests.test_plugin_manager import install_plugin

HOOK_SECRET, DRAIN_TOKEN = "hook-hmac-secret-42", "drain-token-do-not-leak-7"
SLACK_PATH = "/services/T0001/B0001/slack-secret-path"

GATE = """
name: drain
params:
  token: {type: string, secret: true, allow: ["env:DRAIN_*"]}
steps:
  - id: ask
    approval: {message: "drain web1 with token {{ params.token }}?"}
  - id: act
    shell: ["true"]
"""
BOOM = """
name: boom
steps:
  - id: break
    shell: [sh, -c, 'exit 3']
"""


def configure(project: Project, text: str, **values: Any) -> Path:
    path = project.root / ".runbook" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip().format(**values), encoding="utf-8")
    return path


def three_channels(project: Project, http_server: HTTPTestServer, smtp_server: SMTPTestServer) -> dict[str, str]:
    """A project config with a webhook, a Slack webhook and email; returns the environment the secrets come from."""
    http_server.route("/hook", Reply(200))
    http_server.route(SLACK_PATH, Reply(200, body="ok"))
    configure(project, """
        notify:
          console_url: https://runbook.example.com/
          channels:
            hook: {{type: webhook, url: "{hook}", hmac_secret: env:HOOK_SECRET}}
            chat: {{type: slack, url: env:SLACK_URL}}
            mail:
              type: email
              host: 127.0.0.1
              port: {port}
              username: {user}
              password: env:SMTP_PASSWORD
              from: runbook@example.com
              to: [oncall@example.com]
              ca_file: {cert}
          rules:
            - events: [waiting_approval, failed]
              channels: [hook, chat, mail]
          delivery: {{retry_initial: 0.2s, cli_wait: 15s}}
        """, hook=http_server.url("/hook"), port=smtp_server.port, user=smtp_server.user, cert=smtp_server.cert)  # fmt: skip
    return {"HOOK_SECRET": HOOK_SECRET, "SLACK_URL": http_server.url(SLACK_PATH), "SMTP_PASSWORD": smtp_server.password,
            "DRAIN_TOKEN": DRAIN_TOKEN}  # fmt: skip


def bodies(http_server: HTTPTestServer, smtp_server: SMTPTestServer) -> str:
    return "\n".join([*(r.text() for r in http_server.requests), *(m.message.as_string() for m in smtp_server.messages())])


def test_waiting_for_approval_and_failing_each_send_one_message_per_channel(
    project: Project, http_server: HTTPTestServer, smtp_server: SMTPTestServer
) -> None:
    env = three_channels(project, http_server, smtp_server)
    project.write("drain.yaml", GATE)
    project.write("boom.yaml", BOOM)

    waiting = project.run("run", "drain", "-p", "token=env:DRAIN_TOKEN", "--json", env=env)
    assert waiting.code == 4, waiting
    rid = waiting.json()["run_id"]
    (hook,) = http_server.requests_to("/hook")
    (chat,) = http_server.requests_to(SLACK_PATH)
    (mail,) = smtp_server.messages()
    approve, deny = f"runbook approve {rid} --step ask", f"runbook deny {rid} --step ask"
    doc = hook.json()
    assert (doc["kind"], doc["step"], doc["run"]["id"], doc["run"]["runbook"]) == ("waiting_approval", "ask", rid, "drain")
    assert doc["commands"]["approve"] == approve and doc["commands"]["deny"] == deny
    assert doc["run"]["url"] == f"https://runbook.example.com/runs/{rid}"
    assert doc["reason"] == "waiting for 1 approval(s): drain web1 with token ***?", "the secret param's value is masked"
    GenericSource().verify(hook.body, hook.headers, GenericAuth(hmac_secret=HOOK_SECRET))
    assert hook.headers["x-runbook-delivery"] == f"{doc['key']}:hook"
    slack = json.dumps(chat.json()["blocks"])
    assert approve in slack and deny in slack and f"https://runbook.example.com/runs/{rid}" in slack and "*Step*\\nask" in slack
    assert mail.message["Subject"] == f"[runbook] drain run {rid} is waiting for approval at step 'ask'"
    assert f"Approve: {approve}" in mail.body and f"Deny: {deny}" in mail.body and mail.tls and mail.login == smtp_server.user

    failed = project.run("run", "boom", "--json", env=env)
    assert failed.code == 1, failed
    fid = failed.json()["run_id"]
    hooks, chats, mails = http_server.requests_to("/hook"), http_server.requests_to(SLACK_PATH), smtp_server.messages()
    assert (len(hooks), len(chats), len(mails)) == (2, 2, 2)
    doc = hooks[1].json()
    assert (doc["kind"], doc["step"], doc["run"]["id"]) == ("failed", "break", fid)
    assert doc["reason"] == "step 'break' failed: exit code 3, expected 0" and doc["commands"]["retry"] == f"runbook retry {fid}"
    assert "exit code 3" in json.dumps(chats[1].json()) and f"Retry: runbook retry {fid}" in mails[1].body
    assert f"runbook retry {fid}" in json.dumps(chats[1].json()) and "resume" not in json.dumps(doc["commands"])

    again = project.run("notify", "deliver", "--wait", "1s", "--json", env=env)
    assert again.code == 0 and again.json() == {"delivered": []}, again
    assert (len(http_server.requests_to("/hook")), len(http_server.requests_to(SLACK_PATH)), len(smtp_server.messages())) == (2, 2, 2)
    listed = project.run("notify", "list", "--json").json()["notifications"]
    assert [(n["run_id"], n["kind"], n["state"]) for n in listed] == [(fid, "failed", "delivered"), (rid, "waiting_approval", "delivered")]
    assert all(c["state"] == "sent" and c["attempts"] == 1 for n in listed for c in n["channels"].values())
    everything = bodies(http_server, smtp_server) + waiting.out + waiting.err + failed.out + failed.err + json.dumps(listed)
    for secret in (DRAIN_TOKEN, HOOK_SECRET, smtp_server.password, SLACK_PATH):
        assert secret not in everything


def test_a_receiver_answering_503_three_times_gets_exactly_one_delivery(project: Project, http_server: HTTPTestServer) -> None:
    http_server.route("/hook", Reply(503, body="busy"), Reply(503), Reply(503), Reply(200))
    configure(project, """
        notify:
          channels: {{hook: {{type: webhook, url: "{hook}"}}}}
          rules: [{{events: [failed], channels: [hook]}}]
          delivery: {{retry_initial: 0.2s, cli_wait: 15s}}
        """, hook=http_server.url("/hook"))  # fmt: skip
    project.write("boom.yaml", BOOM)
    assert project.run("run", "boom").code == 1
    tries = http_server.requests_to("/hook")
    assert len(tries) == 4 and len({r.headers["x-runbook-delivery"] for r in tries}) == 1 and len({r.body for r in tries}) == 1
    assert project.run("notify", "deliver", "--wait", "1s").code == 0
    assert len(http_server.requests_to("/hook")) == 4, "delivered: never sent again"
    (row,) = project.run("notify", "list", "--json").json()["notifications"]
    assert row["state"] == "delivered" and row["channels"]["hook"]["attempts"] == 4 and row["channels"]["hook"]["detail"] == "HTTP 200"
    assert row["attempts"] == 4


def test_what_the_cli_could_not_deliver_is_delivered_once_by_the_next_deliverer(project: Project, http_server: HTTPTestServer) -> None:
    answers = {"status": 503}

    def receiver(_req: Recorded) -> Reply:
        return Reply(answers["status"])

    http_server.route("/hook", receiver)
    configure(project, """
        notify:
          channels: {{hook: {{type: webhook, url: "{hook}"}}}}
          rules: [{{events: [failed], channels: [hook]}}]
          delivery: {{retry_initial: 30s, cli_wait: 2s}}
        """, hook=http_server.url("/hook"))  # fmt: skip
    project.write("boom.yaml", BOOM)
    res = project.run("run", "boom")
    assert res.code == 1 and "not yet delivered: hook: HTTP 503; left for the next deliverer" in res.err, res
    assert len(http_server.requests_to("/hook")) == 1
    (row,) = project.run("notify", "list", "--json").json()["notifications"]
    assert row["state"] == "pending" and row["channels"]["hook"]["state"] == "pending" and row["next_at"] > row["created_at"] + 20
    answers["status"] = 200
    assert project.run("notify", "deliver", "--json").json() == {"delivered": []}, "not due yet: the backoff holds"
    import sqlite3

    with sqlite3.connect(project.journal) as db:  # time passes (the retry falls due)
        db.execute("UPDATE notifications SET next_at = 0")
    out = project.run("notify", "deliver", "--json").json()["delivered"]
    assert [(d["kind"], d["state"], d["channels"]["hook"]["attempts"]) for d in out] == [("failed", "delivered", 2)]
    assert project.run("notify", "deliver", "--wait", "1s").code == 0 and len(http_server.requests_to("/hook")) == 2


def test_an_unknown_step_and_a_cancel_notify_with_their_commands(project: Project, http_server: HTTPTestServer) -> None:
    import time

    http_server.route("/hook", Reply(200))
    configure(project, """
        notify:
          channels: {{hook: {{type: webhook, url: "{hook}"}}}}
          rules: [{{events: [unknown, cancelled], channels: [hook]}}]
        """, hook=http_server.url("/hook"))  # fmt: skip
    marker = project.root / "started"
    project.write("deploy.yaml", f"""
        name: deploy
        steps:
          - id: push
            shell: [sh, -c, 'touch {marker}; sleep 60']
        """)  # fmt: skip
    proc = project.popen("run", "deploy", "--json")
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the step did not start"
        time.sleep(0.05)
    kill(proc)  # kill -9 in the step's action: whether it took effect is unknown
    rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
    resumed = project.run("resume", rid, "--json")
    assert resumed.code == 4 and resumed.json()["next"]["action"] == "decide", resumed
    (unknown,) = [r.json() for r in http_server.requests_to("/hook")]
    assert unknown["kind"] == "unknown" and unknown["step"] == "push" and "needs a decision" in unknown["reason"]
    assert unknown["commands"]["retry_step"] == f"runbook decide {rid} --retry-step push"
    assert unknown["commands"]["skip_step"] == f"runbook decide {rid} --skip-step push"
    import shlex

    before = project.run("events", rid, "--json").json()["events"]
    skip = project.run(*shlex.split(unknown["commands"]["skip_step"])[1:], "--json")  # what the on-call person runs
    assert skip.code == 0 and skip.json()["next"]["action"] == "resume", skip
    after = project.run("events", rid, "--json").json()["events"]
    assert [e["type"] for e in after[len(before) :]] == ["request.decide"], "the message's command records; it runs nothing"
    assert project.run("cancel", rid, "--reason", "rolled out by hand").code == 0
    cancelled = http_server.requests_to("/hook")[-1].json()
    assert len(http_server.requests_to("/hook")) == 2 and cancelled["kind"] == "cancelled"
    assert cancelled["reason"] == "rolled out by hand" and cancelled["commands"] == {"status": f"runbook status {rid}"}


def test_rules_choose_by_event_runbook_and_label(project: Project, http_server: HTTPTestServer) -> None:
    http_server.route("/a", Reply(200))
    http_server.route("/b", Reply(200))
    configure(project, """
        notify:
          channels:
            a: {{type: webhook, url: "{a}"}}
            b: {{type: webhook, url: "{b}"}}
          rules:
            - {{events: [failed, succeeded], runbooks: ["bo*"], channels: [a]}}
            - {{events: [failed], runbooks: ["*"], labels: {{team: "db*"}}, channels: [b]}}
            - {{events: [succeeded], routes: ["*"], channels: [b]}}
        """, a=http_server.url("/a"), b=http_server.url("/b"))  # fmt: skip
    project.write("boom.yaml", BOOM)
    project.write("ok.yaml", "name: ok\nsteps:\n  - id: fine\n    shell: ['true']\n")
    assert project.run("run", "boom").code == 1
    assert project.run("run", "ok").code == 0
    assert [r.json()["kind"] for r in http_server.requests_to("/a")] == ["failed"], "ok does not match bo*"
    assert http_server.requests_to("/b") == [], "no alert labels and no route: the label and route rules do not match"
    rows = project.run("notify", "list", "--json").json()["notifications"]
    assert [(r["kind"], r["state"], r["last_error"]) for r in rows] == [
        ("succeeded", "skipped", "no rule matches"),
        ("failed", "delivered", ""),
    ]


def test_notify_test_reports_each_channel(project: Project, http_server: HTTPTestServer) -> None:
    http_server.route("/ok", Reply(200))
    http_server.route("/gone", Reply(410, body="gone"))
    configure(project, """
        notify:
          console_url: https://ops.example.com
          channels:
            good: {{type: webhook, url: "{ok}", bearer_token: env:HOOK_TOKEN}}
            bad: {{type: webhook, url: "{gone}"}}
        """, ok=http_server.url("/ok"), gone=http_server.url("/gone"))  # fmt: skip
    env = {"HOOK_TOKEN": "bearer-token-value-123"}
    one = project.run("notify", "test", "--channel", "good", "--json", env=env)
    assert one.code == 0, one
    assert one.json()["channels"] == {"good": {"state": "sent", "type": "webhook", "detail": "HTTP 200"}} and one.json()["ok"] is True
    (req,) = http_server.requests_to("/ok")
    assert req.json()["test"] is True and req.json()["kind"] == "test" and req.headers["authorization"] == "Bearer bearer-token-value-123"
    both = project.run("notify", "test", env=env)
    assert both.code == 1 and "sent   good (webhook): HTTP 200" in both.out and "FAILED bad (webhook): HTTP 410: gone" in both.out, both
    assert project.run("notify", "list", "--json").json()["notifications"] == [], "a test message is not journaled"
    missing = project.run("notify", "test", "--channel", "nope", env=env)
    assert missing.code == 2 and "no channel named 'nope'" in missing.err


def test_configuration_problems_are_located_and_never_fail_a_run(project: Project, http_server: HTTPTestServer) -> None:
    path = configure(project, """
        notify:
          channels:
            hook: {{type: webhok, url: "{hook}"}}
            mail: {{type: email, host: localhost, from: a@b.c, to: [], colour: red}}
          rules:
            - {{events: [failed, exploded], channels: [hook, pager]}}
        """, hook=http_server.url("/hook"))  # fmt: skip
    res = project.run("notify", "test")
    assert res.code == 2, res
    assert f"{path}:6:25 (notify.rules.0.events.1)" in res.err and "exploded" in res.err
    configure(project, """
        notify:
          channels:
            hook: {{type: webhok, url: "{hook}"}}
          rules:
            - {{events: [failed], channels: [hook, pager]}}
        """, hook=http_server.url("/hook"))  # fmt: skip
    res = project.run("notify", "test")
    assert res.code == 2 and f"{path}:5:" in res.err and "channel 'pager', which is not under notify.channels" in res.err, res
    configure(project, """
        notify:
          channels:
            hook: {{type: webhok, url: "{hook}"}}
            mail: {{type: email, host: localhost, from: a@b.c, to: [], colour: red}}
            chat: {{type: slack, url: env:NOT_SET_ANYWHERE}}
        """, hook=http_server.url("/hook"))  # fmt: skip
    res = project.run("notify", "test")
    assert res.code == 2 and f"{path}:3:18 (notify.channels.hook.type): no notifier 'webhok'; known: email, slack, webhook" in res.err, res
    assert "(notify.channels.mail.colour): unknown key 'colour'" in res.err and "(notify.channels.mail.to)" in res.err, res
    assert "NOT_SET_ANYWHERE" not in res.err, "secrets are resolved only once the whole file is valid"
    configure(project, """
        notify:
          channels:
            chat: {{type: slack, url: env:NOT_SET_ANYWHERE}}
          rules: [{{events: [failed], channels: [chat]}}]
        """)  # fmt: skip
    project.write("boom.yaml", BOOM)
    run = project.run("run", "boom")
    assert run.code == 1 and "notifications were not sent:" in run.err and "notify.channels.chat.url" in run.err, run
    (row,) = project.run("notify", "list", "--json").json()["notifications"]
    assert row["state"] == "pending", "the notification waits in the outbox for a deliverer that can send it"


def test_precedence_of_configuration_files(project: Project, http_server: HTTPTestServer, tmp_path: Path) -> None:
    http_server.route("/user", Reply(200))
    http_server.route("/project", Reply(200))
    http_server.route("/env", Reply(200))
    section = 'notify:\n  channels: {{c: {{type: webhook, url: "{url}"}}}}\n  rules: [{{events: [failed], channels: [c]}}]\n'
    xdg = tmp_path / "xdg"
    (xdg / "runbook").mkdir(parents=True)
    (xdg / "runbook" / "config.yaml").write_text(section.format(url=http_server.url("/user")))
    project.write("boom.yaml", BOOM)
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert project.run("run", "boom", env=env).code == 1
    configure(project, section, url=http_server.url("/project"))
    assert project.run("run", "boom", env=env).code == 1
    explicit = tmp_path / "ops.yaml"
    explicit.write_text(section.format(url=http_server.url("/env")))
    assert project.run("run", "boom", env={**env, "RUNBOOK_CONFIG": str(explicit)}).code == 1
    assert [len(http_server.requests_to(p)) for p in ("/user", "/project", "/env")] == [1, 1, 1]
    res = project.run("notify", "test", env={**env, "RUNBOOK_CONFIG": str(tmp_path / "missing.yaml")})
    assert res.code == 2 and "missing.yaml: no such file" in res.err
    (project.root / ".runbook" / "config.yaml").write_text("notfy: {}\n")
    res = project.run("notify", "test", env=env)
    assert res.code == 2 and "unknown key 'notfy'" in res.err and "config.yaml:1:1" in res.err, res


NOTIFIER = """
import json
from typing import ClassVar
from pydantic import BaseModel, ConfigDict
from runner.plugin import hookimpl


class FileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str


class FileNotifier:
    name = "file"
    Config: ClassVar[type[BaseModel]] = FileConfig
    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def send(self, message, config, *, delivery_id, timeout):
        with open(config.path, "a") as f:
            f.write(json.dumps({"delivery": delivery_id, **message.as_json()}) + "\\n")
        return "appended"


@hookimpl
def runbook_register_notifiers(registry):
    registry.add(FileNotifier())
"""


def test_a_third_party_notifier_is_a_channel_like_the_built_in_ones(project: Project) -> None:
    site = install_plugin(project.root.parent, "rb_filenotify", NOTIFIER, "filenotify")
    project.env["PYTHONPATH"] = str(site)
    out = project.root / "notes.jsonl"
    configure(project, """
        notify:
          channels: {{journal: {{type: file, path: "{out}"}}}}
          rules: [{{events: [failed], channels: [journal]}}]
        """, out=out)  # fmt: skip
    project.write("boom.yaml", BOOM)
    res = project.run("run", "boom", "--json")
    assert res.code == 1, res
    (line,) = out.read_text().splitlines()
    note = json.loads(line)
    assert note["kind"] == "failed" and note["run"]["id"] == res.json()["run_id"] and note["delivery"].endswith(":journal")
    plugins = {p["name"]: p for p in project.run("plugins", "--json").json()["plugins"]}
    assert plugins["filenotify"]["contributes"]["notifiers"] == ["file"]
    assert plugins["notify"]["contributes"]["notifiers"] == ["webhook", "slack", "email"]
