"""A step whose condition reads a step that runs after it."""

from runner import Runbook

rb = Runbook("py-forward-ref")
rb.add_step("report", shell=["echo", "report"], when="steps.measure.state == 'succeeded'")
rb.add_step("measure", shell=["df", "-P", "/"])
