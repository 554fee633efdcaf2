"""pytest-runbook (runner.testing) and `runbook test`: the harness, its fakes and faults, and the command."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runner.testing import Outcome, Reply, RunbookHarness
from runner.testing._http import cassette_routes
from tests.conftest import Project

REPO = Path(__file__).resolve().parent.parent


def harness(tmp_path: Path, *runbooks: tuple[str, str]) -> RunbookHarness:
    directory = tmp_path / "rb"
    directory.mkdir(exist_ok=True)
    for name, text in runbooks:
        (directory / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return RunbookHarness(tmp_path / "h", [directory])


def pytest_in(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=directory, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


# ---------------------------------------------------------------------- the plugin in a pytest session


def test_the_plugin_is_registered_and_changes_nothing_for_tests_that_do_not_use_it(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("import os\n\ndef test_plain():\n    assert 'RUNBOOK_TEST_REPORT' not in os.environ\n")
    res = pytest_in(tmp_path, "-W", "error", "test_plain.py")
    assert res.returncode == 0, res.stdout + res.stderr
    fixtures = pytest_in(tmp_path, "--fixtures", "test_plain.py").stdout
    assert "runbook -- " in fixtures and "runbook_sshd [session scope]" in fixtures and "runbook_paths" in fixtures
    assert "PLUGIN registered: <module 'runner.testing.plugin'" in pytest_in(tmp_path, "--trace-config", "test_plain.py").stdout
    entry = (REPO / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\nrunbook = "runner.testing.plugin"' in entry


# ---------------------------------------------------------------------- results and fakes


def test_outcome_is_read_from_the_documented_json_shapes() -> None:
    view = {"run_id": "01ABC", "runbook": "x", "state": "failed", "exit_code": 1, "reason": "boom", "next": {"action": "fix_and_retry"},
            "steps": [{"id": "a", "state": "succeeded", "attempts": 1, "output": {"stdout": "hi"}},
                      {"id": "b", "state": "failed", "attempts": 2, "output": None, "reason": "exit 1"}]}  # fmt: skip
    events = [{"seq": 1, "type": "step.started", "step_id": "a", "attempt": 1, "actor": None, "data": {}}]
    outcome = Outcome.from_json(view, events)
    assert outcome.states() == {"a": "succeeded", "b": "failed"} and outcome.output("a") == {"stdout": "hi"}
    assert outcome.next_action == "fix_and_retry" and outcome.events_of("step.started", "a")[0].seq == 1
    with pytest.raises(KeyError, match="has no step 'c' \\(steps: a, b\\)"):
        outcome.step("c")


def test_a_cassette_replays_each_requests_exchanges_in_order_the_last_repeating() -> None:
    def item(method: str, state: str) -> dict[str, object]:
        return {"request": {"method": method, "url": "https://x/n", "body": None}, "response": {"status": 200, "json": {"s": state}}}

    routes = cassette_routes({"version": 1, "interactions": [item("GET", "a"), item("POST", "ok"), item("GET", "b")]})
    assert [(r["method"], [x["json"]["s"] for x in r["replies"]]) for r in routes] == [("GET", ["a", "b"]), ("POST", ["ok"])]
    with pytest.raises(ValueError, match="cassette"):
        cassette_routes({"version": 9})


HTTP_RB = (
    "web.yaml",
    """
    name: web
    params:
      base: {type: string, default: "https://api.example.com"}
    secrets:
      tok: env:TOK
    steps:
      - id: call
        http: {url: "{{ params.base }}/ping", headers: {X-Key: "{{ secrets.tok }}"}}
""",
)


def test_a_faked_request_is_still_refused_where_the_http_step_would_refuse_it(tmp_path: Path) -> None:
    h = harness(tmp_path, HTTP_RB)
    h.setenv("TOK", "t0ken-value")
    h.http.reply("GET", "https://api.example.com/ping", Reply(200))
    outcome = h.run("web")
    assert outcome.state == "failed" and "comes from a template; refusing to send it" in outcome.reason, "by pre-flight"
    assert outcome.step("call").state == "pending" and h.http.requests == []
    assert "t0ken-value" not in json.dumps(outcome.view)


def test_a_request_nothing_answers_fails_its_step_naming_it(tmp_path: Path) -> None:
    h = harness(tmp_path, ("plain.yaml", "name: plain\nsteps:\n  - {id: call, http: 'https://api.example.com/v1/x?a=1'}\n"))
    h.http.reply("GET", "https://api.example.com/v1/y", Reply(200))
    outcome = h.run("plain")
    assert outcome.step("call").reason == ("no fake http reply for GET https://api.example.com/v1/x?a=1 (fake replies for: "
                                           "GET https://api.example.com/v1/y)")  # fmt: skip


def test_fail_step_fails_only_the_action_and_only_as_often_as_asked(tmp_path: Path) -> None:
    h = harness(
        tmp_path,
        (
            "f.yaml",
            """
        name: f
        steps:
          - id: a
            check: [{shell: ['false']}]
            shell: [echo, done]
            retry: {attempts: 3, delay: 0s}
    """,
        ),
    )
    h.fail_step("a", times=2, exit_code=7)
    outcome = h.run("f")
    assert outcome.state == "succeeded" and outcome.step("a").attempts == 3
    assert [e.data.get("exit_code") for e in outcome.events_of("step.attempt_failed", "a")] == [7, 7]
    assert len(h.executions("a")) == 1, "the injected failures are not executions"
    assert outcome.events_of("probe", "a")[0].data["holds"] is False, "the check ran for real"


def test_kill_at_a_step_the_run_never_reaches_is_a_clear_failure(tmp_path: Path) -> None:
    h = harness(tmp_path, ("k.yaml", "name: k\nsteps:\n  - {id: a, shell: [echo, a]}\n  - {id: b, when: false, shell: [echo, b]}\n"))
    with pytest.raises(AssertionError, match="the run was not killed at step 'b' \\(after its action\\): the driver exited with 0"):
        h.run_until_killed("k", at="b")
    assert h.state.read()["kill"] is None


def test_exactly_once_per_target_across_a_kill_in_a_fan_out(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    h = harness(
        tmp_path,
        (
            "fan.yaml",
            f"""
        name: fan
        steps:
          - id: touch
            targets: [h1, h2, h3]
            check: [{{shell: [test, -f, "{marks}/{{{{ target.name }}}}"]}}]
            shell: [sh, -c, 'echo x >> "$0"', "{marks}/{{{{ target.name }}}}"]
    """,
        ),
    )
    killed = h.run_until_killed("fan", at="touch", target="h2", when="after")
    outcome = h.resume(killed.run_id)
    assert outcome.state == "succeeded", outcome.reason
    for name in ("h1", "h2", "h3"):
        h.assert_exactly_once(outcome, "touch", target=name)
        assert (marks / name).read_text() == "x\n"
    with pytest.raises(AssertionError, match="ran 0 times, not once"):
        h.assert_exactly_once(outcome, "nope")


def test_the_cli_mode_runs_what_a_user_runs(tmp_path: Path) -> None:
    h = harness(
        tmp_path, ("c.yaml", "name: c\nparams:\n  word: {type: string}\nsteps:\n  - {id: say, shell: [echo, '{{ params.word }}']}\n")
    )
    outcome = h.run_cli("c", {"word": "x; rm -rf /"})
    assert outcome.state == "succeeded" and outcome.output("say")["stdout"] == "x; rm -rf /\n"
    assert [e.type for e in outcome.events][:2] == ["run.created", "run.started"]
    assert h.cli("runs", "--json").json()["runs"][0]["run_id"] == outcome.run_id, "the same journal in both modes"
    assert h.status(outcome.run_id).state == "succeeded"


# ---------------------------------------------------------------------- runbook test


def test_runbook_test_runs_the_tests_next_to_the_runbooks(project: Project) -> None:
    project.write("hello.yaml", "name: hello\nsteps:\n  - {id: say, shell: [echo, hello]}\n")
    project.write(
        "tests/test_hello.py",
        """
        def test_says_hello(runbook):
            assert runbook.run("hello").output("say")["stdout"] == "hello\\n"

        def test_fails(runbook):
            assert runbook.run("hello").state == "failed"
    """,
    )
    project.write("test_beside.py", "def test_beside(runbook):\n    assert runbook.run('hello').state == 'succeeded'\n")
    res = project.run("test", "--json")
    assert res.code == 1, res
    doc = res.json()
    assert (doc["tests"], doc["passed"], doc["failed"]) == (3, 2, 1), doc
    assert doc["failures"][0]["test"].endswith("test_hello.py::test_fails")
    assert project.run("validate").code == 0, "the catalog does not take tests for runbooks"
    assert project.run("test", "-k", "says or beside", "--json").json()["failed"] == 0
    ok = project.run("test", "-k", "says")
    assert ok.code == 0 and "1 passed" in ok.out


def test_runbook_test_with_no_tests_says_so(project: Project) -> None:
    project.write("hello.yaml", "name: hello\nsteps:\n  - {id: say, shell: [echo, hello]}\n")
    res = project.run("test")
    assert res.code == 0 and "no runbook tests found" in res.err
    assert project.run("test", "nope/").code == 2


def test_runbook_test_runs_the_shipped_examples_tests() -> None:
    res = subprocess.run([sys.executable, "-m", "runner", "test", "--json", "-k", "rotate_log or disk_cleanup"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    doc = json.loads(res.stdout)
    assert res.returncode == 0 and doc["failed"] == 0 and doc["passed"] >= 10, (doc, res.stderr[-3000:])
