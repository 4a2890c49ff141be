"""Harness throughput: Locust customers -> Toxiproxy -> banks -> Toxiproxy -> switch -> ... with
history recording, no faults. Prints on its last line:
payments_per_s=<n> p99_ms=<y> direct_payments_per_s=<d> ratio_to_direct=<r>
target_per_s=600 p99_target_ms=250 target_met=<yes|no>  (all on one line)
(from the recorded history: payments answered per second of load, and their p99 latency; first,
unless --no-direct, the system alone without proxy or Locust for the same seconds, as
switch_throughput.py, so the ratio compares two runs on the same machine minutes apart)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchbed import HARNESS_TARGET_PER_S, direct_run, harness_testbed, target_words

from harness.checkers.availability import percentile
from harness.history import read_history as load_history
from harness.load.control import run_load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--processes", type=int, default=2, help="Locust worker processes")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct run (no ratio)")
    args = parser.parse_args()
    direct = None if args.no_direct else direct_run(args.seconds, args.users, args.durability)
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
    rate, p99 = len(ops) / (end - start), percentile(latencies, 0.99) or float("nan")
    line = f"payments_per_s={rate:.0f} p99_ms={p99:.1f}"
    if direct is not None:
        direct_rate = float(direct["payments_per_s"])
        line += f" direct_payments_per_s={direct_rate:.0f} ratio_to_direct={rate / direct_rate:.2f}"
    print(f"{line} {target_words(rate, p99, HARNESS_TARGET_PER_S)}")


if __name__ == "__main__":
    main()
