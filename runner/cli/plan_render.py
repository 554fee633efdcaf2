"""Human rendering of ``runbook plan``: a line per step, the action as it would run, targets and sub-runbooks indented."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from runner.engine.planview import PlanStep, PlanView

__all__ = ["print_plan"]

_MARKS = {"would-run": "[blue]▸[/]", "already-satisfied": "[cyan]=[/]", "would-skip": "[dim]-[/]", "blocked": "[red]⊘[/]",
          "would-wait": "[yellow]…[/]", "cannot-know": "[magenta]?[/]", "depends-on-earlier-change": "[yellow]~[/]"}  # fmt: skip


def print_plan(console: Console, view: PlanView) -> None:
    """Every step with its verdict and why, the action rendered (secrets masked), then pre-flight's problems."""
    console.print(f"plan for [bold]{_e(view.runbook)}[/] (read-only probes; nothing was changed)")
    _steps(console, view, "")
    if view.stops_at:
        console.print(f"[red]a run would fail at step '{_e(view.stops_at)}' (its precondition does not hold)[/]")
    if view.problems:
        console.print(f"[red]pre-flight: a run would fail before its first step, changing nothing ({len(view.problems)} "
                      f"problem{'s' if len(view.problems) > 1 else ''}):[/]")  # fmt: skip
        for p in view.problems:
            where = f"step '{p['step']}'" + (f" ({p['target']})" if p.get("target") else "") + ": " if p.get("step") else ""
            console.print(f"  - {_e(where + p['message'])}", highlight=False)
    console.print(", ".join(f"{n} {k}" for k, n in view.summary.items()))


def _steps(console: Console, view: PlanView, indent: str) -> None:
    for s in view.steps:
        console.print(f"{indent}{_MARKS.get(s.verdict, '·')} [bold]{_e(s.id)}[/] {s.verdict} [dim]— {_e(s.reason)}[/]", highlight=False)
        _detail(console, s, indent + "    ")


def _detail(console: Console, s: PlanStep, indent: str) -> None:
    if s.action and s.targets is None and s.runbook is None and s.action not in s.reason:
        console.print(f"{indent}[dim]{s.type}:[/] {_e(s.action)}", highlight=False)
    for t in s.targets or []:
        why = f" [dim]— {_e(t.reason)}[/]" if t.verdict != s.verdict or len({u.verdict for u in s.targets or []}) > 1 else ""
        console.print(f"{indent}{_MARKS.get(t.verdict, '·')} {_e(t.name)} {t.verdict}: {_e(t.action or '')}{why}", highlight=False)
    if s.runbook is not None:
        from runner.engine.planview import PlanView

        child = PlanView.model_validate(s.runbook)
        console.print(f"{indent}[dim]sub-runbook {_e(child.runbook)} with {_e(str(child.params))}:[/]", highlight=False)
        _steps(console, child, indent + "  ")


def _e(text: str) -> str:
    from rich.markup import escape

    return escape(text)
