"""Writing runbooks in Python.

A :class:`Runbook` object collects steps: Python functions through the
:meth:`Runbook.step` decorator, any other step type through
:meth:`Runbook.add_step` with the same keys a YAML step uses. It produces the
same document a YAML file would hold, and that document goes through the same
compiler, so both forms compile to equal models::

    from runner import Context, Params, Runbook

    class RestartParams(Params):
        service: str

    rb = Runbook("restart-service", params=RestartParams, description="Restart a unit and prove it is up")

    @rb.step(timeout="120s", retry=3)
    def restart(ctx: Context, p: RestartParams) -> dict:
        return ctx.shell(["systemctl", "restart", p.service]).as_dict()

    @restart.check
    def already_active(ctx: Context, p: RestartParams) -> bool:
        return ctx.shell(["systemctl", "is-active", p.service]).exit_code == 0

    @restart.verify(within="60s", every="2s")
    def healthy(ctx: Context, p: RestartParams) -> bool: ...

A Python step function is called as ``fn(ctx, params, **args)`` and referenced in
the compiled model as ``python: {call: "module:function"}``, exactly as a YAML
runbook would reference it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runner.model import RunbookSpec
    from runner.registry import StepTypeRegistry
    from runner.yamlsafe import Located

__all__ = ["Runbook", "StepHandle", "callable_ref"]

Site = tuple[str, int, int]
"""(file, line, column) of a call or decorator in a Python runbook, for located errors."""


def _call_site(depth: int = 2) -> Site | None:
    """Where the caller's caller stands (``depth`` frames up): the line and column of the call or decorator."""
    import inspect
    import linecache

    try:
        frame = sys._getframe(depth)
    except ValueError:
        return None
    info = inspect.getframeinfo(frame, context=0)
    col = (info.positions.col_offset if info.positions is not None else None) or 0
    text = linecache.getline(info.filename, info.lineno)
    if col > 0 and text[col - 1 : col] == "@":
        col -= 1  # a decorator: point at its '@'
    return info.filename, info.lineno, col + 1


def callable_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function, as the ``python`` step type resolves it."""
    qualname = getattr(fn, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname or not qualname:
        raise ValueError(f"{fn!r} must be a module-level function so a resumed run can find it again")
    return f"{fn.__module__}:{qualname}"


class StepHandle:
    """What :meth:`Runbook.step` returns: calling it calls the function; decorators add probes."""

    def __init__(self, fn: Callable[..., Any], fields: dict[str, Any], site: Site | None = None) -> None:
        self.fn, self.fields, self.site = fn, fields, site
        self.sites: dict[tuple[str | int, ...], Site] = {}  # where each decorated probe was added, by its path in the step
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "step")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = fn.__module__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def _probe(self, fn: Callable[..., Any]) -> dict[str, Any]:
        check: dict[str, Any] = {"python": {"call": callable_ref(fn)}}
        doc = (fn.__doc__ or "").strip().splitlines()
        if doc:
            check["description"] = doc[0]
        return check

    def _add(self, key: str, fn: Callable[..., Any], site: Site | None) -> None:
        items = self.fields.setdefault(key, [])
        if site is not None:
            self.sites[(key, len(items))] = site
        items.append(self._probe(fn))

    def check(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add an idempotency probe: if every check returns true, the step is already ``satisfied``."""
        self._add("check", fn, _call_site())
        return fn

    def precondition(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add a precondition: if it returns false, the step is ``blocked`` and nothing is changed."""
        self._add("precondition", fn, _call_site())
        return fn

    def verify(self, fn: Callable[..., Any] | None = None, *, within: str | float | None = None,
               every: str | float | None = None) -> Any:  # fmt: skip
        """Add a verification polled after the action (``@s.verify`` or ``@s.verify(within="60s")``)."""

        site = _call_site()

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            verify = self.fields.setdefault("verify", {"checks": []})
            if site is not None:
                self.sites.setdefault(("verify",), site)
                self.sites[("verify", "checks", len(verify["checks"]))] = site
            if within is not None:
                verify["within"] = within
            if every is not None:
                verify["every"] = every
            verify["checks"].append(self._probe(f))
            return f

        return add(fn) if fn is not None else add

    def rollback(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Set the action that undoes this step when the runbook's ``on_failure`` is ``rollback``."""
        self.fields["rollback"] = {"python": {"call": callable_ref(fn)}}
        site = _call_site()
        if site is not None:
            self.sites[("rollback",)] = site
        return fn


class Runbook:
    """A runbook written in Python. Module-level instances are found by the catalog."""

    def __init__(
        self,
        name: str,
        *,
        description: str = "",
        version: str = "1",
        tags: tuple[str, ...] | list[str] = (),
        params: type[BaseModel] | None = None,
        secrets: dict[str, str] | None = None,
        lock: str | None = None,
        on_failure: str = "stop",
        defaults: dict[str, dict[str, Any]] | None = None,
        include: str | Sequence[str] | None = None,
    ) -> None:
        """``defaults`` and ``include`` are the YAML form's ``defaults:`` and top-level ``include:``
        (see :mod:`runner.defaults`, :mod:`runner.includes`)."""
        self.name, self.description, self.version = name, description, version
        self.tags, self.params_model, self.secrets = list(tags), params, dict(secrets or {})
        self.lock, self.on_failure = lock, on_failure
        self.defaults = dict(defaults or {})
        self.include = [include] if isinstance(include, str) else list(include or [])
        self.site = _call_site()
        self._steps: list[dict[str, Any] | StepHandle] = []
        self._sites: list[Site | None] = []

    def step(self, id: str | None = None, **fields: Any) -> Callable[[Callable[..., Any]], StepHandle]:
        """Decorate ``fn(ctx, params)`` as a ``python`` step; ``fields`` are the YAML step fields."""
        site = _call_site()

        def decorate(fn: Callable[..., Any]) -> StepHandle:
            step: dict[str, Any] = {"id": id or fn.__name__}
            doc = (fn.__doc__ or "").strip().splitlines()
            if doc and "description" not in fields:
                step["description"] = doc[0]
            step["python"] = {"call": callable_ref(fn)}
            step.update(fields)
            handle = StepHandle(fn, step, site)
            self._steps.append(handle)
            self._sites.append(site)
            return handle

        return decorate

    def add_step(self, id: str, **fields: Any) -> None:
        """Add a step of any type with the keys a YAML step uses: ``rb.add_step("x", shell=["true"])``."""
        self._steps.append({"id": id, **fields})
        self._sites.append(_call_site())

    def include_steps(self, path: str) -> None:
        """Add the steps of a YAML file on the search path here (``- include: PATH`` in a YAML runbook's steps)."""
        self._steps.append({"include": path})
        self._sites.append(_call_site())

    def document(self) -> dict[str, Any]:
        """The runbook as the document a YAML file would hold (params as a spec mapping)."""
        from runner.params import spec_from_model

        doc: dict[str, Any] = {"name": self.name, "steps": []}
        for key, value in (("description", self.description), ("version", self.version), ("tags", self.tags),
                           ("secrets", self.secrets), ("lock", self.lock)):  # fmt: skip
            if value:
                doc[key] = value
        if self.on_failure != "stop":
            doc["on_failure"] = self.on_failure
        if self.defaults:
            doc["defaults"] = {k: dict(v) if isinstance(v, dict) else v for k, v in self.defaults.items()}
        if self.include:
            doc["include"] = list(self.include)
        if self.params_model is not None:
            doc["params"] = {n: s.model_dump(exclude_unset=True) for n, s in spec_from_model(self.params_model).items()}
        for step in self._steps:
            doc["steps"].append(dict(step.fields) if isinstance(step, StepHandle) else dict(step))
        return doc

    def located(self, file: str = "<python>") -> Located:
        """:meth:`document` with the line and column of the call or decorator that wrote each part of it."""
        from runner.yamlsafe import Located

        doc = self.document()
        located = Located(data=doc, file=file)
        real = os.path.realpath(file)

        def put(path: tuple[str | int, ...], site: Site | None) -> None:
            if site is not None and os.path.realpath(site[0]) == real:
                located.positions[path] = located.values[path] = (site[1], site[2])

        put((), self.site)
        for key in doc:
            put((key,), self.site)
        for name, field_site in _field_sites(self.params_model).items():
            put(("params", name), field_site)
        for i, (step, site) in enumerate(zip(self._steps, self._sites, strict=True)):
            put(("steps", i), site)
            if isinstance(step, StepHandle):
                for rel, probe_site in step.sites.items():
                    put(("steps", i, *rel), probe_site)
        return located

    def compile(self, registry: StepTypeRegistry, file: str = "<python>", *,
                search: Sequence[str | os.PathLike[str]] | None = None) -> RunbookSpec:  # fmt: skip
        """Compile to the validated model, exactly as a YAML runbook would be (errors name the line of the call
        or decorator that wrote the part at fault)."""
        from runner.compiler import compile_document

        return compile_document(self.located(file), registry, search=search)[0]


def _field_sites(model: type[BaseModel] | None) -> dict[str, Site]:
    """Where each field of a params class is written (none when its source cannot be read)."""
    import ast
    import inspect
    import textwrap

    if model is None:
        return {}
    try:
        file = inspect.getsourcefile(model)
        lines, start = inspect.getsourcelines(model)
        text = "".join(lines)
        indent = len(text) - len(text.lstrip(" "))
        tree = ast.parse(textwrap.dedent(text))
    except (OSError, TypeError, SyntaxError):
        return {}
    out: dict[str, Site] = {}
    for node in ast.walk(tree):
        if file and isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.setdefault(node.target.id, (file, start + node.lineno - 1, indent + node.col_offset + 1))
    return out
