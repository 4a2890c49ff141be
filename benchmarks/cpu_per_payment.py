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
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from benchbed import KINDS, Measured, cpu_line, harness_testbed, measure_locust, testbed_meter, used_and_sys

from harness.load.customers import drive
from harness.testbed.local import local_system


def through_harness(args: argparse.Namespace, tmp: Path) -> Measured:
    with harness_testbed(tmp, durability=args.durability) as bed:
        return measure_locust(
            bed, tmp / "load", payments=args.payments, warmup=args.warmup, users=args.users,
            processes=args.processes, record_history=not args.no_history, max_s=args.max_s,
        )  # fmt: skip


def direct(args: argparse.Namespace, tmp: Path) -> Measured:
    with local_system(tmp, accounts=1000, durability=args.durability) as topo:
        urls = {code: topo.bank(code).url for code in topo.bank_codes}
        meter = testbed_meter(topo)
        asyncio.run(drive(topo.system, urls, args.max_s, args.users, max_payments=args.warmup, prefix="warm"))
        before, t0 = meter.snapshot(), time.monotonic()
        results = asyncio.run(drive(topo.system, urls, args.max_s, args.users, max_payments=args.payments, prefix="b"))
        after, t1 = meter.snapshot(), time.monotonic()
    used = used_and_sys(before, after)
    for part in ("", "_sys"):  # the driver is the load generator
        used["locust" + part], used["harness" + part] = used.pop("harness" + part, 0.0), 0.0
    return Measured(used, len(results), t1 - t0)


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
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (logs, ledgers, history)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = args.keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="cpu-bench-"))
        m = (direct if args.direct else through_harness)(args, Path(tmp))
    used, payments, seconds = m.used, m.payments, m.seconds
    if payments < args.payments:
        print(f"only {payments} of {args.payments} payments within --max-s {args.max_s:.0f}", file=sys.stderr)
    line, per = cpu_line(used, payments, seconds)
    figures = {f"{k}_cpu_ms": round(v, 3) for k, v in per.items()}
    figures |= {f"{k}_sys_ms": round(used.get(f"{k}_sys", 0.0) / max(1, payments), 3) for k in KINDS}
    mode = "direct" if args.direct else "harness" + (" (no history)" if args.no_history else "")
    print(json.dumps({"mode": mode, "payments": payments, "seconds": round(seconds, 2), **figures}))
    print(line)


if __name__ == "__main__":
    main()
