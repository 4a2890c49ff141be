"""How many history lines per second a Locust master takes through the harness's message handler
(harness/load/collect.py) while its workers' heartbeats stay on time: the figure that chose Locust's
messages over a collector endpoint of our own (issue 14).

    python benchmarks/worker_messages.py [--workers 2] [--seconds 10] [--batch 500]

Prints one line: BENCH {"lines": ..., "lines_per_s": ..., "max_heartbeat_gap_s": ..., "missing": [...]}.
Locust marks a worker missing after 3 heartbeat intervals (3 s) without one."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.procs import free_port

HERE = Path(__file__).with_name("worker_messages_locustfile.py")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    port = str(free_port())
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "BENCH_SECONDS": str(args.seconds), "BENCH_BATCH": str(args.batch), "BENCH_OUT": out}
        base = [sys.executable, "-m", "locust", "-f", str(HERE), "--loglevel", "WARNING"]
        master = subprocess.Popen(
            [*base, "--master", "--headless", "-u", str(args.workers), "-r", str(args.workers),
             "--expect-workers", str(args.workers), "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
             "--run-time", f"{args.seconds + 30:.0f}s", "--only-summary"],
            env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        workers = [
            subprocess.Popen([*base, "--worker", "--master-port", port], env=env, cwd=out) for _ in range(args.workers)
        ]
        try:
            stdout, _ = master.communicate(timeout=args.seconds + 90)
        finally:
            for p in [master, *workers]:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for line in stdout.splitlines():
            if line.startswith("BENCH "):
                print(line)
                return 0
    print("no figure: see the master's output", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
