"""Harness throughput: Locust customers -> Toxiproxy -> banks -> Toxiproxy -> switch -> ... with
history recording, no faults. Prints on its last line: payments_per_s=<n> p99_ms=<y>
(from the recorded history: payments answered per second of load, and their p99 latency)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchbed import harness_testbed

from harness.checkers.availability import percentile
from harness.history import read_history as load_history
from harness.load.control import run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--processes", type=int, default=2, help="Locust worker processes")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        run_dir = Path(tmp)
        with harness_testbed(run_dir, durability=args.durability) as bed:
            result = run_load(
                run_dir, system_json=bed.topology.config_path, bank_urls=bed.customer_urls, users=args.users,
                spawn_rate=args.users, run_time_s=args.seconds, processes=args.processes,
            )  # fmt: skip
            assert result.history is not None
            ops = [op for op in load_history(result.history) if op["op"] == "payment"]
    start = min(op["invoke"] for op in ops)
    end = max(op["complete"] for op in ops)
    latencies = sorted(op["latency_ms"] for op in ops)
    outcomes: dict[str, int] = {}
    for op in ops:
        outcomes[op["outcome"]] = outcomes.get(op["outcome"], 0) + 1
    print(json.dumps({"payments": len(ops), "seconds": round(end - start, 2), "outcomes": outcomes}))
    print(f"payments_per_s={len(ops) / (end - start):.0f} p99_ms={percentile(latencies, 0.99):.1f}")


if __name__ == "__main__":
    main()
