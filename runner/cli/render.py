"""Human rendering of runs: progress lines while a run executes, and the run summary."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from runner.store.records import Event, RunRecord
    from runner.views import RunView

__all__ = ["Progress", "print_run"]

_MARK = {
    "succeeded": ("✓", "green"), "satisfied": ("=", "cyan"), "skipped": ("-", "dim"), "failed": ("✗", "red"),
    "blocked": ("⊘", "red"), "waiting": ("…", "yellow"), "unknown": ("?", "magenta"), "rolled_back": ("↺", "yellow"),
    "interrupted": ("!", "yellow"), "pending": (" ", "dim"), "running": ("▸", "blue"), "not_started": (" ", "dim"),
    "succeeded, rollback failed": ("✗", "red"),
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

    def output(self, step_id: str, target: str | None, stream: str, line: str) -> None:
        """Engine output observer: a line a running step wrote, printed as it comes (``step stream| line``)."""
        from rich.text import Text

        where = step_id if target is None else f"{step_id}@{target}"
        label = Text(f"{where} {stream}| ", style="dim" if stream == "stdout" else "yellow")
        self.console.print(label + Text(line), highlight=False, soft_wrap=True)

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
            if event.data.get("rollback") == "failed":  # its change is still in place: no success mark
                state, elapsed = "succeeded, rollback failed", ""
            self.console.print(f"{_mark(state)} [bold]{sid}[/] {state}{elapsed}" + (f" [dim]— {reason}[/]" if reason else ""))
        elif kind == "step.finished" and sid:
            self.console.print(f"  {_mark(event.data.get('state', ''))} {sid}@{event.data['target']} {event.data.get('state')}"
                               f" [dim]{event.data.get('reason', '')}[/]")  # fmt: skip
        elif kind == "step.attempt_failed" and sid:
            self.console.print(f"  [yellow]attempt {event.attempt} of {sid} failed[/] [dim]{event.data.get('detail', '')}; "
                               f"retrying in {event.data.get('retry_in')}s[/]")  # fmt: skip
        elif kind == "step.log" and sid:
            from rich.text import Text

            where = sid if not event.data.get("target") else f"{sid}@{event.data['target']}"
            self.console.print(Text(f"{where} log| ", style="cyan") + Text(str(event.data.get("message", ""))), highlight=False)
        elif kind == "run.handed_over" and sid:
            self.console.print(f"[dim]{sid}: {event.data.get('reason', '')}[/]", highlight=False)
        elif kind == "run.recovered":
            self.console.print(f"[yellow]recovered:[/] {event.data.get('reason')}")
        elif kind == "step.recovered" and sid:
            self.console.print(f"  [yellow]{sid}: {event.data.get('reason')}[/]")


def print_run(console: Console, view: RunView, *, notices: list[str] | None = None, steps: bool = False) -> None:
    """Summary of a run: state, reason, optionally every step, a failed step's output tail, and what to do next."""
    for notice in notices or []:
        console.print(f"[yellow]note:[/] {notice}", highlight=False)
    for s in view.steps:
        if steps:
            extra = f" [dim]— {s.reason}[/]" if s.reason else ""
            tries = f" [dim](attempts {s.attempts})[/]" if s.attempts > 1 else ""
            state = "succeeded, rollback failed" if s.rollback_failed else str(s.state)
            console.print(f"{_mark(state)} [bold]{s.id}[/] {state}{tries}{extra}", highlight=False)
            for name, t in (s.targets or {}).items():
                console.print(f"    {_mark(t.get('state', ''))} {name} {t.get('state')} [dim]{t.get('reason', '')}[/]", highlight=False)
        if str(s.state) in ("failed", "blocked"):
            _print_tail(console, s.id, s.output, s.exit_code)
            for name, t in (s.targets or {}).items():
                if t.get("state") in ("failed", "blocked"):
                    _print_tail(console, f"{s.id}@{name}", t.get("output"), None)
    color = _RUN_COLOR.get(str(view.state), "white")
    console.print(f"run [bold]{view.run_id}[/] ({view.runbook}): [{color}]{view.state}[/]" + (f" — {view.reason}" if view.reason else ""),
                  highlight=False)  # fmt: skip
    _print_next(console, view)


def _print_tail(console: Console, where: str, output: Any, exit_code: int | None) -> None:
    """The last lines a failed step wrote (stderr, then stdout) and its exit code."""
    if not isinstance(output, dict):
        return
    code = exit_code if exit_code is not None else output.get("exit_code")
    for stream in ("stderr", "stdout"):
        text = output.get(stream)
        if isinstance(text, str) and text.strip():
            lines = text.rstrip("\n").splitlines()[-10:]
            console.print(f"  [dim]{where} {stream} (last {len(lines)} line(s){f', exit code {code}' if code is not None else ''}):[/]",
                          highlight=False)  # fmt: skip
            for line in lines:
                console.out(f"  | {line}", highlight=False)
    if output.get("truncated"):
        console.print("  [dim]more in `runbook logs` (the view shows the tail)[/]", highlight=False)


def _print_next(console: Console, view: RunView) -> None:
    nxt = view.next
    action = nxt.action
    if action == "none":
        return
    when = f" (not before {nxt.not_before})" if nxt.not_before else ""
    if action == "await_approval":
        approve = next((o["command"] for o in nxt.options if o.get("action") == "approve"), nxt.human_command)
        deny = next((o["command"] for o in nxt.options if o.get("action") == "deny"), None)
        console.print(f"next: {approve}", highlight=False)
        if deny:
            console.print(f"  or refuse: {deny}", highlight=False)
        console.print(f"then: {nxt.command}{when}", highlight=False)
    elif action == "fix_and_retry":
        if str(view.state) == "cancelled":  # a rollback failed: the reason says which, and what is still in place
            console.print(f"[yellow]{nxt.reason}[/]", highlight=False)
        console.print(f"fix the cause, then: {nxt.human_command}", highlight=False)
        if nxt.then:
            console.print(f"then: {nxt.then}", highlight=False)
        for option in nxt.options:
            console.print(f"  or retry and resume at once: {option['command']}", highlight=False)
    elif action == "decide":
        console.print(f"[yellow]{nxt.reason}[/]", highlight=False)
        for option in nxt.options:
            console.print(
                f"decide: {option.get('human_command') or option['command']}  [dim]({option.get('meaning', '')})[/]", highlight=False
            )
        console.print(f"then: {nxt.then}", highlight=False)
    elif action in ("wait_elsewhere", "conflict"):
        console.print(f"[yellow]{nxt.reason}[/]", highlight=False)
        console.print(f"check: {nxt.command}{when}", highlight=False)
    elif action == "handoff":
        console.print(f"[yellow]{nxt.reason}[/]", highlight=False)
        console.print(f"next (a caller with that budget): {nxt.command}", highlight=False)
        console.print(f"  or a person: {nxt.human_command}", highlight=False)
    else:
        if str(view.state) == "running":
            console.print(f"[yellow]{nxt.reason}[/]", highlight=False)
        console.print(f"next: {nxt.command}{when}", highlight=False)


def stderr_line(text: str) -> None:
    """One line on stderr (for signal notices)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
