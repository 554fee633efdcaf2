"""Where ``runbook serve`` spends its time under load: py-spy on the server while the open-loop load runs.

    pip install py-spy
    python bench/profile_server.py --rate 300 --duration 10            # samples of threads holding the GIL
    python bench/profile_server.py --rate 300 --system runbook-2p --all  # the worker process, every thread

Starts the server as ``bench/server_bench.py`` does (same runbook, route and deliveries), records it with
``py-spy record --format raw`` for the length of the load, and prints the functions with the largest share of
samples, inclusive and own (self). With the default ``--gil``, only samples of the thread holding the GIL
count: that is where the server's one interpreter is busy (a thread blocked in SQLite, a lock or a child
process releases it). The raw samples stay in ``--out`` for a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _servers import RUNBOOK, TOKEN, start

BENCH = Path(__file__).resolve().parent
_FRAME = re.compile(r"(.*) \((.*?)(:\d+)?\)$")


def summarize(raw: Path, top: int) -> str:
    """Inclusive and self shares of the functions in a py-spy raw file."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        names = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            names.append(f"{m.group(1)} ({m.group(2).split('site-packages/')[-1].rsplit('/', 2)[-1]})" if m else frame)
        for name in set(names):
            inclusive[name] += n
        own[names[-1]] += n
    lines = [f"{total} samples", "--- inclusive"]
    lines += [f"{100 * c / total:5.1f}% {name}" for name, c in inclusive.most_common(top) if not name.startswith("thread")]
    lines += ["--- self"]
    lines += [f"{100 * c / total:5.1f}% {name}" for name, c in own.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Profile one load point and print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--system", default=RUNBOOK)
    ap.add_argument("--history", type=Path, help="a journal to start from (bench/gen_history.py)")
    ap.add_argument("--all", action="store_true", help="every thread's samples, not only the GIL holder's")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "runbook-serve-profile.txt")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    root = Path(tempfile.mkdtemp(prefix="rb-profile-server."))
    server = start(args.system, root / "server", workers=args.workers, history=args.history)
    try:
        time.sleep(1)
        pid = server.workers[0].pid if args.system != RUNBOOK and server.workers else server.proc.pid
        cmd = [spy, "record", "-p", str(pid), "-r", "200", "-d", str(args.duration + 1), "-f", "raw", "-o", str(args.out), "--threads",
               "--nonblocking", *([] if args.all else ["--gil"])]  # fmt: skip
        recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([sys.executable, str(BENCH / "_loadgen.py"), "--url", server.intake, "--token", TOKEN, "--rate", str(args.rate),
                        "--duration", str(args.duration), "--prefix", f"prof-{time.time_ns()}", "--out", str(root / "load.json")],
                       check=True)  # fmt: skip
        recorder.wait(timeout=args.duration + 60)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(summarize(args.out, args.top))
    print(f"\nraw samples: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
