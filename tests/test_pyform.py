"""The Python form says everything the YAML form says, and both compile to equal models."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.catalog import Catalog
from runner.errors import ValidationError
from runner.plugin import PluginHost

PY = '''
from pydantic import Field
from runner import Context, Params, Runbook, Secret


class RestartParams(Params):
    host: str = Field(description="Host to act on")
    service: str = Field(pattern=r"^[a-zA-Z0-9@._-]+$")
    port: int = Field(default=8080, ge=1, le=65535)
    token: Secret


rb = Runbook("restart-py", description="Restart a unit", version="2", tags=("systemd",), params=RestartParams,
             lock="host:{{ params.host }}", on_failure="rollback", secrets={"api": "env:API_TOKEN"})


@rb.step(retry={"attempts": 3, "delay": "2s"}, timeout="120s", expected="30s")
def restart(ctx: Context, p: RestartParams) -> dict:
    """Restart the unit"""
    return {"restarted": p.service}


@restart.precondition
def unit_exists(ctx, p) -> bool:
    """the unit exists"""
    return True


@restart.check
def already_active(ctx, p) -> bool:
    return False


@restart.verify(within="60s", every="2s")
def healthy(ctx, p) -> bool:
    return True


@restart.rollback
def start_again(ctx, p) -> None:
    return None


rb.add_step("confirm", approval={"message": "Re-enable traffic to {{ params.host }}?", "approvers": 2})
rb.add_step("probe", shell=["curl", "-fsS", "http://{{ params.host }}:{{ params.port }}/healthz"],
            check=[{"shell": ["true"], "expect": {"exit_code": 0}}], when="{{ params.port != 0 }}", idempotent=True)
rb.add_step("settle", wait={"for": "10s"})
'''

YAML = """
name: restart-yaml
description: Restart a unit
version: "2"
tags: [systemd]
params:
  host: {type: string, description: Host to act on}
  service: {type: string, pattern: '^[a-zA-Z0-9@._-]+$'}
  port: {type: integer, default: 8080, minimum: 1, maximum: 65535}
  token: {secret: true}
secrets:
  api: env:API_TOKEN
lock: "host:{{ params.host }}"
on_failure: rollback
steps:
  - id: restart
    description: Restart the unit
    python: {call: "runbook_catalog.restart_py:restart"}
    precondition:
      - python: {call: "runbook_catalog.restart_py:unit_exists"}
        description: the unit exists
    check:
      - python: {call: "runbook_catalog.restart_py:already_active"}
    verify:
      within: 60s
      every: 2s
      checks:
        - python: {call: "runbook_catalog.restart_py:healthy"}
    retry: {attempts: 3, delay: 2s}
    timeout: 120s
    expected: 30s
    rollback:
      python: {call: "runbook_catalog.restart_py:start_again"}
  - id: confirm
    approval: {message: "Re-enable traffic to {{ params.host }}?", approvers: 2}
  - id: probe
    shell: [curl, -fsS, "http://{{ params.host }}:{{ params.port }}/healthz"]
    check:
      - shell: ["true"]
        expect: {exit_code: 0}
    when: "{{ params.port != 0 }}"
    idempotent: true
  - id: settle
    wait: {for: 10s}
"""


def test_python_and_yaml_runbooks_compile_to_equal_models(tmp_path: Path) -> None:
    (tmp_path / "restart_py.py").write_text(PY, encoding="utf-8")
    (tmp_path / "restart.yaml").write_text(YAML, encoding="utf-8")
    catalog = Catalog.load(PluginHost().step_types, [tmp_path])
    assert catalog.problems == []
    py, yml = catalog.get("restart-py"), catalog.get("restart-yaml")
    assert py.spec.model_copy(update={"name": "x"}) == yml.spec.model_copy(update={"name": "x"})
    assert py.spec.steps[0].action.config == {"call": "runbook_catalog.restart_py:restart"}
    # the params models agree on what they accept and refuse
    good = {"host": "h", "service": "nginx", "token": "env:TOK"}
    for model in (py.params_model, yml.params_model):
        assert model.model_validate(good).model_dump() == {**good, "port": 8080}
        with pytest.raises(ValueError):
            model.model_validate({**good, "service": "nginx; reboot"})
        with pytest.raises(ValueError):
            model.model_validate({**good, "token": "the-literal-secret"})
    assert py.step_hashes.keys() == yml.step_hashes.keys()


def test_python_step_function_must_be_module_level() -> None:
    from runner.pyform import Runbook

    rb = Runbook("x")
    with pytest.raises(ValueError, match="module-level function"):
        rb.step()(lambda ctx, p: None)


def test_errors_in_python_runbooks_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad_py.py").write_text("from runner import Runbook\nrb = Runbook('bad')\nrb.add_step('a', shel=['true'])\n")
    (tmp_path / "boom.py").write_text("x = 1\nraise RuntimeError('kaboom')\n")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    catalog = Catalog.load(PluginHost().step_types, [tmp_path])
    text = "\n".join(str(p) for p in catalog.problems)
    assert "bad_py.py:3:1 (step 'a', field 'shel'): unknown key 'shel'" in text  # the line of the call
    assert "boom.py:2:1: importing the runbook failed: RuntimeError: kaboom" in text
    assert "syntax.py:1:7: Python syntax error" in text
    with pytest.raises(ValidationError):
        raise ValidationError(catalog.problems)
