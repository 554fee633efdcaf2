"""A full disk and a damaged journal give a StoreError naming the file, and leave the run's state truthful.

Disk full is real: the journal lives on a small tmpfs (root can mount one; CI runs as root). Damage is real
too: pages of a copy of a journal are overwritten.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Project, require

BIG = """
    name: big
    lock: big
    steps:
      - {id: first, shell: ['true']}
      - id: noisy
        shell: {script: 'head -c 300000 /dev/urandom | base64'}
      - {id: last, shell: ['true']}
"""


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted at teardown."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, check=False)
    require(done.returncode == 0, f"a small tmpfs (mount as root): {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, *, leave: int) -> None:
    """Write a filler file until only about ``leave`` bytes are free on ``disk``."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_a_full_disk_is_a_store_error_and_the_run_stays_truthful(project: Project, small_disk: Path) -> None:
    project.write("big.yaml", BIG)
    project.write("small.yaml", "name: small\nsteps:\n  - {id: a, shell: ['true']}\n")
    store = f"sqlite:///{small_disk}/journal.db"
    assert project.run("--store", store, "run", "small").code == 0  # the journal exists, with room to start a run
    fill(small_disk, leave=160 * 1024)
    result = project.run("--store", store, "run", "big", "--json", timeout=60)
    assert result.code == 1, result
    error = result.json()["error"]
    assert error["type"] == "StoreError" and str(small_disk / "journal.db") in error["message"], error
    assert "full" in error["message"] and "internal error" not in result.out + result.err
    runs = project.run("--store", store, "runs", "--json", timeout=60).json()["runs"]
    run_id = next(r["run_id"] for r in runs if r["runbook"] == "big")
    status = project.run("--store", store, "status", run_id, "--json", timeout=60).json()
    assert status["state"] == "running", "the journal keeps the state last recorded (the CLI did not report a failure)"
    assert status["next"]["action"] in ("resume", "decide"), status["next"]
    steps = {s["id"]: s["state"] for s in status["steps"]}
    assert steps["first"] == "succeeded" and steps["last"] == "pending", steps
    (small_disk / "filler").unlink()  # room again: the journal is intact and the run goes on where it stopped
    resumed = project.run("--store", store, "resume", run_id, "--retry-step", "noisy", "--json", timeout=60)
    assert resumed.code == 0 and resumed.json()["state"] == "succeeded", resumed


def test_a_damaged_journal_is_a_store_error_naming_the_file(project: Project, tmp_path: Path) -> None:
    project.write("ok.yaml", "name: ok\nsteps:\n" + "".join(f"  - {{id: s{i}, shell: [echo, '{'x' * 200}']}}\n" for i in range(20)))
    for _ in range(8):
        assert project.run("run", "ok").code == 0
    assert project.run("runs").code == 0  # a checkpoint leaves the pages in the main file
    copy = tmp_path / "damaged.db"
    shutil.copy(project.journal, copy)
    size = copy.stat().st_size
    assert size >= 8 * 4096, size
    with open(copy, "r+b") as f:
        for page in range(2, size // 4096):
            f.seek(page * 4096)
            f.write(os.urandom(4096))
    for args in (("runs", "--json"), ("run", "ok", "--json")):
        result = project.run("--store", f"sqlite:///{copy}", *args, timeout=60)
        assert result.code == 1, result
        error = result.json()["error"]
        assert error["type"] == "StoreError" and str(copy) in error["message"] and "damaged" in error["message"], error
        assert "internal error" not in result.out + result.err
