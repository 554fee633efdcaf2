"""Start-up's garbage collection: deferred while the CLI starts, back to normal once a command does its work."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from runner import _startup
from tests.conftest import Project


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)
    gc.unfreeze()


def test_deferred_raises_the_young_threshold_and_puts_it_back(thresholds: tuple[int, int, int]) -> None:
    with _startup.deferred():
        assert gc.get_threshold() == (max(thresholds[0], _startup.STARTUP_THRESHOLD), thresholds[1], thresholds[2])
    assert gc.get_threshold() == thresholds


def test_deferred_puts_it_back_after_an_error(thresholds: tuple[int, int, int]) -> None:
    with pytest.raises(RuntimeError), _startup.deferred():
        raise RuntimeError("boom")
    assert gc.get_threshold() == thresholds


def test_settle_freezes_and_restores_inside_deferred(thresholds: tuple[int, int, int]) -> None:
    with _startup.deferred():
        _startup.settle()
        assert gc.get_threshold() == thresholds
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == thresholds


def test_collection_switched_off_by_threshold_stays_off(thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(0)
    with _startup.deferred():
        assert gc.get_threshold()[0] == 0
        _startup.settle()
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold()[0] == 0


def test_a_run_starts_with_few_collections_and_runs_its_steps_at_normal_thresholds(project: Project) -> None:
    project.write(
        "gcprobe.py",
        """
        import gc
        from runner import Context, Runbook

        rb = Runbook("gcprobe")

        @rb.step()
        def probe(ctx: Context, p: object) -> dict:
            return {"threshold": list(gc.get_threshold()), "young": gc.get_stats()[0]["collections"],
                    "frozen": gc.get_freeze_count()}
        """,
    )
    # the interpreter's own start-up and importing the CLI module collect a few times before the CLI runs
    probe = "import gc, runner.cli; print(list(gc.get_threshold()), gc.get_stats()[0]['collections'])"
    default, before_cli = (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip().rsplit(" ", 1)
    )
    res = project.run("run", "gcprobe", "--json")
    assert res.code == 0, res
    out = res.json()["steps"][0]["output"]
    assert str(out["threshold"]) == default, "the steps must run at the interpreter's usual thresholds"
    assert out["frozen"] > 10_000, "what start-up built is frozen before the run"
    # loading plugins, the runbook and the engine collected about 60 times more without the deferral
    assert out["young"] <= int(before_cli) + 3, (out, before_cli)


def test_overlapping_deferrals_put_the_original_thresholds_back(thresholds: tuple[int, int, int]) -> None:
    first, second = _startup.deferred(), _startup.deferred()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start ends first (two threads)
    assert gc.get_threshold()[0] >= _startup.STARTUP_THRESHOLD, "still deferred: the second is active"
    second.__exit__(None, None, None)
    assert gc.get_threshold() == thresholds
