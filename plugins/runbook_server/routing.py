"""Routing alerts to runbooks: label matchers, params rendered from the alert, dedupe keys.

``match`` values follow Alertmanager's matchers: ``value`` (or ``=value``) equality, ``!=value``,
``=~regex`` and ``!~regex`` (anchored: the whole label value must match). A missing label is the
empty string. The first route (in file order) whose source and matchers fit takes the alert.

Alert text is data: templates are the route's own strings, rendered with ``alert`` in scope;
whatever a label contains arrives as a value and is then validated by the runbook's params model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook_server.config import RouteSpec
    from runner.alerts import Alert
    from runner.templating import Renderer

__all__ = ["CompiledRoute", "Router", "compile_matcher", "run_key"]

Test = Callable[[str], bool]


def _matcher(raw: str) -> Test:
    if raw.startswith("=~"):
        rx = re.compile(raw[2:])
        return lambda v: rx.fullmatch(v) is not None
    if raw.startswith("!~"):
        rx = re.compile(raw[2:])
        return lambda v: rx.fullmatch(v) is None
    if raw.startswith("!="):
        value = raw[2:]
        return lambda v: v != value
    value = raw[1:] if raw.startswith("=") and not raw.startswith("==") else raw
    return lambda v: v == value


def compile_matcher(match: Mapping[str, str]) -> Callable[[Mapping[str, str]], bool]:
    """A predicate over label sets for a route's ``match`` mapping."""
    tests = [(label, _matcher(raw)) for label, raw in match.items()]
    return lambda labels: all(test(labels.get(label, "")) for label, test in tests)


@dataclass
class CompiledRoute:
    """A route ready to match, render and key alerts."""

    spec: RouteSpec
    matches_labels: Callable[[Mapping[str, str]], bool]
    file: str

    @property
    def name(self) -> str:
        """The route's name."""
        return self.spec.name

    def matches(self, alert: Alert) -> bool:
        """True if ``alert`` comes from the route's source (if any) and its labels match."""
        return (self.spec.source is None or self.spec.source == alert.source) and self.matches_labels(alert.labels)

    def params(self, renderer: Renderer, context: Mapping[str, Any]) -> dict[str, Any]:
        """The runbook params, rendered from the alert (TemplateError if a template fails)."""
        rendered = renderer.render(self.spec.params, context, file=self.file, step=None, field=f"routes.{self.name}.params")
        return dict(rendered)

    def dedupe_key(self, renderer: Renderer, context: Mapping[str, Any], alert: Alert) -> str:
        """The route's ``dedupe`` template rendered, or ``source:fingerprint``."""
        if self.spec.dedupe is None:
            return f"{alert.source}:{alert.fingerprint}"
        return str(renderer.render(self.spec.dedupe, context, file=self.file, step=None, field=f"routes.{self.name}.dedupe"))


class Router:
    """Routes in file order; the first match wins."""

    def __init__(self, specs: list[RouteSpec], file: str) -> None:
        self.routes = [CompiledRoute(spec, compile_matcher(spec.match), file) for spec in specs]
        self.by_name = {r.name: r for r in self.routes}

    def route(self, alert: Alert) -> CompiledRoute | None:
        """The route that takes ``alert``, if any."""
        return next((r for r in self.routes if r.matches(alert)), None)


def run_key(route: str, dedupe_key: str, episode: str) -> str:
    """The idempotency key of the run an alert episode starts (a retried delivery finds the same run)."""
    digest = hashlib.sha256(f"{route}\x00{dedupe_key}\x00{episode}".encode()).hexdigest()[:32]
    return f"alert:{route}:{digest}"
