"""pytest plugin: real SSH servers for tests.

Register it in ``tests/conftest.py`` with ``pytest_plugins = ["harness.sshd"]``.

Fixtures:

``sshd`` (session)
    OpenSSH on 127.0.0.1:<free port> (``sshd -D -e`` as a direct child), an ed25519 host key and
    client key, the test user ``rbtest``, a known_hosts file with ``[127.0.0.1]:PORT``.
``netns_hosts`` (module)
    4 SSH hosts in network namespaces (``ip netns exec NS sshd -D -e``), each on port 22 of its own
    address, with ``partition(i)`` / ``heal(i)`` and full teardown.

Both need root and OpenSSH's server (``apt-get install openssh-server iproute2``). They skip
locally when missing and fail when ``CI`` is set.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from harness.netns import NetnsHosts, netns_available, start_netns_hosts
from harness.procs import cleanup_stale_dirs, require
from harness.servers import SSHServer, make_dir, sshd_available, start_sshd

__all__ = ["NETNS_HOSTS", "healed", "netns_hosts", "sshd"]

NETNS_HOSTS = 4


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    """A real OpenSSH server on 127.0.0.1 for the whole session."""
    require(sshd_available(), "OpenSSH server (/usr/sbin/sshd, run as root)")
    cleanup_stale_dirs("rb-sshd-")
    directory = make_dir("rb-sshd-")
    server = None
    try:
        server = start_sshd(directory)
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def netns_hosts() -> Iterator[NetnsHosts]:
    """``NETNS_HOSTS`` SSH hosts in network namespaces for one test module; partitions healed per test."""
    require(sshd_available(), "OpenSSH server (/usr/sbin/sshd, run as root)")
    require(netns_available(), "network namespaces (root and iproute2)")
    hosts = start_netns_hosts(NETNS_HOSTS)
    try:
        yield hosts
    finally:
        hosts.close()


@pytest.fixture
def healed(netns_hosts: NetnsHosts) -> Iterator[NetnsHosts]:
    """``netns_hosts``, with every partition healed again when the test ends (pass or fail)."""
    try:
        yield netns_hosts
    finally:
        netns_hosts.heal_all()
