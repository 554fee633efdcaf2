"""A real OpenSSH server for tests: ``sshd -D -e`` as a direct child, its own host key, a test user.

Client authentication uses a key listed in an ``AuthorizedKeysFile`` inside the server's own
directory, so several servers (and several test sessions) never overwrite each other's keys.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.procs import free_port, keygen, run, stop, wait_tcp

__all__ = ["SSHD", "TEST_USER", "SSHServer", "ensure_user", "sshd_available", "start_sshd", "write_sshd_config"]

SSHD = "/usr/sbin/sshd"
TEST_USER = "rbtest"
_user_lock = threading.Lock()


def sshd_available() -> bool:
    """True if OpenSSH's server and ``ssh-keygen`` are installed and we may start them (root)."""
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None and os.geteuid() == 0


def ensure_user(name: str = TEST_USER) -> pwd.struct_passwd:
    """Create (once) an unprivileged login user; unlocked because sshd refuses locked accounts without PAM."""
    with _user_lock:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            run("useradd", "-m", "-s", "/bin/sh", name)
            run("usermod", "-p", "*", name)  # '!' (locked) makes sshd refuse the account when UsePAM=no
            return pwd.getpwnam(name)


def make_dir(prefix: str) -> Path:
    """A fresh directory under /tmp that the test user can traverse (sshd reads keys as that user)."""
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir="/tmp"))  # owner PID: see cleanup_stale_dirs
    path.chmod(0o755)
    return path


def write_sshd_config(path: Path, *, listen: str, port: int, host_key: Path, authorized_keys: Path, user: str) -> None:
    """A minimal, key-only sshd configuration."""
    path.write_text(
        f"ListenAddress {listen}\nPort {port}\nHostKey {host_key}\nPidFile none\n"
        f"AuthorizedKeysFile {authorized_keys}\n"
        # The key file lives outside the user's home under /tmp (world-writable), which StrictModes rejects.
        "StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PermitRootLogin no\nUsePAM no\nAllowUsers {user}\nMaxStartups 100:30:200\nMaxSessions 50\n"
        "LogLevel VERBOSE\n",
        encoding="utf-8",
    )


@dataclass
class SSHServer:
    """A running sshd and everything a client needs to reach it."""

    host: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    host_public_key: str
    directory: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def known_hosts_name(self) -> str:
        """The name known_hosts uses for this server (``[host]:port`` unless port 22)."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def step_config(self, **extra: Any) -> dict[str, Any]:
        """``ssh`` step config keys that reach this server."""
        return {"host": self.host, "port": self.port, "user": self.user, "key": str(self.key),
                "known_hosts": str(self.known_hosts), **extra}  # fmt: skip

    def accepted_logins(self) -> int:
        """Public-key logins sshd has accepted so far (one per TCP connection that authenticated)."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return len(re.findall(r"Accepted publickey for ", text))

    def workdir(self, name: str) -> Path:
        """A directory the test user may write to and the test (root) may read."""
        path = self.directory / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(self.user)
        for p in (path.parent, path):
            os.chown(p, user.pw_uid, grp.getgrgid(user.pw_gid).gr_gid)
            p.chmod(0o755)
        return path

    def stop(self) -> None:
        """Stop sshd (by PID, with its process group)."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def start_sshd(directory: Path, *, listen: str = "127.0.0.1", port: int | None = None, netns: str | None = None,
               client_key: Path | None = None, user: str = TEST_USER, timeout: float = 10.0) -> SSHServer:  # fmt: skip
    """Start ``sshd -D -e`` on ``listen:port`` (inside ``netns`` if given) and wait until it accepts connections."""
    ensure_user(user)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir; sshd refuses to start without it
    host_pub = keygen(directory / "host_ed25519", f"rb-host-{listen}")
    if client_key is None:
        client_key = directory / "client_ed25519"
        keygen(client_key, "rb-client")
    authorized = directory / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text(encoding="utf-8"), encoding="utf-8")
    authorized.chmod(0o644)
    port = port or free_port()
    server = SSHServer(host=listen, port=port, user=user, key=client_key, known_hosts=directory / "known_hosts",
                       host_public_key=" ".join(host_pub.split()[:2]), directory=directory, log=directory / "sshd.log")  # fmt: skip
    server.known_hosts.write_text(f"{server.known_hosts_name} {server.host_public_key}\n", encoding="utf-8")
    config = directory / "sshd_config"
    write_sshd_config(config, listen=listen, port=port, host_key=directory / "host_ed25519", authorized_keys=authorized, user=user)
    run(SSHD, "-t", "-f", str(config))
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with open(server.log, "ab") as log:
        server.proc = subprocess.Popen([*prefix, SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    (directory / "sshd.pid").write_text(str(server.proc.pid), encoding="utf-8")
    proc = server.proc
    try:
        wait_tcp(listen, port, timeout, alive=lambda: proc.poll() is None)
    except Exception:
        server.stop()
        raise RuntimeError(f"sshd did not start on {listen}:{port}; its log:\n{server.log.read_text(errors='replace')}") from None
    except BaseException:
        server.stop()
        raise
    return server
