"""CPU per payment, per process kind, from the processes' own accounting (/proc/<pid>/stat):
a figure that does not depend on what else the machine runs, unlike payments per second.

Default (harness path, as benchmarks/harness_throughput.py): Locust customers -> Toxiproxy -> payer
bank -> Toxiproxy -> switch -> Toxiproxy -> payee bank and back, with history recording. After
--warmup payments, CPU is read from every process, then again once --payments more payments are
decided (counted in the payer banks' ledgers); Locust is stopped after that. Bounded by --max-s.

--direct: no Toxiproxy, no Locust: an asyncio closed loop of customers in this process straight at
the banks (harness.load.customers.drive, as benchmarks/switch_throughput.py); its CPU is reported as
locust_cpu_ms (the load generator) and nothing as toxiproxy.

Prints a JSON line with every figure (harness_cpu_ms: this process and the testbed's guardian;
included in total_cpu_ms), then on its last line:
switch_cpu_ms=<a> banks_cpu_ms=<b> toxiproxy_cpu_ms=<c> locust_cpu_ms=<d> total_cpu_ms=<e> payments_per_s=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from benchbed import CpuMeter, DecidedPayments, cpu_line, harness_testbed, testbed_meter

from harness.load.control import LoadOptions, start_locust
from harness.load.customers import drive
from harness.testbed.local import local_system


def through_harness(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, float], int, float]:
    with harness_testbed(tmp, durability=args.durability) as bed:
        decided = DecidedPayments(tmp, bed.topology.bank_codes)
        options = LoadOptions(
            system_json=bed.topology.config_path, bank_urls=bed.customer_urls, users=args.users,
            spawn_rate=args.users, run_time_s=args.max_s, processes=args.processes,
            record_history=not args.no_history, hard_timeout_s=args.max_s + 60,
        )  # fmt: skip
        load = start_locust(tmp, options)
        try:
            meter = testbed_meter(bed, lambda: load.proc.pid if load.proc is not None else None)
            load.wait_started()
            deadline = time.monotonic() + args.max_s
            c0 = decided.wait_for(args.warmup, deadline)
            before, t0 = meter.snapshot(), time.monotonic()
            c1 = decided.wait_for(c0 + args.payments, deadline)
            after, t1 = meter.snapshot(), time.monotonic()
        finally:
            load.stop()
            decided.close()
    return CpuMeter.used_ms(before, after), c1 - c0, t1 - t0


def direct(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, float], int, float]:
    with local_system(tmp, accounts=1000, durability=args.durability) as topo:
        urls = {code: topo.bank(code).url for code in topo.bank_codes}
        meter = testbed_meter(topo)
        asyncio.run(drive(topo.system, urls, args.max_s, args.users, max_payments=args.warmup, prefix="warm"))
        before, t0 = meter.snapshot(), time.monotonic()
        results = asyncio.run(drive(topo.system, urls, args.max_s, args.users, max_payments=args.payments, prefix="b"))
        after, t1 = meter.snapshot(), time.monotonic()
    used = CpuMeter.used_ms(before, after)
    used["locust"], used["harness"] = used.pop("harness", 0.0), 0.0  # the driver is the load generator
    return used, len(results), t1 - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=3000, help="payments measured (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=300, help="payments before measuring starts")
    parser.add_argument("--users", type=int, default=48, help="Locust users (or direct customers)")
    parser.add_argument("--processes", type=int, default=2, help="Locust worker processes")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    parser.add_argument("--no-history", action="store_true", help="Locust records no history (--history off)")
    parser.add_argument("--direct", action="store_true", help="no Toxiproxy, no Locust: customers in this process")
    parser.add_argument("--max-s", type=float, default=120.0, help="bound on the measured load, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cpu-bench-") as tmp:
        used, payments, seconds = (direct if args.direct else through_harness)(args, Path(tmp))
    if payments < args.payments:
        print(f"only {payments} of {args.payments} payments within --max-s {args.max_s:.0f}", file=sys.stderr)
    line, per = cpu_line(used, payments, seconds)
    figures = {f"{k}_cpu_ms": round(v, 3) for k, v in per.items()}
    mode = "direct" if args.direct else "harness" + (" (no history)" if args.no_history else "")
    print(json.dumps({"mode": mode, "payments": payments, "seconds": round(seconds, 2), **figures}))
    print(line)


if __name__ == "__main__":
    main()
