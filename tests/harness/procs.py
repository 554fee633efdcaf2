"""Small process and network helpers shared by the harness fixtures."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

__all__ = ["cleanup_stale_dirs", "free_port", "keygen", "pid_alive", "require", "run", "stop", "wait_for", "wait_tcp"]


def require(condition: bool, what: str) -> None:
    """Skip locally when a real component is missing; fail when ``CI`` is set (same rule as conftest)."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available on this machine")


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a helper command, raising with its stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_tcp(host: str, port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Wait until ``host:port`` accepts a TCP connection (and ``alive()`` stays true)."""

    def accepting() -> bool:
        if not alive():
            raise RuntimeError(f"the server for {host}:{port} exited before it listened")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        return False

    wait_for(accepting, timeout, f"{host}:{port} to accept connections")


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a child started with ``start_new_session=True``: SIGTERM its group, then SIGKILL; always reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # sshd's per-connection children share the group; take any stragglers down too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path`` (no passphrase); returns the public key line."""
    run(shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()


def pid_alive(pid: int) -> bool:
    """True if process ``pid`` exists (zombies included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_dirs(prefix: str) -> None:
    """Remove ``/tmp/<prefix><pid>-*`` left by a test session that died (even by SIGKILL).

    Servers record their PID in ``sshd.pid`` inside their directory; such a server is killed
    (with its process group) only if its command line still names that directory.
    """
    for path in Path("/tmp").glob(f"{prefix}*-*"):
        owner = path.name[len(prefix) :].split("-", 1)[0]
        if not owner.isdigit() or pid_alive(int(owner)):
            continue
        for pidfile in path.rglob("sshd.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text())
                if str(path) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(path, ignore_errors=True)
