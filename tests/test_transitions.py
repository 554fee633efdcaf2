"""The run and step state machines: every (state, event) pair either has one documented next state or is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import InvalidTransition
from runner.store.records import ACTIVE_STATES, TERMINAL_STATES, RunState, StepState
from runner.store.transitions import RUN_TABLE, STEP_TABLE, RunEvent, StepEvent, markdown, run_after, step_after

DOCS = Path(__file__).parent.parent / "docs" / "durability.md"


@pytest.mark.parametrize("state", list(RunState), ids=str)
@pytest.mark.parametrize("event", list(RunEvent), ids=str)
def test_every_run_pair_is_listed_or_refused(state: RunState, event: RunEvent) -> None:
    if (state, event) in RUN_TABLE:
        assert run_after(state, event) == RUN_TABLE[(state, event)]
    else:
        with pytest.raises(InvalidTransition, match=f"run in state '{state}' cannot take the event '{event}'"):
            run_after(state, event)


@pytest.mark.parametrize("state", list(StepState), ids=str)
@pytest.mark.parametrize("event", list(StepEvent), ids=str)
def test_every_step_pair_is_listed_or_refused(state: StepState, event: StepEvent) -> None:
    if (state, event) in STEP_TABLE:
        assert step_after(state, event) == STEP_TABLE[(state, event)]
    else:
        with pytest.raises(InvalidTransition):
            step_after(state, event)


def test_final_states_are_never_left() -> None:
    for state in TERMINAL_STATES:
        assert not [e for (s, e) in RUN_TABLE if s == state], f"{state} is final"
    assert all(RUN_TABLE[(s, RunEvent.CANCEL)] == RunState.CANCELLED for s in ACTIVE_STATES), "every active run can be cancelled"


def test_completed_steps_only_leave_by_rollback() -> None:
    for done in (StepState.SUCCEEDED, StepState.SATISFIED, StepState.SKIPPED):
        leaving = {e: t for (s, e), t in STEP_TABLE.items() if s == done}
        assert set(leaving) <= {StepEvent.ROLL_BACK}, (done, leaving)


def test_every_state_is_reachable() -> None:
    reached_runs = {RunState.QUEUED} | set(RUN_TABLE.values())
    assert reached_runs == set(RunState)
    reached_steps = {StepState.PENDING} | set(STEP_TABLE.values())
    assert reached_steps == set(StepState)


def test_the_docs_print_both_tables() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for line in markdown().splitlines():
        assert line in text, f"docs/durability.md is missing the transition-table line: {line}"
