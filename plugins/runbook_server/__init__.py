"""Built-in plugin runbook_server (in progress)."""
