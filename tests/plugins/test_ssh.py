"""The ``ssh`` step type against a real OpenSSH server on 127.0.0.1.

User-facing behaviour goes through the real CLI (``project`` fixture); the property test and the
error mapping drive the step type in-process with a real Context, sharing one connection.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from harness.procs import free_port, keygen, require, wait_for
from harness.servers import SSHServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from runbook_ssh.command import Capture, PidFilter, build_command, env_stdin, kill_command
from runbook_ssh.step import SSHConfig, SSHStep

from runner.context import Context
from runner.engine.runtime import Resources
from runner.errors import CancelRequested, CommandTimeout, HostKeyError, SSHError, StepFailed
from runner.secrets import Redactor
from runner.settings import Settings
from runner.steptypes import ActionResult
from runner.templating import Renderer

STEP = SSHStep()


# ---------------------------------------------------------------------- helpers


def fingerprint(public_key_line: str) -> str:
    """OpenSSH's SHA256 fingerprint of ``ssh-ed25519 AAAA...``, computed without paramiko."""
    blob = base64.b64decode(public_key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and ") Z " not in Path(f"/proc/{pid}/stat").read_text()


class Services:
    """The part of the engine's Services the ssh step uses: run-scoped resources."""

    def __init__(self) -> None:
        self.resources = Resources()
        self.created: list[Any] = []

    def resource(self, key: str, factory: Any) -> Any:
        def make() -> Any:
            obj = factory()
            self.created.append(obj)
            return obj

        return self.resources.get(key, make)

    def journal(self, ctx: Context, kind: str, data: dict[str, Any]) -> None:
        pass


class NoParams(BaseModel):
    pass


def make_ctx(services: Services, *, timeout: float | None = 30.0, target: dict[str, Any] | None = None,
             settings: Settings | None = None) -> Context:  # fmt: skip
    return Context(run_id="R", runbook="rb", step_id="s", attempt=1, params=NoParams(), param_values={}, outputs={},
                   settings=settings or Settings(), secrets=None, redactor=Redactor(), services=services,  # type: ignore[arg-type]
                   started_by="tester", target=target, timeout=timeout)  # fmt: skip


def execute(config: dict[str, Any], ctx: Context) -> ActionResult:
    return STEP.execute(SSHConfig.model_validate(config, context={"rendered": True}), ctx)


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    svc = Services()
    yield svc
    svc.resources.close()


@dataclass
class Box:
    """A project whose inventory names the test server ``box``."""

    project: Any
    inventory: Path
    server: SSHServer
    work: Path

    def run(self, *args: str, **kw: Any) -> Any:
        return self.project.run("--inventory", str(self.inventory), *args, **kw)


@pytest.fixture
def box(sshd: SSHServer, project: Any) -> Box:
    inventory = project.root / "inventory.yaml"
    inventory.write_text(
        f"hosts:\n  box: {{address: {sshd.host}, port: {sshd.port}, user: {sshd.user}, key: {sshd.key}, "
        f"known_hosts: {sshd.known_hosts}}}\n",
        encoding="utf-8",
    )
    return Box(project, inventory, sshd, sshd.workdir(uuid.uuid4().hex[:10]))


def step_of(result: Any, step_id: str) -> dict[str, Any]:
    return next(s for s in result.json()["steps"] if s["id"] == step_id)


# ---------------------------------------------------------------------- command line building (no server)


def test_every_argument_is_quoted_for_the_remote_shell() -> None:
    line = build_command(["printf", "%s", "$(touch /x); `id` && echo 'q'"], report_pid=False)
    assert shlex.split(line) == ["printf", "%s", "$(touch /x); `id` && echo 'q'"]


def test_sudo_env_and_cwd_forms() -> None:
    line = build_command(["systemctl", "restart", "a b"], sudo=True, report_pid=False)
    assert shlex.split(line) == ["sudo", "-n", "--", "systemctl", "restart", "a b"]
    line = build_command(["run"], sudo=True, env={"A": "x y"}, report_pid=False)
    assert shlex.split(line)[:4] == ["sudo", "-n", "--", "sh"] and "x y" not in line, "values are read from stdin"
    line = build_command(["ls"], env={"A": "$(x)"}, cwd="/srv/my app", report_pid=False)
    assert line.startswith("cd -- '/srv/my app' && IFS= read -r __rb") and line.endswith("export A && unset __rb && ls")
    assert "$(x)" not in line
    with pytest.raises(ValueError, match="invalid environment variable"):
        build_command(["ls"], env={"A;rm": "x"})


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_env_values_travel_on_stdin_and_arrive_exactly(shell: str) -> None:
    """Any value (quotes, newlines, a trailing newline, unicode, $(...)) arrives exactly; the rest of stdin follows."""
    env = {"A": "p&ss w'o\"rd\nline2 \u00e9 $(id) `x` \\n end\n\n", "B": "second"}
    line = build_command(["sh", "-c", 'printf "[%s]" "$A" "$B"; cat'], env=env, report_pid=False)
    assert all(v not in line for v in env.values())
    out = subprocess.run([shell, "-c", line], input=(env_stdin(env) + "the stdin\n").encode(), capture_output=True, check=True)
    assert out.stdout.decode() == f"[{env['A']}][second]the stdin\n"


def test_pid_marker_is_reported_and_stripped() -> None:
    assert build_command(["true"]).startswith("printf '\\036runbook-pid:%s\\036\\n' \"$$\" >&2;")
    sink = Capture(100)
    filt = PidFilter(sink)
    for chunk in (b"warn\n\x1erunbook-", b"pid:4242\x1e\nreal stderr\n"):
        filt.feed(chunk)
    filt.flush()
    assert (filt.pid, bytes(sink.data)) == (4242, b"warn\nreal stderr\n")
    assert "kill -s TERM -- -4242" in kill_command(4242)
    assert kill_command(7, sudo=True).startswith("sudo -n -- kill -s TERM -- -7")
    with pytest.raises(ValueError):
        kill_command(1)


def test_capture_caps_output() -> None:
    cap = Capture(5)
    cap.feed(b"abc")
    cap.feed(b"defg")
    assert (bytes(cap.data), cap.truncated) == (b"abcde", True)


def test_summary_and_config_validation() -> None:
    assert STEP.summary({"host": "box", "user": "ops", "command": ["echo", "a b"]}) == "ops@box: echo 'a b'"
    assert STEP.summary({"command": ["systemctl", "restart", "x"], "sudo": True}) == "{{ target }}: sudo systemctl restart x"
    with pytest.raises(ValueError, match="command"):
        SSHConfig.model_validate({"host": "h", "command": []})
    with pytest.raises(ValueError, match="port"):
        SSHConfig.model_validate({"host": "h", "command": ["x"], "port": 70000})
    with pytest.raises(ValueError, match="extra"):
        SSHConfig.model_validate({"host": "h", "command": ["x"], "password": "no"})
    assert SSHConfig.model_validate({"host": "h", "command": ["x"], "port": "{{ params.port }}"}).port == "{{ params.port }}"
    assert SSHConfig.model_validate({"host": "h", "command": ["x"], "connect_timeout": "1500ms"}).connect_timeout == 1.5


# ---------------------------------------------------------------------- must-show 2: host keys


@pytest.mark.parametrize("case", ["changed", "unknown", "no-file"])
def test_unverified_host_keys_are_refused_and_nothing_runs(box: Box, case: str) -> None:
    """A changed key and a host missing from known_hosts: refused, naming host and fingerprint; the marker is never created."""
    known = box.project.root / "known_hosts"
    if case == "changed":  # a different ed25519 key recorded for this host:port
        other = box.server.key.with_name("client_ed25519.pub").read_text().split()
        known.write_text(f"[127.0.0.1]:{box.server.port} {other[0]} {other[1]}\n")
    elif case == "unknown":  # known_hosts lists another host only
        known.write_text(f"[127.0.0.1]:{box.server.port + 1} {box.server.host_public_key}\n")
    marker = box.work / "marker"
    box.project.write(
        "touch.yaml",
        f"""
        name: touch
        steps:
          - id: touch
            ssh: {{host: box, known_hosts: {known}, command: [touch, {marker}]}}
    """,
    )
    logins = box.server.accepted_logins()
    result = box.run("run", "touch", "--json")
    assert result.code == 1, result
    assert not marker.exists()
    assert box.server.accepted_logins() == logins  # refused before authentication
    if case != "changed":  # pre-flight finds it in known_hosts (no connection at all), before any step starts
        reason = result.json()["reason"]
        assert reason.startswith("pre-flight found 1 problem"), reason
        assert f"ssh box (127.0.0.1:{box.server.port})" in reason and str(known) in reason, reason
        assert step_of(result, "touch")["state"] == "pending"
        return
    reason = step_of(result, "touch")["reason"]
    expected_fp = fingerprint(box.server.host_public_key)
    assert f"box (127.0.0.1:{box.server.port})" in reason, reason
    assert expected_fp in reason, reason
    assert "does NOT match" in reason, reason
    assert "refusing to connect" in reason


def test_host_key_error_in_process(sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(HostKeyError) as info:
        execute(sshd.step_config(known_hosts=str(known), command=["true"]), make_ctx(Services()))
    err = info.value
    assert (err.host, err.fingerprint, err.known_hosts, err.changed) == (
        f"127.0.0.1:{sshd.port}",
        fingerprint(sshd.host_public_key),
        str(known),
        False,
    )


def test_hashed_known_hosts_entries_are_accepted(sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    shutil.copy(sshd.known_hosts, known)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert known.read_text().startswith("|1|")
    assert execute(sshd.step_config(command=["echo", "ok"], known_hosts=str(known)), make_ctx(Services())).stdout == "ok\n"


def test_known_hosts_from_settings_is_the_default(sshd: SSHServer) -> None:
    config = {k: v for k, v in sshd.step_config(command=["true"]).items() if k != "known_hosts"}
    result = execute(config, make_ctx(Services(), settings=Settings(known_hosts=str(sshd.known_hosts))))
    assert result.exit_code == 0


# ---------------------------------------------------------------------- must-show 3: params are data


DANGEROUS = [
    "$(touch {m})", "`touch {m}`", "; touch {m}", "&& touch {m}", "| touch {m}", "\ntouch {m}\n", "' ; touch {m} ; '",
    '" ; touch {m} ; "', "\\", "-n", "--help", "-", "$HOME ${PATH}", "*", "~", "%s%d%%", "{{ 7*7 }}", "ünïcødé ✓ 日本語 🚀",
    "a\tb\r\nc", "", " ", "$'\\x41'", "!!", "#not a comment",
]  # fmt: skip
_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")  # NUL cannot travel in argv
_PIECE = st.one_of(st.sampled_from(DANGEROUS), st.text(alphabet=_CHARS, max_size=30))
VALUES = st.lists(_PIECE, min_size=1, max_size=4).map("".join)


@pytest.fixture(scope="module")
def marker_dir(sshd: SSHServer) -> Path:
    return sshd.workdir("property-" + uuid.uuid4().hex[:8])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=VALUES)
def test_param_values_arrive_as_one_literal_argument(sshd: SSHServer, services: Services, marker_dir: Path, raw: str) -> None:
    """``command: [printf, "%s", "{{ params.x }}"]``: the remote prints exactly the value; nothing in it is executed."""
    marker = marker_dir / "pwned"
    value = raw.replace("{m}", str(marker))
    config = Renderer().render(sshd.step_config(command=["printf", "%s", "{{ params.x }}"]), {"params": {"x": value}})
    result = execute(config, make_ctx(services))
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == value
    assert not marker.exists()
    assert len(services.created) == 1 and services.created[0].connects == 1  # one connection for every example


def test_command_substitution_in_a_param_is_not_run_via_cli(box: Box) -> None:
    marker = box.work / "pwned"
    value = f"$(touch {marker}) `touch {marker}`; touch {marker}"
    box.project.write(
        "echo.yaml",
        """
        name: echo
        params:
          x: {type: string}
        steps:
          - id: echo
            ssh: {host: box, command: [printf, "%s", "{{ params.x }}"]}
    """,
    )
    result = box.run("run", "echo", "-p", f"x={value}", "--json")
    assert result.code == 0, result
    assert step_of(result, "echo")["output"]["stdout"] == value
    assert not marker.exists()


# ---------------------------------------------------------------------- connection reuse, options, inventory


def test_one_connection_serves_every_step_and_probe_of_a_run(box: Box) -> None:
    out = box.work / "out"
    box.project.write(
        "many.yaml",
        f"""
        name: many
        steps:
          - id: one
            ssh: {{host: box, command: [sh, -c, 'echo one >> {out}']}}
          - id: two
            check:
              - ssh: {{host: box, command: [test, -e, {box.work}/never]}}
            ssh: {{host: box, command: [sh, -c, 'echo two >> {out}']}}
            verify:
              within: 5s
              checks:
                - ssh: {{host: box, command: [grep, -q, two, {out}]}}
          - id: three
            ssh: {{host: box, command: [sh, -c, 'echo three >> {out}']}}
    """,
    )
    before = box.server.accepted_logins()
    result = box.run("run", "many", "--json")
    assert result.code == 0, result
    assert out.read_text() == "one\ntwo\nthree\n"
    wait_for(lambda: box.server.accepted_logins() > before, 5, "sshd to log the login")
    assert box.server.accepted_logins() - before == 1


def test_options_env_cwd_stdin_exit_code_and_output_cap(box: Box) -> None:
    box.project.write(
        "opts.yaml",
        f"""
        name: opts
        steps:
          - id: env
            ssh:
              host: box
              cwd: {box.work}
              env: {{GREETING: "hello $(whoami) 'there'", EMPTY: ""}}
              command: [sh, -c, 'printf "%s|%s|%s|" "$GREETING" "$EMPTY" "$(pwd)"; id -un']
          - id: stdin
            ssh: {{host: box, command: [cat], stdin: "line one\\nline two\\n"}}
          - id: big
            ssh: {{host: box, command: [sh, -c, 'head -c 100000 /dev/zero | tr "\\\\0" x; echo oops >&2'], max_output: 1000}}
          - id: failing
            ssh: {{host: box, command: [sh, -c, 'echo bad >&2; exit 3']}}
            expect: {{exit_code: 3, stderr: {{contains: bad}}}}
    """,
    )
    result = box.run("run", "opts", "--json")
    assert result.code == 0, result
    assert step_of(result, "env")["output"]["stdout"] == f"hello $(whoami) 'there'||{box.work}|rbtest\n"
    assert step_of(result, "stdin")["output"]["stdout"] == "line one\nline two\n"
    big = step_of(result, "big")["output"]
    assert (big["stdout"], big["stderr"], big["truncated"]) == ("x" * 1000, "oops\n", True)
    assert step_of(result, "failing")["output"]["exit_code"] == 3


def test_explicit_config_wins_over_the_inventory(box: Box) -> None:
    box.project.write(
        "who.yaml",
        """
        name: who
        steps:
          - id: who
            ssh: {host: box, user: somebody-else, command: [id, -un]}
    """,
    )
    result = box.run("run", "who", "--json")
    assert result.code == 1
    reason = step_of(result, "who")["reason"]
    assert "authentication failed" in reason and f"box (127.0.0.1:{box.server.port})" in reason, reason


def test_ctx_ssh_from_a_python_step(box: Box) -> None:
    (box.project.runbooks / "py_ssh.py").write_text(
        "from runner import Context, Params, Runbook\n\n"
        "class P(Params):\n    host: str\n\n"
        "rb = Runbook('py-ssh', params=P)\n\n"
        "@rb.step()\n"
        "def remote(ctx: Context, p: P) -> dict:\n"
        "    first = ctx.ssh(p.host).run(['sh', '-c', 'echo \"$0\"', 'a b; c'])\n"
        "    second = ctx.ssh(p.host, cwd='/').run(['pwd'])\n"
        "    return {'first': first.stdout, 'second': second.stdout, 'code': first.exit_code}\n",
        encoding="utf-8",
    )
    before = box.server.accepted_logins()
    result = box.run("run", "py-ssh", "-p", "host=box", "--json")
    assert result.code == 0, result
    assert step_of(result, "remote")["output"] == {"first": "a b; c\n", "second": "/\n", "code": 0}
    wait_for(lambda: box.server.accepted_logins() > before, 5, "sshd to log the login")
    assert box.server.accepted_logins() - before == 1


# ---------------------------------------------------------------------- timeouts, cancellation


def test_timeout_stops_the_remote_command(box: Box) -> None:
    pidfile = box.work / "pid"
    box.project.write(
        "slow.yaml",
        f"""
        name: slow
        steps:
          - id: slow
            timeout: 1s
            ssh: {{host: box, command: [sh, -c, 'sleep 60 & echo $! > {pidfile}; wait']}}
    """,
    )
    result = box.run("run", "slow", "--json")
    assert result.code == 1, result
    assert "timed out after 1s" in step_of(result, "slow")["reason"]
    pid = int(pidfile.read_text())
    wait_for(lambda: not alive(pid), 10, f"remote sleep (pid {pid}) to be stopped")


def test_cancellation_closes_the_channel_and_stops_the_remote_command(sshd: SSHServer) -> None:
    work = sshd.workdir("cancel-" + uuid.uuid4().hex[:8])
    pidfile = work / "pid"
    ctx = make_ctx(Services(), timeout=None)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            execute(sshd.step_config(command=["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"]), ctx)
        except BaseException as exc:  # CancelRequested is a BaseException by design
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 10, "the remote command to start")
        ctx.cancel("cancel requested")
    finally:
        thread.join(20)
    assert len(outcome) == 1 and isinstance(outcome[0], CancelRequested), outcome
    pid = int(pidfile.read_text())
    wait_for(lambda: not alive(pid), 10, f"remote sleep (pid {pid}) to be stopped")


def test_command_timeout_in_process(sshd: SSHServer) -> None:
    with pytest.raises(CommandTimeout, match=r"timed out after 0\.5s"):
        execute(sshd.step_config(command=["sleep", "30"]), make_ctx(Services(), timeout=0.5))


# ---------------------------------------------------------------------- sudo


@pytest.fixture
def sudo_rule(sshd: SSHServer) -> Iterator[None]:
    """Let the test user run ``id`` and ``sh`` (``env:`` values are read by sh) as root without a password (removed afterwards)."""
    require(shutil.which("sudo") is not None, "sudo")
    rule = Path("/etc/sudoers.d/runbook-test-" + uuid.uuid4().hex[:8])
    rule.write_text(f"{sshd.user} ALL=(root) NOPASSWD: /usr/bin/id, /usr/bin/sh, /bin/sh, /usr/bin/kill\n", encoding="utf-8")
    rule.chmod(0o440)
    try:
        yield
    finally:
        rule.unlink()


def test_sudo_runs_as_root_with_env(sshd: SSHServer, sudo_rule: None) -> None:
    ctx = make_ctx(Services())
    assert execute(sshd.step_config(command=["id", "-un"], sudo=True), ctx).stdout.strip() == "root"
    result = execute(sshd.step_config(command=["id", "-un"], sudo=True, env={"A": "x"}), ctx)
    assert (result.exit_code, result.stdout.strip()) == (0, "root")
    denied = execute(sshd.step_config(command=["cat", "/etc/shadow"], sudo=True), ctx)
    assert denied.exit_code != 0 and "password is required" in denied.stderr  # -n: never prompts


# ---------------------------------------------------------------------- errors name the host


def _silent_server() -> tuple[socket.socket, int]:
    """Accepts TCP connections (kernel backlog) but never speaks SSH."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock, sock.getsockname()[1]


def test_connection_errors_map_to_ssh_error_naming_the_host(sshd: SSHServer, tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(SSHError, match=rf"ssh 127\.0\.0\.1:{port}: cannot connect \(.*refused"):
        execute({**sshd.step_config(command=["true"]), "port": port}, make_ctx(Services()))
    silent, silent_port = _silent_server()
    try:
        with pytest.raises(SSHError, match=rf"ssh 127\.0\.0\.1:{silent_port}: .*(banner|timed out)"):
            execute({**sshd.step_config(command=["true"]), "port": silent_port, "connect_timeout": 0.5}, make_ctx(Services()))
    finally:
        silent.close()
    keygen(tmp_path / "stranger", "stranger")
    with pytest.raises(SSHError, match=rf"ssh 127\.0\.0\.1:{sshd.port}: authentication failed"):
        execute(sshd.step_config(command=["true"], key=str(tmp_path / "stranger")), make_ctx(Services()))
    with pytest.raises(SSHError, match=r"private key .* does not exist"):
        execute(sshd.step_config(command=["true"], key=str(tmp_path / "nope")), make_ctx(Services()))
    with pytest.raises(StepFailed, match="ssh needs a 'host'"):
        execute({"command": ["true"]}, make_ctx(Services()))


def test_fan_out_target_supplies_the_host(sshd: SSHServer) -> None:
    target = {"name": "t1", "address": "127.0.0.1", "port": sshd.port, "user": sshd.user, "key": str(sshd.key),
              "known_hosts": str(sshd.known_hosts), "vars": {}}  # fmt: skip
    assert execute({"command": ["id", "-un"]}, make_ctx(Services(), target=target)).stdout == "rbtest\n"


# ---------------------------------------------------------------------- must-show 1: restart over SSH, verify over HTTP


class _Health(BaseHTTPRequestHandler):
    state_file: Path

    def do_GET(self) -> None:
        running = self.state_file.exists() and self.state_file.read_text().strip() == "running"
        body = b"ok\n" if running else b"down\n"
        self.send_response(200 if running else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server(box: Box) -> Iterator[tuple[str, Path]]:
    """A real HTTP server whose /healthz answers 200 only while the service's state file says running."""
    state = box.work / "service.state"
    state.write_text("stopped\n")
    shutil.chown(state, box.server.user)
    handler = type("Health", (_Health,), {"state_file": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/healthz", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_restart_over_ssh_verified_over_http_then_satisfied(box: Box, health_server: tuple[str, Path]) -> None:
    url, state = health_server
    box.project.write(
        "restart.yaml",
        """
        name: restart-fake
        params:
          host: {type: string}
          state_file: {type: string}
          health_url: {type: string}
        steps:
          - id: restart
            check:
              - ssh: {host: "{{ params.host }}", command: [grep, -qx, running, "{{ params.state_file }}"]}
            ssh:
              host: "{{ params.host }}"
              command: [sh, -c, 'echo restart >> "$1.log" && echo running > "$1"', sh, "{{ params.state_file }}"]
            verify:
              within: 10s
              every: 200ms
              checks:
                - http: {url: "{{ params.health_url }}"}
                  expect: {status: 200}
    """,
    )
    params = ["-p", "host=box", "-p", f"state_file={state}", "-p", f"health_url={url}"]
    first = box.run("run", "restart-fake", *params, "--json")
    assert first.code == 0, first
    assert step_of(first, "restart")["state"] == "succeeded"
    assert state.read_text() == "running\n"
    second = box.run("run", "restart-fake", *params, "--json")
    assert second.code == 0, second
    assert step_of(second, "restart")["state"] == "satisfied"
    assert Path(f"{state}.log").read_text() == "restart\n"  # the action ran exactly once
