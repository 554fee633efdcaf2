"""Plugin loading through the ``runbook`` entry-point group, exactly as a third-party plugin is installed."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest

from runner import hookspecs
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent

PLUGIN = """
from pydantic import Field
from runner.plugin import hookimpl
from runner.steptypes import ActionResult, StepConfig, StepType


class GreetConfig(StepConfig):
    name: str = Field(description="who")


class Greet(StepType):
    name = "greet"
    Config = GreetConfig
    probe = True

    def execute(self, config, ctx):
        return ActionResult(output={"greeting": f"hello {config.name}"}, ok=True, detail="greeted")


@hookimpl
def runbook_register_step_types(registry):
    registry.add(Greet())


@hookimpl
def runbook_register_template_filters(registry):
    registry.add("shout", lambda s: str(s).upper() + "!")
"""


def install_plugin(root: Path, module: str, source: str, entry_name: str | None = None) -> Path:
    """Write ``module.py`` and a dist-info whose entry_points.txt registers it in the ``runbook`` group."""
    site = root / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    dist = site / f"{module}_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}-dist\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[runbook]\n{entry_name or module} = {module}\n", encoding="utf-8")
    return site


@pytest.fixture
def plugged(project: Project) -> Project:
    site = install_plugin(project.root.parent, "rb_greet", PLUGIN, "greet")
    project.env["PYTHONPATH"] = str(site)
    return project


def test_third_party_step_type_and_filter_are_usable(plugged: Project) -> None:
    plugged.write(
        "hi.yaml",
        """
        name: hi
        params: {who: {type: string}}
        steps:
          - id: greet
            greet: {name: "{{ params.who | shout }}"}
    """,
    )
    res = plugged.run("run", "hi", "-p", "who=ada", "--json")
    assert res.code == 0, res
    assert res.json()["steps"][0]["output"] == {"greeting": "hello ADA!"}
    plugins = {p["name"]: p for p in plugged.run("plugins", "--json").json()["plugins"]}
    assert plugins["greet"]["contributes"]["step_types"] == ["greet"]
    assert plugins["greet"]["contributes"]["template_filters"] == ["shout"]
    assert plugins["greet"]["distribution"] == "rb_greet-dist 0.1"
    assert plugins["shell"]["distribution"].startswith("runbook "), "built-ins register through the same entry-point group"


def test_schema_includes_third_party_step_types(plugged: Project) -> None:
    schema = plugged.run("schema").json()
    assert "greet" in schema["$defs"]["step"]["properties"]
    assert {"required": ["greet"]} in schema["$defs"]["step"]["oneOf"]


def test_disabled_plugin_is_not_loaded(plugged: Project) -> None:
    res = plugged.run("plugins", "--json", env={"RUNBOOK_DISABLE_PLUGINS": "greet"})
    assert res.code == 0, res
    assert "greet" not in {p["name"] for p in res.json()["plugins"]}
    assert res.json()["disabled"] == ["greet"]


def test_misspelt_hook_fails_loudly(project: Project) -> None:
    site = install_plugin(
        project.root.parent,
        "rb_typo",
        """
        from runner.plugin import hookimpl

        @hookimpl
        def runbook_register_step_type(registry):
            pass
    """,
    )
    res = project.run("list", env={"PYTHONPATH": str(site)})
    assert res.code == 2, res
    assert "rb_typo" in res.err and "runbook_register_step_type" in res.err
    assert res.err.count("\n") == 1, "one clear line, no traceback"


def test_two_plugins_claiming_one_step_type_is_an_error_naming_both(project: Project) -> None:
    site = install_plugin(
        project.root.parent,
        "rb_shell2",
        """
        from runner.plugin import hookimpl
        from runbook_shell.step import ShellStep

        @hookimpl
        def runbook_register_step_types(registry):
            registry.add(ShellStep())
    """,
    )
    project.write("x.yaml", "name: x\nsteps: [{id: a, shell: [true]}]\n")
    res = project.run("list", env={"PYTHONPATH": str(site)})
    assert res.code == 2, res
    assert "step type 'shell' is registered by both plugin" in res.err
    assert "'shell'" in res.err and "'rb_shell2'" in res.err


def test_broken_plugin_import_is_a_clear_error(project: Project) -> None:
    site = install_plugin(project.root.parent, "rb_broken", "import no_such_module_xyz\n")
    res = project.run("list", env={"PYTHONPATH": str(site)})
    assert res.code == 2, res
    assert "could not load a 'runbook' entry-point plugin" in res.err and "no_such_module_xyz" in res.err


def test_every_hook_is_documented() -> None:
    """Every hook spec has a docstring and a section in docs/plugins.md, and the docs name no stale hook."""
    specs = {name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("runbook_")}
    assert specs, "no hook specs found"
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^### `(runbook_\w+)`", docs, flags=re.M))
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hook {name} has no docstring"
    assert documented == specs, f"undocumented: {specs - documented}; stale: {documented - specs}"


WRAPPERS = """
import os
from runner.plugin import hookimpl

SEEN = os.environ["WRAP_LOG"]


@hookimpl(wrapper=True)
def runbook_on_event(event, run):
    with open(SEEN, "a") as f:
        f.write(f"before {event.type}\\n")
    result = yield
    with open(SEEN, "a") as f:
        f.write(f"after {event.type}\\n")
    return result


@hookimpl(specname="runbook_on_event")
def plain_observer(event, run):
    with open(SEEN, "a") as f:
        f.write(f"saw {event.type}\\n")
"""

WRAPPED_REGISTER = """
from runner.plugin import hookimpl


@hookimpl(wrapper=True)
def runbook_register_step_types(registry):
    return (yield)
"""


def test_a_wrapper_on_runbook_on_event_wraps_every_committed_event(project: Project) -> None:
    log = project.root / "wrap.log"
    site = install_plugin(project.root, "wrapping", WRAPPERS)
    project.env["PYTHONPATH"] = str(site)
    project.write("one.yaml", "name: one\nsteps:\n  - {id: a, shell: [echo, a]}\n")
    res = project.run("run", "one", env={"WRAP_LOG": str(log)})
    assert res.code == 0, res
    lines = log.read_text().splitlines()
    assert lines[:3] == ["before run.started", "saw run.started", "after run.started"], lines
    assert lines[-3:] == ["before run.succeeded", "saw run.succeeded", "after run.succeeded"], lines


def test_a_wrapper_on_a_register_hook_is_refused_not_ignored(project: Project) -> None:
    site = install_plugin(project.root, "badwrap", WRAPPED_REGISTER)
    project.env["PYTHONPATH"] = str(site)
    project.write("one.yaml", "name: one\nsteps:\n  - {id: a, shell: [echo, a]}\n")
    res = project.run("run", "one")
    assert res.code == 2, res
    assert "badwrap" in res.err and "runbook_register_step_types as a wrapper" in res.err, res.err
