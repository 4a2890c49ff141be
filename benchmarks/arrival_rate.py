"""Open-model arrival rate: can the generator keep to its schedule? Locust's arrival generator ->
Toxiproxy -> banks -> Toxiproxy -> switch -> ..., with history recording, no faults.

Prints on its last line:
    target_per_s=<R> achieved_per_s=<n> late_pct=<x> p99_ms=<y>

- achieved_per_s: arrivals actually sent, per second of the schedule;
- late_pct: arrivals whose journey (its name enquiry) left more than 50 ms after their scheduled
  time, or that were never sent (starved generator, or the in-flight bound full), as a percentage
  of those scheduled;
- p99_ms: p99 latency of the payments sent, from their scheduled time (what the customer waited).

The services run on the same machine as Locust: above the system's own capacity the customers in
flight pile up to --max-in-flight and arrivals are refused, which counts as late here too. The JSON
line before the last says which (load.json's figures and the outcomes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.checkers.availability import percentile
from harness.history import read_history as load_history
from harness.load.control import OpenLoad, run_load
from harness.loadfile import LATE_S
from harness.loadfile import read as read_figures
from harness.rundir import RunDir
from harness.testbed.bed import Testbed
from harness.testbed.system import build_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, required=True, help="arrivals per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1, help="Locust processes (one generator each)")
    parser.add_argument("--max-in-flight", type=int, default=1000, help="per process")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        run_dir = Path(tmp)
        with Testbed(build_system(banks=4, accounts=1000, durability=args.durability), run_dir) as bed:
            result = run_load(
                run_dir, system_json=bed.topology.config_path, bank_urls=bed.customer_urls,
                open=OpenLoad(rate=args.rate, duration_s=args.seconds, max_in_flight=args.max_in_flight),
                processes=args.processes,
            )  # fmt: skip
            assert result.history is not None
            lines = load_history(result.history)
            ops = [op for op in lines if op.get("op") == "payment"]
            # An arrival leaves with its name enquiry; the payment's own `sent` follows the enquiry's answer.
            left = {op["id"]: op.get("sent") for op in lines if op.get("op") == "name_enquiry"}
            figures = read_figures(RunDir(run_dir).load_figures) or {}
    sent = [op for op in ops if op.get("sent") is not None]

    def late(op: Mapping[str, Any]) -> bool:
        sent = left.get(op["id"], op.get("sent"))
        return sent is None or float(sent) - float(op["invoke"]) > LATE_S

    late_count = sum(1 for op in ops if late(op))
    latencies = sorted(op["latency_ms"] for op in sent)
    outcomes: dict[str, int] = {}
    for op in ops:
        key = op["outcome"] if op.get("error") is None else f"{op['outcome']}:{op['error']}"
        outcomes[key] = outcomes.get(key, 0) + 1
    keys = ("scheduled", "sent", "late", "not_sent", "in_flight_bound", "max_in_flight", "max_late_ms")
    print(json.dumps({"arrivals": len(ops), "outcomes": outcomes, **{k: figures.get(k) for k in keys}}))
    p99 = percentile(latencies, 0.99)
    print(
        f"target_per_s={args.rate:g} achieved_per_s={len(sent) / args.seconds:.0f}"
        f" late_pct={100 * late_count / max(1, len(ops)):.2f} p99_ms={p99 if p99 is not None else float('nan'):.1f}"
    )


if __name__ == "__main__":
    main()
