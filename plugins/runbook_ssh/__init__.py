"""Built-in ``ssh`` step type: run a command on a remote host with paramiko.

``ssh: {host, command: [argv...], user, port, key, agent, known_hosts, sudo, connect_timeout,
env, cwd, max_output, stdin}``. Also usable in ``check``/``precondition``/``verify`` and from
Python as ``ctx.ssh(host).run([...])``. Host keys are always verified against known_hosts
(``RejectPolicy``); hosts resolve through the inventory (``--inventory``); one connection per
destination is shared by all steps of a run. See ``docs/ssh.md``.
"""

from __future__ import annotations

from runner.plugin import hookimpl
from runner.registry import StepTypeRegistry

__all__ = ["runbook_register_step_types"]


@hookimpl
def runbook_register_step_types(registry: StepTypeRegistry) -> None:
    """Register the ``ssh`` step type."""
    registry.add_lazy("ssh", "runbook_ssh.step:SSHStep")
