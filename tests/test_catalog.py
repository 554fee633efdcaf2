"""The catalog by name: a command decodes the runbooks it uses; listing, names and duplicates come from summaries."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import runner.compile_cache as cc
from runner.catalog import Catalog, summary_of
from runner.errors import RunbookNotFound, ValidationError
from runner.plugin import PluginHost
from runner.registry import StepTypeRegistry
from tests.conftest import Project

SMALL = """\
name: {name}
description: small runbook {name}
tags: [t-{name}]
params:
  host: {{type: string, description: where}}
  n: {{type: integer, default: 3}}
steps:
  - id: a
    shell: [echo, "{{{{ params.host }}}}"]
"""
PARENT = """\
name: parent
steps:
  - id: call
    runbook: {name: child, params: {word: hi}}
"""
CHILD = """\
name: child
params:
  word: string
steps:
  - id: say
    shell: [echo, "{{ params.word }}"]
"""


@pytest.fixture
def registry() -> StepTypeRegistry:
    return PluginHost().step_types


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the runbooks read from the compile cache's entries (whole entries decoded), in order."""
    seen: list[str] = []
    original = cc.CompileCache._decode

    def spy(*args: Any) -> Any:
        rb = original(*args)
        if rb is not None:
            seen.append(rb.name)
        return rb

    monkeypatch.setattr(cc.CompileCache, "_decode", staticmethod(spy))
    yield seen


def make(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def many(root: Path, count: int) -> Path:
    return make(root, {f"rb{i:03d}.yaml": SMALL.format(name=f"rb{i:03d}") for i in range(count)} | {"parent.yaml": PARENT,
                                                                                                     "child.yaml": CHILD})  # fmt: skip


def test_a_command_decodes_only_the_runbook_it_uses_and_its_children(tmp_path: Path, registry: StepTypeRegistry,
                                                                      decoded: list[str]) -> None:  # fmt: skip
    root = many(tmp_path / "rbs", 30)
    Catalog.load(registry, [root])  # first load: everything compiled and stored
    assert decoded == []
    catalog = Catalog.load(registry, [root])
    assert decoded == [], "loading the catalog decodes nothing"
    assert len(catalog.names()) == 32 and "rb007" in catalog.runbooks and len(catalog.runbooks) == 32
    assert catalog.get("rb007").spec.steps[0].id == "a"
    assert decoded == ["rb007"]
    from runner.engine import Engine
    from runner.settings import Settings

    host = PluginHost()
    settings = Settings(paths=[str(root)], store_url=f"sqlite:///{tmp_path}/j.db", project_dir=tmp_path, actor="t")
    engine = Engine(host, host.stores.open(settings.store_url or ""), Catalog.load(host.step_types, [root]), settings)
    decoded.clear()
    view = engine.start("parent", {}, execute=True)
    assert view.state == "succeeded"
    assert sorted(decoded) == ["child", "parent"], "a run decodes its runbook and its sub-runbooks, nothing else"
    engine.store.close()


def test_listing_reads_summaries_equal_to_the_compiled_runbooks(tmp_path: Path, registry: StepTypeRegistry, decoded: list[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = many(tmp_path / "rbs", 5)
    make(root, {"py_one.py": "from runner import Runbook\nrb = Runbook('py-one')\n\n@rb.step()\ndef go(ctx, p):\n    return 1\n"})
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", "off")
    fresh = [summary_of(rb) for rb in Catalog.load(registry, [root])]
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    Catalog.load(registry, [root])
    listed = Catalog.load(registry, [root]).summaries()
    assert decoded == [], "listing decoded no runbook"
    assert listed == fresh and [s.name for s in listed] == sorted(s.name for s in listed)
    rb = next(s for s in listed if s.name == "rb003")
    assert rb.as_dict()["params_schema"]["required"] == ["host"] and rb.params == (("host", True), ("n", False))


def test_duplicate_names_are_found_from_summaries_naming_both_files(tmp_path: Path, registry: StepTypeRegistry,
                                                                    decoded: list[str]) -> None:  # fmt: skip
    root = make(
        tmp_path / "rbs", {"a.yaml": SMALL.format(name="same"), "sub/b.yaml": SMALL.format(name="same").replace("[echo", "[printf")}
    )
    for _ in range(2):  # cold (compiled) and warm (summaries)
        catalog = Catalog.load(registry, [root])
        with pytest.raises(ValidationError, match=r"runbook name 'same' is also defined in .*a\.yaml") as info:
            catalog.get("same")
        assert info.value.problems[0].file is not None and info.value.problems[0].file.endswith("b.yaml")
    assert decoded == []


@pytest.mark.parametrize(
    ("text", "expect"),
    [("name: brk\nsteps:\n  - {id: a, shell: [echo], timeout: 10 seconds}\n", "timeout"),
     ("name: brk\nsteps: [\n", "YAML syntax error")],
    ids=["invalid field", "yaml syntax"],
)  # fmt: skip
def test_running_a_runbook_whose_file_is_broken_shows_that_files_problems(project: Project, text: str, expect: str) -> None:
    project.write("ok.yaml", SMALL.format(name="ok"))
    project.write("brk.yaml", text)
    for _ in range(2):
        res = project.run("run", "brk", "--json")
        assert res.code == 2, res
        error = res.json()["error"]
        assert error["problems"] and all(p["file"].endswith("brk.yaml") for p in error["problems"]), error
        assert expect in res.out and "no runbook named" not in res.out
    assert project.run("run", "nope").code == 2 and "no runbook named 'nope'" in project.run("run", "nope").err


def test_a_cached_runbook_whose_step_type_changed_is_compiled_again_when_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_compile_cache import _echo_registry

    registry, rules, step = _echo_registry(tmp_path, "catalog_echo_plugin", monkeypatch)
    root = make(tmp_path / "rbs", {"typed.yaml": "name: typed\nsteps:\n  - id: s\n    echo: hello\n"})
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    assert Catalog.load(registry, [root]).get("typed").name == "typed"
    rules.write_text("ALLOWED = ('hi',)\n", encoding="utf-8")  # the plugin now refuses 'hello' ...
    monkeypatch.setattr(cc, "_seen", {})  # ... as a new process would see it
    monkeypatch.setattr(step, "ALLOWED", ("hi",))
    catalog = Catalog.load(registry, [root])
    assert catalog.names() == ["typed"] and catalog.problems == [], "known by its summary"
    with pytest.raises(ValidationError, match="not one of"):
        catalog.get("typed")
    assert catalog.names() == [] and catalog.problems and "typed" not in catalog.runbooks
    with pytest.raises(ValidationError, match="not one of"):
        catalog.get("typed")
    assert Catalog.load(registry, [root]).load_all() == []


def test_an_uninstalled_step_type_makes_the_summary_a_miss(tmp_path: Path, registry: StepTypeRegistry,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = make(tmp_path / "rbs", {"w.yaml": "name: w\nsteps:\n  - id: s\n    wait: {for: 1s}\n"})
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    Catalog.load(registry, [root])
    without = StepTypeRegistry()
    for name, step_type in registry.items():
        if name != "wait":
            without.add(step_type)
    catalog = Catalog.load(without, [root])
    assert catalog.names() == [] and any("wait" in p.message for p in catalog.problems)
    with pytest.raises(RunbookNotFound):
        Catalog.load(without, []).get("w")


def test_list_is_the_same_cold_and_warm_and_validate_checks_every_runbook(project: Project) -> None:
    for i in range(3):
        project.write(f"rb{i}.yaml", SMALL.format(name=f"rb{i}"))
    project.write("bad.yaml", "name: bad\nsteps:\n  - {id: a, shell: ['{{ params.nope }}']}\n")
    cold = project.run("list", "--json")
    warm = project.run("list", "--json")
    assert cold.code == warm.code == 0 and cold.json() == warm.json()
    assert [r["name"] for r in warm.json()["runbooks"]] == ["bad", "rb0", "rb1", "rb2"]
    text = project.run("list")
    assert "host, n?" in text.out and "rb1" in text.out
    res = project.run("validate", "--json")
    assert res.code == 2 and any("nope" in p["message"] for p in res.json()["problems"]), res


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The runbook files the catalog reads (their bytes), in order."""
    import runner.catalog as catalog_module

    seen: list[str] = []
    original = catalog_module._read_source

    def spy(file: str) -> bytes:
        seen.append(Path(file).name)
        return original(file)

    monkeypatch.setattr(catalog_module, "_read_source", spy)
    yield seen


def test_the_folder_index_spares_reading_unchanged_files_and_sees_every_write(tmp_path: Path, registry: StepTypeRegistry,
                                                                               reads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    root = many(tmp_path / "rbs", 5)
    Catalog.load(registry, [root])
    Catalog.load(registry, [root])  # the first load compiled and indexed; this one only confirms it
    reads.clear()
    warm = Catalog.load(registry, [root])
    assert reads == [] and len(warm.names()) == 7, "an unchanged folder: names and summaries from a stat per file"
    assert warm.get("rb002").name == "rb002" and reads == ["rb002.yaml"], "the runbook a command uses is read then"
    path = root / "rb003.yaml"
    before = os.stat(path)
    edited = path.read_text().replace("rb003", "rbx03")  # same size, another name
    path.write_text(edited)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the modification time put back: the change time is not
    reads.clear()
    catalog = Catalog.load(registry, [root])
    assert reads == ["rb003.yaml"] and "rbx03" in catalog.names() and "rb003" not in catalog.names()
    path.unlink()
    reads.clear()
    assert "rbx03" not in Catalog.load(registry, [root]).names() and reads == []


def test_a_damaged_folder_index_is_ignored_and_rewritten(tmp_path: Path, registry: StepTypeRegistry, reads: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(tmp_path / "cache"))
    root = many(tmp_path / "rbs", 2)
    Catalog.load(registry, [root])
    Catalog.load(registry, [root])
    [index] = (tmp_path / "cache" / "folders").glob("*.json")
    assert oct(index.stat().st_mode & 0o777) == "0o600"
    index.write_text("{not json")
    reads.clear()
    assert len(Catalog.load(registry, [root]).names()) == 4 and len(reads) == 4, "every file read again"
    reads.clear()
    assert len(Catalog.load(registry, [root]).names()) == 4 and reads == [], "and indexed again"
