"""The human ``events`` view says what each event decided: probe kind, check and verdict, fan-out target, attempt,
a retry's delay, a recovery's decision; text from the journal is printed as text, never as markup."""

from __future__ import annotations

import re

from harness.procs import wait_for

from tests.conftest import Project, kill

EVENTS = """
name: ev
steps:
  - id: fan
    targets: [a, b]
    check:
      - shell: [test, -f, "{{ target.name }}.done"]
        description: "[bold]done[/] already"
    shell: [touch, "{{ target.name }}.done"]
  - id: flaky
    retry: {attempts: 2, delay: 0.1s}
    shell: [sh, -c, 'test -f tried || { touch tried; echo "not yet" >&2; exit 3; }']
"""


def lines(project: Project, run_id: str) -> list[str]:
    res = project.run("events", run_id)
    assert res.code == 0, res
    return [re.sub(r"^\s*\d+ \S+ ", "", line) for line in res.out.splitlines()]  # without number and time


def test_probes_targets_and_attempts(project: Project) -> None:
    project.write("ev.yaml", EVENTS)
    rid = project.run("run", "ev", "--json").json()["run_id"]
    shown = lines(project, rid)
    for target in ("a", "b"):
        assert (f"probe check fan@{target} by tester holds=False [bold]done[/] already: exit code 1, expected 0"
                in shown), shown  # fmt: skip
        assert f"step.finished fan@{target} by tester exit 0" in shown, shown
    assert "step.started flaky by tester" in shown, "the first attempt is not numbered"
    assert "step.attempt_failed flaky attempt 1 by tester exit code 3, expected 0; retrying in 0.1s" in shown, shown
    assert "step.started flaky attempt 2 by tester" in shown, shown
    assert "step.finished flaky attempt 2 by tester exit 0" in shown, shown


def test_a_recovery_shows_its_decision(project: Project) -> None:
    project.write(
        "slow.yaml",
        """
        name: slow
        steps:
          - id: nap
            check:
              - shell: [test, -f, napped]
                description: napped already
            shell: [sh, -c, 'touch started; sleep 60; touch napped']
        """,
    )
    proc = project.popen("run", "slow", "--json")
    wait_for(lambda: (project.root / "started").exists(), 60, "the step to start")
    kill(proc)
    rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
    (project.root / "napped").touch()  # the work got done after all: the check says so
    assert project.run("resume", rid).code == 0
    shown = lines(project, rid)
    recovered = [line for line in shown if line.startswith("step.recovered")]
    assert recovered == ["step.recovered nap by tester decision=check re-entering through its check after recovery"], shown
    assert "probe check nap by tester holds=True napped already: exit 0" in shown
