"""kill -9 under load: every acknowledged payment survives, in-doubt ones are resolved, books balance."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from support import eventually

from harness.checkers.reconcile import reconcile
from harness.ledgers import Snapshot
from harness.load.customers import Outcome, drive
from harness.observe import snapshot
from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system

pytestmark = pytest.mark.slow


def crash_under_load(victim: str, run_dir: Path) -> tuple[list[Outcome], LocalTopology]:
    topo = LocalTopology(build_system(banks=3, accounts=200, status_query={"initial_s": 0.05, "max_s": 0.3}), run_dir)
    topo.start()
    urls = {code: topo.bank(code).url for code in topo.bank_codes}
    results: list[Outcome] = []

    def load() -> None:
        results.extend(asyncio.run(drive(topo.system, urls, seconds=4.0, concurrency=24, prefix=f"crash-{victim}")))

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(1.5)  # let load build up, so the kill lands on payments in flight
    pid_before = topo.services[victim].pid
    topo.services[victim].kill()
    time.sleep(0.3)
    topo.services[victim].start()
    topo.services[victim].wait_healthy()
    assert topo.services[victim].pid != pid_before
    loader.join(timeout=30)
    assert not loader.is_alive()
    return results, topo


def wait_until_quiet(topo: LocalTopology) -> Snapshot:
    urls = {code: topo.bank(code).url for code in topo.bank_codes}

    def quiet() -> Snapshot | None:
        snap = snapshot.take(topo.switch.url, urls)
        pending = [t for t in snap["switch"]["transfers"] if t["status"] == "PDNG"]
        pending += [p for b in snap["banks"].values() for p in b["payments"] if p["status"] == "PDNG"]
        return None if pending else snap

    return eventually(quiet, timeout=30, what="every in-doubt payment to be resolved")


@pytest.mark.parametrize("victim", ["switch", "BNKA"])
def test_kill_9_loses_no_acknowledged_payment(victim: str, tmp_path: Path) -> None:
    results, topo = crash_under_load(victim, tmp_path)
    try:
        snap = wait_until_quiet(topo)
    finally:
        topo.stop()
    acked = [r for r in results if r.status == "ACSC"]
    assert len(acked) > 100, "too little load to prove anything"
    assert any(r.outcome != "ok" for r in results), "the crash should have been felt by some customers"
    payments = {p["payment_id"]: p for b in snap["banks"].values() for p in b["payments"]}
    credits = {c["payment_id"]: c for b in snap["banks"].values() for c in b["credits"]}
    transfers = {t["payment_id"]: t for t in snap["switch"]["transfers"]}
    lost = [
        r.payment_id
        for r in acked
        if payments[r.payment_id]["status"] != "ACSC"
        or transfers.get(r.payment_id, {}).get("status") != "ACSC"
        or credits.get(r.payment_id, {}).get("status") != "ACCP"
    ]
    assert lost == [], f"acknowledged payments not settled after the crash: {lost[:5]}"
    result = reconcile(snap, topo.system.total_customer_money(), topo.system.total_settlement_money())
    assert result.ok, result.summary()
