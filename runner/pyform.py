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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from runner.model import RunbookSpec
    from runner.registry import StepTypeRegistry

__all__ = ["Runbook", "StepHandle", "callable_ref"]


def callable_ref(fn: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function, as the ``python`` step type resolves it."""
    qualname = getattr(fn, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname or not qualname:
        raise ValueError(f"{fn!r} must be a module-level function so a resumed run can find it again")
    return f"{fn.__module__}:{qualname}"


class StepHandle:
    """What :meth:`Runbook.step` returns: calling it calls the function; decorators add probes."""

    def __init__(self, fn: Callable[..., Any], fields: dict[str, Any]) -> None:
        self.fn, self.fields = fn, fields
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

    def check(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add an idempotency probe: if every check returns true, the step is already ``satisfied``."""
        self.fields.setdefault("check", []).append(self._probe(fn))
        return fn

    def precondition(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Add a precondition: if it returns false, the step is ``blocked`` and nothing is changed."""
        self.fields.setdefault("precondition", []).append(self._probe(fn))
        return fn

    def verify(self, fn: Callable[..., Any] | None = None, *, within: str | float | None = None,
               every: str | float | None = None) -> Any:  # fmt: skip
        """Add a verification polled after the action (``@s.verify`` or ``@s.verify(within="60s")``)."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            verify = self.fields.setdefault("verify", {"checks": []})
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
    ) -> None:
        self.name, self.description, self.version = name, description, version
        self.tags, self.params_model, self.secrets = list(tags), params, dict(secrets or {})
        self.lock, self.on_failure = lock, on_failure
        self._steps: list[dict[str, Any] | StepHandle] = []

    def step(self, id: str | None = None, **fields: Any) -> Callable[[Callable[..., Any]], StepHandle]:
        """Decorate ``fn(ctx, params)`` as a ``python`` step; ``fields`` are the YAML step fields."""

        def decorate(fn: Callable[..., Any]) -> StepHandle:
            step: dict[str, Any] = {"id": id or fn.__name__}
            doc = (fn.__doc__ or "").strip().splitlines()
            if doc and "description" not in fields:
                step["description"] = doc[0]
            step["python"] = {"call": callable_ref(fn)}
            step.update(fields)
            handle = StepHandle(fn, step)
            self._steps.append(handle)
            return handle

        return decorate

    def add_step(self, id: str, **fields: Any) -> None:
        """Add a step of any type with the keys a YAML step uses: ``rb.add_step("x", shell=["true"])``."""
        self._steps.append({"id": id, **fields})

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
        if self.params_model is not None:
            doc["params"] = {n: s.model_dump(exclude_unset=True) for n, s in spec_from_model(self.params_model).items()}
        for step in self._steps:
            doc["steps"].append(dict(step.fields) if isinstance(step, StepHandle) else dict(step))
        return doc

    def compile(self, registry: StepTypeRegistry, file: str = "<python>") -> RunbookSpec:
        """Compile to the validated model, exactly as a YAML runbook would be."""
        from runner.compiler import compile_runbook

        return compile_runbook(self.document(), registry, file=file)
