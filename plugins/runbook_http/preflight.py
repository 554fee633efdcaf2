"""Pre-flight of an ``http`` action: what the step would refuse to send, found before the run changes anything.

These are the refusals :func:`runbook_http.transport.send` makes before any connection, applied to the config as
it will run: a secret in the URL or query, a host no allow-list in force allows, a secret sent where a template
chose the host or port; and a ``ca_bundle`` file that cannot be read. No request is made.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from runbook_http.guards import ENV_ALLOWED_HOSTS, HostPolicy, carries_secret, display_url, refuse_secret_in_url
from runbook_http.guards import refuse_secret_to_templated_host as refuse_templated
from runner.errors import HTTPStepError
from runner.steptypes import Finding

if TYPE_CHECKING:
    from runbook_http.config import HttpConfig
    from runner.steptypes import PreflightFacts

__all__ = ["preflight"]


def preflight(config: HttpConfig, facts: PreflightFacts) -> list[Finding]:
    """The refusals of :func:`runbook_http.transport.send` that need no connection, and the CA bundle's file."""
    redactor = facts.redactor
    url = config.url + (("&" if "?" in config.url else "?") + urlencode(config.query, doseq=True) if config.query else "")
    policy = HostPolicy(config.allowed_hosts, env=facts.env.get(ENV_ALLOWED_HOSTS, ""))
    found: list[Finding] = []
    try:
        refuse_secret_in_url(config.method, url, redactor)
        parts = urlsplit(config.url)
        policy.check(config.method, parts.scheme, parts.hostname or "", parts.port, display_url(config.url, redactor))
        if carries_secret(redactor, _texts(config)):
            refuse_templated(config.method, url, facts.raw, policy, redactor)
    except HTTPStepError as exc:
        found.append(Finding(("url",), redactor.text(str(exc))))
    except ValueError as exc:  # an unparsable port: the step would fail the same way
        found.append(Finding(("url",), redactor.text(f"{config.method} {display_url(config.url, redactor)}: {exc}")))
    bundle = config.ca_bundle
    if bundle is not None and not (os.path.isfile(bundle) and os.access(bundle, os.R_OK)):
        why = "does not exist" if not os.path.exists(bundle) else "cannot be read by this user"
        found.append(Finding(("ca_bundle",), f"ca_bundle {bundle} {why}", resource=bundle))
    return found


def _texts(config: HttpConfig) -> list[str]:
    """What the request would carry as text: URL, headers, credentials, body."""
    out = [config.url, *config.headers, *config.headers.values()]
    if config.auth is not None:
        out += [config.auth.bearer or ""]
        if config.auth.basic is not None:
            out += [config.auth.basic.username, config.auth.basic.password]
    if config.json_ is not None:
        out.append(json.dumps(config.json_))
    out += [*(config.form or {}).values(), config.body or ""]
    return out
