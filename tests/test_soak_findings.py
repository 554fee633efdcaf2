"""Regression tests for two races the soak (bench/soak.py) found in the engine, reproduced in-process.

1. ``resume`` racing with the executor that finishes the run: ``runbook resume`` read the run (still active),
   another executor finished and released it before the acquisition, and the drive failed with an internal
   error (exit 1: ``a run in state 'succeeded' cannot take the event 'drive'``) instead of reporting the outcome.
   Fixed in ``Engine._execute``: the run is read again after the acquisition and, finished meanwhile, released.
2. An executor frozen between committing ``step.started`` and starting the action started it after another
   executor took the run over (a checked action ran twice). Fixed: before acting, an executor whose lease the
   store last confirmed too long ago confirms it again (see the test's docstring).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.catalog import Catalog, search_path
from runner.engine import Engine
from runner.engine.execution import DriveOptions
from runner.plugin import PluginHost
from runner.settings import Settings
from runner.store.records import RunState


def _engine(root: Path) -> Engine:
    host = PluginHost()
    url = f"sqlite:///{root}/journal.db"
    settings = Settings(paths=[str(root / "runbooks")], store_url=url, project_dir=root, actor="tester")
    return Engine(host, host.stores.open(url), Catalog.load(host.step_types, search_path(settings.paths)), settings)


def test_a_resume_that_loses_the_race_to_the_finishing_executor_reports_the_outcome(tmp_path: Path) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "one.yaml").write_text('name: one\nsteps:\n  - {id: a, shell: ["true"]}\n', encoding="utf-8")
    mine, other = _engine(tmp_path), _engine(tmp_path)
    run_id = mine.start("one", {}, execute=False).run_id
    acquire = mine.store.acquire

    def finished_meanwhile(*args: object, **kwargs: object) -> object:
        other.drive(run_id, DriveOptions())  # another executor (a worker) drives the run to its end first
        assert other.store.get_run(run_id).state == RunState.SUCCEEDED
        return acquire(*args, **kwargs)  # type: ignore[arg-type]

    mine.store.acquire = finished_meanwhile  # type: ignore[method-assign]
    try:
        view = mine.resume(run_id, DriveOptions())
        assert view.state == RunState.SUCCEEDED
    finally:
        mine.store.close()
        other.store.close()


@pytest.mark.timeout(120)
def test_an_executor_frozen_between_its_step_start_and_its_action_does_not_act_after_a_takeover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the soak: ``runbook serve`` SIGSTOPped after committing ``step.started`` and before spawning the
    action; its lease expired, another executor took the run over, found the check unmet and ran the action; on
    SIGCONT the stopped one spawned the same action too (a checked step's action ran twice), then was fenced at
    its next commit. Now, before starting an action, an executor whose lease the store last confirmed a while ago
    (a frozen process sees the monotonic clock jump) confirms it again: ``LeaseLost`` stops it before it acts."""
    import threading
    import time

    from runner.errors import LeaseLost, StoreError

    monkeypatch.setenv("RUNBOOK_LEASE_TTL", "1")
    ledger = tmp_path / "ledger"
    ledger.touch()
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "one.yaml").write_text(
        f"name: one\nsteps:\n  - {{id: a, shell: {{script: 'echo a >> {ledger}'}}, check: [{{shell: [grep, -qx, a, '{ledger}']}}]}}\n",
        encoding="utf-8",
    )
    mine, other = _engine(tmp_path), _engine(tmp_path)
    run_id = mine.start("one", {}, execute=False).run_id
    frozen = threading.Event()
    commit, renew = mine.store.commit, mine.store.renew

    def no_heartbeat(lease: object) -> object:  # a stopped process renews nothing
        if frozen.is_set():
            raise StoreError("the process is stopped")
        return renew(lease)  # type: ignore[arg-type]

    def stopped_after_step_started(*args: object, **kwargs: object) -> object:
        done = commit(*args, **kwargs)  # type: ignore[arg-type]
        if any(e.type == "step.started" for e in kwargs.get("events", ())):  # type: ignore[attr-defined]
            frozen.set()
            time.sleep(1.5)  # SIGSTOP past the lease's expiry ...
            other.resume(run_id, DriveOptions())  # ... another executor takes the run over and finishes it
            frozen.clear()  # SIGCONT: it goes on where it was, about to start the action
        return done

    mine.store.renew = no_heartbeat  # type: ignore[method-assign]
    mine.store.commit = stopped_after_step_started  # type: ignore[method-assign]
    try:
        with pytest.raises(LeaseLost):
            mine.resume(run_id, DriveOptions())
        assert other.store.get_run(run_id).state == RunState.SUCCEEDED
        assert ledger.read_text().split() == ["a"], "the checked action ran twice"
    finally:
        mine.store.close()
        other.store.close()
