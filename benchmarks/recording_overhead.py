"""History recording overhead: the same Locust load with recording on and off, alternately, in one
invocation against one testbed. Throughput comes from Locust's own statistics (the same source for
both), so recording is the only difference. Prints on its last line:
overhead_ratio=<payments/s with recording / without> on_per_s=<n> off_per_s=<n>"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from harness.load.control import run_load
from harness.testbed.bed import Testbed
from harness.testbed.system import build_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (on, off)")
    parser.add_argument("--users", type=int, default=32)
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    with (
        tempfile.TemporaryDirectory(prefix="recording-bench-") as tmp,
        Testbed(build_system(banks=4, accounts=1000), Path(tmp) / "bed") as bed,
    ):
        if True:  # one testbed for every round
            for i in range(args.rounds):
                for record in (True, False) if i % 2 == 0 else (False, True):  # alternate to cancel drift
                    run_dir = Path(tmp) / f"round-{i}-{'on' if record else 'off'}"
                    run_dir.mkdir()
                    result = run_load(
                        run_dir, system_json=bed.topology.config_path, bank_urls=bed.customer_urls,
                        users=args.users, spawn_rate=args.users, run_time_s=args.seconds, record_history=record,
                        run_id=f"r{i}{'on' if record else 'off'}",
                    )  # fmt: skip
                    rate = result.stats().get("POST /payments", {}).get("requests_per_s", 0.0)
                    rates[record].append(rate)
                    print(f"round {i} recording {'on ' if record else 'off'}: {rate:.0f} payments/s", flush=True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"overhead_ratio={on / off:.3f} on_per_s={on:.0f} off_per_s={off:.0f}")


if __name__ == "__main__":
    main()
