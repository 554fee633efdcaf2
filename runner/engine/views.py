"""Moved: the view shapes live in :mod:`runner.views` and ``next`` in :mod:`runner.cursor` (re-exported here for plugins)."""

from runner.cursor import CommandHint
from runner.views import NextAction, RunView, StepView, exit_code_for, iso

__all__ = ["CommandHint", "NextAction", "RunView", "StepView", "exit_code_for", "iso"]
