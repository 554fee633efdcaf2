"""Fake, recorded and replayed ``http`` exchanges: what the http step would send, and a reply as it would see it.

A faked request goes through the http step's own refusals first (a secret in the URL, a secret to a templated
host, the host allow-lists), so a runbook that would be refused in production is refused in its test too.
Recorded exchanges keep no secret: request headers are left out, and every text is masked by the run's redactor.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from runner.errors import StepFailed
from runner.steptypes import ActionResult

if TYPE_CHECKING:
    from runner.context import Context

__all__ = ["CASSETTE_VERSION", "cassette_routes", "interaction", "match", "reply_result", "request_of"]

CASSETTE_VERSION = 1


def request_of(config: Any, ctx: Context) -> dict[str, Any]:
    """What an ``http`` step with the rendered ``config`` would send, after the step's own refusals."""
    import httpx
    from runbook_http.guards import HostPolicy, carries_secret, display_url, refuse_secret_in_url, refuse_secret_to_templated_host
    from runbook_http.transport import final_url

    url = final_url(config.url, config.query)
    headers = dict(config.headers)
    if config.auth is not None and config.auth.bearer is not None:
        headers["Authorization"] = f"Bearer {config.auth.bearer}"
    elif config.auth is not None and config.auth.basic is not None:
        headers["Authorization"] = f"Basic {config.auth.basic.username}:{config.auth.basic.password}"
    body = _body(config)
    refuse_secret_in_url(config.method, url, ctx.redactor)
    policy = HostPolicy(config.allowed_hosts)
    if carries_secret(ctx.redactor, [url, body or "", *headers, *headers.values()]):
        refuse_secret_to_templated_host(config.method, url, ctx.raw_config, policy, ctx.redactor)
    parsed = httpx.URL(url)
    policy.check(config.method, parsed.scheme, parsed.host, parsed.port, display_url(url, ctx.redactor))
    return {"method": config.method, "url": url, "headers": headers, "body": body}


def _body(config: Any) -> str | None:
    if config.json_ is not None:
        return json.dumps(config.json_, sort_keys=True, separators=(",", ":"))
    if config.form is not None:
        from urllib.parse import urlencode

        return urlencode(sorted(config.form.items()))
    return config.body if config.body is not None else None


def shown(request: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """``request`` as a test may see it: secrets masked, credentials left out."""
    from runbook_http.step import SENSITIVE_HEADERS

    redact = ctx.redactor.text
    headers = {k: ("***" if k.lower() in SENSITIVE_HEADERS else redact(v)) for k, v in request["headers"].items()}
    body = request["body"]
    return {"method": request["method"], "url": redact(request["url"]), "headers": headers, "body": redact(body) if body else body,
            "step": ctx.step_id}  # fmt: skip


def match(routes: list[dict[str, Any]], request: dict[str, Any]) -> dict[str, Any] | None:
    """The next reply of the first route for ``request`` (its replies in order, the last one repeating)."""
    for route in routes:
        if route["method"] != request["method"] or route["url"] != request["url"]:
            continue
        if route.get("body") is not None and route["body"] != request["body"]:
            continue
        replies = route["replies"]
        reply: dict[str, Any] = replies[min(route.get("used", 0), len(replies) - 1)]
        route["used"] = route.get("used", 0) + 1
        return reply
    return None


def no_reply(request: dict[str, Any], routes: list[dict[str, Any]], ctx: Context) -> StepFailed:
    """The error for a request no fake reply answers (the test arranged no such exchange)."""
    known = "; ".join(sorted({f"{r['method']} {r['url']}" for r in routes})) or "none"
    return StepFailed(ctx.redactor.text(f"no fake http reply for {request['method']} {request['url']} (fake replies for: {known})"))


def reply_result(reply: dict[str, Any], url: str) -> ActionResult:
    """The :class:`ActionResult` the http step would give for ``reply`` (status, headers, json or body)."""
    from runbook_http.step import SENSITIVE_HEADERS

    headers = {str(k).lower(): str(v) for k, v in (reply.get("headers") or {}).items()}
    parsed = reply.get("json")
    if "json" in reply:
        body = json.dumps(parsed)
        headers.setdefault("content-type", "application/json")
    else:
        body = str(reply.get("body") or "")
    status = int(reply.get("status", 200))
    output: dict[str, Any] = {"status": status, "headers": {k: ("***" if k in SENSITIVE_HEADERS else v) for k, v in headers.items()},
                              "truncated": False}  # fmt: skip
    if "json" in reply:
        output["json"] = parsed
    else:
        output["body"] = body
    return ActionResult(output=output, status=status, headers=headers, body=body, json=parsed if "json" in reply else None,
                        detail=f"HTTP {status}", extra={"url": url})  # fmt: skip


def interaction(request: dict[str, Any], result: ActionResult, ctx: Context) -> dict[str, Any]:
    """One recorded exchange: the request (no headers) and the response, secrets masked."""
    from runbook_http.step import SENSITIVE_HEADERS

    redact = ctx.redactor.text
    response: dict[str, Any] = {"status": result.status,
                                "headers": {k.lower(): ("***" if k.lower() in SENSITIVE_HEADERS else redact(v))
                                            for k, v in (result.headers or {}).items() if k.lower() not in _VOLATILE}}  # fmt: skip
    if result.json is not None:
        response["json"] = ctx.redactor.value(result.json)
    else:
        response["body"] = redact(result.body or "")
    body = request["body"]
    return {"request": {"method": request["method"], "url": redact(request["url"]), "body": redact(body) if body else body},
            "response": response}  # fmt: skip


_VOLATILE = frozenset({"date", "server", "content-length", "connection", "keep-alive", "transfer-encoding"})


def cassette_routes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Fake routes replaying a cassette: the exchanges of one request in recorded order, the last one repeating."""
    if doc.get("version") != CASSETTE_VERSION or not isinstance(doc.get("interactions"), list):
        raise ValueError(f"not a runbook http cassette of version {CASSETTE_VERSION}")
    routes: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for item in doc["interactions"]:
        req = item["request"]
        key = (req["method"], req["url"], req.get("body"))
        route = routes.setdefault(key, {"method": key[0], "url": key[1], "body": key[2], "replies": [], "used": 0})
        route["replies"].append(item["response"])
    return list(routes.values())
