"""The ``ssh`` step type (also a probe for ``check``, ``precondition`` and ``verify``).

paramiko is imported only when a step runs, so ``runbook --help`` stays fast.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from runbook_ssh.command import ENV_NAME, build_command, env_stdin
from runner.durations import Duration
from runner.secrets import refuse_secret_in_argv
from runner.steptypes import ActionResult, Argv, Finding, PreflightFacts, StepConfig, StepType, Templated

if TYPE_CHECKING:
    from runner.context import Context

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_MAX_OUTPUT", "SSHConfig", "SSHStep"]

DEFAULT_MAX_OUTPUT = 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 10.0


class SSHConfig(StepConfig):
    """Config of an ``ssh`` step or check."""

    host: str | None = Field(default=None, description="inventory name or address; defaults to the fan-out target")
    command: Argv = Field(min_length=1, description="argv list; each argument is quoted for the remote shell")
    user: str | None = Field(default=None, description="login user (inventory, then the local user name)")
    port: Templated[int] | None = Field(default=None, description="TCP port (inventory, then 22)")
    key: str | None = Field(default=None, description="private key file (inventory; else ~/.ssh/id_* keys)")
    agent: Templated[bool] = Field(default=False, description="also offer the keys of a running ssh-agent")
    known_hosts: str | None = Field(default=None, description="known_hosts file (inventory, --known-hosts, ~/.ssh/known_hosts)")
    sudo: Templated[bool] = Field(default=False, description="run as root through `sudo -n --` (never prompts)")
    connect_timeout: Templated[Duration] = Field(default=DEFAULT_CONNECT_TIMEOUT, description="TCP connect, handshake and auth")
    env: dict[str, str] = Field(default_factory=dict, description="environment variables for the command (values quoted)")
    cwd: str | None = Field(default=None, description="remote directory to run in (`cd` first)")
    max_output: Templated[int] = Field(default=DEFAULT_MAX_OUTPUT, ge=0, description="bytes kept of stdout and of stderr")
    stdin: str | None = Field(default=None, description="text written to the command's standard input")

    @field_validator("port")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= 65535:
            raise ValueError("expected a TCP port between 1 and 65535")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # `{PORT: 8080, DEBUG: true}` in YAML: the words written, as with argv
        value = {k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, int | float) else v for k, v in value.items()}
        bad = [k for k in value if not isinstance(k, str) or not ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"invalid environment variable name(s) {', '.join(map(repr, bad))}: expected [A-Za-z_][A-Za-z0-9_]*")
        return value


class SSHStep(StepType):
    """Run a command on a remote host over SSH, with strict host-key checking."""

    config_read_only = True  # execute reads its config; anything it changes is a copy
    name = "ssh"
    Config = SSHConfig
    description = "Run a command (argv list, each argument quoted) on a host over SSH; host keys checked against known_hosts"
    probe = True
    default_expect: ClassVar[dict[str, Any]] = {"exit_code": 0}
    expect_keys: ClassVar[frozenset[str] | None] = frozenset({"exit_code", "stdout", "stderr"})
    output_fields: ClassVar[frozenset[str] | None] = frozenset({"exit_code", "stdout", "stderr", "truncated"})

    def summary(self, config: dict[str, Any]) -> str:
        """``user@host: sudo cmd args``."""
        host = config.get("host") or "{{ target }}"
        who = f"{config['user']}@{host}" if config.get("user") else str(host)
        command = shlex.join(str(a) for a in config.get("command") or [])
        text = f"{who}: {'sudo ' if config.get('sudo') is True else ''}{command}"
        return text if len(text) <= 120 else text[:117] + "..."

    def execute(self, config: SSHConfig, ctx: Context) -> ActionResult:
        """Run the command on the host; report exit code and output."""
        from runbook_ssh.connection import Connection
        from runbook_ssh.endpoint import resolve_endpoint
        from runbook_ssh.remote import run_remote

        ep = resolve_endpoint(config, ctx)
        refuse_secret_in_argv([*config.command, config.cwd or ""], ctx.redactor, f"step '{ctx.step_id}'")
        line = build_command(config.command, env=config.env, cwd=config.cwd, sudo=bool(config.sudo))
        stdin = env_stdin(config.env) + (config.stdin or "")  # env values travel on stdin, never on the command line
        conn: Connection = ctx.services.resource(ep.pool_key, lambda: Connection(ep))
        what = f"step '{ctx.step_id}': {ep.user}@{ep.label}: {shlex.join(config.command)}"
        result = run_remote(conn, line, stdin=stdin, timeout=ctx.remaining(), connect_timeout=float(config.connect_timeout),
                            max_output=int(config.max_output), ctx=ctx, what=what, sudo=bool(config.sudo))  # fmt: skip
        detail = f"exit {result.exit_code} on {ep.label}" if result.exit_code >= 0 else f"no exit status from {ep.label} (killed?)"
        return ActionResult(exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr, truncated=result.truncated,
                            duration=result.duration, detail=detail)  # fmt: skip

    def preflight(self, config: SSHConfig, facts: PreflightFacts) -> list[Finding]:
        """The private key file readable and the host's key in known_hosts (see :mod:`runbook_ssh.preflight`)."""
        from runbook_ssh.preflight import preflight

        return preflight(config, facts)

    def shorthand(self, value: Any) -> Any:
        """Only the mapping form exists: ``ssh: {host, command}``."""
        return value
