""":class:`RunbookHarness`: a throwaway journal and catalog, runs in-process or as the CLI does, fakes and faults.

What the ``runbook`` fixture of the pytest plugin gives a test; usable without pytest too. Runs go through the
public surfaces only — :class:`runner.Client` in-process, ``python -m runner`` for the CLI — with the test's
fakes registered as a ``runbook`` plugin, so a runbook is exercised exactly as in production up to the fake.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.testing._state import State
from runner.testing.results import Event, Outcome

if TYPE_CHECKING:
    from runner.api import Client
    from runner.plugin import PluginHost
    from runner.testing.fakes import FakeHTTP, FakeSSH
    from runner.testing.sshd import SSHServer

__all__ = ["CliResult", "Killed", "RunbookHarness"]


@dataclass(frozen=True)
class CliResult:
    """A finished ``runbook`` command: exit code, stdout, stderr."""

    args: list[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout as the one JSON document ``--json`` prints."""
        try:
            return json.loads(self.out)
        except ValueError:
            raise AssertionError(f"`runbook {shlex.join(self.args)}` printed no JSON document:\n{self.out}\n{self.err}") from None


@dataclass(frozen=True)
class Killed:
    """A run whose process was killed (SIGKILL) at a chosen step: resume it with :meth:`RunbookHarness.resume`."""

    run_id: str
    step: str
    when: str
    target: str | None
    output: str


class RunbookHarness:
    """Runs runbooks from ``paths`` against a journal in ``directory``, with the fakes and faults a test arranges.

    :param directory: a fresh directory for the journal, the ledger and the test's files.
    :param paths: where the runbooks under test are (the search path).
    :param record_http: record the exchanges of :meth:`FakeHTTP.cassette` instead of replaying them.
    """

    def __init__(self, directory: Path, paths: Sequence[str | os.PathLike[str]], *, actor: str = "tester",
                 record_http: bool = False) -> None:  # fmt: skip
        from runner.testing.fakes import FakeHTTP, FakeSSH

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths = [Path(p).resolve() for p in paths]
        self.actor, self.record_http = actor, record_http
        self.state = State(self.directory / "test")
        self.env: dict[str, str] = {"RUNBOOK_CACHE_DIR": os.environ.get("RUNBOOK_CACHE_DIR") or str(self.directory / "cache")}
        self.inventory: Path | None = None
        self.known_hosts: Path | None = None
        self.bin = self.directory / "bin"
        with self.state.update() as data:
            data["paths"] = [str(p) for p in self.paths]
        self.http: FakeHTTP = FakeHTTP(self)
        self.ssh: FakeSSH = FakeSSH(self)
        self._host: PluginHost | None = None

    # ------------------------------------------------------------------ environment

    @property
    def store_url(self) -> str:
        """The throwaway journal (SQLite in the test's directory)."""
        return f"sqlite:///{self.directory / 'journal.db'}"

    def setenv(self, name: str, value: str) -> None:
        """An environment variable the runs see (a secret's ``env:`` reference, a tool's setting ...)."""
        self.env[name] = value

    def stub_command(self, name: str, script: str) -> Path:
        """Put an executable ``name`` first on the PATH of local commands (``shell`` steps): a stand-in for a tool."""
        self.bin.mkdir(exist_ok=True)
        path = self.bin / name
        path.write_text(script if script.startswith("#!") else "#!/bin/sh\n" + script, encoding="utf-8")
        path.chmod(0o755)
        self.env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        return path

    def use_sshd(self, server: SSHServer, hosts: Sequence[str] = ("localhost",)) -> Path:
        """Point ``ssh`` steps naming ``hosts`` (or fanning out over them) at ``server``: an inventory of them."""
        import yaml

        self.inventory = self.directory / "inventory.yaml"
        data = {"hosts": {h: server.inventory_entry() for h in hosts}, "groups": {"all": list(hosts)}}
        self.inventory.write_text(yaml.safe_dump(data), encoding="utf-8")
        self.known_hosts = server.known_hosts
        return self.inventory

    @contextlib.contextmanager
    def _environ(self) -> Iterator[None]:
        """The test's variables, and no ``RUNBOOK_*`` of the outer environment (an operator's inventory, allow-list ...)."""
        outer = [k for k in os.environ if k.startswith("RUNBOOK_") and k not in self.env]
        saved = {k: os.environ.get(k) for k in [*self.env, *outer]}
        for key in outer:
            del os.environ[key]
        os.environ.update(self.env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # ------------------------------------------------------------------ in-process runs

    def host(self) -> PluginHost:
        """The plugin host of in-process runs: the installed plugins plus this test's fakes and ledger."""
        if self._host is None:
            from runner.plugin import PluginHost, get_plugin_manager
            from runner.testing._hooks import Actions, Fakes, Ledger

            actions = Actions([str(p) for p in self.paths])
            fakes = Fakes(self.state, actions)
            self._host = PluginHost(get_plugin_manager(extra=[fakes, Ledger(self.state, actions, fakes)]))
        return self._host

    def client(self, actor: str | None = None) -> Client:
        """A :class:`runner.Client` on this test's runbooks and journal (a fresh catalog: edits are seen)."""
        from runner.api import Client

        return Client(paths=self.paths, store=self.store_url, project_dir=self.directory, actor=actor or self.actor,
                      inventory=str(self.inventory) if self.inventory else None,
                      known_hosts=str(self.known_hosts) if self.known_hosts else None, host=self.host())  # fmt: skip

    def _outcome(self, client: Client, view: Any) -> Outcome:
        doc = view.model_dump(mode="json")
        events = client.events(doc["run_id"]).model_dump(mode="json")["events"]
        return Outcome.from_json(doc, events)

    def run(self, name: str, params: dict[str, Any] | None = None, **options: Any) -> Outcome:
        """Start ``name`` in this process and drive it until it finishes, waits or stops (``Client.start`` options)."""
        with self._environ(), self.client() as client:
            return self._outcome(client, client.start(name, params or {}, **options))

    def resume(self, run_id: str, **options: Any) -> Outcome:
        """Continue a run (``Client.resume`` options: ``retry``, ``retry_step``, ``skip_step``, ``accept_changes`` ...)."""
        with self._environ(), self.client() as client:
            return self._outcome(client, client.resume(run_id, **options))

    def status(self, run_id: str) -> Outcome:
        """Where a run stands, with its events."""
        with self.client() as client:
            return self._outcome(client, client.status(run_id))

    def approve(self, run_id: str, by: str = "approver", comment: str = "") -> Outcome:
        """Approve the approval a run waits on, as ``by`` (then :meth:`resume` drives it on)."""
        with self.client(by) as client:
            return self._outcome(client, client.approve(run_id, comment=comment))

    def deny(self, run_id: str, by: str = "approver", comment: str = "") -> Outcome:
        """Deny the approval a run waits on, as ``by``."""
        with self.client(by) as client:
            return self._outcome(client, client.deny(run_id, comment=comment))

    def plan(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a run would do, from read-only probes (``plan --json``)."""
        with self._environ(), self.client() as client:
            plan: dict[str, Any] = client.plan(name, params or {}).model_dump(mode="json")
            return plan

    def events(self, run_id: str) -> list[Event]:
        """A run's journal."""
        return self.status(run_id).events

    # ------------------------------------------------------------------ as the CLI does

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
        """Run ``runbook ARGS`` (``python -m runner``) on this test's runbooks and journal.

        The CLI runs as a user runs it: installed plugins only, so fakes and injected faults do not apply.
        """
        argv = [*self._global_options(), *args]
        proc = subprocess.run([sys.executable, "-m", "runner", *argv], cwd=self.directory, capture_output=True, text=True,
                              env=self._subprocess_env(env), timeout=timeout)  # fmt: skip
        return CliResult(list(args), proc.returncode, proc.stdout, proc.stderr)

    def run_cli(self, name: str, params: dict[str, Any] | None = None, *args: str) -> Outcome:
        """``runbook run NAME -p k=v ... --json`` and its events, as an :class:`Outcome`."""
        pairs = [a for k, v in (params or {}).items() for a in ("-p", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
        res = self.cli("run", name, *pairs, *args, "--json")
        doc = res.json()
        if "error" in doc:
            raise AssertionError(f"`runbook run {name}` failed before a run existed: {doc['error']['message']}\n{res.err}")
        events = self.cli("events", doc["run_id"], "--json").json()["events"]
        return Outcome.from_json(doc, events)

    def _global_options(self) -> list[str]:
        out = [a for p in self.paths for a in ("--path", str(p))] + ["--store", self.store_url]
        if self.inventory:
            out += ["--inventory", str(self.inventory)]
        if self.known_hosts:
            out += ["--known-hosts", str(self.known_hosts)]
        return out

    def _subprocess_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
        return {**env, "RUNBOOK_ACTOR": self.actor, **self.env, **(extra or {})}

    # ------------------------------------------------------------------ faults

    def fail_step(self, step: str, *, times: int | None = 1, exit_code: int = 1, status: int = 500, message: str = "injected failure",
                  target: str | None = None, runbook: str | None = None) -> None:  # fmt: skip
        """Make the action of ``step`` fail ``times`` times (None: always), instead of running it.

        A command fails with ``exit_code`` (``shell``, ``ssh``), a request with ``status`` (``http``), any other
        type with a step failure. Probes and rollbacks are left alone.
        """
        rule = {"step": step, "left": times, "exit_code": exit_code, "status": status, "message": message, "target": target,
                "runbook": runbook}  # fmt: skip
        with self.state.update() as data:
            data["fail"].append(rule)

    def run_until_killed(self, name: str, params: dict[str, Any] | None = None, *, at: str, when: str = "after",
                         target: str | None = None, timeout: float = 120, **options: Any) -> Killed:  # fmt: skip
        """Start ``name`` in another process and SIGKILL it at the action of step ``at``.

        ``when="before"``: the step was started (journaled) but its action did not run; ``"after"``: the action ran
        but its outcome was not recorded — the window exactly-once is about. Fails if the run never got there.
        """
        return self._killed({"action": "start", "name": name, "params": params or {}, "options": options}, at, when, target, timeout)

    def resume_until_killed(self, run_id: str, *, at: str, when: str = "after", target: str | None = None, timeout: float = 120,
                            **options: Any) -> Killed:  # fmt: skip
        """Resume a run in another process and SIGKILL it at the action of step ``at`` (see :meth:`run_until_killed`)."""
        return self._killed({"action": "resume", "run_id": run_id, "options": options}, at, when, target, timeout)

    def _killed(self, job: dict[str, Any], at: str, when: str, target: str | None, timeout: float) -> Killed:
        if when not in ("before", "after"):
            raise ValueError("when is 'before' or 'after' the step's action")
        with self.state.update() as data:
            data["kill"] = {"step": at, "when": when, "target": target}
        job.update(paths=[str(p) for p in self.paths], store=self.store_url, project_dir=str(self.directory), actor=self.actor,
                   inventory=str(self.inventory) if self.inventory else None,
                   known_hosts=str(self.known_hosts) if self.known_hosts else None)  # fmt: skip
        spec = self.directory / "driver.json"
        spec.write_text(json.dumps(job), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "runner.testing._driver", str(self.state.directory), str(spec)],
                              cwd=self.directory, capture_output=True, text=True, env=self._subprocess_env(), timeout=timeout)  # fmt: skip
        output = proc.stdout + proc.stderr
        if proc.returncode != -signal.SIGKILL:
            with self.state.update() as data:
                data["kill"] = None
            raise AssertionError(f"the run was not killed at step '{at}' ({when} its action): the driver exited with "
                                 f"{proc.returncode}\n{output}")  # fmt: skip
        killed = [e for e in self.state.ledger() if e["phase"] == "killed" and e["step"] == at]
        return Killed(run_id=killed[-1]["run_id"], step=at, when=when, target=killed[-1]["target"], output=output)

    # ------------------------------------------------------------------ exactly once

    def executions(self, step: str, *, run_id: str | None = None, target: str | None = None) -> list[dict[str, Any]]:
        """Each time the action of ``step`` ran to its end (in any process), a failure injected by the test left out."""
        return [e for e in self.state.ledger() if e["phase"] == "end" and e["step"] == step and e.get("fake") != "failure"
                and (run_id is None or e["run_id"] == run_id) and (target is None or e["target"] == target)]  # fmt: skip

    def assert_exactly_once(self, outcome: Outcome | Killed | str, step: str, *, target: str | None = None) -> None:
        """Assert the action of ``step`` ran exactly once in the run (per ``target`` if given), and the step is done."""
        run_id = outcome if isinstance(outcome, str) else outcome.run_id
        ran = self.executions(step, run_id=run_id, target=target)
        where = f"step '{step}'" + (f" on {target}" if target else "")
        assert len(ran) == 1, f"{where} of run {run_id} ran {len(ran)} times, not once: {ran}"
        final = self.status(run_id).step(step)
        assert final.state in ("succeeded", "satisfied"), f"{where} is {final.state}: {final.reason}"
        if target is not None and final.targets is not None:
            assert final.targets[target]["state"] in ("succeeded", "satisfied"), final.targets[target]

    # ------------------------------------------------------------------ end of the test

    def close(self) -> None:
        """Write the cassettes recorded in this test."""
        self.http.save()
