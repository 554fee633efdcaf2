"""The built-in notifiers against real receivers: a local HTTP server and a real SMTP server (aiosmtpd, STARTTLS + login)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.httpserver import HTTPTestServer, Reply
from harness.smtpserver import SMTPTestServer
from runbook_alerts.generic import GenericAuth, GenericSource
from runbook_notify.mail import EmailConfig, EmailNotifier
from runbook_notify.slack import SlackConfig, SlackNotifier
from runbook_notify.webhook import WebhookConfig, WebhookNotifier

from runner.errors import NotifyError
from runner.notify.channel import Message

MESSAGE = Message(
    key="01JTESTRUN0000000000000000:7", kind="waiting_approval", title="lb-drain run 01JTESTRUN0000000000000000 is waiting for approval",
    reason="waiting for 1 approval(s): drain <web1> & restart?", run_id="01JTESTRUN0000000000000000", runbook="lb-drain",
    step_id="drain", started_by="alert:alertmanager/lb", route="lb", labels={"alertname": "LBDown", "team": "edge"},
    commands={"approve": "runbook approve 01JTESTRUN0000000000000000 --step drain",
              "deny": "runbook deny 01JTESTRUN0000000000000000 --step drain"},
    url="https://runbook.example.com/runs/01JTESTRUN0000000000000000", created_at=1_795_000_000.0,
)  # fmt: skip
DELIVERY = "01JTESTRUN0000000000000000:7:ops"


def test_webhook_body_and_signature_verify_like_the_generic_alert_source(http_server: HTTPTestServer) -> None:
    http_server.route("/hook", Reply(200))
    config = WebhookConfig(url=http_server.url("/hook"), hmac_secret="hook-secret-123", headers={"X-Team": "edge"})
    detail = WebhookNotifier().send(MESSAGE, config, delivery_id=DELIVERY, timeout=5)
    assert detail == "HTTP 200"
    (req,) = http_server.requests_to("/hook")
    body = req.json()
    assert body["kind"] == "waiting_approval" and body["key"] == MESSAGE.key and body["step"] == "drain"
    assert body["run"] == {"id": MESSAGE.run_id, "runbook": "lb-drain", "started_by": "alert:alertmanager/lb", "url": MESSAGE.url}
    assert body["commands"]["approve"] == "runbook approve 01JTESTRUN0000000000000000 --step drain"
    assert req.headers["x-runbook-delivery"] == DELIVERY and req.headers["x-team"] == "edge"
    # the generic alert source's verifier accepts it: same scheme, over the raw body
    GenericSource().verify(req.body, req.headers, GenericAuth(hmac_secret="hook-secret-123"))
    with pytest.raises(Exception, match="does not match"):
        GenericSource().verify(req.body, req.headers, GenericAuth(hmac_secret="another-secret"))


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [(Reply(503, body="busy"), True), (Reply(429), True), (Reply(408), True), (Reply(404, body="no_service"), False),
     (Reply(400, body="invalid_payload"), False), (Reply(302, redirect="http://127.0.0.1:1/"), False)],
    ids=["503", "429", "408", "404", "400", "redirect"],
)  # fmt: skip
def test_http_refusals_say_whether_a_retry_can_help(http_server: HTTPTestServer, reply: Reply, retryable: bool) -> None:
    http_server.route("/hook", reply)
    with pytest.raises(NotifyError) as err:
        WebhookNotifier().send(MESSAGE, WebhookConfig(url=http_server.url("/hook")), delivery_id=DELIVERY, timeout=5)
    assert err.value.retryable is retryable and str(reply.status) in str(err.value)
    assert len(http_server.requests_to("/hook")) == 1  # one request per send, no redirect followed


def test_unreachable_and_slow_receivers_are_retryable(http_server: HTTPTestServer) -> None:
    http_server.route("/slow", Reply(200, delay=5))
    with pytest.raises(NotifyError, match=r"no answer within 0\.5s") as slow:
        WebhookNotifier().send(MESSAGE, WebhookConfig(url=http_server.url("/slow")), delivery_id=DELIVERY, timeout=0.5)
    with pytest.raises(NotifyError, match="cannot reach the receiver") as down:
        WebhookNotifier().send(MESSAGE, WebhookConfig(url="http://127.0.0.1:9/"), delivery_id=DELIVERY, timeout=2)
    assert slow.value.retryable and down.value.retryable


def test_slack_block_kit_message_has_run_step_reason_commands_and_link(http_server: HTTPTestServer) -> None:
    http_server.route("/services/T0/B0/xyz", Reply(200, body="ok"))
    secret_url = http_server.url("/services/T0/B0/xyz")
    SlackNotifier().send(MESSAGE, SlackConfig(url=secret_url, username="runbook"), delivery_id=DELIVERY, timeout=5)
    (req,) = http_server.requests_to("/services/T0/B0/xyz")
    doc = req.json()
    blocks = doc["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": MESSAGE.title}}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Run*\n01JTESTRUN0000000000000000" in fields and "*Step*\ndrain" in fields and "*Route*\nlb" in fields
    assert blocks[2]["text"]["text"] == "*Reason*\nwaiting for 1 approval(s): drain &lt;web1&gt; &amp; restart?"
    commands = blocks[3]["text"]["text"]
    assert "*Approve*\n```runbook approve 01JTESTRUN0000000000000000 --step drain```" in commands
    assert "*Deny*\n```runbook deny 01JTESTRUN0000000000000000 --step drain```" in commands
    assert blocks[4]["elements"][0]["url"] == MESSAGE.url and blocks[4]["type"] == "actions"
    assert doc["username"] == "runbook" and "runbook approve" in doc["text"]


def test_slack_errors_never_show_the_webhook_url(http_server: HTTPTestServer) -> None:
    http_server.route("/services/T0/B0/revoked", Reply(403, body="invalid_token"))
    with pytest.raises(NotifyError) as err:
        SlackNotifier().send(MESSAGE, SlackConfig(url=http_server.url("/services/T0/B0/revoked")), delivery_id=DELIVERY, timeout=5)
    assert not err.value.retryable and "invalid_token" in str(err.value) and "/services/" not in str(err.value)


def _mail(server: SMTPTestServer, **kw: object) -> EmailConfig:
    base: dict[str, object] = {"host": server.host, "port": server.port, "username": server.user, "password": server.password,
                               "from": "runbook@example.com", "to": ["oncall@example.com", "lead@example.com"], "ca_file": str(server.cert)}  # fmt: skip
    return EmailConfig.model_validate({**base, **kw})


def test_email_over_starttls_with_login(smtp_server: SMTPTestServer) -> None:
    detail = EmailNotifier().send(MESSAGE, _mail(smtp_server), delivery_id=DELIVERY, timeout=10)
    assert "accepted" in detail and "2 recipient" in detail
    (got,) = smtp_server.wait_for(1)
    assert got.tls and got.login == smtp_server.user
    assert got.rcpt_tos == ["oncall@example.com", "lead@example.com"] and got.mail_from == "runbook@example.com"
    assert got.message["Subject"] == f"[runbook] {MESSAGE.title}"
    assert got.message["Message-ID"] == "<01JTESTRUN0000000000000000.7.ops@runbook>" and got.message["X-Runbook-Delivery"] == DELIVERY
    body = got.body
    for text in ("Run: 01JTESTRUN0000000000000000", "Step: drain", "Reason: waiting for 1 approval(s): drain <web1> & restart?",
                 "Approve: runbook approve 01JTESTRUN0000000000000000 --step drain", f"Console: {MESSAGE.url}"):  # fmt: skip
        assert text in body, body


def test_email_refusals(smtp_server: SMTPTestServer, tmp_path: Path) -> None:
    with pytest.raises(NotifyError, match="refused the login") as bad_login:
        EmailNotifier().send(MESSAGE, _mail(smtp_server, password="wrong-password"), delivery_id=DELIVERY, timeout=10)
    assert not bad_login.value.retryable and "wrong-password" not in str(bad_login.value)
    with pytest.raises(NotifyError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):  # the system CAs do not know it
        EmailNotifier().send(MESSAGE, _mail(smtp_server, ca_file=None), delivery_id=DELIVERY, timeout=10)
    with pytest.raises(NotifyError, match=r"cannot deliver to 127\.0\.0\.1:9") as down:
        EmailNotifier().send(MESSAGE, _mail(smtp_server, port=9), delivery_id=DELIVERY, timeout=5)
    assert down.value.retryable and smtp_server.messages() == []


def test_email_config_refuses_a_login_without_tls() -> None:
    with pytest.raises(ValueError, match="clear text"):
        EmailConfig.model_validate({"host": "h", "security": "none", "username": "u", "password": "env:P", "from": "a@b", "to": ["c@d"]})
