"""Built-in alert sources for ``runbook serve``: Alertmanager, Grafana, PagerDuty and a generic signed webhook.

Each source authenticates a delivery over its raw bytes and normalises its payload into
:class:`runner.alerts.Alert` objects. See ``docs/server.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.plugin import hookimpl

if TYPE_CHECKING:
    from runner.registry import AlertSourceRegistry

__all__ = ["runbook_register_alert_sources"]


@hookimpl
def runbook_register_alert_sources(registry: AlertSourceRegistry) -> None:
    """Register ``alertmanager``, ``grafana``, ``pagerduty`` and ``generic``."""
    from runbook_alerts.alertmanager import AlertmanagerSource
    from runbook_alerts.generic import GenericSource
    from runbook_alerts.grafana import GrafanaSource
    from runbook_alerts.pagerduty import PagerDutySource

    for source in (AlertmanagerSource(), GrafanaSource(), PagerDutySource(), GenericSource()):
        registry.add(source)
