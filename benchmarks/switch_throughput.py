"""Switch throughput, end to end, no proxy: customer -> payer bank -> switch -> payee bank and back.

Starts the switch and 4 banks on loopback with durable (fsync, group-commit) ledgers, drives
payments as fast as a closed loop of customers can for --seconds, and prints on its last line:
payments_per_s=<n> p50_ms=<x> p99_ms=<y> target_per_s=1000 p99_target_ms=250 target_met=<yes|no>
"""

from __future__ import annotations

import argparse
import json

from benchbed import DIRECT_TARGET_PER_S, direct_run, target_words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64, help="customers paying back to back")
    parser.add_argument("--durability", choices=["fsync", "os"], default="fsync")
    args = parser.parse_args()
    s = direct_run(args.seconds, args.concurrency, args.durability)
    print(json.dumps({"outcomes": s["outcomes"], "reasons": s["reasons"], "seconds": s["seconds"]}))
    rate, p99 = float(s["payments_per_s"]), float(s["p99_ms"])
    print(
        f"payments_per_s={rate:.0f} p50_ms={s['p50_ms']:.1f} p99_ms={p99:.1f}"
        f" {target_words(rate, p99, DIRECT_TARGET_PER_S)}"
    )


if __name__ == "__main__":
    main()
