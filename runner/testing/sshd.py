"""A real OpenSSH server on 127.0.0.1 for testing runbooks' ``ssh`` steps (``runbook_sshd`` fixture).

``sshd -D -e`` runs as a direct child with its own host key and an ``AuthorizedKeysFile`` in its own
directory, so it touches nothing of the machine's SSH setup. Run as root, it logs in a dedicated unprivileged
user (``rbtest``, created once); run as anyone else, it can only log in that user, and does.

Sessions get a ``PATH`` that starts with the server's ``bin/`` directory: :meth:`SSHServer.stub` puts a
script there, so a runbook's ``systemctl restart nginx`` runs a stand-in that records what it was asked.
A ``sudo`` stand-in is there from the start (``sudo -n -- CMD`` runs ``CMD`` as the test user).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SSHD", "SSHServer", "sshd_available", "start_sshd"]

SSHD = "/usr/sbin/sshd"
TEST_USER = "rbtest"
_SUDO = """#!/bin/sh
# stand-in for sudo in tests: `sudo -n -- CMD ARGS` runs CMD ARGS as the test user
while [ $# -gt 0 ]; do
  case "$1" in --) shift; break ;; -*) shift ;; *) break ;; esac
done
exec "$@"
"""


def sshd_available() -> bool:
    """True if OpenSSH's server and ``ssh-keygen`` are installed."""
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None


@dataclass
class SSHServer:
    """A running sshd and what a client needs to reach it."""

    host: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    directory: Path
    bin: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    owned: bool = field(default=False, repr=False)  # start_sshd made the directory: stop removes it

    def stub(self, name: str, script: str) -> Path:
        """Put an executable ``name`` (a shell script's text, ``#!/bin/sh`` added if missing) first on sessions' PATH."""
        path = self.bin / name
        path.write_text(script if script.startswith("#!") else "#!/bin/sh\n" + script, encoding="utf-8")
        path.chmod(0o755)
        return path

    def workdir(self, name: str) -> Path:
        """A directory the login user may write and the test may read (e.g. for a stub's records)."""
        path = self.directory / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        entry = pwd.getpwnam(self.user)
        for p in (path.parent, path):
            os.chown(p, entry.pw_uid, entry.pw_gid)
            p.chmod(0o755)
        return path

    def inventory_entry(self) -> dict[str, Any]:
        """What an inventory says for a host name that should reach this server."""
        return {"address": self.host, "port": self.port, "user": self.user, "key": str(self.key), "known_hosts": str(self.known_hosts)}

    def stop(self) -> None:
        """Stop sshd and its session processes (by process group)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self.owned:
            shutil.rmtree(self.directory, ignore_errors=True)


def start_sshd(directory: Path | None = None, *, timeout: float = 10.0) -> SSHServer:
    """Start sshd on a free port of 127.0.0.1 and wait until it accepts connections."""
    if not sshd_available():
        raise RuntimeError(f"OpenSSH's server ({SSHD}) and ssh-keygen are needed for runbook_sshd")
    owned = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="runbook-sshd-", dir="/tmp"))
    directory.chmod(0o755)  # sshd reads the keys as the login user
    user = _login_user()
    host_pub = _keygen(directory / "host_ed25519")
    key = directory / "client_ed25519"
    _keygen(key)
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "client_ed25519.pub").read_text(encoding="utf-8"), encoding="utf-8")
    authorized.chmod(0o644)
    bin_dir = directory / "bin"
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    port = _free_port()
    server = SSHServer("127.0.0.1", port, user, key, directory / "known_hosts", directory, bin_dir, directory / "sshd.log", owned=owned)
    server.known_hosts.write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n", encoding="utf-8")
    server.stub("sudo", _SUDO)
    config = directory / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {directory / 'host_ed25519'}\nPidFile none\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        f"KbdInteractiveAuthentication no\nPermitRootLogin no\nUsePAM no\nAllowUsers {user}\nMaxStartups 100:30:200\n"
        f"MaxSessions 50\nLogLevel VERBOSE\nSetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin\n",
        encoding="utf-8",
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    with open(server.log, "ab") as log:
        server.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        _wait_tcp(port, timeout, server.proc)
    except BaseException:
        server.stop()
        raise
    return server


def _login_user() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name  # a non-root sshd can log in only the user running it
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True, capture_output=True)
        subprocess.run(["usermod", "-p", "*", TEST_USER], check=True, capture_output=True)  # sshd refuses locked accounts
    return TEST_USER


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runbook-test", "-f", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    return Path(f"{path}.pub").read_text(encoding="utf-8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_tcp(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode} before it listened on 127.0.0.1:{port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"sshd did not listen on 127.0.0.1:{port} within {timeout:g}s")
