"""The documentation cites only runbooks that exist: every ``runbooks/...`` file a page names is in the repository or
shown whole on that page (a block marked ``<!-- file: runbooks/... -->``), and every runbook shown whole compiles."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docblocks import blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
CITED = re.compile(r"\brunbooks/[a-z0-9][A-Za-z0-9._/-]*[A-Za-z0-9_/]")


def inline_files(page: Path) -> dict[str, str]:
    """PATH → text of the blocks a page marks ``<!-- file: PATH -->``."""
    return {b.directive[len("file: ") :]: b.text for b in blocks(page) if b.directive and b.directive.startswith("file: ")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_runbook_file_a_page_names_exists_or_is_shown(page: Path) -> None:
    shown = inline_files(page)
    missing = sorted({path for path in CITED.findall(page.read_text(encoding="utf-8"))
                      if not (ROOT / path).exists() and path not in shown and path.rstrip("/") not in shown})  # fmt: skip
    assert missing == [], f"{page.name} names runbook files that neither exist nor are shown on the page: {missing}"


def test_the_pages_that_used_to_cite_missing_runbooks_point_at_shipped_ones() -> None:
    """Issue 18: lb-drain, restart-nginx and rotate-logs were cited as if shipped."""
    assert "[`runbooks/drain-node.yaml`](../runbooks/drain-node.yaml)" in (ROOT / "docs" / "http.md").read_text()
    assert "[`runbooks/restart-service.yaml`](../runbooks/restart-service.yaml)" in (ROOT / "docs" / "ssh.md").read_text()
    for page in PAGES:
        for path in ("runbooks/lb-drain.yaml", "runbooks/restart-nginx.yaml", "runbooks/rotate-logs.yaml"):
            assert not (ROOT / path).exists()
            if path in page.read_text():
                assert path in inline_files(page), f"{page.name} cites {path} without showing it"


INLINE = [(page, path) for page in PAGES for path in inline_files(page)
          if path.startswith("runbooks/") and "/tests/" not in path and path.endswith((".yaml", ".yml", ".py"))]  # fmt: skip


@pytest.mark.parametrize(("page", "path"), INLINE, ids=[f"{p.name}:{f}" for p, f in INLINE])
def test_every_runbook_shown_whole_is_valid(page: Path, path: str, tmp_path: Path) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(inline_files(page)[path], encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k == "RUNBOOK_CACHE_DIR"}
    proc = subprocess.run([sys.executable, "-m", "runner", "validate", path, "--json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, f"{page.name}: {path} does not validate:\n{proc.stdout}\n{proc.stderr}"


def test_inline_runbooks_are_found() -> None:
    assert {path for _, path in INLINE} >= {"runbooks/lb-drain.yaml", "runbooks/restart-nginx.yaml", "runbooks/rotate-logs.yaml",
                                            "runbooks/hello.yaml"}  # fmt: skip
