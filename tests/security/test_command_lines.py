"""Secrets never on a command line, and the server's own credentials out of every step's reach.

must-show 5: a remote ``sudo: true`` step given an ``env:`` secret, over a real sshd with real sudo; the process
list is sampled while the command runs, and the secret never appears in any ``/proc/*/cmdline`` (sshd is on
this host, so that is the remote and the local process list at once) nor in ``ps``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Project, require
from tests.security.conftest import TOKEN


def command_lines() -> bytes:
    """Every process's command line right now, as ``ps`` would show it."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return b"\n".join(out)


def sample_while(proc: subprocess.Popen[str], marker: bytes) -> tuple[list[bytes], int]:
    """Command lines sampled until ``proc`` exits, and how many samples showed ``marker`` (the command running)."""
    samples, seen = [], 0
    while proc.poll() is None:
        lines = command_lines() + subprocess.run(["ps", "-eo", "args"], capture_output=True, check=False).stdout
        samples.append(lines)
        seen += marker in lines
        time.sleep(0.02)
    return samples, seen


@pytest.fixture
def sudo_sh(sshd: Any) -> Iterator[None]:
    """Let the test user run sh (which reads `env:` values from stdin) and kill as root, without a password."""
    require(shutil.which("sudo") is not None, "sudo")
    rule = Path("/etc/sudoers.d/runbook-sec-" + uuid.uuid4().hex[:8])
    rule.write_text(f"{sshd.user} ALL=(root) NOPASSWD: /usr/bin/sh, /bin/sh, /usr/bin/kill\n", encoding="utf-8")
    rule.chmod(0o440)
    try:
        yield
    finally:
        rule.unlink()


def test_a_sudo_step_never_shows_its_env_secret_in_the_process_list(project: Project, sshd: Any, sudo_sh: None) -> None:
    work = sshd.workdir("sec-" + uuid.uuid4().hex[:8])
    secret = "sudo-" + uuid.uuid4().hex + "-&'\"$(id)"
    marker = "sleep-" + uuid.uuid4().hex[:8]
    cfg = sshd.step_config()
    project.write(
        "remote.yaml",
        f"""
        name: remote
        secrets: {{tok: env:SEC_REMOTE_TOKEN}}
        steps:
          - id: work
            ssh:
              host: "{cfg["host"]}"
              port: {cfg["port"]}
              user: {cfg["user"]}
              key: {cfg["key"]}
              known_hosts: {cfg["known_hosts"]}
              sudo: true
              command: [sh, -c, 'id -un > "$1/who"; printf %s "$TOKEN" | sha256sum > "$1/hash"; sleep 2; : {marker}', sh, "{work}"]
              env: {{TOKEN: "{{{{ secrets.tok }}}}"}}
        """,
    )
    proc = project.popen("run", "remote", "--json", env={"SEC_REMOTE_TOKEN": secret})
    samples, seen = sample_while(proc, marker.encode())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.split('"steps"')[-1][:600]
    assert seen >= 3, f"the command was sampled while it ran ({seen} of {len(samples)} samples)"
    for lines in samples:
        assert secret.encode() not in lines, "the secret was visible in the process list"
        assert secret[:12].encode() not in lines and b"\\0163\\0165\\0144" not in lines, "nor a piece or its escaped form"
    assert (work / "who").read_text().strip() == "root"
    assert (work / "hash").read_text().split()[0] == hashlib.sha256(secret.encode()).hexdigest(), "the value arrived exactly"
    assert secret not in out + err


def test_a_plain_ssh_step_keeps_env_values_off_the_remote_command_line(project: Project, sshd: Any) -> None:
    work = sshd.workdir("sec-" + uuid.uuid4().hex[:8])
    secret = "plain-" + uuid.uuid4().hex
    marker = "sleep-" + uuid.uuid4().hex[:8]
    cfg = sshd.step_config()
    project.write(
        "remote.yaml",
        f"""
        name: remote
        secrets: {{tok: env:SEC_REMOTE_TOKEN}}
        steps:
          - id: work
            ssh:
              host: "{cfg["host"]}"
              port: {cfg["port"]}
              user: {cfg["user"]}
              key: {cfg["key"]}
              known_hosts: {cfg["known_hosts"]}
              command: [sh, -c, 'printf %s "$TOKEN" > "$1/got"; sleep 1.5; : {marker}', sh, "{work}"]
              env: {{TOKEN: "{{{{ secrets.tok }}}}"}}
        """,
    )
    proc = project.popen("run", "remote", "--json", env={"SEC_REMOTE_TOKEN": secret})
    samples, seen = sample_while(proc, marker.encode())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert seen >= 3 and not any(secret.encode() in s for s in samples)
    assert (work / "got").read_text() == secret


def test_a_local_command_line_carrying_a_secret_is_refused(project: Project) -> None:
    project.write(
        "argv.yaml",
        """
        name: argv
        secrets: {tok: env:SEC_ARGV}
        steps:
          - {id: leak, shell: [sh, -c, 'touch ran', sh, "{{ secrets.tok | upper }}"]}
        """,
    )
    result = project.run("run", "argv", "--json", env={"SEC_ARGV": "argv-secret-value"})
    assert result.code == 1, result
    assert "the command line carries a secret" in result.json()["reason"] and "env:" in result.json()["reason"]
    assert not (project.root / "ran").exists()
    assert "ARGV-SECRET-VALUE" not in result.out + result.err


def test_steps_cannot_read_the_servers_tokens_from_any_ancestor(project: Project, serve: Any) -> None:
    """A step walks up its process tree reading every ancestor's environ and cmdline: no server token there."""
    dump = project.root / "dump"
    project.write(
        "probe.yaml",
        f"""
        name: probe
        steps:
          - id: probe
            shell:
              script: |
                pid=$$
                while [ "$pid" -gt 1 ]; do
                  cat /proc/$pid/environ /proc/$pid/cmdline >> {dump} 2>/dev/null || true
                  echo >> {dump}
                  pid=$(awk '/^PPid:/ {{print $2}}' /proc/$pid/status)
                done
        """,
    )
    hook = "hook-secret-" + uuid.uuid4().hex
    config = "tokens:\n  - {name: ops, token: env:SEC_TOKEN, scopes: [admin]}\nsources:\n  generic: {auth: {hmac_secret: env:SEC_HOOK}}\n"
    server = serve(config, env={"SEC_TOKEN": TOKEN, "SEC_HOOK": hook, "SEC_MARKER": "visible-marker"}, token=TOKEN)
    started = server.client().post("/v1/runs", json={"runbook": "probe", "params": {}, "wait": 30})
    assert started.status_code < 300 and started.json()["state"] == "succeeded", started.text
    text = dump.read_bytes()
    assert b"visible-marker" in text, "the probe read the server's environment block"
    for value in (TOKEN, hook):
        assert value.encode() not in text and value[::-1].encode() not in text, "a server credential is readable by steps"
    assert b"SEC_TOKEN=" not in text or b"SEC_TOKEN=" + TOKEN.encode() not in text
