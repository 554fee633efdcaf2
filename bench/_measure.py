"""Measuring one whole process: wall time, CPU time, peak memory, and how contended the machine was meanwhile.

The child is reaped with ``os.wait4``, whose resource usage covers the child and
every descendant it reaped in turn. Its ``ru_maxrss`` is therefore the peak
resident set of the largest single process in the tree (Linux keeps the maximum
of the descendants, not their sum); for a runner that spawns short-lived
``true`` processes one at a time that is the runner itself.

Contention: on Linux, ``/proc/PID/schedstat`` says how long a process was ready
to run but waited for a CPU. Read from the zombie just before it is reaped, it
gives each sample's ``delay`` share: near zero when the machine had a core to
spare, large when other work inflated the sample's wall time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "busy_seconds", "fit_slope", "own_cpu_seconds", "run_measured", "summarize"]


@dataclass
class Sample:
    """One finished process."""

    wall_ms: float
    cpu_ms: float  # user + system time of the whole tree
    maxrss_mib: float
    code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    delay: float | None = None  # share of the wall time the process was ready to run but waited for a CPU (None: unknown)


def _kill_tree(pid: int, fired: threading.Event) -> None:
    fired.set()
    with contextlib.suppress(ProcessLookupError):  # it ended on its own just now
        os.killpg(pid, signal.SIGKILL)


def run_measured(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> Sample:
    """Run ``argv`` to completion in its own session and measure it from spawn to reap."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        # A timer thread kills the tree on timeout; the main thread stays blocked in wait4 so the
        # measurement has no polling delay in it.
        fired = threading.Event()
        timer = threading.Timer(timeout, _kill_tree, args=(proc.pid, fired))
        timer.start()
        try:
            delay = _exit_run_delay(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C of the benchmark: the child has its own session, so stop it here
            _kill_tree(proc.pid, fired)
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Sample(
            wall_ms=wall * 1000,
            cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000,
            maxrss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
            code=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            timed_out=fired.is_set(),
            delay=None if delay is None else delay / wall,
        )


def _exit_run_delay(pid: int) -> float | None:
    """Wait for ``pid`` to exit without reaping it, then read how long it waited for a CPU in all (seconds).

    ``/proc/PID/schedstat`` holds the time on a CPU, the time spent runnable but waiting for one
    (``run_delay``) and the number of time slices; a zombie keeps it until it is reaped.
    """
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def summarize(samples: list[Sample]) -> dict[str, float]:
    """Median, min and max wall time, median CPU time and the peak RSS over ``samples``."""
    walls = [s.wall_ms for s in samples]
    return {
        "median_ms": statistics.median(walls),
        "min_ms": min(walls),
        "max_ms": max(walls),
        "cpu_median_ms": statistics.median(s.cpu_ms for s in samples),
        "peak_rss_mib": max(s.maxrss_mib for s in samples),
    }


def fit_slope(points: dict[int, float]) -> float | None:
    """Least-squares slope of time over N (ms per step); None with fewer than two N."""
    if len(points) < 2:
        return None
    xs, ys = list(points), list(points.values())
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux ``/proc/stat``), or None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds used by this process and every child it has reaped."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
