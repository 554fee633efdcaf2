"""Compiling runbook documents: every problem located, exactly one step type per step, typed configs."""

from __future__ import annotations

from typing import Any

import pytest

from runner.compiler import compile_runbook
from runner.errors import ValidationError
from runner.plugin import PluginHost
from runner.registry import StepTypeRegistry
from runner.yamlsafe import load_yaml


@pytest.fixture(scope="module")
def registry() -> StepTypeRegistry:
    return PluginHost().step_types


def compile_text(text: str, registry: StepTypeRegistry) -> Any:
    located = load_yaml(text, "rb.yaml")
    return compile_runbook(located.data, registry, located=located, file="rb.yaml")


def problems(text: str, registry: StepTypeRegistry) -> list[str]:
    with pytest.raises(ValidationError) as info:
        compile_text(text, registry)
    return [str(p) for p in info.value.problems]


def test_shorthand_and_full_forms_compile_to_the_same_action(registry: StepTypeRegistry) -> None:
    short = compile_text("name: a\nsteps:\n  - id: s\n    shell: [echo, hi]\n", registry)
    full = compile_text("name: a\nsteps:\n  - id: s\n    shell: {command: [echo, hi]}\n", registry)
    assert short == full
    assert short.steps[0].action.type == "shell"
    assert short.steps[0].action.config == {"command": ["echo", "hi"]}


def test_all_problems_are_reported_with_positions(registry: StepTypeRegistry) -> None:
    found = problems(
        """\
        name: many
        steps:
          - id: one
            shel: [true]
          - id: two
            shell: [true]
            timeout: soon
          - id: one
            shell: {command: [x], port: 3}
          - id: four
        """.replace("        ", ""),
        registry,
    )
    assert len(found) == 5, found
    assert found[0].startswith("rb.yaml:4:5 (step 'one', field 'shel'): unknown key 'shel': did you mean 'shell'?")
    assert any(p.startswith("rb.yaml:7:14 (step 'two', field 'timeout')") and "duration" in p for p in found)
    assert any(p.startswith("rb.yaml:8:5 (step 'one', field 'id'): duplicate step id 'one' (first used at line 3)") for p in found)
    assert any("rb.yaml:9:27 (step 'one', field 'shell.port'): unknown key 'port'" in p for p in found)
    assert any(p.startswith("rb.yaml:10:5 (step 'four')") and "no step type" in p for p in found)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("shell: [true]\n    python: {call: 'a:b'}", "more than one step type (shell, python)"),
        ("shell: [true]\n    check: [{approval: {message: hi}}]", "cannot be used as a check"),
        ("shell: [true]\n    check: [{description: nothing}]", "a check needs one probe step type"),
        ("shell: [true]\n    retry: {attempts: 0}", "greater than or equal to 1"),
        ("shell: [true]\n    batch: {max_concurrency: lots}", "percentage"),
        ("shell: [true]\n    rollback: {nope: {}}", "unknown step type 'nope'"),
        ("shell: {command: [a], script: b}", "exactly one of 'command'"),
        ("python: {call: not-a-ref}", "String should match pattern"),
        ("wait: {for: 1s, until: '2026-01-01T00:00:00Z'}", "exactly one of 'for', 'until' or 'checks'"),
        ("wait: {checks: [{bogus: 1}]}", "unknown key 'bogus'"),
    ],
    ids=[
        "two-types",
        "approval-as-check",
        "empty-check",
        "retry-zero",
        "batch",
        "rollback-type",
        "shell-both",
        "python-ref",
        "wait-both",
        "wait-nested-check",
    ],
)
def test_step_errors(step: str, message: str, registry: StepTypeRegistry) -> None:
    found = problems(f"name: x\nsteps:\n  - id: s\n    {step}\n", registry)
    assert any(message in p for p in found), found


def test_params_spec_is_checked(registry: StepTypeRegistry) -> None:
    found = problems(
        "name: x\nparams:\n  bad-name: string\n  p: {type: float}\n  q: {pattern: '('}\nsteps:\n  - {id: s, shell: [true]}\n", registry
    )
    assert any("must be an identifier" in p for p in found)
    assert any("field 'params.p.type'" in p for p in found)
    assert any("invalid regular expression" in p for p in found)


def test_templates_are_accepted_in_typed_fields(registry: StepTypeRegistry) -> None:
    spec = compile_text("name: x\nsteps:\n  - id: s\n    shell: {command: [true], max_output: '{{ params.n }}'}\n", registry)
    assert spec.steps[0].action.config["max_output"] == "{{ params.n }}"
    found = problems("name: x\nsteps:\n  - id: s\n    shell: {command: [true], max_output: lots}\n", registry)
    assert any("max_output" in p for p in found)


def test_runbook_name_is_validated(registry: StepTypeRegistry) -> None:
    found = problems("name: ../../etc/passwd\nsteps:\n  - {id: s, shell: [true]}\n", registry)
    assert any("name" in p and "pattern" in p for p in found)


def test_nested_wait_checks_are_compiled(registry: StepTypeRegistry) -> None:
    spec = compile_text("name: x\nsteps:\n  - id: w\n    wait: {every: 1s, checks: [{shell: [test, -f, x]}]}\n", registry)
    assert spec.steps[0].action.config["checks"] == [{"type": "shell", "config": {"command": ["test", "-f", "x"]}}]


def test_template_free_configs_keep_the_compiled_model_and_templated_ones_do_not(registry: StepTypeRegistry) -> None:
    spec = compile_text(
        "name: a\nparams:\n  n: {type: integer, default: 1}\nsteps:\n  - id: plain\n    shell: [echo, hi]\n"
        "  - id: templated\n    shell: [echo, '{{ params.n }}']\n  - id: script\n    shell: 'echo {{ params.n }}'\n",
        registry,
    )
    plain, templated, script = (s.action for s in spec.steps)
    config = registry.get("shell").Config
    assert isinstance(plain.validated, config) and plain.validated == config.model_validate(plain.config, context={"rendered": True})
    assert templated.validated is None  # rendered per run, then validated
    assert isinstance(script.validated, config)  # a script is passed to sh unrendered: nothing to render
    # the model is the one the engine would build from the stored form: a YAML date is the string it stores
    body = compile_text("name: a\nsteps:\n  - id: post\n    http: {url: 'http://127.0.0.1:9/', method: POST, json: {day: 2024-01-01}}\n",
                        registry).steps[0].action  # fmt: skip
    assert body.config["json"] == {"day": "2024-01-01"} and body.validated.json_ == {"day": "2024-01-01"}
    # a step type whose execute may change its config (python hands `args` to user code) is validated per action
    python = compile_text("name: a\nsteps:\n  - id: py\n    python: {call: 'os.path:join', args: {a: [1]}}\n", registry)
    assert python.steps[0].action.validated is None
    # the remembered model is a cache, not part of the action: a snapshot read back compares equal
    from runner.model import RunbookSpec

    again = RunbookSpec.model_validate(spec.model_dump(mode="json", by_alias=True))
    assert again == spec and again.steps[0].action.validated is None


def test_the_engine_hands_each_action_its_own_copy_of_a_remembered_config(registry: StepTypeRegistry) -> None:
    from runner.engine.probes import Prober
    from runner.secrets import Redactor
    from runner.templating import Renderer

    action = compile_text("name: a\nsteps:\n  - id: s\n    shell: [echo, hi]\n", registry).steps[0].action
    prober = Prober(PluginHost(), Renderer(), "rb.yaml", Redactor())
    shell = registry.get("shell")
    first = prober.render_config(shell, action.config, {}, "s", "shell", action.validated)
    first.cwd = "/elsewhere"  # a step type changing its config must not change the next run's
    second = prober.render_config(shell, action.config, {}, "s", "shell", action.validated)
    assert second.cwd is None and second is not action.validated and second.command == ["echo", "hi"]


HASHED = """name: hashes
description: stable hashes
params:
  port: {type: integer, default: 8080}
steps:
  - id: probe
    description: check then act
    check:
      - shell: [test, -f, /tmp/x]
    shell: [touch, /tmp/x]
  - id: web
    http: {url: "http://127.0.0.1:{{ params.port }}/"}
    retry: {attempts: 3, delay: 1s}
  - id: pause
    wait: {for: 1s}
"""


def test_content_and_step_hashes_are_stable_across_versions(registry: StepTypeRegistry) -> None:
    """Runs store these hashes: if they change, resuming a run started by an earlier version reports every step
    as edited. Change the expected values only deliberately, and say so in the release notes."""
    from runner.catalog import LoadedRunbook
    from runner.params import build_params_model

    spec = compile_text(HASHED, registry)
    rb = LoadedRunbook(spec, "rb.yaml", build_params_model(spec.name, spec.params), registry)
    assert rb.step_hashes == {"probe": "6dba4395ede31b4f", "web": "2a3714e375ecf5ec", "pause": "99d5ae0654fba9e0"}
    assert rb.content_hash == "8d64f2191d34dc20"
    assert rb.spec_json == spec.model_dump(mode="json", by_alias=True)
