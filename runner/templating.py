"""Template rendering for runbook fields.

Jinja2's ``SandboxedEnvironment`` with ``StrictUndefined``: a typo is an error,
not an empty string, and templates cannot reach Python internals. Only the
runbook's own strings are templates; values (params, outputs, alert labels)
are inserted as data and never rendered again, so a param such as
``{{ 7*7 }}`` or ``x; rm -rf /`` arrives literally.

On a mapping (``params``, ``steps``, ``steps.ID.output``, ``target``, ``item``, ``alert``), ``x.NAME`` is the key
``NAME`` when there is one, even where the mapping has a method of that name (a param called ``items`` or
``keys``); ``x.items()`` is the method only when no key has that name.

A field that is exactly one expression (``"{{ params.port }}"``) evaluates to
the expression's native value (an int stays an int); any other template
renders to a string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from runner.errors import TemplateError
from runner.steptypes import is_template

__all__ = ["Renderer"]

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{|\{%).)*)\}\}\s*$", re.S)


class Renderer:
    """Renders template strings found in nested config values. Compiled templates are cached."""

    def __init__(self, filters: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._filters = dict(filters or {})
        self._env: Any = None
        self._cache: dict[str, Callable[[Mapping[str, Any]], Any]] = {}

    @property
    def env(self) -> Any:
        """The sandboxed Jinja2 environment, built on first use (a runbook without templates never imports Jinja2)."""
        if self._env is None:
            from jinja2 import StrictUndefined
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            class Undefined(StrictUndefined):
                """StrictUndefined whose message comes from the object, when it can say what it holds."""

                @property
                def _undefined_message(self) -> str:
                    describe = getattr(self._undefined_obj, "describe_missing", None)
                    if callable(describe) and isinstance(self._undefined_name, str):
                        return str(describe(self._undefined_name))
                    return str(super()._undefined_message)

            class Environment(ImmutableSandboxedEnvironment):
                """``params.items`` is the param ``items``: on a mapping, a key comes before a method of the same name."""

                def getattr(self, obj: Any, attribute: str) -> Any:
                    if isinstance(obj, Mapping) and isinstance(attribute, str):
                        try:
                            return obj[attribute]  # what `obj[attribute]` gives anyway: the sandbox exposes nothing new
                        except KeyError:
                            pass
                    return super().getattr(obj, attribute)

            env = Environment(undefined=Undefined, autoescape=False, keep_trailing_newline=True)
            env.filters.update(self._filters)
            env.filters.setdefault("shquote", _shquote)
            self._env = env
        return self._env

    def _compile(self, text: str) -> Callable[[Mapping[str, Any]], Any]:
        fn = self._cache.get(text)
        if fn is None:
            single = _SINGLE.match(text)
            if single:
                expr = self.env.compile_expression(single.group("expr"), undefined_to_none=False)
                fn = expr
            else:
                template = self.env.from_string(text)
                fn = template.render
            self._cache[text] = fn
        return fn

    def check_syntax(self, text: str) -> str | None:
        """Return a syntax error message for ``text``, or ``None`` if it compiles."""
        from jinja2 import TemplateSyntaxError

        try:
            self._compile(text)
        except TemplateSyntaxError as exc:
            return f"template syntax error: {exc.message}"
        return None

    def unknown_references(self, text: str, *, params: Collection[str], steps: Collection[str]) -> list[str]:
        """What ``text`` (a template that compiles) names that the runbook does not declare, as messages.

        Looks for ``params.NAME`` / ``params["NAME"]`` with an undeclared NAME and ``steps.ID`` / ``steps["ID"]``
        with no such step, so ``runbook validate`` finds at once what would otherwise fail the run at that step.
        """
        from jinja2 import nodes

        problems: list[str] = []
        tree = self.env.parse(text)
        # a name the template binds itself ({% set params = ... %}, a loop variable, a macro argument) is not the
        # runbook's; `params.get(...)` and `params.items()` are the mapping's methods, not param names
        rebound = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        called = {id(c.node) for c in tree.find_all(nodes.Call) if isinstance(c.node, nodes.Getattr)}
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            base = node.node
            if not isinstance(base, nodes.Name) or base.name not in ("params", "steps") or base.name in rebound:
                continue
            if id(node) in called:
                continue
            if isinstance(node, nodes.Getattr):
                key: Any = node.attr
            elif isinstance(node.arg, nodes.Const):
                key = node.arg.value
            else:
                continue  # computed at run time
            known = params if base.name == "params" else steps
            if isinstance(key, str) and key not in known:
                what = "param" if base.name == "params" else "step"
                listed = ", ".join(sorted(known)) or "none"
                problems.append(f"template {text!r} refers to {what} '{key}', which the runbook does not declare ({what}s: {listed})")
        return problems

    def render(self, value: Any, context: Mapping[str, Any], *, file: str | None = None, step: str | None = None,
               field: str | None = None) -> Any:  # fmt: skip
        """Render every template string inside ``value`` (dicts and lists are walked)."""
        if isinstance(value, str):
            if not is_template(value):
                return value
            return self._render_one(value, context, file=file, step=step, field=field)
        if isinstance(value, dict):
            return {k: self.render(v, context, file=file, step=step, field=f"{field}.{k}" if field else str(k))
                    for k, v in value.items()}  # fmt: skip
        if isinstance(value, list | tuple):
            return [self.render(v, context, file=file, step=step, field=f"{field}[{i}]") for i, v in enumerate(value)]
        return value

    def _render_one(self, text: str, context: Mapping[str, Any], *, file: str | None, step: str | None, field: str | None) -> Any:
        from jinja2 import TemplateError as JinjaError
        from jinja2 import Undefined
        from jinja2.exceptions import SecurityError

        from runner.derived import render_tracked

        try:
            fn = self._compile(text)
            value = render_tracked(lambda: fn(context))  # what it derives from a secret is masked like the secret
            if isinstance(value, Undefined):
                str(value)  # StrictUndefined raises UndefinedError naming what is missing
            return value
        except SecurityError as exc:
            raise TemplateError(f"template not allowed by the sandbox: {exc}", file=file, step=step, field=field) from None
        except JinjaError as exc:
            raise TemplateError(f"template {text!r} failed: {exc.message or exc}", file=file, step=step, field=field) from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise TemplateError(f"template {text!r} failed: {exc}", file=file, step=step, field=field) from None

    def truthy(self, value: Any, context: Mapping[str, Any], *, file: str | None, step: str | None, field: str) -> bool:
        """Evaluate a ``when``/``expr`` condition. Plain strings are expressions too."""
        if isinstance(value, bool) or value is None:
            return bool(value) if value is not None else True
        text = value if is_template(value) else "{{ " + str(value) + " }}"
        result = self._render_one(text, context, file=file, step=step, field=field)
        if isinstance(result, str):
            return result.strip().lower() not in ("", "false", "no", "0", "none")
        return bool(result)


def _shquote(value: Any) -> str:
    import shlex

    return shlex.quote(str(value))
