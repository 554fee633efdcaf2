"""The two ``runbook`` plugins a test registers: fakes (replies instead of real effects) and the ledger.

Both implement the public ``runbook_execute_action`` hook, as any plugin may: :class:`Fakes` answers first
(``tryfirst``; returning ``None`` lets the real step type run), :class:`Ledger` wraps every action
(``wrapper=True``) to record it and, in a driver process, to kill the process at a chosen step.

Which call is a step's *action* (as opposed to its probes or rollback) is told by
:attr:`runner.context.Context.raw_config`, the unrendered config the engine is running, compared with the
step's compiled action.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import StepFailed
from runner.plugin import hookimpl
from runner.steptypes import ActionResult
from runner.testing import _http
from runner.testing._state import State

if TYPE_CHECKING:
    from collections.abc import Generator

    from runner.catalog import Catalog
    from runner.context import Context

__all__ = ["Actions", "Fakes", "Ledger"]


class Actions:
    """Tells a step's action from its probes and rollback, from the runbooks on the test's search path."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._catalog: Catalog | None = None
        self._stamp: tuple[int, ...] = ()
        self._lock = threading.Lock()

    def kind(self, ctx: Context) -> str:
        """``action``, ``rollback`` or ``probe`` (a probe, or a call a Python step makes through ``ctx``)."""
        raw = getattr(ctx, "raw_config", None)
        rb = self.catalog().runbooks.get(ctx.runbook)
        try:
            step = rb.spec.step(ctx.step_id) if rb is not None else None
        except KeyError:
            step = None
        if step is None:
            return "probe"
        if raw == step.action.config:
            return "action"
        if step.rollback is not None and raw == step.rollback.config:
            return "rollback"
        return "probe"

    def catalog(self) -> Catalog:
        """The runbooks of the test (loaded again when a test edited one of their files)."""
        with self._lock:
            if self._catalog is None or _stamp(self._catalog.files) != self._stamp:
                from runner.catalog import Catalog
                from runner.plugin import PluginHost

                self._catalog = Catalog.load(PluginHost().step_types, [Path(p) for p in self.paths])
                self._stamp = _stamp(self._catalog.files)
            return self._catalog


def _stamp(files: list[Path]) -> tuple[int, ...]:
    out = []
    for f in files:
        try:
            out.append(f.stat().st_mtime_ns)
        except OSError:
            out.append(-1)
    return tuple(out)


def target_of(ctx: Context) -> str | None:
    """The fan-out target (or ``for_each`` item key) a context acts on (None outside a fan-out)."""
    unit = getattr(ctx, "unit", None)
    if unit is not None:
        return str(unit)
    return str(ctx.target.get("name")) if ctx.target else None


class Fakes:
    """Answers actions the test arranged: injected failures, fake or replayed http, fake ssh, recording."""

    def __init__(self, state: State, actions: Actions) -> None:
        self.state, self.actions = state, actions
        self.faked: dict[int, str] = {}  # id(ctx) -> what answered instead of the real step type (for the ledger)

    @hookimpl(tryfirst=True)
    def runbook_preflight_action(self, step_type: Any, config: Any, facts: Any) -> Any:
        """Nothing to find for an ssh action the fake transport answers (no host, no key); None: the step type looks.

        Faked and replayed http requests keep the real pre-flight: they are refused where the real step would refuse.
        """
        return [] if step_type.name == "ssh" and self.state.read()["ssh"]["on"] else None

    @hookimpl(tryfirst=True)
    def runbook_execute_action(self, step_type: Any, config: Any, ctx: Context) -> Any:
        """A fake result, or None for the real step type to run."""
        arranged = self.state.read()
        failure = self._failure(step_type, ctx, arranged)
        if failure is not None:
            return failure
        if step_type.name == "http" and arranged["http"]["mode"] != "off":
            return self._http(step_type, config, ctx, arranged["http"]["mode"])
        if step_type.name == "ssh" and arranged["ssh"]["on"]:
            return self._ssh(config, ctx)
        return None

    def _failure(self, step_type: Any, ctx: Context, arranged: dict[str, Any]) -> ActionResult | None:
        target = target_of(ctx)
        rules = [i for i, r in enumerate(arranged["fail"]) if r["step"] == ctx.step_id and r.get("target") in (None, target)
                 and r.get("left") != 0 and r.get("runbook") in (None, ctx.runbook)]  # fmt: skip
        if not rules or self.actions.kind(ctx) != "action":
            return None
        with self.state.update() as data:
            rule = data["fail"][rules[0]]
            if rule.get("left") is not None:
                rule["left"] -= 1
        self.faked[id(ctx)] = "failure"
        message = str(rule.get("message") or "injected failure")
        expect = step_type.default_expect
        if "exit_code" in expect:
            code = int(rule.get("exit_code", 1))
            return ActionResult(exit_code=code, stdout="", stderr=message, detail=f"exit {code} (injected by the test)")
        if "status" in expect:
            return _http.reply_result({"status": int(rule.get("status", 500)), "body": message}, "")
        raise StepFailed(f"{message} (injected by the test)")

    def _http(self, step_type: Any, config: Any, ctx: Context, mode: str) -> ActionResult:
        request = _http.request_of(config, ctx)
        with self.state.update() as data:
            data["http"]["requests"].append(_http.shown(request, ctx))
            reply = _http.match(data["http"]["routes"], request) if mode == "fake" else None
            routes, upstream = data["http"]["routes"], dict(data["http"].get("upstream") or {})
        if mode == "fake":
            if reply is None:
                raise _http.no_reply(request, routes, ctx)
            self.faked[id(ctx)] = "http"
            return _http.reply_result(reply, request["url"])
        result = step_type.execute(_rewrite(config, upstream), ctx)  # record: the real request, maybe to a stand-in server
        with self.state.update() as data:
            data["http"]["recorded"].append(_http.interaction(request, result, ctx))
        return result  # type: ignore[no-any-return]

    def _ssh(self, config: Any, ctx: Context) -> ActionResult:
        host = config.host or (str(ctx.target.get("name")) if ctx.target else None)
        command = list(config.command)
        with self.state.update() as data:
            data["ssh"]["commands"].append({"host": host, "command": command, "step": ctx.step_id, "sudo": bool(config.sudo)})
            reply = None
            for route in data["ssh"]["routes"]:
                if route.get("host") not in (None, host):
                    continue
                want = route["command"]
                if command == want or (route.get("prefix") and command[: len(want)] == want):
                    replies = route["replies"]
                    reply = replies[min(route["used"], len(replies) - 1)]
                    route["used"] += 1
                    break
        if reply is None:
            raise StepFailed(ctx.redactor.text(f"fake ssh: no reply arranged for {host}: {' '.join(command)}"))
        self.faked[id(ctx)] = "ssh"
        code = int(reply.get("exit_code", 0))
        return ActionResult(exit_code=code, stdout=str(reply.get("stdout", "")), stderr=str(reply.get("stderr", "")),
                            detail=f"exit {code} (fake ssh)")  # fmt: skip


def _rewrite(config: Any, upstream: dict[str, str]) -> Any:
    """``config`` sent to a stand-in server: the URL's origin replaced, the stand-in's host allowed too."""
    for origin, standin in upstream.items():
        if config.url.startswith(origin):
            import httpx

            hosts = None if config.allowed_hosts is None else [*config.allowed_hosts, httpx.URL(standin).host]
            return config.model_copy(update={"url": standin + config.url[len(origin) :], "allowed_hosts": hosts})
    return config


class Ledger:
    """Records each action (``start``, ``end``) in the ledger; in a driver process, kills it at the chosen step."""

    def __init__(self, state: State, actions: Actions, fakes: Fakes, *, driver: bool = False) -> None:
        self.state, self.actions, self.fakes, self.driver = state, actions, fakes, driver

    @hookimpl(wrapper=True)
    def runbook_execute_action(self, step_type: Any, config: Any, ctx: Context) -> Generator[None, Any, Any]:
        """Record the action around its execution (and kill the process where the test said)."""
        if self.actions.kind(ctx) != "action":
            return (yield)
        entry = {"run_id": ctx.run_id, "runbook": ctx.runbook, "step": ctx.step_id, "target": target_of(ctx), "attempt": ctx.attempt}
        kill = self._kill(ctx)
        if kill == "before":
            self._die(entry, "before")
        self.state.log({**entry, "phase": "start"})
        try:
            result = yield
        except BaseException as exc:
            self.state.log({**entry, "phase": "end", "ok": False, "error": type(exc).__name__, "fake": self.fakes.faked.pop(id(ctx), None)})
            raise
        self.state.log({**entry, "phase": "end", "ok": True, "fake": self.fakes.faked.pop(id(ctx), None)})
        if kill == "after":
            self._die(entry, "after")
        return result

    def _kill(self, ctx: Context) -> str | None:
        if not self.driver:
            return None
        rule = self.state.read()["kill"]
        if not rule or rule["step"] != ctx.step_id or rule.get("target") not in (None, target_of(ctx)):
            return None
        return str(rule["when"])

    def _die(self, entry: dict[str, Any], when: str) -> None:
        with self.state.update() as data:
            data["kill"] = None  # once: the run is resumed (in this test or another driver) without dying again
        self.state.log({**entry, "phase": "killed", "when": when})
        os.kill(os.getpid(), signal.SIGKILL)
