"""Human rendering of runs: progress lines while a run executes, and the run summary."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from runner.engine.planner import PlanView
    from runner.engine.views import RunView
    from runner.store.records import Event, RunRecord

__all__ = ["Progress", "print_plan", "print_run"]

_MARK = {
    "succeeded": ("✓", "green"), "satisfied": ("=", "cyan"), "skipped": ("-", "dim"), "failed": ("✗", "red"),
    "blocked": ("⊘", "red"), "waiting": ("…", "yellow"), "unknown": ("?", "magenta"), "rolled_back": ("↺", "yellow"),
    "interrupted": ("!", "yellow"), "pending": (" ", "dim"), "running": ("▸", "blue"), "not_started": (" ", "dim"),
}  # fmt: skip
_RUN_COLOR = {"succeeded": "green", "failed": "red", "paused": "yellow", "waiting": "yellow", "cancelled": "red",
              "interrupted": "yellow", "running": "blue", "queued": "dim"}  # fmt: skip


def _mark(state: str) -> str:
    sym, color = _MARK.get(state, ("·", "white"))
    return f"[{color}]{sym}[/]"


class _InFlight:
    """Renderable for the step in flight: spinner, step id, elapsed time (refreshed by rich.live)."""

    def __init__(self, step_id: str) -> None:
        from rich.spinner import Spinner

        self.step_id, self.started = step_id, time.monotonic()
        self.spinner = Spinner("dots")

    def __rich__(self) -> Any:
        self.spinner.update(text=f"[bold]{self.step_id}[/] running [dim]{time.monotonic() - self.started:.1f}s[/]")
        return self.spinner


class Progress:
    """Prints one line per finished step; on a terminal, a live spinner line with elapsed time for the step in flight."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live = console.is_terminal
        self._status: Any = None
        self._started: dict[str, float] = {}

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_spinner()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __call__(self, event: Event, run: RunRecord) -> None:
        """Engine observer: react to committed events."""
        kind, sid = event.type, event.step_id
        if kind == "step.started" and sid and sid not in self._started:
            self._started[sid] = time.monotonic()
            if self.live:
                from rich.live import Live

                self._stop_spinner()
                self._status = Live(_InFlight(sid), console=self.console, refresh_per_second=8, transient=True)
                self._status.start()
        elif kind == "step.waiting" and sid:
            self._stop_spinner()
            self.console.print(f"{_mark('waiting')} [bold]{sid}[/] {event.data.get('reason', '')}")
        elif kind == "step.finished" and sid and "target" not in event.data:
            self._stop_spinner()
            state = event.data.get("state", "")
            took = time.monotonic() - self._started.pop(sid, time.monotonic())
            elapsed = f" [dim]{took:.2f}s[/]" if took >= 0.005 else ""
            reason = event.data.get("reason", "")
            self.console.print(f"{_mark(state)} [bold]{sid}[/] {state}{elapsed}" + (f" [dim]— {reason}[/]" if reason else ""))
        elif kind == "step.finished" and sid:
            self.console.print(f"  {_mark(event.data.get('state', ''))} {sid}@{event.data['target']} {event.data.get('state')}"
                               f" [dim]{event.data.get('reason', '')}[/]")  # fmt: skip
        elif kind == "step.attempt_failed" and sid:
            self.console.print(f"  [yellow]attempt {event.attempt} of {sid} failed[/] [dim]{event.data.get('detail', '')}; "
                               f"retrying in {event.data.get('retry_in')}s[/]")  # fmt: skip
        elif kind == "run.recovered":
            self.console.print(f"[yellow]recovered:[/] {event.data.get('reason')}")
        elif kind == "step.recovered" and sid:
            self.console.print(f"  [yellow]{sid}: {event.data.get('reason')}[/]")


def print_run(console: Console, view: RunView, *, notices: list[str] | None = None, steps: bool = False) -> None:
    """Summary of a run: state, reason, optionally every step, and what to do next."""
    for notice in notices or []:
        console.print(f"[yellow]note:[/] {notice}")
    if steps:
        for s in view.steps:
            extra = f" [dim]— {s.reason}[/]" if s.reason else ""
            tries = f" [dim](attempts {s.attempts})[/]" if s.attempts > 1 else ""
            console.print(f"{_mark(str(s.state))} [bold]{s.id}[/] {s.state}{tries}{extra}")
            for name, t in (s.targets or {}).items():
                console.print(f"    {_mark(t.get('state', ''))} {name} {t.get('state')} [dim]{t.get('reason', '')}[/]")
    color = _RUN_COLOR.get(str(view.state), "white")
    console.print(f"run [bold]{view.run_id}[/] ({view.runbook}): [{color}]{view.state}[/]" + (f" — {view.reason}" if view.reason else ""))
    nxt = view.next
    if nxt.action == "none":
        return
    if str(view.state) == "running" and nxt.action == "resume":
        console.print(f"[yellow]{nxt.reason}[/]", highlight=False)  # its executor is gone
    if nxt.human_command:
        lead = "fix the cause, then" if nxt.action == "fix_and_retry" else "next"
        console.print(f"{lead}: {nxt.human_command}", highlight=False)
        if nxt.action == "await_approval" and " approve " in nxt.human_command:
            console.print(f"  or refuse: {nxt.human_command.replace(' approve ', ' deny ', 1)}", highlight=False)
    if nxt.command and nxt.action != "fix_and_retry":
        when = f" (not before {nxt.not_before})" if nxt.not_before else ""
        console.print(f"{'then' if nxt.human_command else 'next'}: {nxt.command}{when}", highlight=False)
    for option in nxt.options:
        console.print(f"  {option['action']}: {option['command']}  [dim]({option.get('meaning', '')})[/]", highlight=False)


def print_plan(console: Console, view: PlanView) -> None:
    """One line per step with its verdict."""
    marks = {"would-run": "[blue]▸[/]", "already-satisfied": "[cyan]=[/]", "would-skip": "[dim]-[/]", "blocked": "[red]⊘[/]",
             "would-wait": "[yellow]…[/]", "cannot-know": "[magenta]?[/]"}  # fmt: skip
    console.print(f"plan for [bold]{view.runbook}[/] (read-only probes; nothing was changed)")
    for s in view.steps:
        console.print(f"{marks.get(s.verdict, '·')} [bold]{s.id}[/] {s.verdict} [dim]— {s.reason}[/]")
    console.print(", ".join(f"{n} {k}" for k, n in view.summary.items()))


def stderr_line(text: str) -> None:
    """One line on stderr (for signal notices)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
