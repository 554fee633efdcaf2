"""Hardened inputs: runbook, inventory, policy and params files are regular files, bounded, never echoed.

A symlink to ``/dev/zero`` or a FIFO must not hang ``runbook list`` (or grow it to the size of the device);
a symlink to a file that is not a runbook (``/etc/passwd``, a credentials file) must not print its lines.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.errors import ValidationError
from runner.safeio import read_input
from tests.conftest import Project

CANARY = "canary-7f3a9"
NOT_RUNBOOKS = {
    "passwd-like": f"root:x:0:0:{CANARY}:/root:/bin/bash\ndaemon:x:1:1:{CANARY}:/usr/sbin:/usr/sbin/nologin\n",
    "ini": f"[client]\npassword = {CANARY}\nuser=app\n",
    "dotenv": f"DB_PASSWORD={CANARY}\nexport API_TOKEN='{CANARY}'\n",
    "shell": f"#!/bin/sh\nset -e\ncurl -H 'Authorization: Bearer {CANARY}' https://x\n  bad: indent: {CANARY}\n",
    "binary": None,
}


def special(tmp_path: Path, kind: str) -> Path:
    """A path that is not a regular file: a symlink to /dev/zero, a FIFO, a directory."""
    path = tmp_path / f"special-{kind}"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory"])
def test_read_input_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    with pytest.raises(ValidationError, match="not a regular file"):
        read_input(special(tmp_path, kind), what="runbook file")


def test_read_input_is_bounded_while_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * 5000)
    with pytest.raises(ValidationError, match="limit is 4096"):
        read_input(path, max_bytes=4096)
    assert read_input(path, max_bytes=5000) == b"#" * 5000


def test_list_is_not_hung_by_devices_and_fifos(project: Project) -> None:
    (project.runbooks / "zero.yaml").symlink_to("/dev/zero")
    (project.runbooks / "zero2.yml").symlink_to("/dev/urandom")
    (project.runbooks / "zero.py").symlink_to("/dev/zero")
    os.mkfifo(project.runbooks / "fifo.yaml")
    project.write("ok.yaml", "name: ok\nsteps:\n  - {id: a, shell: ['true']}\n")
    result = project.run("list", timeout=30)  # hung before: the size cap applied after reading the whole file
    assert result.code == 0 and "ok" in result.out, result
    assert "fifo.yaml is a FIFO, not a regular file" in result.err
    assert "is a device or socket, not a regular file" in result.err
    validate = project.run("validate", str(project.runbooks / "zero.yaml"), timeout=30)
    assert validate.code == 2 and "not a regular file" in validate.err, validate


@pytest.mark.parametrize("kind", sorted(NOT_RUNBOOKS))
def test_a_file_that_is_not_a_runbook_is_never_echoed(project: Project, tmp_path: Path, kind: str) -> None:
    target = tmp_path / f"{kind}.txt"
    text = NOT_RUNBOOKS[kind]
    target.write_bytes(text.encode() if text is not None else b"\x7fELF\x02\x01\x00" + CANARY.encode() + b"\xff\xfe\x00")
    (project.runbooks / f"{kind}.yaml").symlink_to(target)
    for args in (("list",), ("validate",), ("validate", "--json"), ("list", "--json")):
        result = project.run(*args, timeout=30)
        assert CANARY not in result.out + result.err, f"{args}: the file's content was echoed: {result}"
        assert f"{kind}.yaml" in result.out + result.err, result


def test_params_inventory_and_policy_files_are_checked_too(project: Project, tmp_path: Path) -> None:
    project.write(
        "fan.yaml",
        """
        name: fan
        params:
          n: {type: string, default: x}
        steps:
          - {id: a, targets: [web], shell: ['true']}
        """,
    )
    fifo = special(tmp_path, "fifo")
    zero = special(tmp_path, "dev-zero")
    for path in (fifo, zero):
        params = project.run("run", "fan", "--params-file", str(path), timeout=30)
        assert params.code == 2 and "params file" in params.err and "not a regular file" in params.err, params
        inventory = project.run("--inventory", str(path), "run", "fan", "--json", timeout=30)
        assert "not a regular file" in inventory.out + inventory.err, inventory
        policy = project.run("run", "fan", "--as-agent", "--policy", str(path), timeout=30)
        assert policy.code == 2 and "agent policy file" in policy.err and "not a regular file" in policy.err, policy
    secrets = tmp_path / "creds.txt"
    secrets.write_text(f"password: {CANARY}\n\x00binary", encoding="utf-8")
    result = project.run("run", "fan", "--params-file", str(secrets), timeout=30)
    assert result.code == 2 and CANARY not in result.out + result.err, result
