"""``file:`` secrets read regular UTF-8 files only, bounded; a secret that cannot be resolved fails its run.

must-show 3: ``file:/dev/zero``, a FIFO, a directory, a 100 MiB file and a binary file each give a clear
refusal at once (nothing blocks: a FIFO is opened non-blocking, ``/dev/zero`` is never read), never block a
server worker, and leave no run holding its lock.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from runbook_secrets import MAX_FILE_BYTES, from_file

from runner.errors import SecretError
from tests.conftest import Project
from tests.security.conftest import TOKEN

LOCKED = """
    name: locked
    lock: the-lock
    params:
      pw: {type: string, secret: true, allow: ["file:/dev/zero", "file:{dir}/*"]}
    steps:
      - id: use
        shell: {script: 'test -n "$PW"', env: {PW: "{{ params.pw }}"}}
"""


def bad_files(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name → (reference, expected words of the refusal)."""
    d = tmp_path / "s"
    d.mkdir(exist_ok=True)
    fifo = d / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    (d / "dir").mkdir(exist_ok=True)
    with open(d / "big", "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: 100 MiB to stat, nothing to write
    (d / "binary").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    return {
        "dev-zero": ("file:/dev/zero", "not a regular file (a character device)"),
        "fifo": (f"file:{fifo}", "not a regular file (a FIFO)"),
        "directory": (f"file:{d}/dir", "not a regular file (a directory)"),
        "100MiB": (f"file:{d}/big", f"more than the {MAX_FILE_BYTES}-byte limit"),
        "binary": (f"file:{d}/binary", "not UTF-8 text"),
    }


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "100MiB", "binary"])
def test_the_provider_refuses_clearly(tmp_path: Path, kind: str) -> None:
    ref, words = bad_files(tmp_path)[kind]
    started = time.monotonic()
    with pytest.raises(SecretError) as info:
        from_file(ref.partition(":")[2])
    took = time.monotonic() - started
    assert words in str(info.value) and ref in str(info.value), info.value
    assert took < 10, f"refusing {kind} took {took:.1f}s"  # a FIFO or /dev/zero would block or fill memory forever


def test_a_file_growing_past_the_cap_while_read_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"x" * (MAX_FILE_BYTES + 10))
    with pytest.raises(SecretError, match="limit"):
        from_file(str(path))
    path.write_text("fine-secret\n", encoding="utf-8")
    assert from_file(str(path)) == "fine-secret"


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "directory", "100MiB", "binary"])
def test_each_fails_its_run_and_frees_the_lock(project: Project, tmp_path: Path, kind: str) -> None:
    """The non-UTF-8 case used to leave the run `queued` for good, holding its lock (every later run: exit 6)."""
    project.write("locked.yaml", LOCKED.replace("{dir}", str(tmp_path / "s")))
    ref, words = bad_files(tmp_path)[kind]
    result = project.run("run", "locked", "-p", f"pw={ref}", "--json", timeout=30)
    assert result.code == 1, result
    view = result.json()
    assert view["state"] == "failed" and "cannot resolve the run's secrets" in view["reason"] and words in view["reason"], view
    assert "internal error" not in result.out + result.err
    (tmp_path / "s" / "good").write_text("a-good-secret\n", encoding="utf-8")
    after = project.run("run", "locked", "-p", f"pw=file:{tmp_path}/s/good", "--json", timeout=30)
    assert after.code == 0, f"the lock was not freed: {after}"


def test_an_unset_variable_fails_the_run_at_start_naming_it(project: Project) -> None:
    project.write(
        "e.yaml",
        """
        name: e
        lock: e
        secrets: {tok: env:SEC_NOT_SET}
        steps:
          - {id: s, shell: {script: 'touch ran', env: {T: "{{ secrets.tok }}"}}}
        """,
    )
    result = project.run("run", "e", "--json")
    assert result.code == 1 and "environment variable SEC_NOT_SET is not set" in result.json()["reason"], result
    assert not (project.root / "ran").exists(), "nothing runs when a secret cannot be resolved"
    assert result.json()["steps"][0]["state"] == "pending"


def test_no_server_worker_is_blocked_and_no_lock_is_kept(project: Project, serve: Any, tmp_path: Path) -> None:
    project.write("locked.yaml", LOCKED.replace("{dir}", str(tmp_path / "s")))
    files = bad_files(tmp_path)
    server = serve("tokens:\n  - {name: ops, token: env:SEC_TOKEN, scopes: [admin]}\n", env={"SEC_TOKEN": TOKEN}, token=TOKEN, workers=1)
    client = server.client()
    for kind, (ref, words) in files.items():
        started = client.post("/v1/runs", json={"runbook": "locked", "params": {"pw": ref}})
        assert started.status_code < 300, (kind, started.text)
        view = server.wait_state(started.json()["run_id"], "failed", timeout=20)
        assert words in view["reason"], (kind, view)
    (tmp_path / "s" / "good").write_text("a-good-secret\n", encoding="utf-8")
    good = client.post("/v1/runs", json={"runbook": "locked", "params": {"pw": f"file:{tmp_path}/s/good"}})
    server.wait_state(good.json()["run_id"], "succeeded", timeout=20)  # the one worker is free, the lock too
    health = client.get("/healthz").json()
    assert health.get("workers_busy", 0) == 0, health
    assert "internal error" not in server.log() and "Traceback" not in server.log()
