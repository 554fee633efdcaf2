"""The durable engine. See :class:`Engine` and DESIGN.md ("Step semantics", "Durability")."""

from runner.engine.engine import Engine
from runner.engine.execution import DriveOptions
from runner.engine.views import CommandHint, NextAction, RunView, StepView

__all__ = ["CommandHint", "DriveOptions", "Engine", "NextAction", "RunView", "StepView"]
