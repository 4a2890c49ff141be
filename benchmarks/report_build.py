"""How big and how quick is the HTML report of a long run?

Takes the small real run in tests/fixtures/naive-run.tar.gz, replaces its history with a synthetic
one of `--minutes` at `--rate` payments per second (a fault in the middle that fails a third of the
payments), then times `write_report` and prints the page's size. The target is a page under 1 MB
for a 5-minute run.

    .venv/bin/python benchmarks/report_build.py --minutes 5 --rate 200
"""

from __future__ import annotations

import argparse
import json
import random
import tarfile
import tempfile
import time
from pathlib import Path

from harness.report.page import write_report
from harness.runner import check

FIXTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "naive-run.tar.gz"


def synthetic_history(path: Path, start: float, seconds: int, rate: int, fault: tuple[float, float]) -> None:
    rnd = random.Random(7)
    banks = ["BNKA", "BNKB", "BNKC"]
    with path.open("w") as f:
        for i in range(seconds * rate):
            invoke = start + i / rate
            lat = rnd.lognormvariate(4.3, 0.4)  # ~75 ms median
            bad = fault[0] <= invoke - start <= fault[1] and rnd.random() < 0.33
            payer, payee = rnd.sample(banks, 2)
            op = {
                "op": "payment", "id": f"bench-{i:08d}", "payer": payer, "payee": payee, "amount": 1000,
                "invoke": invoke, "complete": invoke + (3.0 if bad else lat / 1000),
                "outcome": "unknown" if bad else "ok",
                "status": None if bad else "ACSC", "reason": None, "http": None if bad else 200,
                "error": "timeout" if bad else None, "latency_ms": 3000.0 if bad else lat,
            }  # fmt: skip
            f.write(json.dumps(op) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--rate", type=int, default=200, help="payments per second")
    args = ap.parse_args()
    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(tmp, filter="data")
        run_dir = Path(tmp) / "naive-run"
        start = 1_800_000_000.0
        fault = (seconds * 0.4, seconds * 0.5)
        synthetic_history(run_dir / "history.jsonl", start, seconds, args.rate, fault)
        (run_dir / "faults.jsonl").write_text(
            json.dumps({"event": "apply", "fault": "bench-fault", "kind": "latency", "targets": ["switch->BNKB"],
                        "at": start + fault[0], "attributes": {"latency": 3000}}) + "\n"
            + json.dumps({"event": "heal", "fault": "bench-fault", "kind": "latency", "targets": ["switch->BNKB"],
                          "at": start + fault[1]}) + "\n"
        )  # fmt: skip
        samples = (json.dumps({"at": start + t, "open_anomalies": 0, "by_class": {}}) for t in range(0, seconds, 2))
        (run_dir / "consistency.jsonl").write_text("".join(s + "\n" for s in samples))
        t0 = time.perf_counter()
        outcome = check(run_dir, progress=None)
        checked = time.perf_counter() - t0
        t0 = time.perf_counter()
        page = write_report(run_dir, outcome.result)
        built = time.perf_counter() - t0
        size = page.stat().st_size
    ops = seconds * args.rate
    print(f"history: {ops:,} payments over {seconds} s; check (all checkers + report): {checked:.2f} s")
    print(f"report_s={built:.2f} report_bytes={size} report_kib={size / 1024:.0f} payments={ops}")


if __name__ == "__main__":
    main()
