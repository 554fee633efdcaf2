"""An expectation the step type's results cannot show."""

from runner import Runbook

rb = Runbook("py-expect-type")
rb.add_step("health", shell=["curl", "-fsS", "http://localhost:8080/healthz"], expect={"status": 200})
