"""Reconciliation at scale: synthetic ledgers of --payments N (default 1,000,000) across 4 banks,
with anomalies of every class planted, reconciled once. Exits non-zero if a planted anomaly is
missed or a clean payment is flagged. Prints on its last line: reconcile_s=<t> reconcile_cpu_s=<cpu> payments=<n>"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from harness.checkers.reconcile import Anomaly, reconcile

BANKS = ["BNKA", "BNKB", "BNKC", "BNKD"]
PLANT = 100  # of each anomaly class


def synthesise(n: int, seed: int) -> tuple[dict[str, Any], dict[str, set[str]]]:
    rng = random.Random(seed)
    banks: dict[str, dict[str, list[dict[str, Any]]]] = {
        b: {"payments": [], "credits": [], "accounts": [], "entries": []} for b in BANKS
    }
    transfers: list[dict[str, Any]] = []
    planted: dict[str, set[str]] = {a.value: set() for a in Anomaly if a is not Anomaly.DUPLICATE_EFFECT}
    classes = list(planted)
    for i in range(n):
        pid = f"p{i:08d}"
        payer, payee = rng.sample(BANKS, 2)
        amount = rng.randrange(100, 20_000)
        ok = rng.random() < 0.95
        cls = classes[i % len(classes)] if i < PLANT * len(classes) else None
        p_status = "ACSC" if ok else "RJCT"
        t_status, c_status = p_status, ("ACCP" if ok else "RJCT")
        if cls == "debit_without_credit":
            p_status, t_status, c_status = "ACSC", "ACSC", "RJCT"
        elif cls == "credit_without_debit":
            p_status, t_status, c_status = "RJCT", "RJCT", "ACCP"
        elif cls == "switch_disagrees":
            p_status, t_status, c_status = "RJCT", "ACSC", "RJCT"
        elif cls == "amount_mismatch":
            p_status, t_status, c_status = "ACSC", "ACSC", "ACCP"
        elif cls == "stuck":
            t_status = "PDNG"
        if cls:
            planted[cls].add(pid)
        banks[payer]["payments"].append({"payment_id": pid, "fingerprint": "f", "status": p_status,
                                         "reason": None if p_status == "ACSC" else "AM04", "amount": amount,
                                         "created_at": 1.0})  # fmt: skip
        transfers.append({"payment_id": pid, "fingerprint": "f", "status": t_status, "reason": None,
                          "debtor_bank": payer, "creditor_bank": payee, "amount": amount, "received_at": 1.0,
                          "window_id": 1 if t_status == "ACSC" else None})  # fmt: skip
        banks[payee]["credits"].append({"payment_id": pid, "fingerprint": "f", "status": c_status,
                                        "reason": None if c_status == "ACCP" else "AC01",
                                        "amount": amount + (1 if cls == "amount_mismatch" else 0),
                                        "received_at": 1.0})  # fmt: skip
        if p_status == "ACSC":
            banks[payer]["entries"].append({"payment_id": pid, "kind": "DEBIT"})
        if c_status == "ACCP":
            banks[payee]["entries"].append({"payment_id": pid, "kind": "CREDIT"})
    snap = {
        "switch": {
            "transfers": transfers,
            "participants": [],
            "windows": [{"window_id": 1, "state": "OPEN", "net_positions": {}}],
            "movements": [],
        },
        "banks": banks,
    }
    return snap, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    snap, planted = synthesise(args.payments, args.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = reconcile(snap)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    missed = {cls: len(ids - {v.payment_id for v in result.anomalies.get(cls, [])}) for cls, ids in planted.items()}
    extra = result.anomaly_count - sum(len(ids) for ids in planted.values())
    print(f"planted {sum(len(v) for v in planted.values())} anomalies; missed {missed}; unexpected {extra}")
    if any(missed.values()) or extra:
        raise SystemExit("reconciliation missed planted anomalies or flagged clean payments")
    # Wall time moves with whatever else the machine runs; this process's CPU time much less.
    print(f"reconcile_s={elapsed:.2f} reconcile_cpu_s={cpu:.2f} payments={result.payments}")


if __name__ == "__main__":
    main()
