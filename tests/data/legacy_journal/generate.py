"""Writes ``journal.db`` (and ``out.log``) with runs in every resumable state, using the runbook release this
directory was generated with (``runbook`` at be46027, journal format 2, untyped step data). Kept so that the
fixture can be understood; it is not re-run by the tests, which check that today's code resumes this journal.

    python tests/data/legacy_journal/generate.py   # with the old release installed; writes next to this file

Each run, its state, and what a test must do to finish it, is listed in ``runs.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="legacy-journal-"))
    shutil.copytree(HERE / "runbooks", work / "runbooks")
    (work / ".runbook").mkdir()
    (work / "policy.yaml").write_text("runbooks:\n  legacy-gated: {require_approval: [act]}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    env.update(RUNBOOK_ACTOR="legacy-tester", RUNBOOK_LEASE_TTL="5")
    runs: list[dict[str, str]] = []

    def cli(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "runner", *args, "--json"], cwd=work, env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        return json.loads(proc.stdout)

    def record(doc: dict, then: str) -> None:
        runs.append({"run_id": doc["run_id"], "runbook": doc["runbook"], "state": doc["state"], "then": then})

    def killed(name: str, marker: str) -> dict:
        proc = subprocess.Popen([sys.executable, "-m", "runner", "run", name], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 30
        while marker not in _read(work / "out.log"):
            assert time.monotonic() < deadline, f"{name} never wrote {marker}"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        subprocess.run(["pkill", "-KILL", "-f", "sleep 60"], check=False)  # what the killed step left running
        return cli("runs", "--limit", "1")["runs"][0] | {"run_id": cli("runs", "--limit", "1")["runs"][0]["run_id"]}

    record(cli("run", "legacy", "--max-steps", "1"), "resume")
    record(cli("run", "legacy-approval"), "approve, resume")
    doc = cli("run", "legacy-approval")
    cli("approve", doc["run_id"], "--by", "alice")
    record(doc | {"state": "waiting (approved by alice)"}, "resume")
    record(cli("run", "legacy-gated", "--as-agent", "--policy", "policy.yaml"), "approve, resume")
    record(cli("run", "legacy-wait", "--budget", "1s"), "resume after the wait")
    record(killed("legacy-crash", "blind"), "resume (unknown), decide skip, resume")
    crash2 = killed("legacy-crash", "blind\none\nblind")
    record(cli("resume", crash2["run_id"]), "decide retry, resume")
    record(killed("legacy-checked", "checked"), "touch checked.done, resume")
    record(killed("legacy-verify", "v"), "touch verified.flag, resume")
    record(cli("run", "legacy-fail"), "touch fixed.flag, retry")
    record(cli("run", "legacy-rollback"), "touch fixed.flag, retry")
    record(cli("run", "legacy-fanout"), "touch fixed.flag, retry")
    record(cli("run", "legacy-parent"), "approve, resume")
    record(cli("run", "legacy", "--max-steps", "2"), "resume")

    subprocess.run([sys.executable, "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA wal_checkpoint(TRUNCATE)'); c.close()",
                    str(work / ".runbook" / "journal.db")], check=True)  # fmt: skip
    shutil.copy(work / ".runbook" / "journal.db", HERE / "journal.db")
    shutil.copy(work / "out.log", HERE / "out.log")
    (HERE / "runs.json").write_text(json.dumps(runs, indent=2) + "\n")
    shutil.rmtree(work)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


if __name__ == "__main__":
    main()
