"""paramiko connections: strict host-key verification, one pooled connection per destination, error mapping.

Host keys are always checked against a known_hosts file with :class:`paramiko.RejectPolicy`
(never ``AutoAddPolicy``). An unknown host or a changed key raises
:class:`~runner.errors.HostKeyError` naming the host and the SHA256 fingerprint it presented,
before authentication, so nothing runs. Every paramiko and socket error leaves this module as
:class:`~runner.errors.SSHError` naming the host (:func:`map_paramiko_errors`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import paramiko

from runner.errors import HostKeyError, RunbookError, RunControl, SSHError

if TYPE_CHECKING:
    from runbook_ssh.endpoint import Endpoint

__all__ = ["Connection", "connect", "map_paramiko_errors"]

# paramiko's transport thread logs every failure it sees (with tracebacks) at ERROR. The failure
# reaches the user once, as an SSHError; without a handler here Python's last-resort handler would
# also print those records on stderr. Records still propagate to handlers the application sets up.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@contextlib.contextmanager
def map_paramiko_errors(host: str) -> Iterator[None]:
    """Translate paramiko and socket errors raised inside the block into :class:`SSHError` naming ``host``."""
    try:
        yield
    except (RunbookError, RunControl):
        raise
    except paramiko.PasswordRequiredException:
        raise SSHError(f"ssh {host}: the private key is encrypted", hint="load it into an agent and set `agent: true`") from None
    except paramiko.AuthenticationException as exc:
        raise SSHError(f"ssh {host}: authentication failed ({exc})", hint="check `user` and `key` (or the agent)") from None
    except paramiko.ssh_exception.NoValidConnectionsError as exc:
        reason = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()}))
        raise SSHError(f"ssh {host}: cannot connect ({reason})") from None
    except TimeoutError:
        raise SSHError(f"ssh {host}: timed out", hint="is the host reachable? raise `connect_timeout` if it is slow") from None
    except socket.gaierror as exc:
        raise SSHError(f"ssh {host}: cannot resolve the address ({exc.strerror})") from None
    except paramiko.SSHException as exc:
        raise SSHError(f"ssh {host}: {exc or type(exc).__name__}") from None
    except EOFError:
        raise SSHError(f"ssh {host}: the server closed the connection") from None
    except OSError as exc:
        raise SSHError(f"ssh {host}: {exc.strerror or exc}") from None


class _RecordingReject(paramiko.RejectPolicy):  # type: ignore[misc]  # paramiko ships no type hints
    """``RejectPolicy`` that remembers the key it rejected, so the error can show its fingerprint."""

    def __init__(self) -> None:
        self.rejected: paramiko.PKey | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.rejected = key
        super().missing_host_key(client, hostname, key)


def _load_known_hosts(client: paramiko.SSHClient, path: str) -> str:
    """Load ``path`` as the only trusted keys; returns how errors should name the file."""
    try:
        client.load_system_host_keys(path)  # "system" keys are never written back
    except FileNotFoundError:
        return f"{path} (which does not exist)"
    except OSError as exc:
        raise SSHError(f"cannot read known_hosts file {path}: {exc.strerror}") from None
    return path


def connect(ep: Endpoint, timeout: float) -> paramiko.SSHClient:
    """Open a verified, authenticated connection to ``ep`` (every phase bounded by ``timeout``)."""
    if ep.key is not None and not os.path.isfile(ep.key):
        raise SSHError(f"ssh {ep.label}: private key {ep.key} does not exist")
    client = paramiko.SSHClient()
    policy = _RecordingReject()
    client.set_missing_host_key_policy(policy)
    try:
        known = _load_known_hosts(client, ep.known_hosts)
        with map_paramiko_errors(ep.label):
            try:
                client.connect(
                    ep.address, port=ep.port, username=ep.user, key_filename=ep.key, look_for_keys=ep.key is None,
                    allow_agent=ep.agent, timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
                )  # fmt: skip
            except paramiko.BadHostKeyException as exc:
                raise HostKeyError(ep.label, exc.key.fingerprint, known, changed=True) from None
            except paramiko.SSHException as exc:
                if policy.rejected is not None:
                    raise HostKeyError(ep.label, policy.rejected.fingerprint, known, changed=False) from None
                if str(exc) == "No existing session":  # paramiko's words when the handshake outlived `timeout`
                    raise SSHError(
                        f"ssh {ep.label}: timed out: no SSH handshake within {timeout:g}s",
                        hint="is this an SSH server? raise `connect_timeout` if it is slow",
                    ) from None
                raise
    except BaseException:
        client.close()
        raise
    return client


class Connection:
    """A run-scoped, lazily (re)connected SSH connection, shared by the steps of a run via ``ctx.services.resource``."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self.connects = 0

    def transport(self, timeout: float) -> paramiko.Transport:
        """The live transport, connecting (again) if there is none or it died."""
        with self._lock:
            transport = self._client.get_transport() if self._client is not None else None
            if transport is not None and transport.is_active():
                return transport
            self._drop()
            self._client = connect(self.endpoint, timeout)
            self.connects += 1
            transport = self._client.get_transport()
            if transport is None:  # pragma: no cover - paramiko always sets it after a successful connect
                raise SSHError(f"ssh {self.endpoint.label}: connection has no transport")
            return transport

    def open_session(self, timeout: float) -> paramiko.Channel:
        """A new session channel; reconnects once if a pooled connection turned out to be dead."""
        with map_paramiko_errors(self.endpoint.label):
            transport = self.transport(timeout)
            try:
                return transport.open_session(timeout=timeout)
            except (paramiko.SSHException, EOFError, OSError):
                if transport.is_active():
                    raise
            return self.transport(timeout).open_session(timeout=timeout)

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def close(self) -> None:
        """Close the connection (the run is over)."""
        with self._lock:
            self._drop()

    def __repr__(self) -> str:
        state: Any = "open" if self._client is not None else "closed"
        return f"<ssh Connection {self.endpoint.label} {state}>"
