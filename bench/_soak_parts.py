"""Parts of the soak (``bench/soak.py``): the soak project, the supervised components, the delivery sender.

Every process started here is a direct child in a session of its own, signalled by its PID only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CAPTURES = REPO / "tests" / "data" / "alertmanager-webhook.json"

# Six steps: four guarded by a check (their action must run at most once, whatever is killed when), two declared
# idempotent (re-run after a crash inside them is allowed; after they completed, never). Each action appends
# "TAG STEP NANOSECONDS" to the ledger before it sleeps, so a kill lands inside an action often.
STEPS = (("s0", "check"), ("s1", "idempotent"), ("s2", "check"), ("s3", "check"), ("s4", "idempotent"), ("s5", "check"))
CHECKED = frozenset(s for s, kind in STEPS if kind == "check")


def soak_runbook(ledger: Path, hold: float) -> str:
    """The runbook every soak run executes (the ledger's path is written into it)."""
    lines = ["name: soak", "description: one run of the soak (bench/soak.py)", "params:",
             "  tag: {type: string, pattern: '^[A-Za-z0-9._-]+$'}", "steps:"]  # fmt: skip
    for sid, kind in STEPS:
        action = f"""shell: {{script: 'echo "$tag {sid} $(date +%s%N)" >> {ledger}; sleep {hold}'}}"""
        if kind == "check":
            check = f'check: [{{shell: [grep, -q, "^{{{{ params.tag }}}} {sid} ", "{ledger}"]}}]'
            lines.append(f"  - {{id: {sid}, {action}, {check}}}")
        else:
            lines.append(f"  - {{id: {sid}, idempotent: true, {action}}}")
    return "\n".join(lines) + "\n"


SERVER_CONFIG = """\
routes:
  - name: soak
    source: alertmanager
    match: {alertname: SoakAlert}
    runbook: soak
    params: {tag: "{{ alert.labels.tag }}"}
"""


@dataclass
class SoakProject:
    """A project directory for one store: the runbook, the server config, the ledger, logs, the environment."""

    root: Path
    store_url: str
    lease_ttl: float
    hold: float = 0.15
    port: int = 0

    def __post_init__(self) -> None:
        (self.root / "runbooks").mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.ledger.touch()
        (self.root / "runbooks" / "soak.yaml").write_text(soak_runbook(self.ledger, self.hold), encoding="utf-8")
        (self.root / "server.yaml").write_text(SERVER_CONFIG, encoding="utf-8")
        keep = {"RUNBOOK_DISABLE_PLUGINS", "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_") or k in keep}
        self.env.update(RUNBOOK_STORE=self.store_url, RUNBOOK_LEASE_TTL=str(self.lease_ttl), PYTHONUNBUFFERED="1",
                        RUNBOOK_CACHE_DIR=str(self.root / "cache"), RUNBOOK_ACTOR="soak-cli")  # fmt: skip

    @property
    def ledger(self) -> Path:
        """Where every step action appends ``TAG STEP NS``."""
        return self.root / "ledger"

    def cmd(self, *args: str) -> list[str]:
        """argv of ``runbook ARGS`` with this interpreter."""
        return [sys.executable, "-m", "runner", *args]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``runbook ARGS`` to completion."""
        return subprocess.run(self.cmd(*args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Component:
    """A supervised process: a CLI executor, a ``runbook worker`` or a ``runbook serve``."""

    name: str
    kind: str  # cli | worker | serve
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    kill_at: float = 0.0
    stopped: bool = False  # SIGSTOPped by the soak
    tag: str | None = None  # CLI: the run's tag

    def start(self, project: SoakProject, lifetime: float) -> None:
        """Start the process; it is to be killed ``lifetime`` seconds from now."""
        with open(self.log, "ab") as out:
            out.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(self.argv[2:])}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, cwd=project.root, env=project.env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.started = time.monotonic()
        self.kill_at = self.started + lifetime
        self.stopped = False

    @property
    def pid(self) -> int:
        """The running process's PID (0 when none)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else 0

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> bool:
        """``kill -9`` the process (not its step's sessions, as a crash would); True if it was running."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        return True

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process if it runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGCONT, SIGTERM, then SIGKILL after ``grace``; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=60)


@dataclass
class Sent:
    """One request that the sender got a 2xx for: what it asked for and the run ids the answer named."""

    kind: str  # alert | api
    tag: str
    attempts: int
    run_ids: list[str]
    delivery_id: str = ""


@dataclass
class Sender:
    """A thread that sends Alertmanager deliveries and ``POST /v1/runs`` to the server, retrying until 2xx.

    Like Alertmanager, a delivery that got no 2xx is sent again with the identical body (and an API request
    with the same ``Idempotency-Key``), so every request is acknowledged at most once by design; a request
    still unacknowledged after ``give_up`` seconds is counted ``unacknowledged`` (never ``lost``).
    """

    port: int
    prefix: str
    rng: random.Random
    interval: tuple[float, float] = (0.3, 1.0)
    give_up: float = 120.0
    acked: list[Sent] = field(default_factory=list)
    unacked: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sending in the background."""
        self._thread = threading.Thread(target=self._loop, name="soak-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop starting new requests; wait for the one in flight to be acknowledged or given up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.give_up + 30)

    def _loop(self) -> None:
        import httpx

        template = json.loads(CAPTURES.read_text(encoding="utf-8"))["captures"][1]["body"]  # a real Alertmanager POST
        n = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=15.0, trust_env=False) as client:
            while not self._stop.wait(self.rng.uniform(*self.interval)):
                n += 1
                tag = f"{self.prefix}-{'am' if n % 2 else 'api'}-{n}"
                if n % 2:
                    self._deliver(client, tag, self._alert_body(template, tag, n))
                else:
                    self._queue(client, tag)

    @staticmethod
    def _alert_body(template: dict[str, Any], tag: str, n: int) -> bytes:
        body = json.loads(json.dumps(template))
        alert = body["alerts"][0]
        alert["labels"] = {"alertname": "SoakAlert", "tag": tag, "instance": f"soak{n}:9100", "severity": "critical"}
        alert["fingerprint"] = hashlib.sha256(tag.encode()).hexdigest()[:16]
        body["alerts"] = [alert]
        body["groupLabels"] = body["commonLabels"] = {"alertname": "SoakAlert"}
        body["groupKey"] = '{}:{alertname="SoakAlert"}'
        return json.dumps(body).encode()

    def _retrying(self, client: Any, method: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[Any, int]:
        import httpx

        deadline = time.monotonic() + self.give_up
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            try:
                resp = client.request(method, path, content=body, headers={"content-type": "application/json", **headers})
                if 200 <= resp.status_code < 300:
                    return resp.json(), attempts
                self.errors[f"HTTP {resp.status_code}"] = self.errors.get(f"HTTP {resp.status_code}", 0) + 1
            except httpx.HTTPError as exc:
                self.errors[type(exc).__name__] = self.errors.get(type(exc).__name__, 0) + 1
            time.sleep(0.3)
        return None, attempts

    def _deliver(self, client: Any, tag: str, body: bytes) -> None:
        doc, attempts = self._retrying(client, "POST", "/v1/alerts/alertmanager", body, {"User-Agent": "Alertmanager/0.25.0"})
        if doc is None:
            self.unacked.append(tag)
            return
        runs = [d["run_id"] for d in doc["decisions"] if d.get("run_id")]
        self.acked.append(Sent("alert", tag, attempts, runs, doc["delivery_id"]))

    def _queue(self, client: Any, tag: str) -> None:
        body = json.dumps({"runbook": "soak", "params": {"tag": tag}}).encode()
        doc, attempts = self._retrying(client, "POST", "/v1/runs", body, {"Idempotency-Key": tag})
        if doc is None:
            self.unacked.append(tag)
            return
        self.acked.append(Sent("api", tag, attempts, [doc["run_id"]]))
