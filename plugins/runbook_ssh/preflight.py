"""Pre-flight of an ``ssh`` action: what would refuse the connection, found before the run changes anything.

Host keys are always checked (``RejectPolicy``): a missing known_hosts file, or one without the host's key, refuses
every connection, and a private key file that is missing or unreadable fails authentication. Both are local files,
so they are looked at before the run's first step instead of failing the step after earlier ones acted.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from runbook_ssh.endpoint import endpoint_for
from runner.errors import ConfigError, StepFailed
from runner.steptypes import Finding

if TYPE_CHECKING:
    from runbook_ssh.step import SSHConfig
    from runner.steptypes import PreflightFacts

__all__ = ["preflight"]

_CACHE: dict[tuple[str, int, int], Any] = {}
_LOCK = threading.Lock()


def preflight(config: SSHConfig, facts: PreflightFacts) -> list[Finding]:
    """No secret on the command line, the key file and the known_hosts entry of the endpoint ``config`` connects to."""
    from runner.secrets import refuse_secret_in_argv

    found: list[Finding] = []
    try:
        refuse_secret_in_argv([*config.command, config.cwd or ""], facts.redactor, f"step '{facts.step_id}'")
    except StepFailed as exc:
        found.append(Finding(("command",), str(exc)))
    try:
        ep = endpoint_for(config, facts.target, facts.settings, facts.step_id)
    except (StepFailed, ConfigError) as exc:
        return [*found, Finding(("host",), str(exc))]
    if ep.key is not None and not os.path.isfile(ep.key):
        found.append(Finding(("key",), f"ssh {ep.label}: private key {ep.key} does not exist", resource=ep.key))
    elif ep.key is not None and not os.access(ep.key, os.R_OK):
        found.append(Finding(("key",), f"ssh {ep.label}: private key {ep.key} cannot be read by this user", resource=ep.key))
    keys = _known_hosts(ep.known_hosts)
    if isinstance(keys, str):
        found.append(Finding(("known_hosts",), f"ssh {ep.label}: {keys}; host keys are always checked, so every connection would "
                                               "be refused", resource=ep.known_hosts))  # fmt: skip
        return found
    name = ep.address if ep.port == 22 else f"[{ep.address}]:{ep.port}"
    if keys.lookup(name) is None:
        found.append(Finding(("host",), f"ssh {ep.label}: no key for '{name}' in known_hosts file {ep.known_hosts}: the connection "
                                        "would be refused before anything runs; add the host's key (compare its fingerprint "
                                        f"with one you trust, e.g. from `ssh-keyscan -p {ep.port} {ep.address}`)",
                             resource=ep.known_hosts))  # fmt: skip
    return found


def _known_hosts(path: str) -> Any:
    """The parsed known_hosts file (``paramiko.HostKeys``), or why it cannot be used (a string); cached per file version."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"known_hosts file {path} does not exist"
    except OSError as exc:
        return f"known_hosts file {path} cannot be read ({exc.strerror})"
    key = (path, st.st_mtime_ns, st.st_size)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    import paramiko

    keys = paramiko.HostKeys()
    try:
        keys.load(path)
    except OSError as exc:
        return f"known_hosts file {path} cannot be read ({exc.strerror})"
    except (ValueError, paramiko.SSHException) as exc:
        return f"known_hosts file {path} cannot be parsed ({exc})"
    with _LOCK:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[key] = keys
    return keys
