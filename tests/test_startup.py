"""Start-up stays light: the catalog commands never import remote or web libraries."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("args", [["list", "--json"], ["validate"], ["show", "disk-cleanup", "--json"]], ids=" ".join)
def test_no_pydantic_plugin_scan_without_pydantic_plugins(args: list[str]) -> None:
    """With no pydantic plugin installed, pydantic's plugin discovery (importlib.metadata over every
    installed distribution, ~15 ms of each start) is skipped."""
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "pydantic" in imported, "the command built no pydantic model, so this test shows nothing"
    assert "importlib.metadata" not in imported


PYDANTIC_PLUGIN = """
import os


class Plugin:
    def new_schema_validator(self, schema, schema_type, schema_type_path, schema_kind, config, plugin_settings):
        with open(os.environ["PYDANTIC_PLUGIN_MARK"], "a", encoding="utf-8") as f:
            f.write(f"{schema_type_path.module}:{schema_type_path.name}\\n")
        return None, None, None


plugin = Plugin()
"""


def test_an_installed_pydantic_plugin_is_still_loaded(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist = site / "pyd_mark-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "pyd_mark.py").write_text(PYDANTIC_PLUGIN, encoding="utf-8")
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pyd-mark\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[pydantic]\nmark = pyd_mark:plugin\n", encoding="utf-8")
    mark = tmp_path / "mark.txt"
    env = {**os.environ, "PYTHONPATH": str(site), "PYDANTIC_PLUGIN_MARK": str(mark)}
    res = subprocess.run([sys.executable, "-m", "runner", "list", "--json"], cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    seen = mark.read_text(encoding="utf-8").splitlines()
    assert "runner.model:RunbookSpec" in seen, seen[:20]


def test_the_stand_in_answers_other_names_from_the_real_loader() -> None:
    code = (
        "import sys\n"
        "from runner._pydantic import skip_plugin_discovery\n"
        "assert skip_plugin_discovery()\n"
        "import pydantic.plugin\n"  # as pydantic reaches it: from its plugin package
        "from pydantic.plugin import _loader as stand_in\n"
        "assert tuple(stand_in.get_plugins()) == ()\n"
        "assert stand_in.PYDANTIC_ENTRY_POINT_GROUP == 'pydantic'\n"  # not on the stand-in: read from the real module
        "assert type(sys.modules['pydantic.plugin._loader']).__name__ == 'module'\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
