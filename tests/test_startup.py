"""Start-up stays light: the catalog commands never import remote or web libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("paramiko", "httpx", "fastapi", "starlette", "uvicorn", "mcp", "psycopg")


@pytest.mark.parametrize("args", [["--help"], ["list"], ["show", "disk-cleanup"], ["validate"], ["schema"]], ids=" ".join)
def test_no_heavy_imports(args: list[str]) -> None:
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), f"runbook {' '.join(args)} imported {sorted(imported & set(HEAVY))}"
    assert "runner" in imported, "importtime output was not captured"
