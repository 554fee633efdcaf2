"""The live catalog of a long-running process: runbook files added, edited and removed are seen without a restart,
at most once per interval, reading only the files that changed; one object shared by every engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import runner.catalog as catalog_module
from runner.catalog import Catalog
from runner.errors import RunbookNotFound
from runner.livecatalog import LiveCatalog
from runner.plugin import PluginHost
from runner.registry import StepTypeRegistry

RB = "name: {name}\ndescription: {text}\nsteps:\n  - {{id: a, shell: [echo, {name}]}}\n"


@pytest.fixture
def registry() -> StepTypeRegistry:
    return PluginHost().step_types


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "rbs"
    folder.mkdir()
    for name in ("one", "two"):
        (folder / f"{name}.yaml").write_text(RB.format(name=name, text="first"))
    return folder


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The runbook files whose bytes the catalog read."""
    seen: list[str] = []
    original = catalog_module._read_source

    def spy(file: str) -> bytes:
        seen.append(Path(file).name)
        return original(file)

    monkeypatch.setattr(catalog_module, "_read_source", spy)
    return seen


def test_files_added_edited_and_removed_are_seen_reading_only_what_changed(root: Path, registry: StepTypeRegistry,
                                                                          reads: list[str]) -> None:  # fmt: skip
    for _ in range(2):  # a warm compile cache: the entries, then the folder's index
        Catalog.load(registry, [root])
    reads.clear()
    catalog = LiveCatalog.watching(registry, [root], every=3600)
    assert catalog.names() == ["one", "two"] and catalog.generation == 0
    assert not catalog.refresh(), "nothing changed: no reload"
    assert reads == [], "unchanged files are known by the folder index, not read"
    (root / "three.yaml").write_text(RB.format(name="three", text="added"))
    assert catalog.refresh() and catalog.generation == 1
    assert catalog.names() == ["one", "three", "two"] and catalog.get("three").spec.description == "added"
    assert reads == ["three.yaml"], "a reload reads only the new file"
    (root / "one.yaml").write_text(RB.format(name="one", text="edited, longer"))
    assert catalog.refresh() and catalog.get("one").spec.description == "edited, longer"
    (root / "two.yaml").unlink()
    assert catalog.refresh() and catalog.generation == 3
    with pytest.raises(RunbookNotFound, match="no runbook named 'two'"):
        catalog.get("two")
    assert [s.name for s in catalog.summaries()] == ["one", "three"] and [rb.name for rb in catalog] == ["one", "three"]


def test_reads_look_at_the_files_only_once_the_interval_has_passed(root: Path, registry: StepTypeRegistry) -> None:
    catalog = LiveCatalog.watching(registry, [root], every=3600)
    (root / "three.yaml").write_text(RB.format(name="three", text="added"))
    assert "three" not in catalog, "looked less than an interval ago: the reads do not stat the files"
    catalog.every = 0.0
    assert "three" in catalog and catalog.generation == 1, "a read after the interval looks and reloads"


def test_a_broken_new_file_is_a_problem_of_the_catalog_not_an_error_of_the_read(root: Path, registry: StepTypeRegistry) -> None:
    catalog = LiveCatalog.watching(registry, [root], every=0.0)
    (root / "bad.yaml").write_text("name: bad\nsteps: [{id: a, nope: 1}]\n")
    assert catalog.names() == ["one", "two"]
    assert any(p.file and p.file.endswith("bad.yaml") for p in catalog.problems), catalog.problems


def test_a_session_watching_its_catalog_shares_one_live_object_with_its_engines(root: Path, tmp_path: Path) -> None:
    from runner.session import Session
    from runner.settings import Settings

    settings = Settings(paths=[str(root)], store_url=f"sqlite:///{tmp_path}/j.db", project_dir=tmp_path, actor="t")
    session = Session(settings)
    session.watch_catalog()
    engines: list[Any] = [session.engine(), session.engine()]
    try:
        assert isinstance(session.catalog, LiveCatalog) and all(e.catalog is session.catalog for e in engines)
        (root / "three.yaml").write_text(RB.format(name="three", text="added"))
        session.catalog.refresh()
        assert all(e.catalog.get("three").name == "three" for e in engines)
    finally:
        session.close()
