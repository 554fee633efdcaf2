"""Built-in plugin runbook_mcp (in progress)."""
