"""Templates: sandboxed, strict, and values are data that is never rendered again."""

from __future__ import annotations

import pytest

from runner.errors import TemplateError
from runner.templating import Renderer


@pytest.fixture
def renderer() -> Renderer:
    return Renderer()


@pytest.mark.parametrize("value", ["x; rm -rf /", "{{ 7*7 }}", "{% for x in range(9) %}x{% endfor %}", "$(reboot)", "`id`", "a\nb"])
def test_param_values_arrive_literally(renderer: Renderer, value: str) -> None:
    ctx = {"params": {"x": value}}
    assert renderer.render("{{ params.x }}", ctx) == value
    assert renderer.render(["echo", "{{ params.x }}"], ctx) == ["echo", value]
    assert renderer.render("pre-{{ params.x }}-post", ctx) == f"pre-{value}-post"


def test_single_expression_keeps_native_type(renderer: Renderer) -> None:
    ctx = {"params": {"n": 8080, "hosts": ["a", "b"], "flag": False}}
    assert renderer.render("{{ params.n }}", ctx) == 8080
    assert renderer.render("{{ params.hosts }}", ctx) == ["a", "b"]
    assert renderer.render(" {{ params.flag }} ", ctx) is False
    assert renderer.render("port {{ params.n }}", ctx) == "port 8080"
    assert renderer.render("{{ params.n }}{{ params.n }}", ctx) == "80808080"


def test_undefined_is_an_error_naming_file_step_and_field(renderer: Renderer) -> None:
    with pytest.raises(TemplateError) as info:
        renderer.render({"command": ["echo", "{{ params.hots }}"]}, {"params": {"host": "a"}}, file="rb.yaml", step="restart", field="shell")
    text = str(info.value)
    assert "rb.yaml" in text and "step 'restart'" in text and "field 'shell.command[1]'" in text and "hots" in text


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ params.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.system('id') }}",
        "{{ params.update({'x': 1}) }}",
    ],
    ids=["mro", "globals", "cycler", "mutation"],
)
def test_sandbox_blocks_escapes(renderer: Renderer, template: str) -> None:
    with pytest.raises(TemplateError):
        renderer.render(template, {"params": {"x": 0}}, file="f", step="s", field="x")


def test_conditions(renderer: Renderer) -> None:
    ctx = {"params": {"n": 3, "env": "prod"}}
    assert renderer.truthy("params.n > 2", ctx, file=None, step="s", field="when") is True
    assert renderer.truthy("{{ params.env == 'dev' }}", ctx, file=None, step="s", field="when") is False
    assert renderer.truthy(True, ctx, file=None, step="s", field="when") is True
    assert renderer.truthy("{{ 'false' }}", ctx, file=None, step="s", field="when") is False


def test_syntax_errors_are_reported(renderer: Renderer) -> None:
    assert renderer.check_syntax("{{ params.x") is not None
    assert renderer.check_syntax("{{ params.x }}") is None


def test_plugin_filters(renderer: Renderer) -> None:
    assert Renderer({"shout": lambda s: s.upper()}).render("{{ params.x | shout }}", {"params": {"x": "hi"}}) == "HI"
    assert renderer.render("{{ params.x | shquote }}", {"params": {"x": "a b'c"}}) == "'a b'\"'\"'c'"
