"""A Python runbook that does not parse."""

from runner import Runbook

rb = Runbook("py-syntax"
rb.add_step("a", shell=["true"])
