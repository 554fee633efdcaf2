"""Two runbooks in one file, each with its own mistake: both are reported."""

from runner import Runbook

first = Runbook("py-two-first")
first.add_step("a", shel=["true"])

second = Runbook("py-two-second")
second.add_step("b", shell=["echo", "{{ params.missing }}"])
