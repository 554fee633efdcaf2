"""The durable engine. See :class:`Engine` and DESIGN.md ("Step semantics", "Durability")."""

from runner.cursor import CommandHint
from runner.engine.engine import Engine
from runner.engine.execution import DriveOptions
from runner.views import NextAction, RunView, StepView

__all__ = ["CommandHint", "DriveOptions", "Engine", "NextAction", "RunView", "StepView"]
