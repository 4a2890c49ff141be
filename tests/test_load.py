"""The Locust load: real customers against a real local system, and the history they leave.

The history must say exactly what the customers did: one line per name enquiry, payment attempt and
status query, in the format of docs/run-directory.md, and no payment the banks saw may be missing
from it. These tests run the closed model (users waiting for answers); tests/test_open_load.py
runs the open one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import get, post

from harness.errors import LoadError
from harness.load.control import LoadOptions, history_parts, merge_histories, run_load, start_locust
from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system

pytestmark = pytest.mark.slow

FIELDS = {
    "op": str,
    "id": str,
    "payer": str,
    "payee": str,
    "amount": int,
    "invoke": float,
    "sent": (float, type(None)),
    "complete": float,
    "outcome": str,
    "status": (str, type(None)),
    "reason": (str, type(None)),
    "http": (int, type(None)),
    "error": (str, type(None)),
    "latency_ms": float,
}


def read_history(path: Path) -> list[dict[str, Any]]:
    lines = [json.loads(raw) for raw in path.read_text().splitlines()]
    for line in lines:
        assert list(line) == list(FIELDS), f"fields and their order: {line}"
        for name, kind in FIELDS.items():
            assert isinstance(line[name], kind), f"{name} is {type(line[name]).__name__}: {line}"
        assert line["op"] in ("payment", "status_query", "name_enquiry")
        assert line["outcome"] in ("ok", "fail", "unknown")
        assert line["invoke"] <= line["complete"]
        assert line["latency_ms"] == pytest.approx((line["complete"] - line["invoke"]) * 1000, abs=0.01)
        if line["sent"] is None:  # an open-model arrival that never left
            assert (line["op"], line["outcome"], line["http"]) == ("payment", "unknown", None)
            assert line["error"] in ("not-sent", "in-flight-bound") and line["complete"] == line["invoke"]
            continue
        assert line["invoke"] <= line["sent"] <= line["complete"]
        if line["outcome"] == "ok":
            expected = (None, 200) if line["op"] == "name_enquiry" else ("ACSC", 200)  # the party, not a status
            assert (line["status"], line["http"]) == expected, line
        if line["outcome"] == "fail":
            assert line["status"] == "RJCT" and line["reason"]
        if line["http"] is None:
            assert line["outcome"] == "unknown" and line["error"] in ("timeout", "connection", "cancelled")
    return lines


def bank_payment_ids(topo: LocalTopology) -> list[str]:
    """Payments the banks recorded from their customers (not the tombstones of status queries)."""
    ids: list[str] = []
    for code in topo.bank_codes:
        status, rows = get(topo.bank(code).url + "/payments")
        assert status == 200
        ids += [r["payment_id"] for r in rows if r["fingerprint"] is not None]
    return ids


def test_history_records_every_payment_the_banks_saw(tmp_path: Path) -> None:
    with LocalTopology(build_system(banks=3, accounts=100), tmp_path) as topo:
        result = run_load(tmp_path, users=6, spawn_rate=50, run_time_s=4, processes=2)
        banks_saw = bank_payment_ids(topo)
    assert result.history == tmp_path / "history.jsonl" and result.returncode == 0
    assert history_parts(tmp_path) == []  # the two workers' parts were merged
    lines = read_history(result.history)
    payments = [line for line in lines if line["op"] == "payment"]
    # Closed model: the customer acts at once, so each request is invoked when it is sent.
    assert all(line["sent"] == line["invoke"] for line in lines if line["op"] != "name_enquiry")
    # Every payment follows its name enquiry, by the same customer, on the same payee account.
    enquiries = {line["id"]: line for line in lines if line["op"] == "name_enquiry"}
    assert set(enquiries) == {p["id"] for p in payments}
    assert all(enquiries[p["id"]]["complete"] <= p["invoke"] for p in payments)
    ids = [p["id"] for p in payments]
    assert len(ids) > 20, f"only {len(ids)} payments in 4 s"
    assert len(set(ids)) == len(ids), "payment ids repeat"
    assert len({i.split("-")[1] for i in ids}) == 2, "expected payments from two worker processes"
    assert sorted(ids) == sorted(banks_saw), "history and banks disagree on which payments were made"
    outcomes = [p["outcome"] for p in payments]
    assert outcomes.count("ok") >= 0.8 * len(outcomes), outcomes
    assert "unknown" not in outcomes
    assert {p["payer"] for p in payments} == {"BNKA", "BNKB", "BNKC"}
    assert all(p["payer"] != p["payee"] for p in payments)
    # Business rejects (AC06 blocked, AC01 unknown account) are in the history as fail, but Locust
    # does not count them as failures: the service answered. (With workers, the master's statistics
    # may miss the last reports of a busy worker: the history, not Locust's statistics, is the record.)
    rejects = {p["reason"] for p in payments if p["outcome"] == "fail"}
    assert rejects and rejects <= {"AC01", "AC06", "AM04"}
    assert all(entry["failures"] == 0 for entry in result.stats().values())


@pytest.fixture(scope="module")
def slow_credits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    """Payees take 0.8 s to credit while banks answer their customers after 0.3 s: PDNG (202)."""
    run_dir = tmp_path_factory.mktemp("slow-credits")
    system = build_system(banks=2, accounts=50, customer_timeout_s=0.3, switch_timeout_s=3.0, payee_timeout_s=2.0)
    with LocalTopology(system, run_dir) as topo:
        for code in topo.bank_codes:
            assert post(topo.bank(code).url + "/admin/behaviour", {"credit_delay_ms": 800})[0] == 200
        yield topo


def test_status_policy_asks_until_the_payment_is_definitive(slow_credits: LocalTopology) -> None:
    run_dir = slow_credits.run_dir
    result = run_load(
        run_dir, users=4, spawn_rate=50, run_time_s=3, unknown_policy="status", max_attempts=10, request_timeout_s=5
    )
    assert result.history is not None
    lines = read_history(result.history)
    everything = {line["id"]: line for line in lines if line["op"] == "payment"}
    queries = [line for line in lines if line["op"] == "status_query"]
    # What the run's end cut short (Locust's stop cancels requests in flight) is recorded as such; how
    # many depends on the machine's speed, so it is set aside rather than assumed away.
    cut = {pid for pid, p in everything.items() if p["error"] == "cancelled"}
    payments = {pid: p for pid, p in everything.items() if pid not in cut}
    assert payments, "no payment was answered"
    # A payer bank decides alone, at once, when its own customer cannot pay (a blocked account, no
    # funds): which accounts the customers draw depends on the worker's pid, so such rejects may or
    # may not occur. Every other payment waited for the slow payee: PDNG (202), an unknown outcome.
    at_once = {pid: p for pid, p in payments.items() if p["outcome"] != "unknown"}
    assert all(p["outcome"] == "fail" and p["reason"] in ("AC06", "AM04") for p in at_once.values()), at_once
    assert not {q["id"] for q in queries} & set(at_once), "a definitive answer was queried again"
    payments = {pid: p for pid, p in payments.items() if pid not in at_once}
    odd = [p for p in payments.values() if (p["status"], p["http"]) != ("PDNG", 202)]
    assert payments and not odd, odd
    assert queries, "no status queries were recorded"
    assert {q["id"] for q in queries} <= set(everything), "a status query for a payment nobody made"
    for pid, payment in payments.items():
        asked = [q for q in queries if q["id"] == pid]
        if not asked and payment["complete"] > max(q["complete"] for q in queries) - 0.5:
            continue  # answered PDNG just before the run stopped: no time was left to ask
        assert asked, f"{pid} was never queried"
        assert all(q["invoke"] >= payment["complete"] for q in asked)
        assert all((q["payer"], q["payee"], q["amount"]) == (payment["payer"], payment["payee"], payment["amount"])
                   for q in asked)  # fmt: skip
        # Asked until definitive (ACSC, or RJCT when the payee's account is blocked or unknown), unless
        # the run's end cancelled the last question.
        if asked[-1]["error"] != "cancelled":
            assert asked[-1]["outcome"] in ("ok", "fail"), asked
        assert all(q["outcome"] == "unknown" for q in asked[:-1])
    finals = [asked[-1]["outcome"] for pid in payments if (asked := [q for q in queries if q["id"] == pid])]
    assert finals.count("ok") >= len(finals) / 2, finals
    # Locust counts PDNG as a failure, a definitive answer (even a business reject) as a success.
    stats = result.stats()
    answered = [q for q in queries if q["error"] != "cancelled"]  # a cancelled request reports nothing
    assert stats["POST /payments"]["requests"] == len(payments) + len(at_once)
    assert stats["POST /payments"]["failures"] == len(payments)
    assert stats["GET /payments/[id]"]["requests"] == len(answered)
    assert stats["GET /payments/[id]"]["failures"] == sum(q["outcome"] == "unknown" for q in answered)
    assert sorted(everything) == sorted(bank_payment_ids(slow_credits))


def test_stopping_mid_payment_still_records_it(slow_credits: LocalTopology) -> None:
    """Stopped from outside (SIGTERM, as on Ctrl-C) with no grace: payments in hand are recorded as
    unknown/cancelled; and the retry policy re-sends the same id and body."""
    run_dir = slow_credits.run_dir
    options = LoadOptions(
        users=8, spawn_rate=50, run_time_s=30, unknown_policy="retry", stop_timeout_s=0, run_id="stop"
    )
    load = start_locust(run_dir, options)
    try:
        deadline = time.monotonic() + 15
        while load.operations() < 16 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        result = load.stop()
    assert result.elapsed_s < 20 and result.history is not None
    lines = read_history(result.history)  # this run's lines follow the previous test's in the same file
    ours = [line for line in lines if line["id"].startswith("stop-") and line["op"] != "name_enquiry"]
    assert ours and all(line["op"] == "payment" for line in ours)
    assert any(line["error"] == "cancelled" for line in ours)
    attempts: dict[str, int] = {}
    for line in ours:
        attempts[line["id"]] = attempts.get(line["id"], 0) + 1
    assert max(attempts.values()) > 1, "no payment was re-sent"
    assert {line["id"] for line in lines if line["op"] == "payment"} == set(bank_payment_ids(slow_credits))


def test_merge_histories_interleaves_parts_by_completion(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text('{"complete": 0.5}\n')
    (tmp_path / "history.101.jsonl").write_text('{"complete": 1.0}\n{"complete": 3.0}\n')
    (tmp_path / "history.202.jsonl").write_text('{"complete": 2.0}\n{"complete": 4.0}')
    (tmp_path / "history.notes.jsonl").write_text("not a part\n")
    merged = merge_histories(tmp_path)
    assert [json.loads(x)["complete"] for x in merged.read_text().splitlines()] == [0.5, 1.0, 2.0, 3.0, 4.0]
    assert history_parts(tmp_path) == [] and (tmp_path / "history.notes.jsonl").exists()


def test_a_bad_configuration_fails_fast_and_names_the_problem(tmp_path: Path) -> None:
    system = build_system(banks=2, accounts=10)
    system.save(tmp_path / "system.json")
    started = time.monotonic()
    with pytest.raises(LoadError, match="before its customers started") as info:
        run_load(tmp_path, users=1, run_time_s=30, bank_urls={"ZZZZ": "http://127.0.0.1:9"})
    assert time.monotonic() - started < 20
    assert str(tmp_path / "logs" / "locust.log") in str(info.value)
    assert "--bank-urls: no bank 'ZZZZ' in the system" in (tmp_path / "logs" / "locust.log").read_text()
