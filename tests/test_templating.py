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
        renderer.render(
            {"command": ["echo", "{{ params.hots }}"]}, {"params": {"host": "a"}}, file="rb.yaml", step="restart", field="shell"
        )
    text = str(info.value)
    assert "rb.yaml" in text and "step 'restart'" in text and "field 'shell.command[1]'" in text and "hots" in text


def test_an_undeclared_param_is_named_with_the_declared_ones(renderer: Renderer) -> None:
    from runner.engine.runtime import ParamValues

    params = ParamValues({"host": "a", "port": 1}, {}, resolver=None)  # type: ignore[arg-type]
    with pytest.raises(TemplateError) as info:
        renderer.render("{{ params.hots }}", {"params": params}, file="rb.yaml", step="s", field="f")
    assert "no param 'hots' (params: host, port)" in str(info.value)
    assert "ParamValues" not in str(info.value)


def test_unknown_references_name_undeclared_params_and_steps(renderer: Renderer) -> None:
    refs = renderer.unknown_references
    assert refs("{{ params.host }} {{ params['port'] }} {{ steps.a.output }}", params={"host", "port"}, steps={"a"}) == []
    assert refs("{{ params[name] }} {{ steps[params.host] }}", params={"host"}, steps=set()) == []  # computed at run time
    [problem] = refs("{{ params.hots | upper }}", params={"host"}, steps=set())
    assert "param 'hots'" in problem and "(params: host)" in problem
    [problem] = refs("{% if steps['b'].state == 'x' %}y{% endif %}", params=set(), steps={"a"})
    assert "step 'b'" in problem and "(steps: a)" in problem


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


@pytest.mark.parametrize("name", ["items", "keys", "values", "get", "update", "pop", "copy", "setdefault", "clear"])
def test_a_key_named_like_a_mapping_method_is_the_key(renderer: Renderer, name: str) -> None:
    from runner.engine.runtime import ParamValues
    from runner.params import ParamSpec

    value = ["x", "y"]
    plain = {"params": {name: value}, "steps": {"a": {"output": {name: 7}}}, "item": {name: "i"}}
    assert renderer.render(f"{{{{ params.{name} }}}}", plain) == value
    assert renderer.render(f"n={{{{ params.{name} | length }}}}", plain) == "n=2"
    assert renderer.render(f"{{{{ steps.a.output.{name} }}}}", plain) == 7
    assert renderer.render(f"{{{{ item.{name} }}}}", plain) == "i"
    spec = ParamSpec.model_validate({"type": "array"})
    values = ParamValues({name: value}, {name: spec}, resolver=None)  # type: ignore[arg-type]
    assert renderer.render(f"{{{{ params.{name} }}}}", {"params": values}) == value


def test_mapping_methods_stay_methods_when_no_key_has_their_name(renderer: Renderer) -> None:
    ctx = {"params": {"a": 1, "b": 2}}
    assert renderer.render("{% for k, v in params.items() %}{{ k }}={{ v }} {% endfor %}", ctx) == "a=1 b=2 "
    assert renderer.render("{{ params.get('a') }}", ctx) == 1
    with pytest.raises(TemplateError, match="sandbox"):
        renderer.render("{{ params.update({'x': 1}) }}", ctx)  # a mutating method is still refused
    with pytest.raises(TemplateError):
        renderer.render("{{ params.missing }}", ctx)  # and a missing key is still an error


def test_a_data_key_named_like_a_dunder_gives_data_not_internals(renderer: Renderer) -> None:
    ctx = {"params": {"x": {"__class__": "data"}}}
    assert renderer.render("{{ params.x.__class__ }}", ctx) == "data"
    with pytest.raises(TemplateError):
        renderer.render("{{ params.x.__class__.__mro__ }}", ctx)


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
