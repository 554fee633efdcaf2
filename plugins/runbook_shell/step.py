"""The ``shell`` step type and the local process runner it is built on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from typing import IO, TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from runner.errors import CommandTimeout, StepFailed
from runner.steptypes import ActionResult, Argv, StepConfig, StepType, Templated

if TYPE_CHECKING:
    from runner.context import Context

__all__ = ["ProcessResult", "ShellConfig", "ShellStep", "run_process"]

DEFAULT_MAX_OUTPUT = 1024 * 1024
# Params are exported to scripts under their own names; these would change how the shell itself behaves.
_PROTECTED_ENV = {"PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "PS4", "CDPATH", "USER", "PWD", "SHELLOPTS"}


class ShellConfig(StepConfig):
    """Config of a ``shell`` step (``shell: [argv...]`` is short for ``shell: {command: [argv...]}``)."""

    command: Argv | None = Field(default=None, description="argv list, run without a shell")
    script: str | None = Field(default=None, description="text run by `sh -e`; params arrive as environment variables")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment variables")
    cwd: str | None = Field(default=None, description="working directory")
    stdin: str | None = Field(default=None, description="text written to the command's standard input")
    inherit_env: bool = Field(default=True, description="start from the runner's environment")
    max_output: Templated[int] = Field(default=DEFAULT_MAX_OUTPUT, description="bytes kept of stdout and of stderr")
    kill_grace: Templated[float] = Field(default=2.0, description="seconds between SIGTERM and SIGKILL on timeout")

    @model_validator(mode="after")
    def _one_form(self) -> ShellConfig:
        if (self.command is None) == (self.script is None):
            raise ValueError("give exactly one of 'command' (argv list) or 'script'")
        if self.command is not None and not self.command:
            raise ValueError("'command' needs at least the program to run")
        return self


class ProcessResult:
    """Exit code and captured output of one process."""

    __slots__ = ("duration", "exit_code", "stderr", "stdout", "truncated")

    def __init__(self, exit_code: int, stdout: str, stderr: str, truncated: bool, duration: float) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr
        self.truncated, self.duration = truncated, duration


def _read(f: IO[bytes], cap: int) -> tuple[str, bool]:
    f.seek(0)
    data = f.read(cap + 1)
    return data[:cap].decode("utf-8", "replace"), len(data) > cap


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _terminate_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group now and SIGKILL it after ``grace`` if it is still there, without waiting.

    Used from signal handlers and other threads while the step's own thread is blocked in ``proc.wait()``:
    waiting here too would contend for Popen's wait lock and stall the cancellation.
    """
    import threading

    def escalate() -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    timer = threading.Timer(grace, escalate)
    timer.daemon = True
    timer.start()


def run_process(
    argv: list[str],
    *,
    env: dict[str, str] | None,
    cwd: str | None,
    stdin: str | None,
    timeout: float | None,
    max_output: int,
    kill_grace: float,
    ctx: Context | None = None,
    what: str | None = None,
) -> ProcessResult:
    """Run ``argv`` in its own process group with bounded output capture."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=cwd, env=env, start_new_session=True, close_fds=True,
            )  # fmt: skip
        except FileNotFoundError:
            raise StepFailed(f"command not found: {argv[0]!r}") from None
        except PermissionError:
            raise StepFailed(f"permission denied running {argv[0]!r}") from None
        except NotADirectoryError:
            raise StepFailed(f"working directory {cwd!r} is not a directory") from None
        unregister = ctx.on_cancel(lambda: _terminate_group(proc, kill_grace)) if ctx is not None else None
        try:
            if stdin is not None and proc.stdin is not None:
                try:
                    proc.stdin.write(stdin.encode())
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc, kill_grace)
                limit = ctx.timeout if ctx is not None and ctx.timeout else timeout
                raise CommandTimeout(what or f"command {argv[0]!r}", limit or 0.0) from None
        finally:
            if unregister is not None:
                unregister()
            if proc.poll() is None:  # interrupted by an exception while waiting: never leave it behind
                _kill_group(proc, kill_grace)
        if ctx is not None:
            ctx.raise_if_cancelled()
        stdout, t1 = _read(out, max_output)
        stderr, t2 = _read(err, max_output)
    return ProcessResult(code, stdout, stderr, t1 or t2, time.monotonic() - started)


class ShellStep(StepType):
    """Run a local command (argv, no shell) or a ``sh -e`` script."""

    name = "shell"
    Config = ShellConfig
    description = "Run a local command (argv list, no shell) or a `sh -e` script with params as environment variables"
    probe = True
    default_expect: ClassVar[dict[str, Any]] = {"exit_code": 0}
    unrendered: ClassVar[frozenset[str]] = frozenset({"script"})
    shorthand_schema: ClassVar[dict[str, Any] | None] = {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}, "description": "argv"},
            {"type": "string", "description": "script run by sh -e"},
        ]
    }

    def shorthand(self, value: Any) -> Any:
        """``shell: [argv]`` → ``{command: [argv]}``; ``shell: "text"`` → ``{script: "text"}``."""
        if isinstance(value, list):
            return {"command": value}
        if isinstance(value, str):
            return {"script": value}
        return value

    def summary(self, config: dict[str, Any]) -> str:
        """The command line, or the script's first line."""
        if config.get("command"):
            import shlex

            return shlex.join(str(a) for a in config["command"])
        first = str(config.get("script", "")).strip().splitlines()
        return f"sh -e: {first[0] if first else ''}"

    def execute(self, config: ShellConfig, ctx: Context) -> ActionResult:
        """Run the command and report exit code and output."""
        env = self._env(config, ctx)
        argv = config.command if config.command is not None else ["sh", "-ec", config.script or ""]
        result = run_process(
            argv, env=env, cwd=config.cwd, stdin=config.stdin, timeout=ctx.remaining(), max_output=config.max_output,
            kill_grace=config.kill_grace, ctx=ctx, what=f"step '{ctx.step_id}' ({self.summary(ctx.redactor.value(config.model_dump()))})",
        )  # fmt: skip
        return ActionResult(
            exit_code=result.exit_code, stdout=result.stdout, stderr=result.stderr, truncated=result.truncated,
            duration=result.duration, detail=f"exit {result.exit_code}",
        )  # fmt: skip

    def _env(self, config: ShellConfig, ctx: Context) -> dict[str, str] | None:
        if config.script is None and not config.env and config.inherit_env:
            return None  # inherit as is: the common, fast path
        env = dict(os.environ) if config.inherit_env else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if config.script is not None:
            for key, value in ctx.param_values.items():
                if key in _PROTECTED_ENV or key.startswith(("LD_", "BASH_FUNC")):
                    raise StepFailed(f"param '{key}' cannot be exported to a script: it would replace ${key}")
                env[key] = value if isinstance(value, str) else json.dumps(value)
            env.update(RUNBOOK_RUN_ID=ctx.run_id, RUNBOOK_STEP_ID=ctx.step_id)
        env.update({k: str(v) for k, v in config.env.items()})
        return env
