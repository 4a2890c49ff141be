"""The harness's own teeth: each broken variant of the mock (mock_switch/bugs.py) is caught, the
unbroken mock is not, and the stress record says only what the records prove.

Unit level, on the real ledger code driven in-process with a clock of our own (no timing race): a
scripted day of BNKA paying into a small cap, with payments in flight when a window closes, an
abort, and two settlements. One real run per variant is `harness teeth` (`make teeth`); here one
real run of the robust system and one of a variant, so CI sees the table's two ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.checkers.reconcile import reconcile
from harness.checkers.replay import SnapshotTooOld, replay
from harness.checkers.stress import STRESS_KINDS, stress_record, unexercised
from harness.errors import HarnessError
from harness.scenario import ScenarioError, StressKind, parse
from harness.teeth import ROBUST, caught_by, table, teeth_scenario, variants
from harness.teeth import Row as TeethRow
from mock_switch import bank_ledger, switch_ledger
from mock_switch.api import CreditRequest, TransferRequest
from mock_switch.bank_ledger import BankLedger, Receive
from mock_switch.bugs import BUGS, one_in
from mock_switch.codes import Reason
from mock_switch.config import BankConfig, SystemConfig
from mock_switch.store import Store
from mock_switch.switch_ledger import Begin, SwitchLedger

CAP = 100_000
T0 = 1_700_000_000.0


def system(bug: str | None) -> SystemConfig:
    banks = [BankConfig(code=c, net_debit_cap=CAP, accounts=20, blocked_every=0) for c in ("BNKA", "BNKB", "BNKC")]
    return SystemConfig(banks=banks, bug=bug)  # type: ignore[arg-type]


def request(i: int, amount: int, payee: str = "BNKB") -> TransferRequest:
    return TransferRequest(
        payment_id=f"p{i:04d}",
        debtor_bank="BNKA",
        debtor_account="0100000001",
        creditor_bank=payee,
        creditor_account="0200000001",
        amount=amount,
        currency="NGN",
    )


def scripted_day(tmp: Path, bug: str | None) -> dict[str, Any]:
    """Drive the switch's books through a day that exercises every invariant; return the snapshot."""
    cfg = system(bug)
    ledger = SwitchLedger(Store(tmp / "switch.db", switch_ledger.SCHEMA, "os"), cfg, T0)
    clock = T0
    i = 0

    def tick() -> float:
        nonlocal clock
        clock += 0.01
        return clock

    def begin(amount: int, payee: str = "BNKB") -> tuple[Begin, str]:
        nonlocal i
        i += 1
        req = request(i, amount, payee)
        kind, _ = ledger.begin_transfer(req, req.fingerprint(), tick())
        return kind, req.payment_id

    # Six payments of 30,000 in flight at once against a cap of 100,000: three fit, then AM23.
    in_flight = [pid for kind, pid in (begin(30_000) for _ in range(6)) if kind is Begin.RESERVED]
    ledger.commit(in_flight[0], tick())
    ledger.abort(in_flight[1], Reason.AC06, tick())  # headroom back
    kind, pid = begin(30_000)
    if kind is Begin.RESERVED:
        in_flight.append(pid)
    ledger.close_window(tick())  # window 1 closes with payments still in flight
    for pid in in_flight[2:]:
        ledger.commit(pid, tick())
    ledger.settle_window(1, tick())  # headroom freed by settlement
    for _ in range(3):
        kind, pid = begin(25_000, payee="BNKC")
        if kind is Begin.RESERVED:
            ledger.commit(pid, tick())
    for _ in range(12):  # small payments, one by one (p0011 to p0022: p0018 and p0020 are "one in ten")
        kind, pid = begin(1_000, payee="BNKC")
        assert kind is Begin.RESERVED
        ledger.commit(pid, tick())
    ledger.close_window(tick())
    ledger.settle_window(2, tick())
    return {
        "taken_at": tick(),
        "switch": {
            "transfers": ledger.transfers(),
            "participants": ledger.participants(),
            "windows": ledger.windows(),
            "movements": ledger.movements(),
        },
        "banks": {},
    }


def failing(snap: dict[str, Any], bug: str | None) -> set[str]:
    """Every check of the replay and of the books that fails on the snapshot."""
    opening = {b.code: b.settlement_balance for b in system(bug).banks}
    found = replay(snap, opening, currency="NGN")
    books = reconcile(snap, None, sum(opening.values()), currency="NGN").books
    return {f"ledger_replay: {c.name}" for c in found.failing()} | {f"books: {b.name}" for b in books if not b.ok}


# What catches each switch variant on the scripted day; lost-credit is the payee bank's, below.
CAUGHT_BY = {
    "cap-race": {"ledger_replay: cap_held_at_every_instant"},
    "peak-underreported": {"ledger_replay: cap_held_at_every_instant", "ledger_replay: recorded_peak_not_understated"},
    "phantom-reservation": {"books: reservations_match_pending", "ledger_replay: end_state_matches_replay"},
    "close-early": {"books: settlement_windows", "ledger_replay: windows_rebuilt_from_transfers"},
    "double-settle": {"ledger_replay: settlement_rebuilt_from_movements"},
    "position-drift": {
        "books: positions_match_transfers",
        "books: positions_sum_to_zero",
        "ledger_replay: end_state_matches_replay",
    },
}


def test_every_variant_is_listed_here() -> None:
    assert set(BUGS) == {*CAUGHT_BY, "lost-credit", "lost-ack"}


def test_the_unbroken_books_pass_every_replay_check(tmp_path: Path) -> None:
    snap = scripted_day(tmp_path, None)
    assert failing(snap, None) == set()
    found = replay(snap, {b.code: b.settlement_balance for b in system(None).banks})
    # The day reached the cap, and the rebuilt peak is exactly what the switch recorded.
    bnka = found.exposure["BNKA"]
    assert bnka.peak == bnka.peak_recorded == 90_000
    assert any(t["reason"] == "AM23" for t in snap["switch"]["transfers"])


@pytest.mark.parametrize("bug", sorted(CAUGHT_BY))
def test_each_switch_variant_is_caught_by_its_check(tmp_path: Path, bug: str) -> None:
    found = failing(scripted_day(tmp_path, bug), bug)
    assert CAUGHT_BY[bug] <= found, found


@pytest.mark.parametrize("bug", ["cap-race", "peak-underreported", "double-settle"])
def test_the_old_books_checks_alone_miss_what_the_replay_catches(tmp_path: Path, bug: str) -> None:
    """Why the replay exists: these bugs pass every books check that trusts the switch's summaries."""
    found = failing(scripted_day(tmp_path, bug), bug)
    assert not {f for f in found if f.startswith("books:")}, found


def test_lost_credit_answers_accp_and_writes_nothing(tmp_path: Path) -> None:
    cfg = system("lost-credit")
    bank = BankLedger(Store(tmp_path / "b.db", bank_ledger.SCHEMA, "os"), cfg, "BNKB")
    ids = [f"p{i:04d}" for i in range(40)]
    lost = [pid for pid in ids if one_in(pid, 10)]
    assert lost  # a stable one in ten
    for pid in ids:
        req = CreditRequest(
            payment_id=pid, debtor_bank="BNKA", debtor_account="0100000001",
            creditor_account="0200000001", amount=100, currency="NGN",
        )  # fmt: skip
        kind, credit = bank.receive_credit(req, req.fingerprint(), T0)
        assert kind is Receive.CREDITED and credit.status == "ACCP"
    assert {c["payment_id"] for c in bank.credits()} == set(ids) - set(lost)
    # Three-way: the payer debited and the switch committed, the payee has nothing.
    t = {
        "payment_id": lost[0], "fingerprint": "f", "status": "ACSC", "amount": 100,
        "debtor_bank": "BNKA", "creditor_bank": "BNKB", "received_at": T0, "window_id": 1,
    }  # fmt: skip
    snap = {
        "switch": {"transfers": [t], "participants": [], "windows": [], "movements": []},
        "banks": {
            "BNKA": {"payments": [{**t, "created_at": T0}], "credits": [], "accounts": [], "entries": []},
            "BNKB": {"payments": [], "credits": bank.credits(), "accounts": [], "entries": []},
        },
    }
    assert reconcile(snap).counts()["debit_without_credit"] == 1


def test_lost_ack_is_what_customer_view_catches() -> None:
    """lost-ack lives in the bank's HTTP answer (mock_switch/bank.py), so its real run is in the
    teeth table; here, the check it must trip: a customer told ACSC of a payment that did not settle."""
    from harness.checkers.consistency import customer_view
    from harness.checkers.reconcile import Reconciliation

    rec = Reconciliation(failed_ids={"p1"}, settled_ids={"p2"})
    ops = [
        {"id": "p1", "outcome": "ok", "complete": T0, "status": "ACSC"},
        {"id": "p2", "outcome": "ok", "complete": T0, "status": "ACSC"},
    ]
    assert customer_view(ops, rec).lost_acknowledged == ["p1"]


def test_an_older_snapshot_fails_clearly() -> None:
    snap = {"switch": {"transfers": [{"payment_id": "x"}], "participants": [], "windows": [], "movements": []}}
    with pytest.raises(SnapshotTooOld, match=r"switch\.transfers rows have no \['fingerprint'"):
        replay(snap)
    with pytest.raises(SnapshotTooOld, match=r"switch\.movements is missing"):
        replay({"switch": {"transfers": [], "participants": [], "windows": []}})


# -- the stress record -------------------------------------------------------------------------


def test_stress_record_of_the_scripted_day(tmp_path: Path) -> None:
    snap = scripted_day(tmp_path, None)
    fault = [
        {"event": "apply", "fault": "f", "kind": "latency", "targets": ["switch->BNKB"], "at": T0},
        {"event": "heal", "fault": "f", "kind": "latency", "targets": ["switch->BNKB"], "at": T0 + 0.5},
    ]
    rec = stress_record(snap, fault, [], payee_timeout_s=1.0)
    assert rec["net_debit_cap"]["am23_during_faults"] == 3
    assert rec["net_debit_cap"]["headroom_refills"] >= 1 and rec["net_debit_cap"]["stressed"]
    assert rec["settlement_window"]["closed_with_transfers_in_flight"] == 1
    assert rec["settlement_window"]["transfers_in_flight_at_close"] == 2
    assert not rec["in_doubt"]["stressed"] and not rec["crash_in_flight"]["stressed"]
    # Without the fault the cap was never reached under one: that stress is not exercised.
    calm = stress_record(snap, [], [], payee_timeout_s=1.0)
    assert not calm["net_debit_cap"]["stressed"]
    (line,) = unexercised(calm, ["net_debit_cap", "settlement_window"])
    assert line.startswith("stress: the scenario declares it stresses net_debit_cap") and "am23_during_faults 0" in line


def test_a_credit_after_its_status_query_is_recorded_and_counted(tmp_path: Path) -> None:
    bank = BankLedger(Store(tmp_path / "b.db", bank_ledger.SCHEMA, "os"), system(None), "BNKB")
    req = CreditRequest(
        payment_id="p0001", debtor_bank="BNKA", debtor_account="0100000001",
        creditor_account="0200000001", amount=100, currency="NGN",
    )  # fmt: skip
    assert bank.credit_status_query("p0001", remember_not_received=True, now=T0) is not None  # AG09, remembered
    assert bank.receive_credit(req, req.fingerprint(), T0 + 1)[0] is Receive.LATE
    bank.store.commit()
    (tombstone,) = bank.credits()
    assert tombstone["fingerprint"] is None and tombstone["late_at"] == T0 + 1
    transfer = {
        "payment_id": "p0001", "fingerprint": "f", "status": "RJCT", "reason": "AB05", "amount": 100,
        "debtor_bank": "BNKA", "creditor_bank": "BNKB", "window_id": 1, "received_at": T0 - 1, "decided_at": T0 + 2,
    }  # fmt: skip
    books = {"payments": [], "credits": bank.credits(), "accounts": [], "entries": []}
    snap = {
        "switch": {"transfers": [transfer], "windows": [], "movements": [], "participants": []},
        "banks": {"BNKB": books},
    }
    late = stress_record(snap, [], [], payee_timeout_s=1.0)["late_credit"]
    assert late["credits_after_status_query"] == 1 and late["not_received_for_a_sent_credit"] == 1
    assert late["stressed"]
    # A snapshot from before `late_at`: nothing proven, nothing claimed.
    books["credits"] = [{k: v for k, v in c.items() if k != "late_at"} for c in books["credits"]]
    old = stress_record(snap, [], [], payee_timeout_s=1.0)["late_credit"]
    assert old["credits_after_status_query"] is None and not old["stressed"]


def test_a_kill_with_transfers_in_flight_is_counted(tmp_path: Path) -> None:
    snap = scripted_day(tmp_path, None)
    window = snap["switch"]["windows"][0]
    pending = [t for t in snap["switch"]["transfers"] if t["window_id"] == 1 and t["status"] == "ACSC"]
    kill_at = window["closed_at"] - 0.001  # just before the last transfer of window 1 was decided
    faults = [
        {"event": "apply", "fault": "k", "kind": "crash", "targets": ["switch"], "at": kill_at},
        {"event": "heal", "fault": "k", "kind": "crash", "targets": ["switch"], "at": kill_at + 1},
    ]
    rec = stress_record(snap, faults, [], payee_timeout_s=1.0)["crash_in_flight"]
    assert pending and rec["kills"] == 1 and rec["payments_in_flight_at_kills"] >= 1 and rec["stressed"]
    # The payee bank killed then: the switch's credits to it were on their way (banks' books are empty here).
    snap["banks"] = {"BNKB": {"payments": [], "credits": [], "accounts": [], "entries": []}}
    for f in faults:
        f.update(kind="power_loss", targets=["BNKB"])
    rec = stress_record(snap, faults, [], payee_timeout_s=1.0)["crash_in_flight"]
    assert rec["per_kill"][0]["service"] == "BNKB" and rec["payments_in_flight_at_kills"] >= 1
    # A kill when nothing was in flight proves nothing.
    for f in faults:
        f["at"] = T0 - 10 if f["event"] == "apply" else T0 - 9
    assert not stress_record(snap, faults, [], payee_timeout_s=1.0)["crash_in_flight"]["stressed"]


def test_stress_kinds_are_one_list() -> None:
    assert set(STRESS_KINDS) == set(StressKind.__args__)  # type: ignore[attr-defined]


def test_a_scenario_naming_an_unknown_stress_is_refused() -> None:
    with pytest.raises(ScenarioError, match=r"expect\.stress\[0\]: Input should be 'net_debit_cap'"):
        parse({"name": "x", "expect": {"stress": ["net_debit_caps"]}}, "x.yaml")


# -- harness teeth ------------------------------------------------------------------------------


def test_teeth_variants_by_name() -> None:
    assert variants(None) == [*BUGS, ROBUST]
    with pytest.raises(HarnessError, match="no variant"):
        variants(["cap-rase"])
    assert teeth_scenario("cap-race").topology.bug == "cap-race"
    assert teeth_scenario(None).topology.bug is None


def test_caught_by_names_the_failing_items() -> None:
    result = {
        "verdict": "fail",
        "checks": {
            "availability": {"verdict": "invalid"},
            "consistency": {"verdict": "invalid"},
            "ledger_replay": {"verdict": "invalid"},
            "stress": {"verdict": "valid"},
        },
        "consistency": {
            "reconciliation": {
                "anomalies": {"debit_without_credit": 3, "stuck": 0},
                "books": [{"name": "conservation", "ok": False}, {"name": "positions_sum_to_zero", "ok": True}],
            }
        },
        "ledger_replay": {"checks": [{"name": "cap_held_at_every_instant", "ok": False}]},
    }
    assert caught_by(result) == [
        "consistency: debit_without_credit",
        "consistency: conservation",
        "ledger_replay: cap_held_at_every_instant",
    ]
    rows = [
        TeethRow("cap-race", "net debit cap", "teeth-cap-race", True, ["ledger_replay: x"], "fail", ""),
        TeethRow(ROBUST, "-", "teeth-robust", False, [], "pass", ""),
    ]
    assert "| cap-race | net debit cap | teeth-cap-race | yes | ledger_replay: x |" in table(rows)
    assert all(r.as_expected for r in rows)


# -- real runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [ROBUST, "cap-race"])
def test_teeth_real_run(tmp_path: Path, variant: str) -> None:
    """The two ends of the teeth table on the real system: the robust mock passes the new checks on
    the teeth scenario (with its stress exercised), and a variant only the replay sees is caught."""
    from harness.runner import run
    from harness.teeth import run_teeth

    (row,) = run_teeth([variant], tmp_path, lambda s, out: run(s, out, progress=None).result)
    result = json.loads((Path(row.run_dir) / "result.json").read_text())
    page = (Path(row.run_dir) / "report.html").read_text()
    assert 'id="stress-record"' in page and "cap_held_at_every_instant" in page
    if variant == ROBUST:
        assert row.verdict == "pass", result["failures"]
        assert result["stress"]["net_debit_cap"]["stressed"] and result["stress"]["settlement_window"]["stressed"]
    else:
        assert row.caught and "ledger_replay: cap_held_at_every_instant" in row.by, result["failures"]
