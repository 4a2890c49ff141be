"""The stress record: for each invariant, whether the run actually put it under stress.

A check that passes on a run that never went near its invariant proves little. This module says,
from the records alone (ledgers.json, faults.jsonl, history.jsonl), what the run did to each:

- `net_debit_cap`: AM23 rejections (the cap was reached) while a fault was active, and headroom
  given back by settlement: a window settled that lowered the capped bank's position after one of
  its AM23s, followed by a reservation of that bank.
- `settlement_window`: windows closed with transfers reserved in them still in flight (they went
  CLOSING: decided after the next window opened), how many such transfers, and how many closes fell
  inside a fault.
- `in_doubt`: transfers the switch decided only after the payee's deadline (what the records prove;
  the usual cause is a forward call that timed out, resolved by status query to the payee, but a
  stalled switch deciding late counts too), and customers' status queries that got a definitive
  answer.
- `late_credit`: credits that reached the payee bank after it had answered a status query for them
  "not received" (AG09), as recorded on that answer's tombstone (`late_at`); likewise transfers at
  the switch and payments at the payer bank. Also: credits the switch had sent that the payee
  answered "not received" for (arrived late or never).
- `crash_in_flight`: kill -9, SIGTERM, restart or power-loss faults that found payments in flight
  (the switch: transfers reserved, not decided; a bank: payments it had debited and not finalised,
  and the switch's transfers to it not yet decided), and how many. A power cut may undo rows it
  caught in flight: those are not counted, the records no longer show them.

A scenario names what it means to stress (`expect.stress`); a consistent scenario whose declared
stress was not exercised fails with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from harness.history import STATUS_QUERY
from harness.timeline import fault_windows

Snapshot = Mapping[str, Any]

# The invariants a scenario may declare it stresses (expect.stress), each with what it takes.
STRESS_KINDS: dict[str, str] = {
    "net_debit_cap": "the cap reached (AM23) while a fault was active, and headroom freed by a settlement",
    "settlement_window": "a settlement window closed with transfers reserved in it still in flight",
    "in_doubt": "a transfer decided only after the payee's deadline (resolved by status query)",
    "late_credit": "a credit that reached the payee after its status query was answered 'not received'",
    "crash_in_flight": "a service killed (crash, stop or restart) with payments in flight in its ledger",
}

KILLS = ("crash", "stop", "restart", "power_loss")


def _in(at: float | None, windows: Sequence[tuple[float, float]]) -> bool:
    return at is not None and any(a <= at <= b for a, b in windows)


def stress_record(
    snap: Snapshot,
    faults: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    payee_timeout_s: float,
) -> dict[str, dict[str, Any]]:
    """What the records prove about each invariant's stress (see the module doc)."""
    wins = fault_windows(faults)
    active = [(w.apply, w.end) for w in wins]
    sw = snap["switch"]
    transfers = [t for t in sw["transfers"] if t["fingerprint"] is not None]
    windows = sorted(sw["windows"], key=lambda w: w["window_id"])
    close_at = {w["window_id"]: nxt["opened_at"] for w, nxt in pairwise(windows)}
    record: dict[str, dict[str, Any]] = {}

    # -- net debit cap ----------------------------------------------------------------------------
    am23 = [t for t in transfers if t["status"] == "RJCT" and t["reason"] == "AM23"]
    am23_in_fault = [t for t in am23 if _in(t["received_at"], active)]
    first_am23: dict[str, float] = {}
    for t in am23:
        first_am23[t["debtor_bank"]] = min(first_am23.get(t["debtor_bank"], t["received_at"]), t["received_at"])
    last_reserved: dict[str, float] = {}  # each bank's last reservation
    by_window: dict[int, list[Mapping[str, Any]]] = {}
    for t in transfers:
        if t["window_id"] is not None:
            bank = t["debtor_bank"]
            last_reserved[bank] = max(last_reserved.get(bank, t["received_at"]), t["received_at"])
            by_window.setdefault(t["window_id"], []).append(t)
    refills = 0
    for m in sw["movements"]:
        bank, at = m["bank"], m["at"]
        # A negative amount: the bank paid in, its position fell by as much (headroom freed).
        freed = m["amount"] < 0 and bank in first_am23 and first_am23[bank] < at
        if freed and last_reserved.get(bank, at) > at:
            refills += 1
    record["net_debit_cap"] = {
        "am23": len(am23),
        "am23_during_faults": len(am23_in_fault),
        "headroom_refills": refills,
        "stressed": bool(am23_in_fault) and refills > 0,
    }

    # -- settlement windows -----------------------------------------------------------------------
    closed_in_flight = 0
    in_flight_at_close = 0
    closes_in_fault = 0
    for wid, at in close_at.items():
        n = sum(
            1
            for t in by_window.get(wid, ())
            if (t["decided_at"] is None or t["decided_at"] > at) and t["received_at"] <= at
        )
        closed_in_flight += n > 0
        in_flight_at_close += n
        closes_in_fault += _in(at, active)
    record["settlement_window"] = {
        "closes": len(close_at),
        "closes_during_faults": closes_in_fault,
        "closed_with_transfers_in_flight": closed_in_flight,
        "transfers_in_flight_at_close": in_flight_at_close,
        "stressed": closed_in_flight > 0,
    }

    # -- in-doubt payments --------------------------------------------------------------------------
    late_decided = [
        t
        for t in transfers
        if t["window_id"] is not None
        and t["decided_at"] is not None
        and t["decided_at"] - t["received_at"] > payee_timeout_s
    ]
    queries = [op for op in history if op.get("op") == STATUS_QUERY]
    answered = [op for op in queries if op.get("status") in ("ACSC", "RJCT")]
    record["in_doubt"] = {
        "decided_after_payee_deadline": len(late_decided),
        "payee_deadline_s": payee_timeout_s,
        "customer_status_queries": len(queries),
        "customer_status_queries_definitive": len(answered),
        "stressed": bool(late_decided),
    }

    # -- messages after their status query -------------------------------------------------------
    # `late_at` on a "not received" tombstone: a copy arrived after that answer (and was refused).
    # Older snapshots lack it: then nothing is proven (None), whatever the tombstones suggest.
    sent = {t["payment_id"]: t for t in transfers if t["window_id"] is not None}
    not_received = 0
    tombstones = [
        *(("credit", c) for books in snap["banks"].values() for c in books["credits"] if c["fingerprint"] is None),
        *(("payment", p) for books in snap["banks"].values() for p in books["payments"] if p["fingerprint"] is None),
        *(("transfer", t) for t in sw["transfers"] if t["fingerprint"] is None),
    ]
    recorded = all("late_at" in row for _, row in tombstones)
    late = {"credit": 0, "payment": 0, "transfer": 0}
    for kind, row in tombstones:
        if kind == "credit" and row["payment_id"] in sent:
            not_received += 1
        if row.get("late_at") is not None:
            late[kind] += 1
    record["late_credit"] = {
        "credits_after_status_query": late["credit"] if recorded else None,
        "transfers_after_status_query": late["transfer"] if recorded else None,
        "payments_after_status_query": late["payment"] if recorded else None,
        "not_received_for_a_sent_credit": not_received,
        "stressed": recorded and late["credit"] > 0,
    }

    # -- kills with payments in flight ------------------------------------------------------------
    kills = []
    for w in wins:
        if w.kind not in KILLS:
            continue
        for service in w.targets:
            if service == "switch":
                n = sum(
                    1
                    for t in transfers
                    if t["window_id"] is not None
                    and t["received_at"] < w.apply
                    and (t["decided_at"] is None or t["decided_at"] > w.apply)
                )
            elif service in snap["banks"]:
                # Its customers' payments it had debited and not finalised, and the switch's
                # transfers to it not yet decided (a credit on its way in or unanswered).
                n = sum(
                    1
                    for p in snap["banks"][service]["payments"]
                    if p["fingerprint"] is not None
                    and p["created_at"] < w.apply
                    and (p["decided_at"] is None or p["decided_at"] > w.apply)
                ) + sum(
                    1
                    for t in transfers
                    if t["creditor_bank"] == service
                    and t["window_id"] is not None
                    and t["received_at"] < w.apply
                    and (t["decided_at"] is None or t["decided_at"] > w.apply)
                )
            else:
                continue
            kills.append({"fault": w.fault, "kind": w.kind, "service": service, "at": w.apply, "in_flight": n})
    record["crash_in_flight"] = {
        "kills": len(kills),
        "kills_with_payments_in_flight": sum(1 for k in kills if k["in_flight"]),
        "payments_in_flight_at_kills": sum(k["in_flight"] for k in kills),
        "per_kill": kills,
        "stressed": any(k["in_flight"] for k in kills),
    }
    return record


def unexercised(record: Mapping[str, Mapping[str, Any]], declared: Sequence[str]) -> list[str]:
    """A failure line for each declared stress the run did not exercise."""
    return [
        f"stress: the scenario declares it stresses {kind} ({STRESS_KINDS[kind]}), and this run did not: "
        + ", ".join(f"{k} {v}" for k, v in record[kind].items() if k not in ("stressed", "per_kill"))
        for kind in declared
        if not record[kind]["stressed"]
    ]
