"""The ``python`` step type."""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import Field

from runner.errors import RunbookError, StepFailed
from runner.steptypes import ActionResult, StepConfig, StepType

if TYPE_CHECKING:
    from runner.context import Context

__all__ = ["PythonConfig", "PythonStep", "resolve_callable"]


class PythonConfig(StepConfig):
    """Config of a ``python`` step."""

    call: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description="'module:function' to call")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments (templates allowed)")


def resolve_callable(ref: str) -> Callable[..., Any]:
    """Import ``module:qualname`` and return the object (modules of Python runbooks are already loaded)."""
    module_name, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepFailed(f"python step: cannot import module '{module_name}' for '{ref}': {exc}") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StepFailed(f"python step: '{module_name}' has no attribute '{qualname}'") from None
    if not callable(obj):
        raise StepFailed(f"python step: '{ref}' is not callable")
    return obj  # type: ignore[no-any-return]


class PythonStep(StepType):
    """Call ``module:function`` as ``function(ctx, params, **args)``."""

    name = "python"
    Config = PythonConfig
    description = "Call a Python function `module:function(ctx, params, **args)`"
    probe = True

    def summary(self, config: dict[str, Any]) -> str:
        """``module:function(args)``."""
        args = ", ".join(f"{k}={v!r}" for k, v in config.get("args", {}).items())
        return f"{config.get('call')}({args})"

    def fingerprint(self, config: dict[str, Any]) -> str | None:
        """Hash of the function's source, so editing the code counts as editing the step."""
        try:
            fn = resolve_callable(str(config.get("call")))
            fn = getattr(fn, "fn", fn)  # StepHandle of the Python form
            source = inspect.getsource(fn)
        except (StepFailed, OSError, TypeError):
            return None
        return hashlib.sha256(source.encode()).hexdigest()[:16]

    def execute(self, config: PythonConfig, ctx: Context) -> ActionResult:
        """Call the function and turn its return value into a result."""
        fn = resolve_callable(config.call)
        try:
            value = fn(ctx, ctx.params, **config.args)
        except RunbookError:
            raise
        except Exception as exc:
            raise StepFailed(f"{config.call} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(value, ActionResult):
            return value
        if isinstance(value, bool):
            return ActionResult(output=value, ok=value, detail=f"returned {value}")
        shown = ctx.redactor.text(repr(value))  # before cutting: a secret cut in half would escape the redactor
        return ActionResult(output=value, detail=f"returned {shown if len(shown) <= 80 else shown[:77] + '...'}")
