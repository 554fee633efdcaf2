"""A real Prometheus Alertmanager (Debian ``prometheus-alertmanager``) on loopback, and ``amtool`` to inject alerts.

Clustering is off and the web API binds 127.0.0.1 on a free port. The process is a direct child,
stopped by PID.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.server.serverkit import free_port

__all__ = ["AMTOOL", "AM_BIN", "Alertmanager", "have_alertmanager"]

AM_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


def have_alertmanager() -> bool:
    """True if both binaries are installed."""
    return Path(AM_BIN).exists() and Path(AMTOOL).exists()


@dataclass
class Alertmanager:
    """A running Alertmanager whose one receiver posts to ``webhook_url`` with a bearer token."""

    proc: subprocess.Popen[bytes]
    url: str
    workdir: Path

    @classmethod
    def start(cls, workdir: Path, webhook_url: str, token: str) -> Alertmanager:
        """Write the config, check it with amtool, start Alertmanager and wait until it is ready."""
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "alertmanager.yml"
        config.write_text(textwrap.dedent(f"""
            route:
              receiver: runbook
              group_by: ['alertname']
              group_wait: 1s
              group_interval: 1s
              repeat_interval: 1h
            receivers:
              - name: runbook
                webhook_configs:
                  - url: {webhook_url}
                    send_resolved: true
                    max_alerts: 0
                    http_config:
                      authorization:
                        type: Bearer
                        credentials: {token}
        """).lstrip())  # fmt: skip
        subprocess.run([AMTOOL, "check-config", str(config)], check=True, capture_output=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(workdir / "am.log", "wb") as log:
            proc = subprocess.Popen([AM_BIN, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
                                     f"--web.listen-address=127.0.0.1:{port}", f"--web.external-url={url}",
                                     "--cluster.listen-address=", "--log.level=debug"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        am = cls(proc, url, workdir)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise AssertionError(f"alertmanager exited with {proc.returncode}:\n{am.log()}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=0.5, trust_env=False).status_code == 200:
                    return am
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        am.stop()
        raise AssertionError(f"alertmanager was not ready within 30s:\n{am.log()}")

    def add(self, *labels: str, start: datetime | None = None, end: datetime | None = None) -> None:
        """``amtool alert add LABELS`` (with ``--end`` in the past, the alert is resolved)."""
        args = [AMTOOL, f"--alertmanager.url={self.url}", "alert", "add", *labels, "--annotation=summary=injected by a test"]
        if start is not None:
            args.append(f"--start={start.astimezone(UTC).isoformat().replace('+00:00', 'Z')}")
        if end is not None:
            args.append(f"--end={end.astimezone(UTC).isoformat().replace('+00:00', 'Z')}")
        subprocess.run(args, check=True, capture_output=True, timeout=30)

    def log(self) -> str:
        """Alertmanager's log so far."""
        path = self.workdir / "am.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Terminate and reap the process."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
