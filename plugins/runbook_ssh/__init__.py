"""Built-in plugin runbook_ssh (in progress)."""
