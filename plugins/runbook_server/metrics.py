"""``GET /metrics``: Prometheus text exposition (format 0.0.4), written by hand (no extra dependency).

Runs by runbook and state and the queue depth come from the store at scrape time; step durations,
webhook deliveries and alert decisions are counted by this process since it started.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

from runner.store.groupcommit import GroupCommit

if TYPE_CHECKING:
    from runner.store.base import Store
    from runner.store.records import Event, RunRecord

__all__ = ["Metrics"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _num(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Metrics:
    """Counters and a step-duration histogram for this process, and the text exposition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.deliveries: Counter[tuple[str, str]] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()
        self._started: dict[tuple[str, str], float] = {}
        self._hist: dict[str, list[float]] = {}  # runbook -> [bucket counts..., +Inf count, sum]

    def delivery(self, source: str, outcome: str) -> None:
        """Count one webhook delivery."""
        with self._lock:
            self.deliveries[(source, outcome)] += 1

    def decision(self, route: str | None, decision: str) -> None:
        """Count one alert decision."""
        with self._lock:
            self.decisions[(route or "", decision)] += 1

    def observe(self, event: Event, run: RunRecord) -> None:
        """Engine observer: time steps from ``step.started`` to ``step.finished``."""
        if event.step_id is None or not event.type.startswith("step."):
            return
        key = (event.run_id, event.step_id)
        with self._lock:
            if event.type == "step.started":
                self._started[key] = event.ts
            elif event.type == "step.finished" and key in self._started:
                self._add(run.runbook, event.ts - self._started.pop(key))

    def _add(self, runbook: str, seconds: float) -> None:
        row = self._hist.setdefault(runbook, [0.0] * (len(BUCKETS) + 2))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                row[i] += 1
        row[len(BUCKETS)] += 1
        row[-1] += seconds

    def render(self, store: Store, *, busy: int, workers: int) -> str:
        """The whole exposition."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{metric} {_num(value)}" for metric, value in samples)

        runs = store.count_runs()
        family("runbook_runs", "gauge", "Runs in the journal by runbook and state.",
               [(f"runbook_runs{_labels(runbook=rb, state=st)}", n) for (rb, st), n in sorted(runs.items())])  # fmt: skip
        family("runbook_queue_depth", "gauge", "Queued runs waiting for a worker.", [("runbook_queue_depth", store.queue_depth())])
        family("runbook_workers", "gauge", "Worker threads in this process.", [("runbook_workers", workers)])
        family("runbook_workers_busy", "gauge", "Worker threads driving a run now.", [("runbook_workers_busy", busy)])
        with self._lock:
            deliveries, decisions = sorted(self.deliveries.items()), sorted(self.decisions.items())
            hist = {k: list(v) for k, v in sorted(self._hist.items())}
        family("runbook_webhook_deliveries_total", "counter", "Alert webhook deliveries by source and outcome.",
               [(f"runbook_webhook_deliveries_total{_labels(source=s, outcome=o)}", n) for (s, o), n in deliveries])  # fmt: skip
        family("runbook_alert_decisions_total", "counter", "Alert routing decisions by route and decision.",
               [(f"runbook_alert_decisions_total{_labels(route=r, decision=d)}", n) for (r, d), n in decisions])  # fmt: skip
        group = getattr(store, "group", None)
        if isinstance(group, GroupCommit):
            family("runbook_journal_group_commits_total", "counter", "Journal transactions of grouped writes (group commit).",
                   [("runbook_journal_group_commits_total", group.groups)])  # fmt: skip
            family("runbook_journal_grouped_writes_total", "counter", "Grouped writes (deliveries, executors' commits) they held.",
                   [("runbook_journal_grouped_writes_total", group.units)])  # fmt: skip
        samples: list[tuple[str, float]] = []
        for rb, row in hist.items():
            samples += [(f"runbook_step_duration_seconds_bucket{_labels(runbook=rb, le=_num(b))}", row[i]) for i, b in enumerate(BUCKETS)]
            samples += [(f"runbook_step_duration_seconds_bucket{_labels(runbook=rb, le='+Inf')}", row[len(BUCKETS)]),
                        (f"runbook_step_duration_seconds_sum{_labels(runbook=rb)}", row[-1]),
                        (f"runbook_step_duration_seconds_count{_labels(runbook=rb)}", row[len(BUCKETS)])]  # fmt: skip
        family("runbook_step_duration_seconds", "histogram", "Duration of steps executed by this process's workers.", samples)
        return "\n".join(out) + "\n"
