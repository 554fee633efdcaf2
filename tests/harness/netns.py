"""SSH "hosts" in network namespaces, each with its own sshd, reachable only over a veth pair.

Host ``i`` lives in namespace ``rbt<pid>-h<i>`` with ``eth0`` = ``10.251.X.(4i+2)/30``; the root
namespace end ``rbt<pid>h<i>`` holds ``.1``. ``X`` is picked per test session so that concurrent
sessions do not collide. ``partition(i)`` takes ``eth0`` down inside the namespace: connections to the
host then time out, as with a real network partition; ``heal(i)`` brings it back.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.procs import cleanup_stale_dirs, keygen, pid_alive, run, wait_tcp
from harness.servers import TEST_USER, SSHServer, make_dir, start_sshd

__all__ = ["NetnsHost", "NetnsHosts", "cleanup_stale", "netns_available", "start_netns_hosts"]

_NS = re.compile(r"^rbt(\d+)-h\d+$")


def netns_available() -> bool:
    """True if we can create network namespaces (root with iproute2)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and run("ip", "netns", "list", check=False).returncode == 0


@dataclass
class NetnsHost:
    """One namespace host."""

    name: str
    address: str
    netns: str
    veth: str
    server: SSHServer | None = None
    partitioned: bool = False


@dataclass
class NetnsHosts:
    """The hosts of one harness instance, the client key and a known_hosts file listing all of them."""

    hosts: list[NetnsHost]
    key: Path
    known_hosts: Path
    directory: Path
    user: str = TEST_USER
    _veths: list[str] = field(default_factory=list, repr=False)

    def __getitem__(self, i: int) -> NetnsHost:
        return self.hosts[i]

    def _host(self, which: int | str) -> NetnsHost:
        if isinstance(which, int):
            return self.hosts[which]
        return next(h for h in self.hosts if which in (h.name, h.address))

    def partition(self, which: int | str) -> None:
        """Cut host ``which`` (index or name) off the network: new connections to it time out."""
        host = self._host(which)
        run("ip", "-n", host.netns, "link", "set", "eth0", "down")
        host.partitioned = True

    def heal(self, which: int | str) -> None:
        """Reconnect host ``which``; returns once its sshd accepts connections again.

        A link just set up is not usable at once (and the neighbour entry of a host that stopped answering
        fails new connections with "No route to host" for a moment), so a caller connecting right away would
        race the network instead of testing the runbook.
        """
        host = self._host(which)
        run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        host.partitioned = False
        wait_tcp(host.address, host.server.port if host.server is not None else 22, timeout=10.0)

    def heal_all(self) -> None:
        """Reconnect every partitioned host."""
        for host in self.hosts:
            if host.partitioned:
                self.heal(host.name)

    def inventory_yaml(self, group: str = "fleet", host_vars: dict[str, dict[str, object]] | None = None) -> str:
        """A native inventory naming every host (address, user, key, known_hosts, ``host_vars``) and one group of all."""
        import json

        lines = ["hosts:"]
        for h in self.hosts:
            extra = json.dumps((host_vars or {}).get(h.name, {}))
            lines.append(f"  {h.name}: {{address: {h.address}, user: {self.user}, key: {self.key}, known_hosts: {self.known_hosts}, "
                         f"vars: {extra}}}")  # fmt: skip
        lines += ["groups:", f"  {group}: [{', '.join(h.name for h in self.hosts)}]"]
        return "\n".join(lines) + "\n"

    def workdir(self, name: str) -> Path:
        """A directory every host's user can write to (the namespaces share one filesystem)."""
        assert self.hosts[0].server is not None
        return self.hosts[0].server.workdir(name)

    def close(self) -> None:
        """Stop every sshd by PID, delete veths and namespaces, remove files. Safe to call twice."""
        for host in self.hosts:
            if host.server is not None:
                with contextlib.suppress(Exception):
                    host.server.stop()
        for host in self.hosts:
            # Deleting the veth explicitly: namespace teardown alone frees it asynchronously.
            run("ip", "link", "del", host.veth, check=False)
            run("ip", "netns", "del", host.netns, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def cleanup_stale() -> None:
    """Remove namespaces (and their sshd) left behind by a harness process that no longer exists."""
    for line in run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _NS.match(name)
        if not match or pid_alive(int(match.group(1))):
            continue
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        index = name.rsplit("-h", 1)[1]
        run("ip", "link", "del", f"rbt{int(match.group(1)) % 100000}h{index}", check=False)
        run("ip", "netns", "del", name, check=False)


def _free_subnet() -> int:
    """Third octet X of a 10.251.X.0/24 block no interface uses yet."""
    used = run("ip", "-4", "-o", "addr", "show", check=False).stdout
    start = os.getpid() % 250
    for n in range(250):
        x = (start + n) % 250 + 1
        if f" 10.251.{x}." not in used:
            return x
    raise RuntimeError("no free 10.251.X.0/24 block for namespace hosts")


def start_netns_hosts(count: int) -> NetnsHosts:
    """Create ``count`` namespace hosts, each running its own sshd on port 22; tears down on failure."""
    cleanup_stale()
    cleanup_stale_dirs("rb-netns-")
    directory = make_dir("rb-netns-")
    key = directory / "client_ed25519"
    keygen(key, "rb-netns-client")
    pid, x = os.getpid(), _free_subnet()
    hosts = NetnsHosts([], key, directory / "known_hosts", directory)
    try:
        for i in range(1, count + 1):
            host = NetnsHost(f"h{i}", f"10.251.{x}.{4 * i + 2}", f"rbt{pid}-h{i}", f"rbt{pid % 100000}h{i}")
            hosts.hosts.append(host)
            _plumb(host, f"10.251.{x}.{4 * i + 1}")
            host_dir = directory / host.name
            host_dir.mkdir(mode=0o755)
            host.server = start_sshd(host_dir, listen=host.address, port=22, netns=host.netns, client_key=key)
        hosts.known_hosts.write_text("".join(f"{h.address} {h.server.host_public_key}\n" for h in hosts.hosts if h.server),
                                     encoding="utf-8")  # fmt: skip
    except BaseException:
        hosts.close()
        raise
    return hosts


def _plumb(host: NetnsHost, peer_address: str) -> None:
    run("ip", "netns", "add", host.netns)
    run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    run("ip", "addr", "add", f"{peer_address}/30", "dev", host.veth)
    run("ip", "link", "set", host.veth, "up")
    run("ip", "-n", host.netns, "addr", "add", f"{host.address}/30", "dev", "eth0")
    run("ip", "-n", host.netns, "link", "set", "eth0", "up")
    run("ip", "-n", host.netns, "link", "set", "lo", "up")
