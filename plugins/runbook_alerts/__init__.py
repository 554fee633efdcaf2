"""Built-in plugin runbook_alerts (in progress)."""
