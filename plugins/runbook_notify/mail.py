"""``type: email``: the notification as a plain-text email over SMTP (stdlib ``smtplib``).

``security: starttls`` (the default, port 587) upgrades the connection before anything else is said and refuses
a server that does not offer STARTTLS; ``tls`` (port 465) is TLS from the first byte; ``none`` is only for a
relay on the same host and cannot be combined with a login. Certificates are verified against the system's CAs
or ``ca_file``. The Message-ID is derived from the delivery id, so a repeated delivery is recognisable.
"""

from __future__ import annotations

import email.policy
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runner.errors import NotifyError
from runner.notify.channel import Message

__all__ = ["EmailConfig", "EmailNotifier"]


class EmailConfig(BaseModel):
    """An ``email`` channel."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    host: str = Field(description="SMTP server")
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 587 (starttls), 465 (tls), 25 (none)")
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: str | None = Field(default=None, description="secret reference, e.g. env:SMTP_PASSWORD")
    from_: str = Field(alias="from", description="sender address")
    to: list[str] = Field(min_length=1, description="recipient addresses")
    subject_prefix: str = "[runbook] "
    ca_file: str | None = Field(default=None, description="PEM bundle of the CAs to trust (default: the system's)")

    @model_validator(mode="after")
    def _login_needs_tls(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both 'username' and 'password' (a secret reference), or neither")
        if self.username is not None and self.security == "none":
            raise ValueError("a login over 'security: none' would send the password in clear text; use starttls or tls")
        return self

    @property
    def effective_port(self) -> int:
        """The port to connect to."""
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


def _context(config: EmailConfig) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise NotifyError(f"ca_file '{config.ca_file}' cannot be used: {exc}", retryable=False) from None


def _email(message: Message, config: EmailConfig, delivery_id: str) -> EmailMessage:
    # Headers fold past 998 characters only (RFC 5322's hard limit): with the default 78, Python folds a subject
    # that starts with "[runbook]" onto its own line, which some readers then show with a leading space.
    mail = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    mail["Subject"] = (config.subject_prefix + message.title).replace("\n", " ")
    mail["From"] = config.from_
    mail["To"] = ", ".join(config.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = f"<{delivery_id.replace(':', '.')}@runbook>"
    mail["X-Runbook-Delivery"] = delivery_id
    mail["X-Runbook-Event"] = message.kind
    mail.set_content(message.text())
    return mail


def _code_error(what: str, code: int, text: Any) -> NotifyError:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return NotifyError(f"{what}: {code} {said}".strip(), retryable=400 <= code < 500)


class EmailNotifier:
    """Sends one email per notification to every address in ``to``."""

    name = "email"
    Config: ClassVar[type[BaseModel]] = EmailConfig
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password"})

    def send(self, message: Message, config: Any, *, delivery_id: str, timeout: float) -> str:
        """Connect, secure, log in, send; 4xx answers and network errors are retried, 5xx refusals are final."""
        assert isinstance(config, EmailConfig)
        mail = _email(message, config, delivery_id)
        try:
            with self._connect(config, timeout) as smtp:
                if config.username is not None and config.password is not None:
                    smtp.login(config.username, config.password)
                refused = smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(f"the server refused the login of '{config.username}' ({exc.smtp_code})", retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise NotifyError(
                f"every recipient was refused: {_refusals(exc.recipients)}", retryable=all(400 <= c < 500 for c in codes)
            ) from None
        except smtplib.SMTPSenderRefused as exc:
            raise _code_error(f"sender {config.from_} refused", exc.smtp_code, exc.smtp_error) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise NotifyError(f"the server does not support what is configured: {exc}", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            raise _code_error("the server refused the message", exc.smtp_code, exc.smtp_error) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            raise NotifyError(f"cannot deliver to {config.host}:{config.effective_port}: {type(exc).__name__}: {exc}") from None
        if refused:
            return f"accepted for {len(config.to) - len(refused)} of {len(config.to)} recipients; refused: {_refusals(refused)}"
        return f"accepted by {config.host} for {len(config.to)} recipient(s)"

    @staticmethod
    def _connect(config: EmailConfig, timeout: float) -> smtplib.SMTP:
        host, port = config.host, config.effective_port
        if config.security == "tls":
            return smtplib.SMTP_SSL(host, port, timeout=timeout, context=_context(config))
        smtp = smtplib.SMTP(host, port, timeout=timeout)
        try:
            if config.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise NotifyError(f"{host}:{port} does not offer STARTTLS (security: starttls)", retryable=False)
                smtp.starttls(context=_context(config))
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp


def _refusals(recipients: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{addr} ({code} {text.decode('utf-8', 'replace') if isinstance(text, bytes) else text})"
                     for addr, (code, text) in recipients.items())  # fmt: skip
