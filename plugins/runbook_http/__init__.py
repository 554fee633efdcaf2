"""Built-in plugin runbook_http (in progress)."""
