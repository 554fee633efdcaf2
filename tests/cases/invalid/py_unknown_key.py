"""A step added with a key no step has."""

from runner import Runbook

rb = Runbook("py-unknown-key", description="restart nginx")
rb.add_step("restart", shell=["systemctl", "restart", "nginx"], retries=3)
