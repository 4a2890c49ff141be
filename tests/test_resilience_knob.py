"""The robust/naive knob matters: with a payee slower than the switch's deadline, naive components
leave money in an inconsistent state (and reconciliation says so), robust ones do not."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest
from support import eventually, get, payment, post

from harness.checkers.reconcile import Anomaly, reconcile
from harness.ledgers import Snapshot
from harness.observe import snapshot
from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system
from mock_switch.config import Resilience

pytestmark = pytest.mark.slow

PAYMENTS = 6


def run_with_slow_payee(mode: Resilience, run_dir: Path) -> tuple[list[dict[str, str]], LocalTopology]:
    system = build_system(
        banks=2,
        accounts=50,
        resilience=mode,
        payee_timeout_s=0.4,  # the switch waits 0.4 s for the payee ...
        credit_delay_ms=1200,  # ... whose core banking takes 1.2 s to post a credit
        switch_timeout_s=3.0,
        customer_timeout_s=5.0,
    )
    topo = LocalTopology(system, run_dir)
    topo.start()
    a = topo.bank("BNKA").url
    with concurrent.futures.ThreadPoolExecutor(PAYMENTS) as pool:
        answers = list(
            pool.map(lambda i: post(a + "/payments", payment(f"{mode}-{i}", debtor=f"01{i:08d}"))[1], range(PAYMENTS))
        )
    return answers, topo


def settled_view(topo: LocalTopology) -> Snapshot:
    urls = {code: topo.bank(code).url for code in topo.bank_codes}
    return snapshot.take(topo.switch.url, urls)


def test_naive_components_lose_consistency_and_reconciliation_catches_it(tmp_path: Path) -> None:
    answers, topo = run_with_slow_payee("naive", tmp_path)
    try:
        # The naive switch gave up after 0.4 s and the naive payer bank reversed the debit ...
        assert [a["reason"] for a in answers] == ["AB05"] * PAYMENTS
        # ... but the payee's core banking finished posting the credits anyway.
        b = topo.bank("BNKB").url
        eventually(lambda: all(get(b + f"/credits/naive-{i}")[1]["status"] == "ACCP" for i in range(PAYMENTS)),
                   what="late credits at the payee")  # fmt: skip
        result = reconcile(settled_view(topo), topo.system.total_customer_money())
    finally:
        topo.stop()
    assert not result.ok
    created = result.anomalies[Anomaly.CREDIT_WITHOUT_DEBIT.value]
    assert sorted(v.payment_id for v in created) == sorted(f"naive-{i}" for i in range(PAYMENTS))
    assert {(v.payer, v.switch, v.payee) for v in created} == {("RJCT:AB05", "RJCT:AB05", "ACCP")}
    conservation = next(b for b in result.books if b.name == "conservation")
    assert not conservation.ok  # money was created
    assert result.totals["conservation_delta"] == sum(1_500 for _ in range(PAYMENTS))


def test_robust_components_stay_consistent_with_the_same_slow_payee(tmp_path: Path) -> None:
    answers, topo = run_with_slow_payee("robust", tmp_path)
    try:
        # Robust: the switch asked the payee until it knew, and answered within the payer's deadline.
        assert [a["status"] for a in answers] == ["ACSC"] * PAYMENTS
        result = reconcile(settled_view(topo), topo.system.total_customer_money(), topo.system.total_settlement_money())
    finally:
        topo.stop()
    assert result.ok, result.summary()
    assert result.clean_settled == PAYMENTS and result.anomaly_count == 0
