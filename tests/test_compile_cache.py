"""The compile cache: a hit is the runbook a fresh compile gives; anything that could make it differ is a miss."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runner.compile_cache as cc
from runner.catalog import LoadedRunbook, load_file
from runner.errors import ValidationError
from runner.plugin import PluginHost
from runner.registry import StepTypeRegistry

RUNBOOK = """\
name: cached
description: every kind of field the compiler fills in
params:
  port: {type: integer, default: 8080}
  who: string
steps:
  - id: probe
    check:
      - shell: [test, -e, /nonexistent]
        expect: {exit_code: 0}
    shell: [echo, "{{ params.who }}"]
    expect: {stdout: {contains: "{{ params.who }}"}}
  - id: plain
    shell: {command: [echo, plain], env: {A: "1"}}
    timeout: 5s
    retry: {attempts: 2, delay: 1s}
    rollback:
      shell: [echo, undo]
  - id: web
    http: {url: "http://127.0.0.1:{{ params.port }}/", method: GET}
    verify:
      within: 2s
      every: 1s
      checks:
        - expr: "{{ outputs.web.status == 200 }}"
  - id: pause
    wait: {for: 1s}
"""


@pytest.fixture
def registry() -> StepTypeRegistry:
    return PluginHost().step_types


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(path))
    return path


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(path: Path, registry: StepTypeRegistry) -> LoadedRunbook:
    [rb] = load_file(path, registry)
    return rb


def was_hit(rb: LoadedRunbook) -> bool:
    """A runbook read from the cache carries its source for positions on demand, and none parsed yet."""
    return rb.source is not None and rb.located is None


def entries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.json"))


def test_a_hit_is_what_a_fresh_compile_gives(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    file = write(tmp_path / "rb.yaml", RUNBOOK)
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", "off")
    fresh = load(file, registry)
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(cache_dir))
    first = load(file, registry)
    assert not was_hit(first) and len(entries(cache_dir)) == 1
    hit = load(file, registry)
    assert was_hit(hit)
    assert hit.spec == fresh.spec
    assert hit.spec_json == fresh.spec_json
    assert hit.step_hashes == fresh.step_hashes
    assert hit.content_hash == fresh.content_hash
    assert hit.file == str(file)
    assert hit.params_model.model_json_schema() == fresh.params_model.model_json_schema()
    for a, b in zip(fresh.spec.steps, hit.spec.steps, strict=True):
        for x, y in ((a.action, b.action), (a.rollback, b.rollback)):
            if x is None:
                assert y is None
                continue
            assert y is not None
            assert (x.validated is None) == (y.validated is None), a.id
            if x.validated is not None:
                assert x.validated == y.validated
    # a config without templates is validated once; templated ones are left to the engine
    plain = hit.spec.steps[1].action.validated
    assert plain is not None and plain.command == ["echo", "plain"]  # type: ignore[attr-defined]
    assert hit.spec.steps[0].action.validated is None


def test_an_edited_file_is_a_miss(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    file = write(tmp_path / "rb.yaml", "name: edited\nsteps:\n  - id: s\n    shell: [echo, one]\n")
    load(file, registry)
    assert was_hit(load(file, registry))
    write(file, "name: edited\nsteps:\n  - id: s\n    shell: [echo, two]\n")
    rb = load(file, registry)
    assert not was_hit(rb)
    assert rb.spec.steps[0].action.config == {"command": ["echo", "two"]}
    assert len(entries(cache_dir)) == 2


def test_the_same_content_elsewhere_is_one_entry_with_its_own_file(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    a = write(tmp_path / "a.yaml", "name: same\nsteps:\n  - id: s\n    shell: [echo]\n")
    (tmp_path / "b").mkdir()
    b = write(tmp_path / "b" / "a.yaml", a.read_text())
    load(a, registry)
    rb = load(b, registry)
    assert was_hit(rb) and rb.file == str(b)
    assert len(entries(cache_dir)) == 1


@pytest.mark.parametrize("damage", ["truncated", "not json", "other key", "invalid spec"])
def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry, damage: str) -> None:
    file = write(tmp_path / "rb.yaml", "name: damaged\nsteps:\n  - id: s\n    shell: [echo, right]\n")
    load(file, registry)
    [entry] = entries(cache_dir)
    good = entry.read_text()
    doc = json.loads(good)
    if damage == "truncated":
        entry.write_text(good[: len(good) // 2])
    elif damage == "not json":
        entry.write_text("\x00\x01")
    elif damage == "other key":  # e.g. a file copied from another key: its spec is some other runbook
        doc["key"] = "0" * 64
        doc["spec"]["steps"][0]["action"]["config"] = {"command": ["echo", "wrong"]}
        entry.write_text(json.dumps(doc))
    else:  # what a foreign or tampered entry holding a runbook no compile would give looks like
        doc["spec"]["steps"][0]["action"] = {"type": "shell"}
        entry.write_text(json.dumps(doc))
    rb = load(file, registry)
    assert not was_hit(rb)
    assert rb.spec.steps[0].action.config == {"command": ["echo", "right"]}
    assert json.loads(entry.read_text()) == json.loads(good)  # written again, whole


def test_a_changed_step_type_is_a_miss(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "site" / "cache_probe_type.py"
    module.parent.mkdir()
    source = textwrap.dedent('''
        from runner.steptypes import ActionResult, StepConfig, StepType

        class Config(StepConfig):
            text: str

        class EchoType(StepType):
            name = "echo"
            Config = Config
            config_read_only = True

            def shorthand(self, value):
                return {"text": value} if isinstance(value, str) else value

            def execute(self, config, ctx):
                return ActionResult(ok=True, output={"text": config.text})
        ''')  # fmt: skip
    module.write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(module.parent))
    import cache_probe_type  # type: ignore[import-not-found]

    registry = StepTypeRegistry()
    registry.add(cache_probe_type.EchoType())
    file = write(tmp_path / "rb.yaml", "name: typed\nsteps:\n  - id: s\n    echo: hello\n")
    load(file, registry)
    assert was_hit(load(file, registry))
    entry = json.loads(entries(cache_dir)[0].read_text())
    assert list(entry["types"]) == ["echo"]
    module.write_text(source + "\n# the step type was edited\n", encoding="utf-8")
    assert not was_hit(load(file, registry))
    other = StepTypeRegistry()  # the name now belongs to another class (a different plugin)
    other.add(type("OtherEcho", (cache_probe_type.EchoType,), {})())
    assert not was_hit(load(file, other))
    with pytest.raises(ValidationError, match="unknown key 'echo'"):
        load(file, StepTypeRegistry())  # the plugin is gone: the compile says so, the entry is not used


def test_fingerprinted_steps_are_hashed_on_every_load(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    module = tmp_path / "site" / "cache_fp_fn.py"
    module.parent.mkdir()
    module.write_text("def work(ctx):\n    return 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(module.parent))
    file = write(tmp_path / "rb.yaml", "name: fp\nsteps:\n  - id: s\n    python: {call: 'cache_fp_fn:work'}\n  - id: t\n    shell: [echo]\n")
    first = load(file, registry)
    before, before_content = dict(first.step_hashes), first.content_hash
    entry = json.loads(entries(cache_dir)[0].read_text())
    assert entry["step_hashes"] is None and entry["content_hash"] is None
    module.write_text("def work(ctx):\n    return 2\n", encoding="utf-8")  # same runbook file, edited function
    hit = load(file, registry)
    assert was_hit(hit)
    assert hit.step_hashes["s"] != before["s"]
    assert hit.step_hashes["t"] == before["t"]
    assert hit.content_hash != before_content


def test_positions_are_found_on_demand_after_a_hit(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    file = write(tmp_path / "rb.yaml", RUNBOOK)
    load(file, registry)
    hit = load(file, registry)
    assert was_hit(hit)
    assert hit.location("web") == f"{file}:19"
    assert hit.located is not None and hit.located.position(("steps", 1, "timeout")) == (15, 5)


def test_the_size_limit_holds_for_a_cached_runbook(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    file = write(tmp_path / "rb.yaml", RUNBOOK)
    load(file, registry)
    monkeypatch.setenv("RUNBOOK_MAX_FILE_BYTES", "100")
    with pytest.raises(ValidationError, match="the limit is 100"):
        load(file, registry)


def test_files_are_private(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    load(write(tmp_path / "rb.yaml", RUNBOOK), registry)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    [entry] = entries(cache_dir)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert not list(cache_dir.glob(".*.tmp"))


def test_turned_off_or_unwritable_costs_only_speed(tmp_path: Path, registry: StepTypeRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write(tmp_path / "rb.yaml", RUNBOOK)
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", "off")
    assert cc.default_cache() is None
    assert not was_hit(load(file, registry)) and not was_hit(load(file, registry))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(blocker / "cache"))  # its parent is a file: it cannot be created
    assert load(file, registry).spec.name == "cached"
    assert not was_hit(load(file, registry))


def test_default_location_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNBOOK_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = cc.default_cache()
    assert cache is not None and cache.directory == tmp_path / "xdg" / "runbook" / "compiled"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = cc.default_cache()
    assert cache is not None and cache.directory == tmp_path / "home" / ".cache" / "runbook" / "compiled"


def test_a_full_cache_drops_the_least_recently_used(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cc, "MAX_ENTRIES", 3)
    files = [write(tmp_path / f"rb{i}.yaml", f"name: rb{i}\nsteps:\n  - id: s\n    shell: [echo, '{i}']\n") for i in range(5)]
    cache = cc.CompileCache(cache_dir)
    for i, file in enumerate(files[:3]):
        load(file, registry)
        os.utime(cache_dir / f"{cache.key(file.read_bytes())}.json", (1_000_000 + i, 1_000_000 + i))  # used in this order
    assert was_hit(load(files[0], registry))  # used again: now the most recent
    load(files[3], registry)
    load(files[4], registry)
    assert len(entries(cache_dir)) == 3
    assert was_hit(load(files[0], registry))
    assert not was_hit(load(files[1], registry))


def test_a_warm_cli_run_never_parses_yaml(tmp_path: Path) -> None:
    """The second ``runbook run`` of a runbook reads the cache: PyYAML and the compiler are not even imported.
    After an edit it runs the edited runbook."""
    project = tmp_path / "proj"
    (project / "runbooks").mkdir(parents=True)
    rb = write(project / "runbooks" / "warm.yaml", "name: warm\nsteps:\n  - id: s\n    shell: [echo, first]\n")
    env = {**os.environ, "RUNBOOK_CACHE_DIR": str(tmp_path / "cache"), "RUNBOOK_ACTOR": "tester"}

    def run() -> tuple[dict[str, object], set[str]]:
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "run", "warm", "--json"], cwd=project, env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
        return json.loads(res.stdout), imported

    view, imported = run()
    assert {"yaml", "runner.compiler"} <= imported
    view, imported = run()
    assert "runner" in imported and not {"yaml", "runner.compiler"} & imported
    assert view["steps"][0]["output"]["stdout"] == "first\n"  # type: ignore[index]
    write(rb, "name: warm\nsteps:\n  - id: s\n    shell: [echo, second]\n")
    view, imported = run()
    assert "yaml" in imported
    assert view["steps"][0]["output"]["stdout"] == "second\n"  # type: ignore[index]


def test_every_module_compiling_uses_is_stamped() -> None:
    """An edit to any runner module that compiling imports must be a miss: each is in STAMPED_MODULES."""
    code = "import sys, runner.compiler, runner.catalog, runner.compile_cache; print(' '.join(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = {m for m in res.stdout.split() if m == "runner" or m.startswith("runner.")}
    names = {"__init__" if m == "runner" else m.removeprefix("runner.") for m in loaded}
    assert names <= set(cc.STAMPED_MODULES), sorted(names - set(cc.STAMPED_MODULES))
    assert "compiler" in names and "model" in names
    root = Path(cc.__file__).parent
    assert all((root / f"{name}.py").is_file() for name in cc.STAMPED_MODULES)
