"""The ``http`` step type: one HTTP request, usable as an action and as a probe."""

from __future__ import annotations

import base64
import codecs
import json
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlencode

from runbook_http.config import HttpConfig
from runbook_http.guards import display_url
from runner.errors import HTTPStepError
from runner.steptypes import ActionResult, Finding, PreflightFacts, StaticFacts, StepType

if TYPE_CHECKING:
    from runbook_http.transport import Request, Response
    from runner.context import Context

__all__ = ["SENSITIVE_HEADERS", "HttpStep"]

SENSITIVE_HEADERS = frozenset({"set-cookie", "authorization", "proxy-authenticate", "www-authenticate", "x-auth-token"})
"""Response headers masked in the stored output (they still reach ``expect: {header: ...}``)."""


class HttpStep(StepType):
    """Make one HTTP request with httpx: timeouts always, bounded body, no proxy from the environment."""

    config_read_only = True  # execute reads its config; anything it changes is a copy
    name = "http"
    Config = HttpConfig
    description = "Make an HTTP request (httpx; timeouts always, response size cap, optional host allow-list, no env proxies)"
    probe = True
    default_expect: ClassVar[dict[str, Any]] = {"status": "2xx"}
    expect_keys: ClassVar[frozenset[str] | None] = frozenset({"status", "json", "body", "header"})
    output_fields: ClassVar[frozenset[str] | None] = frozenset({"status", "headers", "truncated", "json", "body"})
    shorthand_schema: ClassVar[dict[str, Any] | None] = {"type": "string", "description": "a URL to GET"}
    defaults_keys: ClassVar[dict[str, dict[str, Any]]] = {
        "base_url": {"type": "string", "description": "prefix of every `url` that starts with '/' (and the url of a step that gives none)"},
    }

    def shorthand(self, value: Any) -> Any:
        """``http: URL`` → ``{url: URL}`` (a GET)."""
        return {"url": value} if isinstance(value, str) else value

    def resolve_defaults(self, config: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        """``base_url`` from ``defaults:``: a ``url`` starting with ``/`` is appended to it; no ``url`` means it."""
        base = defaults.get("base_url")
        if not isinstance(base, str):
            return config
        url = config.get("url")
        if url is None:
            return {**config, "url": base}
        if isinstance(url, str) and url.startswith("/"):
            return {**config, "url": base.rstrip("/") + url}
        return config

    def lint(self, config: dict[str, Any], facts: StaticFacts) -> list[Finding]:
        """A secret in the URL or query, or sent where a template picks the host or port without an allow-list:
        every run would refuse to send such a request, so ``validate`` says so first (and which part is at fault)."""
        from runbook_http.guards import ENV_ALLOWED_HOSTS, HostPolicy, templated_origin_part

        found: list[Finding] = []
        url = config.get("url")
        for key in ("url", "query"):
            if facts.carries_secret(config.get(key)):
                found.append(Finding((key,), f"'{key}' reads a secret: URLs end up in server and proxy logs, so every run "
                                             "would refuse to send it; pass the secret in a header (auth: {bearer: ...})"))  # fmt: skip
        sent = {k: config.get(k) for k in ("headers", "auth", "json", "form", "body")}
        part = templated_origin_part(url) if isinstance(url, str) else None
        if part is None or not facts.carries_secret(sent) or found:
            return found
        hosts = config.get("allowed_hosts")
        policy = HostPolicy(hosts if isinstance(hosts, list) else None, env=facts.env.get(ENV_ALLOWED_HOSTS, ""))
        if not policy.pinned(config):
            what = {"port": "the port of 'url'", "host": "the host of 'url'"}.get(part, "the scheme, host and port of 'url'")
            fix = "the port" if part == "port" else "the host"
            found.append(Finding(("url",), f"the request carries a secret and a template chooses {what} ({url!r}): whoever "
                                           "starts the run could send the secret to a server of their own, so every run would "
                                           f"refuse it; pin the hosts with literal `allowed_hosts: [...]`, have the operator set "
                                           f"{ENV_ALLOWED_HOSTS}, or write {fix} literally"))  # fmt: skip
        return found

    def preflight(self, config: HttpConfig, facts: PreflightFacts) -> list[Finding]:
        """What the step would refuse to send (see :mod:`runbook_http.preflight`); no request is made."""
        from runbook_http.preflight import preflight

        return preflight(config, facts)

    def summary(self, config: dict[str, Any]) -> str:
        """``GET https://host/path``."""
        method = str(config.get("method") or "GET").upper()
        return f"{method} {display_url(str(config.get('url', '')))}"

    def execute(self, config: HttpConfig, ctx: Context) -> ActionResult:
        """Send the request and report status, headers, body (capped) and parsed JSON."""
        from runbook_http.transport import final_url, map_httpx_errors, send

        shown = display_url(config.url, ctx.redactor)
        with map_httpx_errors(config.method, shown, config.timeouts(), ctx):
            url = final_url(config.url, config.query)
        request = self._request(config, url, ctx)
        response, duration = send(config, request, ctx)
        return _result(response, duration)

    def _request(self, config: HttpConfig, url: str, ctx: Context) -> Request:
        from runbook_http.transport import Request

        headers = {"Accept-Encoding": "identity", **config.headers}  # like curl: no compressed body, so the cap is the memory bound
        lower = {k.lower() for k in headers}
        if config.auth is not None:
            if "authorization" in lower:
                raise HTTPStepError(f"{config.method} {display_url(url, ctx.redactor)}: give `auth` or an Authorization header, not both")
            headers["Authorization"] = _authorization(config, ctx)
        content: bytes | None = None
        kind: str | None = None
        if config.json_ is not None:
            content, kind = json.dumps(config.json_, separators=(",", ":")).encode(), "application/json"
        elif config.form is not None:
            content, kind = urlencode(config.form).encode(), "application/x-www-form-urlencoded"
        elif config.body is not None:
            content, kind = config.body.encode(), "text/plain; charset=utf-8"
        if kind is not None and "content-type" not in lower:
            headers["Content-Type"] = kind
        return Request(method=config.method, url=url, headers=headers, content=content, shown=display_url(url, ctx.redactor))


def _authorization(config: HttpConfig, ctx: Context) -> str:
    auth = config.auth
    assert auth is not None
    if auth.bearer is not None:
        return f"Bearer {auth.bearer}"
    assert auth.basic is not None
    token = base64.b64encode(f"{auth.basic.username}:{auth.basic.password}".encode()).decode()
    ctx.redactor.add(token)  # the encoded form is as secret as the password: a server echoing it must not leak it
    return f"Basic {token}"


def _decode(data: bytes, encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except LookupError:
        encoding = "utf-8"
    return data.decode(encoding, "replace")


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _result(response: Response, duration: float) -> ActionResult:
    body = _decode(response.body, response.encoding)
    parsed: Any = None
    if _is_json(response.headers.get("content-type", "")) and not response.truncated and body.strip():
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    stored_headers = {k: ("***" if k.lower() in SENSITIVE_HEADERS else v) for k, v in response.headers.items()}
    output: dict[str, Any] = {"status": response.status, "headers": stored_headers, "truncated": response.truncated}
    if parsed is not None:
        output["json"] = parsed
    else:
        output["body"] = body
    return ActionResult(
        output=output, status=response.status, headers=response.headers, body=body, json=parsed, duration=duration,
        truncated=response.truncated, detail=f"HTTP {response.status}",
        extra={"url": response.url},
    )  # fmt: skip
