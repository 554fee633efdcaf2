"""Output a person can see (issue 18, must-shows 1 and 2).

In a real terminal (tmux, ``capture-pane``) a step that prints a line every 0.5 s shows each line while it runs,
and a failing step shows its stderr tail and exit code; piped output is plain and line-prefixed. ``runbook logs``
of a fan-out step over three real SSH hosts gives each target's output, complete and in order, with a secret the
step printed masked.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from harness.netns import NetnsHosts

from tests.conftest import Project, require

TICKER = """
name: ticker
steps:
  - id: tick
    shell: {script: "for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.5; done"}
  - id: boom
    shell: {script: "echo preparing; echo 'cause: the disk is full' >&2; exit 3"}
"""


def _pane(name: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", name], capture_output=True, text=True, check=True).stdout


def test_a_terminal_shows_each_line_while_the_step_runs_and_the_failure_tail(project: Project, tmp_path: Path) -> None:
    require(shutil.which("tmux") is not None, "tmux (apt-get install tmux)")
    project.write("ticker.yaml", TICKER)
    name = f"rb-live-{time.monotonic_ns()}"
    script = tmp_path / "live.sh"
    exports = [f"export {k}={shlex.quote(v)}" for k, v in project.env.items() if k.isidentifier()]
    script.write_text("\n".join([*exports, "export TERM=xterm-256color", f"cd {shlex.quote(str(project.root))}",
                                 f"{shlex.join(project.cmd('run', 'ticker'))}; echo EXIT=$?", "sleep 30"]) + "\n")  # fmt: skip
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "50", f"bash {script}"], check=True)
    try:
        seen: list[tuple[float, int]] = []  # (time, number of tick lines on screen)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            screen = _pane(name)
            ticks = sum(1 for i in range(1, 7) if f"tick-{i}" in screen)
            if not seen or ticks != seen[-1][1]:
                seen.append((time.monotonic(), ticks))
            if "EXIT=" in screen:
                break
            time.sleep(0.1)
        screen = _pane(name)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)
    counts = [n for _, n in seen]
    assert any(0 < n < 6 for n in counts), f"the lines appeared while the step ran, not all at its end: {seen}"
    assert counts == sorted(counts), seen
    assert "tick stdout| tick-6" in screen and "boom stderr| cause: the disk is full" in screen, screen
    assert "exit code 3" in screen and "cause: the disk is full" in screen.split("✗ boom")[-1], screen
    assert "EXIT=1" in screen, screen


def test_piped_output_is_plain_and_line_prefixed(project: Project) -> None:
    project.write("ticker.yaml", TICKER.replace("1 2 3 4 5 6", "1 2"))
    res = project.run("run", "ticker")
    assert res.code == 1
    assert "\x1b[" not in res.out, "no colours or cursor movement in a pipe"
    lines = res.out.splitlines()
    assert lines[:2] == ["tick stdout| tick-1", "tick stdout| tick-2"], lines
    assert "boom stderr| cause: the disk is full" in lines
    assert any(line.startswith("  boom stderr (last 1 line(s), exit code 3)") for line in lines), lines
    quiet = project.run("run", "ticker", "--quiet")
    assert "tick-1" not in quiet.out.split("boom stderr (last")[0], "--quiet shows no live lines"


def test_logs_follow_prints_lines_while_the_step_runs_and_stops_with_the_run(project: Project) -> None:
    """``runbook logs RUN --follow --json``: each line once, in order, the first while its step still runs; the
    command ends when the run does."""
    project.write("ticker.yaml", TICKER.replace("1 2 3 4 5 6", " ".join(map(str, range(1, 13)))))
    run = project.popen("run", "ticker", "--quiet")
    try:
        deadline = time.monotonic() + 60
        while not (runs := project.run("runs", "--json").json()["runs"]):
            assert time.monotonic() < deadline, "the run never appeared"
            time.sleep(0.1)
        follow = project.popen("logs", runs[0]["run_id"], "--follow", "--json")
        assert follow.stdout is not None
        first = json.loads(follow.stdout.readline())
        running_at_first = run.poll() is None
        follow.wait(timeout=120)
        # The rest through the same buffered reader: lines it read ahead with the first one stay in its buffer
        # (Popen.communicate reads the pipe's descriptor and would never see them).
        out, err = follow.stdout.read(), follow.stderr.read() if follow.stderr is not None else ""
    finally:
        run.communicate(timeout=120)
    assert follow.returncode == 0, err
    lines = [first, *(json.loads(line) for line in out.splitlines())]
    assert first == {"step": "tick", "target": None, "stream": "stdout", "n": first["n"], "line": first["line"], "attempt": 1,
                     "part": "action"}  # fmt: skip
    assert running_at_first, "the first line arrived while the step ran"
    ticks = [line["line"] for line in lines if line["step"] == "tick"]
    assert ticks == [f"tick-{i}" for i in range(1, 13)], "every line once, in order"
    assert {"step": "boom", "stream": "stderr", "line": "cause: the disk is full"}.items() <= next(
        line for line in lines if line["step"] == "boom" and line["stream"] == "stderr"
    ).items()


def test_a_python_steps_log_messages_appear_with_their_text(project: Project) -> None:
    project.write(
        "logs.py",
        """
from runner import Context, Runbook

rb = Runbook("logsy")


@rb.step()
def say(ctx: Context, p) -> str:
    ctx.log("hello from the step", count=3)
    return "ok"
""",
    )
    res = project.run("run", "logsy")
    assert res.code == 0, res
    assert "say log| hello from the step" in res.out, res.out
    rid = project.run("runs", "--json").json()["runs"][0]["run_id"]
    assert "say log| hello from the step" in project.run("logs", rid).out
    events = project.run("events", rid).out
    assert "step.log say" in events and "hello from the step" in events


FANOUT = """
name: shout
params:
  token: {type: string, secret: true, allow: ["env:SHOUT_*"]}
steps:
  - id: each
    targets: group:fleet
    batch: {max_concurrency: 3}
    ssh:
      connect_timeout: 2s
      command: [sh, -c, 'for i in $(seq 1 40); do echo "$1 line $i"; done; echo "token=$TOKEN" >&2', sh, "{{ target.name }}"]
      env: {TOKEN: "{{ params.token }}"}  # never on the command line (refused there)
"""


def test_logs_of_a_fan_out_over_real_ssh_are_complete_in_order_and_masked(project: Project, netns_hosts: NetnsHosts) -> None:
    hosts = netns_hosts.hosts[:3]
    inventory = project.root / "inventory.yaml"
    text = netns_hosts.inventory_yaml("fleet")
    keep = {h.name for h in hosts}
    lines = [line for line in text.splitlines() if not line.startswith("  h") or line.split(":")[0].strip() in keep]
    lines = [line if not line.startswith("  fleet:") else f"  fleet: [{', '.join(sorted(keep))}]" for line in lines]
    inventory.write_text("\n".join(lines) + "\n")
    project.write("shout.yaml", FANOUT)
    secret = "s3cr3t-T0ken-value"
    res = project.run("--inventory", str(inventory), "run", "shout", "-p", "token=env:SHOUT_TOKEN", "--json", env={"SHOUT_TOKEN": secret})
    assert res.code == 0, res
    rid = res.json()["run_id"]
    doc = project.run("logs", rid, "each", "--json").json()
    assert secret not in str(doc)
    for host in sorted(keep):
        out = [line["line"] for line in doc["lines"] if line["target"] == host and line["stream"] == "stdout"]
        assert out == [f"{host} line {i}" for i in range(1, 41)], (host, out[:5])
        err = [line["line"] for line in doc["lines"] if line["target"] == host and line["stream"] == "stderr"]
        assert err == ["token=***"], err
    one = project.run("logs", rid, "each", "--target", sorted(keep)[1])
    assert one.code == 0 and all(line.startswith(f"each@{sorted(keep)[1]} ") for line in one.out.splitlines()), one.out
    live = project.run("--inventory", str(inventory), "run", "shout", "-p", "token=env:SHOUT_TOKEN", env={"SHOUT_TOKEN": secret})
    assert secret not in live.out and f"each@{sorted(keep)[0]} stdout| {sorted(keep)[0]} line 40" in live.out, live.out
