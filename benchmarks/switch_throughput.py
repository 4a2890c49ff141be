"""Switch throughput, end to end, no proxy: customer -> payer bank -> switch -> payee bank and back.

Starts the switch and 4 banks on loopback with durable (fsync, group-commit) ledgers, drives
payments as fast as a closed loop of customers can for --seconds, and prints on its last line:
payments_per_s=<n> p50_ms=<x> p99_ms=<y>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from harness.load.customers import drive, summarise
from harness.testbed.local import local_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64, help="customers paying back to back")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="switch-bench-") as tmp:
        with local_system(Path(tmp), accounts=1000, durability=args.durability) as topo:
            urls = {code: topo.bank(code).url for code in topo.bank_codes}
            asyncio.run(drive(topo.system, urls, 1.0, args.concurrency, prefix="warm"))  # connections, caches
            started = time.monotonic()
            results = asyncio.run(drive(topo.system, urls, args.seconds, args.concurrency, prefix="bench"))
            elapsed = time.monotonic() - started
        s = summarise(results, elapsed)
    print(json.dumps({"outcomes": s["outcomes"], "reasons": s["reasons"], "seconds": round(elapsed, 2)}))
    print(f"payments_per_s={s['payments_per_s']:.0f} p50_ms={s['p50_ms']:.1f} p99_ms={s['p99_ms']:.1f}")


if __name__ == "__main__":
    main()
