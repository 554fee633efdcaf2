"""A Python runbook that fails while it is imported."""

from runner import Runbook

rb = Runbook("py-import-error")
rb.add_step("a", shell=["true"])
CONFIG = {"retries": 3}["retry"]
