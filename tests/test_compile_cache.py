"""The compile cache: a hit is the runbook a fresh compile gives; anything that could make it differ is a miss."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import runner.compile_cache as cc
from runner.catalog import LoadedRunbook, load_file
from runner.errors import ValidationError
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


def header(entry: Path) -> Any:
    """An entry's first line: format, key, the step types' stamps, the runbook's summary."""
    return json.loads(entry.read_text().splitlines()[0])


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


@pytest.mark.parametrize("damage", ["truncated", "not json", "not utf-8", "other key", "invalid spec"])
def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry, damage: str) -> None:
    file = write(tmp_path / "rb.yaml", "name: damaged\nsteps:\n  - id: s\n    shell: [echo, right]\n")
    load(file, registry)
    [entry] = entries(cache_dir)
    good = entry.read_text()
    header, hashes, head, *steps = (json.loads(line) for line in good.splitlines())
    assert head["steps"] == [] and [s["id"] for s in steps] == hashes["step_ids"] == ["s"]
    if damage == "truncated":
        entry.write_text(good[: len(good) // 2])
    elif damage == "not json":
        entry.write_text("\x00\x01")
    elif damage == "not utf-8":
        entry.write_bytes(b"\xff\xfe garbage")
    elif damage == "other key":  # e.g. a file copied from another key: its spec is some other runbook
        header["key"] = "0" * 64
        steps[0]["action"]["config"] = {"command": ["echo", "wrong"]}
        entry.write_text("\n".join(json.dumps(part) for part in (header, hashes, head, *steps)))
    else:  # what a foreign or tampered entry holding a runbook no compile would give looks like
        steps[0]["action"] = {"type": "shell"}
        entry.write_text("\n".join(json.dumps(part) for part in (header, hashes, head, *steps)))
    rb = load(file, registry)
    assert not was_hit(rb)
    assert rb.spec.steps[0].action.config == {"command": ["echo", "right"]}
    assert entry.read_text() == good  # written again, whole


def _echo_plugin(site: Path, package: str) -> Path:
    """A step-type package whose Config validates through a helper module; returns the helper's path."""
    pkg = site / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "rules.py").write_text("ALLOWED = ('hello', 'hi')\n", encoding="utf-8")
    step = f"""
from pydantic import field_validator

from runner.steptypes import ActionResult, StepConfig, StepType
from {package}.rules import ALLOWED


class Config(StepConfig):
    text: str

    @field_validator("text")
    @classmethod
    def _known(cls, value):
        if value not in ALLOWED:
            raise ValueError(f"not one of {{ALLOWED}}")
        return value


class EchoType(StepType):
    name = "echo"
    Config = Config
    config_read_only = True

    def shorthand(self, value):
        return {{"text": value}} if isinstance(value, str) else value

    def execute(self, config, ctx):
        return ActionResult(ok=True, output={{"text": config.text}})
"""
    (pkg / "step.py").write_text(step, encoding="utf-8")
    return pkg / "rules.py"


def _echo_registry(tmp_path: Path, package: str, monkeypatch: pytest.MonkeyPatch) -> tuple[StepTypeRegistry, Path, Any]:
    import importlib

    rules = _echo_plugin(tmp_path / "site", package)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    step = importlib.import_module(f"{package}.step")
    registry = StepTypeRegistry()
    registry.add(step.EchoType())
    return registry, rules, step


def test_a_changed_step_type_is_a_miss(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, rules, step = _echo_registry(tmp_path, "cache_echo_plugin", monkeypatch)
    file = write(tmp_path / "rb.yaml", "name: typed\nsteps:\n  - id: s\n    echo: hello\n")
    load(file, registry)
    assert was_hit(load(file, registry))
    entry = header(entries(cache_dir)[0])
    assert list(entry["types"]) == ["echo"]

    # An edit to any module of the step type's package, not only the class's, is a miss. As for .pyc files, what
    # counts is the code a process runs: a new process (here: a cleared memo of what this one saw) sees the edit.
    rules.write_text("ALLOWED = ('hi',)\n", encoding="utf-8")
    monkeypatch.setattr(cc, "_seen", {})
    assert not was_hit(load(file, registry))

    other = StepTypeRegistry()  # the name now belongs to another class (a different plugin)
    other.add(type("OtherEcho", (step.EchoType,), {})())
    assert not was_hit(load(file, other))
    with pytest.raises(ValidationError, match="unknown key 'echo'"):
        load(file, StepTypeRegistry())  # the plugin is gone: the compile says so, the entry is not used


def test_a_process_whose_code_changed_under_it_writes_no_entry(tmp_path: Path, cache_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A long-running server keeps the plugin it imported: once the plugin on disk differs, what it compiles is
    not what a new process would compile, so it must not write that down for one."""
    registry, rules, _ = _echo_registry(tmp_path, "cache_echo_longlived", monkeypatch)
    first = write(tmp_path / "a.yaml", "name: a\nsteps:\n  - id: s\n    echo: hello\n")
    load(first, registry)
    assert len(entries(cache_dir)) == 1
    rules.write_text("ALLOWED = ('hi', 'hello', 'hey')\n", encoding="utf-8")  # upgraded on disk, not in this process
    second = write(tmp_path / "b.yaml", "name: b\nsteps:\n  - id: s\n    echo: hi\n")
    assert load(second, registry).spec.name == "b"
    assert len(entries(cache_dir)) == 1
    assert was_hit(load(first, registry))  # the entries for the code it runs are still read


def test_types_are_read_from_actions_and_checks_only(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    """A config value that looks like an action (an HTTP body with ``type`` and ``config``) is data, not a step type."""
    file = write(
        tmp_path / "rb.yaml",
        """\
        name: body
        steps:
          - id: post
            http: {url: "http://127.0.0.1:1/", method: POST, json: {type: widget, config: {}}}
          - id: later
            wait:
              checks: [{shell: [true]}]
              every: 1s
              within: 5s
        """,
    )
    load(file, registry)
    entry = header(entries(cache_dir)[0])
    assert sorted(entry["types"]) == ["http", "shell", "wait"]
    assert was_hit(load(file, registry))


def test_a_step_type_that_fails_to_import_costs_only_speed(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    site = tmp_path / "site"
    site.mkdir()
    (site / "cache_broken_fn.py").write_text("raise RuntimeError('broken at import')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    file = write(tmp_path / "rb.yaml", "name: broken\nsteps:\n  - id: s\n    python: {call: 'cache_broken_fn:work'}\n")
    assert load(file, registry).spec.name == "broken"
    assert load(file, registry).spec.name == "broken"


def test_threads_sharing_a_cache_never_see_a_wrong_runbook(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    import threading

    file = write(tmp_path / "rb.yaml", RUNBOOK)
    expected = load(file, registry).spec
    for entry in entries(cache_dir):
        entry.unlink()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                cc.CompileCache(cache_dir).store(file.read_bytes(), load(file, registry))
                assert load(file, registry).spec == expected
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures[0]
    assert len(entries(cache_dir)) == 1 and not list(cache_dir.glob(".*.tmp"))


def test_a_directory_others_can_write_is_not_used(tmp_path: Path, registry: StepTypeRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(shared))
    file = write(tmp_path / "rb.yaml", RUNBOOK)
    load(file, registry)
    assert not entries(shared)
    private = tmp_path / "private"
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(private))
    load(file, registry)
    [entry] = entries(private)
    planted = shared / entry.name  # an entry someone else put there is never read
    planted.write_text(entry.read_text())
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(shared))
    assert not was_hit(load(file, registry))


def test_a_stale_temporary_file_is_removed(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry) -> None:
    load(write(tmp_path / "a.yaml", "name: a\nsteps:\n  - id: s\n    shell: [echo]\n"), registry)
    stale, fresh = cache_dir / ".dead.123.tmp", cache_dir / ".busy.456.tmp"
    stale.write_text("{")
    fresh.write_text("{")
    os.utime(stale, (1_000_000, 1_000_000))
    load(write(tmp_path / "b.yaml", "name: b\nsteps:\n  - id: s\n    shell: [echo]\n"), registry)
    assert not stale.exists() and fresh.exists()


def test_fingerprinted_steps_are_hashed_on_every_load(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    module = tmp_path / "site" / "cache_fp_fn.py"
    module.parent.mkdir()
    module.write_text("def work(ctx):\n    return 1\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(module.parent))
    file = write(
        tmp_path / "rb.yaml", "name: fp\nsteps:\n  - id: s\n    python: {call: 'cache_fp_fn:work'}\n  - id: t\n    shell: [echo]\n"
    )
    first = load(file, registry)
    before, before_content = dict(first.step_hashes), first.content_hash
    entry = json.loads(entries(cache_dir)[0].read_text().splitlines()[1])
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


def test_the_code_stamp_covers_runner_and_pyyaml() -> None:
    """Every top-level runner module (the compiler, the model, params, step types ...) and PyYAML's are stamped."""
    import yaml

    stamp = cc._code_stamp()
    root = Path(cc.__file__).parent
    for module in root.glob("*.py"):
        assert f"{module}=" in stamp, module.name
    assert f"{Path(yaml.__file__)}=" in stamp


YAML_VALUES = """\
name: yamlish
params:
  day: {type: string, default: 2024-01-01}
  at: {type: string, enum: [2024-01-01, 2024-02-01]}
  blob: {type: string, default: !!binary aGVsbG8=}
steps:
  - id: s
    shell: [echo, hi]
    expect: {stdout: {contains: hi}}
  - id: py
    python: {call: "os:getcwd"}
    expect: {output: 2024-01-01}
"""


def test_yaml_values_without_a_json_form_compile_to_their_json_form(tmp_path: Path, cache_dir: Path, registry: StepTypeRegistry,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A YAML date (or binary) in a param default, an enum or an expectation means what it means after a resume
    from the stored snapshot, which is JSON: the compiler gives that form, so a cache hit is the same runbook."""
    file = write(tmp_path / "rb.yaml", YAML_VALUES)
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", "off")
    fresh = load(file, registry)
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", str(cache_dir))
    load(file, registry)
    hit = load(file, registry)
    assert was_hit(hit)
    assert hit.spec == fresh.spec and hit.spec_json == fresh.spec_json
    assert fresh.spec.params["day"].default == "2024-01-01"
    assert fresh.spec.params["at"].enum == ["2024-01-01", "2024-02-01"]
    assert fresh.spec.steps[1].expect is not None and fresh.spec.steps[1].expect.output == "2024-01-01"
    for rb in (fresh, hit):
        assert rb.params_model.model_validate({"at": "2024-01-01"}).at == "2024-01-01"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_a_non_finite_number_is_refused_where_it_is(value: str, tmp_path: Path, registry: StepTypeRegistry) -> None:
    file = write(
        tmp_path / "rb.yaml", f"name: nan\nsteps:\n  - id: s\n    python: {{call: 'os:getcwd'}}\n    expect: {{output: {value}}}\n"
    )
    with pytest.raises(ValidationError) as info:
        load(file, registry)
    [problem] = info.value.problems
    assert problem.line == 5 and "must be finite" in problem.message


def test_a_secret_param_default_must_be_a_reference(tmp_path: Path, registry: StepTypeRegistry) -> None:
    """The compiled runbook is stored with each run and in the cache: a literal secret there would be stored."""
    file = write(tmp_path / "rb.yaml", "name: sec\nparams:\n  pw: {secret: true, default: hunter2}\nsteps:\n  - id: s\n    shell: [echo]\n")
    with pytest.raises(ValidationError) as info:
        load(file, registry)
    assert "never the value itself" in str(info.value) and "hunter2" not in str(info.value)
    ok = write(tmp_path / "ok.yaml", "name: sec\nparams:\n  pw: {secret: true, default: 'env:PW'}\nsteps:\n  - id: s\n    shell: [echo]\n")
    assert load(ok, registry).spec.params["pw"].default == "env:PW"


def test_a_tilde_in_the_cache_dir_is_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RUNBOOK_CACHE_DIR", "~/rbcache")
    cache = cc.default_cache()
    assert cache is not None and cache.directory == tmp_path / "rbcache"
