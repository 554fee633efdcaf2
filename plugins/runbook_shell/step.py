"""The ``shell`` step type and the local process runner it is built on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from runner.errors import CommandTimeout, StepFailed
from runner.leftovers import RUN_ENV, STEP_ENV
from runner.secrets import refuse_secret_in_argv
from runner.steptypes import ActionResult, Argv, Finding, PreflightFacts, StepConfig, StepType, Templated

if TYPE_CHECKING:
    from runner.context import Context

__all__ = ["ProcessResult", "ShellConfig", "ShellStep", "run_process"]

DEFAULT_MAX_OUTPUT = 1024 * 1024
_MASK_SLACK = 4096  # bytes read past max_output so a secret cut by the cap is still recognised and masked
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


def _capture_fd() -> int:
    """A fresh anonymous file for a command's output (one per command: a daemon the command leaves behind
    may keep writing to it, and must never write into the next command's capture)."""
    # The directory tempfile.gettempdir() finds on a usual system, without importing tempfile (and with it
    # shutil, bz2 and lzma: 2.5 ms) in every command that runs a step; any trouble falls back to tempfile.
    directory = os.environ.get("TMPDIR") or os.environ.get("TEMP") or os.environ.get("TMP") or "/tmp"
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except (OSError, AttributeError):  # no O_TMPFILE (not Linux, or the filesystem lacks it), or no such directory
        import tempfile

        fd, name = tempfile.mkstemp()
        os.unlink(name)
        return fd


def _read(fd: int, cap: int, ctx: Context | None) -> tuple[str, bool]:
    # Read a little past the cap and mask secrets before cutting: a secret straddling the cut must not
    # leave its first half in the stored output.
    data = os.pread(fd, cap + _MASK_SLACK, 0)
    text = data.decode("utf-8", "replace")
    if ctx is not None and ctx.redactor:
        text = ctx.redactor.text(text)
    return text[:cap], len(data) > cap


_MAIN = threading.main_thread()


class _Child:
    """A started command, leader of its own process group: ``pid``, ``returncode``, ``wait()`` and ``poll()``.

    Commands with neither ``cwd`` nor ``stdin`` nor an ``env`` of their own, started from the main thread, start
    through ``posix_spawnp`` (cheaper than ``Popen``'s fork path, which matters for runbooks of many short steps);
    the others through ``Popen``. ``os.posix_spawnp`` holds the GIL until the child has exec'd, so from a worker
    thread of a server (``runbook serve``: HTTP intake and other workers in the same process) it would stop every
    other thread for that long, and on a busy machine the child waits for a CPU meanwhile; ``Popen`` releases it.
    Both put the child in a new session so a timeout or cancellation stops its whole group.
    """

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid, self.popen = pid, popen
        self.returncode: int | None = None

    def _reaped(self, status: int) -> int:
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Exit code (negative: killed by that signal); ``subprocess.TimeoutExpired`` after ``timeout``."""
        if self.popen is not None:
            self.returncode = self.popen.wait(timeout=timeout)
            return self.returncode
        if self.returncode is not None:
            return self.returncode
        if timeout is not None and not self._ready(timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped elsewhere
            return self.returncode if self.returncode is not None else -signal.SIGKILL
        return self._reaped(status)

    def _ready(self, timeout: float) -> bool:
        import select

        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd: poll
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if self.poll() is not None:
                    return True
                time.sleep(0.005)
            return self.poll() is not None
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            return bool(poller.poll(max(0, int(timeout * 1000))))
        finally:
            os.close(pidfd)

    def poll(self) -> int | None:
        """Exit code if it has exited, else None."""
        if self.popen is not None:
            self.returncode = self.popen.poll()
            return self.returncode
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return self.returncode
            if pid:
                self._reaped(status)
        return self.returncode


def _spawn(argv: list[str], *, env: dict[str, str] | None, cwd: str | None, stdin: str | None, out: int, err: int,
           tag: dict[str, str]) -> _Child:  # fmt: skip
    """Start ``argv`` as the leader of a new session, its environment carrying ``tag`` (see runner.leftovers)."""
    # os.environ's backing dict (bytes → bytes) is always current and converts at C speed; handing the os.environ
    # mapping itself costs a Python-level decode of every variable per spawn.
    data: dict[bytes, bytes] | None = getattr(os.environ, "_data", None) if env is None else None
    environ: dict[Any, Any] = {**data, **{k.encode(): v.encode() for k, v in tag.items()}} if data is not None else \
        {**(os.environ if env is None else env), **tag}  # fmt: skip
    if env is None and cwd is None and stdin is None and hasattr(os, "posix_spawnp") and threading.current_thread() is _MAIN:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)]
        return _Child(os.posix_spawnp(argv[0], argv, environ, file_actions=actions, setsid=True))
    popen = subprocess.Popen(
        argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, stdout=out, stderr=err,
        cwd=cwd, env=environ, start_new_session=True, close_fds=True,
    )  # fmt: skip
    if stdin is not None and popen.stdin is not None:
        # From a thread: a large input must not block before the timeout and cancellation are in place.
        threading.Thread(target=_feed, args=(popen.stdin, stdin.encode()), name="runbook-stdin", daemon=True).start()
    return _Child(popen.pid, popen)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):  # the command exited or was stopped before reading it all
        pipe.write(data)
    with contextlib.suppress(OSError, ValueError):
        pipe.close()


def _kill_group(proc: _Child, grace: float) -> None:
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


def _terminate_group(proc: _Child, grace: float) -> None:
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


def _wait(proc: _Child, timeout: float | None, follower: Follower | None) -> int:
    """Wait for ``proc`` (``subprocess.TimeoutExpired`` after ``timeout``), passing what it writes to ``follower``."""
    if follower is None:
        return proc.wait(timeout=timeout)
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if end is None else max(0.0, end - time.monotonic())
        try:
            return proc.wait(timeout=FOLLOW_EVERY if left is None else min(FOLLOW_EVERY, left))
        except subprocess.TimeoutExpired:
            follower.poll()
            if end is not None and time.monotonic() >= end:
                raise


FOLLOW_EVERY = 0.2
"""Seconds between reads of a running command's output for live views."""


class Follower:
    """Reads what a running command has written to its capture files and emits each complete line (``ctx.output``).

    Up to ``limit`` bytes per stream, like the capture; the result of the step still comes from the files at the end.
    """

    def __init__(self, fds: dict[str, int], ctx: Context, limit: int) -> None:
        self.fds, self.ctx, self.limit = fds, ctx, limit
        self.pos = dict.fromkeys(fds, 0)
        self.partial = dict.fromkeys(fds, b"")

    def poll(self) -> None:
        """Emit the complete lines written since the last poll."""
        for stream, fd in self.fds.items():
            while self.pos[stream] < self.limit:
                try:
                    data = os.pread(fd, min(65536, self.limit - self.pos[stream]), self.pos[stream])
                except OSError:
                    break
                if not data:
                    break
                self.pos[stream] += len(data)
                *lines, self.partial[stream] = (self.partial[stream] + data).split(b"\n")
                for line in lines:
                    self.ctx.output(stream, line.decode("utf-8", "replace"))

    def finish(self) -> None:
        """Emit what is left, the last line too when it has no newline."""
        self.poll()
        for stream, rest in self.partial.items():
            if rest:
                self.ctx.output(stream, rest.decode("utf-8", "replace"))
        self.partial = dict.fromkeys(self.fds, b"")


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
    what: Callable[[], str] | None = None,
) -> ProcessResult:
    """Run ``argv`` in its own process group with bounded output capture (``what()`` names it in a timeout error)."""
    started = time.monotonic()
    if cwd is not None and not os.path.isdir(cwd):
        raise StepFailed(f"working directory {cwd!r} does not exist")
    out, err = _capture_fd(), _capture_fd()
    try:
        try:
            tag = {RUN_ENV: ctx.run_id, STEP_ENV: ctx.step_id} if ctx is not None else {}
            proc = _spawn(argv, env=env, cwd=cwd, stdin=stdin, out=out, err=err, tag=tag)
        except FileNotFoundError:
            raise StepFailed(f"command not found: {argv[0]!r}") from None
        except PermissionError:
            raise StepFailed(f"permission denied running {argv[0]!r}") from None
        except NotADirectoryError:
            raise StepFailed(f"working directory {cwd!r} is not a directory") from None
        unregister = ctx.on_cancel(lambda: _terminate_group(proc, kill_grace)) if ctx is not None else None
        follower = Follower({"stdout": out, "stderr": err}, ctx, max_output) if ctx is not None and ctx.streaming else None
        try:
            try:
                code = _wait(proc, timeout, follower)
            except subprocess.TimeoutExpired:
                _kill_group(proc, kill_grace)
                limit = ctx.timeout if ctx is not None and ctx.timeout else timeout
                raise CommandTimeout(what() if what else f"command {argv[0]!r}", limit or 0.0) from None
        finally:
            if unregister is not None:
                unregister()
            if proc.poll() is None:  # interrupted by an exception while waiting: never leave it behind
                _kill_group(proc, kill_grace)
        if follower is not None:
            follower.finish()
        if ctx is not None:
            ctx.raise_if_cancelled()
        stdout, t1 = _read(out, max_output, ctx)
        stderr, t2 = _read(err, max_output, ctx)
    finally:
        os.close(out)
        os.close(err)
    return ProcessResult(code, stdout, stderr, t1 or t2, time.monotonic() - started)


def _program(program: str, config: ShellConfig, facts: PreflightFacts) -> str | None:
    """Why ``program`` cannot be started (None: it can), as the command would look for it."""
    if "/" in program:
        path = os.path.join(config.cwd or os.getcwd(), program)
        if not os.path.isfile(path):
            return f"program {program} does not exist"
        return None if os.access(path, os.X_OK) else f"program {program} is not executable"
    search = config.env.get("PATH") or facts.env.get("PATH", os.defpath)
    key = ("shell.which", program, search)
    if key not in facts.memo:
        facts.memo[key] = _which(program, search)
    return None if facts.memo[key] else f"program '{program}' is not found on PATH ({search})"


_FOUND: dict[tuple[str, str], str] = {}
"""Where each program was last found on each PATH: checked again with one ``access`` before it is believed."""


def _which(program: str, search: str) -> str | None:
    """``shutil.which``, answered from where the program was found before while it is still executable there (a
    server pre-flights the same few programs for every run: one system call instead of one per PATH entry)."""
    known = _FOUND.get((program, search))
    if known is not None and os.access(known, os.X_OK) and not os.path.isdir(known):
        return known
    import shutil

    found = shutil.which(program, path=search)
    if found is not None:
        if len(_FOUND) > 1024:
            _FOUND.clear()
        _FOUND[(program, search)] = found
    return found


class ShellStep(StepType):
    """Run a local command (argv, no shell) or a ``sh -e`` script."""

    config_read_only = True  # execute reads its config; anything it changes is a copy
    name = "shell"
    Config = ShellConfig
    description = "Run a local command (argv list, no shell) or a `sh -e` script with params as environment variables"
    probe = True
    default_expect: ClassVar[dict[str, Any]] = {"exit_code": 0}
    expect_keys: ClassVar[frozenset[str] | None] = frozenset({"exit_code", "stdout", "stderr"})
    output_fields: ClassVar[frozenset[str] | None] = frozenset({"exit_code", "stdout", "stderr", "truncated"})
    unrendered: ClassVar[frozenset[str]] = frozenset({"script"})
    shorthand_schema: ClassVar[dict[str, Any] | None] = {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}, "description": "argv"},
            {"type": "string", "description": "script run by sh -e"},
        ]
    }

    def preflight(self, config: ShellConfig, facts: PreflightFacts) -> list[Finding]:
        """No secret on the command line (refused at every run), the program to run exists (on the ``PATH`` the
        command gets) and the working directory does.

        The program and the directory may be created by an earlier step (a package install, a checkout): such a step
        says so with ``writes: [PROGRAM or PATH]`` and the problem is not reported.
        """
        found: list[Finding] = []
        try:
            refuse_secret_in_argv(config.command or [], facts.redactor, f"step '{facts.step_id}'")
        except StepFailed as exc:
            found.append(Finding(("command",), str(exc)))
        if config.command is not None:
            program = config.command[0]
            where = _program(program, config, facts)
            if where is not None:
                found.append(Finding(("command", 0), where, resource=program))
        if config.cwd is not None and not os.path.isdir(config.cwd):
            found.append(Finding(("cwd",), f"working directory {config.cwd!r} does not exist", resource=config.cwd))
        return found

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
        refuse_secret_in_argv(argv, ctx.redactor, f"step '{ctx.step_id}'")
        result = run_process(
            argv, env=env, cwd=config.cwd, stdin=config.stdin, timeout=ctx.remaining(), max_output=config.max_output,
            kill_grace=config.kill_grace, ctx=ctx,
            what=lambda: f"step '{ctx.step_id}' ({self.summary(ctx.redactor.value(config.model_dump()))})",
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
        env.update({k: str(v) for k, v in config.env.items()})
        return env
