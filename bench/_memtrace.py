"""``python bench/_memtrace.py ARGS...``: ``runbook ARGS...`` under tracemalloc, then where its memory was at its peak.

A diagnostic for ``memory_bench.py --trace``: a sampler thread takes a tracemalloc snapshot whenever the traced
memory has grown by more than 2 MiB over the largest snapshot so far (every 20 ms at most; one frame per trace, to keep it fast), so the snapshot kept
is the one nearest the peak; at exit the top allocation sites of that snapshot (grouped by file and line) and of
the last one are written to ``RUNBOOK_BENCH_TRACE_OUT`` (stderr when unset). Tracing slows the run several-fold
and adds its own memory to ``ru_maxrss``: read the sites, not the totals.
"""

from __future__ import annotations

import os
import sys
import threading
import tracemalloc

FRAMES = 1
TOP = 30


def _format(title: str, snap: tracemalloc.Snapshot, key: str) -> str:
    stats = snap.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)]).statistics(key)
    total = sum(s.size for s in stats)
    lines = [f"== {title}: {total / 2**20:.1f} MiB traced, by {key}"]
    for s in stats[:TOP]:
        frame = s.traceback[0]
        lines.append(f"{s.size / 2**20:8.2f} MiB {s.count:8d} blocks  {frame.filename}:{frame.lineno}")
    return "\n".join(lines)


def main() -> None:
    """Run the command line under tracemalloc with the sampler; dump at exit."""
    tracemalloc.start(FRAMES)
    best: list[tracemalloc.Snapshot | None] = [None]
    best_size = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            current, _peak = tracemalloc.get_traced_memory()
            if current > best_size[0] + 2 * 2**20:
                best[0], best_size[0] = tracemalloc.take_snapshot(), current

    def dump() -> None:
        stop.set()
        peak = tracemalloc.get_traced_memory()[1]
        last = tracemalloc.take_snapshot()
        parts = [f"traced peak {peak / 2**20:.1f} MiB (snapshot nearest it: {best_size[0] / 2**20:.1f} MiB)"]
        if best[0] is not None:
            parts.append(_format("at the peak", best[0], "lineno"))
        parts.append(_format("at exit", last, "lineno"))
        text = "\n\n".join(parts) + "\n"
        out = os.environ.get("RUNBOOK_BENCH_TRACE_OUT")
        if out:
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stderr.write(text)

    threading.Thread(target=sample, daemon=True).start()
    from runner.cli import run  # not main(): it leaves with os._exit, past atexit

    code = run(sys.argv[1:])
    sys.stdout.flush()
    dump()
    sys.exit(code)


if __name__ == "__main__":
    main()
