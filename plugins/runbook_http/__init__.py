"""Built-in ``http`` step type: one HTTP request with httpx, as an action or a probe.

Safe by default: a timeout always applies (10 s connect and read unless set),
the response body is read up to ``max_response_bytes`` (1 MiB) and no further,
proxies and certificates are never taken from the environment
(``trust_env=False``), redirects are not followed unless asked (and then the
step's headers stay on the original origin), an optional host allow-list (the
step's ``allowed_hosts`` and the operator's ``RUNBOOK_HTTP_ALLOWED_HOSTS``) is
enforced for every request including redirects, a URL that contains a secret
value is refused, and so is a secret sent to a host chosen by a template unless
an allow-list pins it. See docs/http.md.

httpx is imported only when a request is made.
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StepTypeRegistry

__all__ = ["runbook_register_step_types"]


@hookimpl
def runbook_register_step_types(registry: StepTypeRegistry) -> None:
    """Register the ``http`` step type."""
    registry.add_lazy("http", "runbook_http.step:HttpStep")
