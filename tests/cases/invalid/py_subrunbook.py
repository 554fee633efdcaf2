"""A sub-runbook that does not exist."""

from runner import Runbook

rb = Runbook("py-subrunbook")
rb.add_step("cleanup", runbook={"name": "no-such-runbook"})
