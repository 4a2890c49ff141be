"""Settlement consistency: three-way reconciliation of payer bank, switch and payee bank, plus
the books checks (conservation, positions, net debit caps, settlement windows).

Pure functions over a ledger snapshot (see `snapshot.py`), so a saved run can be re-checked later.
A payment is clean only as (debited, committed, credited) or (not debited, not committed, not
credited); every other combination is an anomaly with a class that says who lost what.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from operator import itemgetter
from typing import Any

from harness.fmt import fmt_money

# A ledger snapshot as harness/observe/snapshot.py takes and saves it; named here, not imported from
# there, because checkers sit below the live side (tests/test_layers.py).
Snapshot = Mapping[str, Any]


class Anomaly(StrEnum):
    DEBIT_WITHOUT_CREDIT = "debit_without_credit"  # the payer's customer lost money
    CREDIT_WITHOUT_DEBIT = "credit_without_debit"  # money was created
    SWITCH_DISAGREES = "switch_disagrees"  # banks agree, the switch's books say otherwise
    AMOUNT_MISMATCH = "amount_mismatch"
    DUPLICATE_EFFECT = "duplicate_effect"  # more than one debit, reversal or credit for one id
    STUCK = "stuck"  # still pending somewhere


@dataclass(frozen=True, slots=True)
class PaymentView:
    """The three-way state of one payment id."""

    payment_id: str
    payer_bank: str | None
    payee_bank: str | None
    payer: str  # ACSC | RJCT:<reason> | PDNG | absent
    switch: str
    payee: str  # ACCP | RJCT:<reason> | absent
    amount: int | None
    first_seen: float | None = None  # earliest timestamp any ledger has for it


@dataclass
class BooksCheck:
    name: str
    ok: bool
    detail: str


@dataclass
class Reconciliation:
    payments: int = 0
    clean_settled: int = 0
    clean_failed: int = 0
    anomalies: dict[str, list[PaymentView]] = field(default_factory=dict)
    books: list[BooksCheck] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    # Checks a target cannot be judged on (it does not offer the capability they read): name -> why.
    not_applicable: dict[str, str] = field(default_factory=dict)
    settled_ids: set[str] = field(default_factory=set, repr=False)  # money moved, cleanly
    failed_ids: set[str] = field(default_factory=set, repr=False)  # no money moved, cleanly

    @property
    def anomaly_count(self) -> int:
        return sum(len(v) for v in self.anomalies.values())

    @property
    def ok(self) -> bool:
        return self.anomaly_count == 0 and all(b.ok for b in self.books)

    def counts(self) -> dict[str, int]:
        return {cls.value: len(self.anomalies.get(cls.value, [])) for cls in Anomaly}

    def summary(self, examples: int = 5) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "payments": self.payments,
            "clean_settled": self.clean_settled,
            "clean_failed": self.clean_failed,
            "anomaly_count": self.anomaly_count,
            "anomalies": self.counts(),
            "examples": {k: [asdict(v) for v in vs[:examples]] for k, vs in self.anomalies.items() if vs},
            "books": [asdict(b) for b in self.books],
            "totals": self.totals,
            "not_applicable": self.not_applicable,
        }


def _state(row: dict[str, Any] | None) -> str:
    if row is None:
        return "absent"
    if row["status"] == "RJCT":
        return f"RJCT:{row['reason']}"
    return str(row["status"])


def _duplicate_effects(entries: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(kind, count, payment id) for every payment with more than one entry of a kind."""
    pids = list(map(itemgetter("payment_id"), entries))  # in C
    if len(set(pids)) == len(pids):  # the common case, every id once, costs one set build
        return []
    several = {pid for pid, n in Counter(pids).items() if n > 1}  # e.g. a debit and its reversal
    pairs = Counter((e["kind"], e["payment_id"]) for e in entries if e["payment_id"] in several)
    return [(kind, n, pid) for (kind, pid), n in pairs.items() if n > 1]


Rows = dict[str, dict[str, Any]]


def _three_ways(
    payments: Rows, transfers: Rows, credits: Rows
) -> Iterator[tuple[str, dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]]:
    """(payment id, payer's row, switch's row, payee's row) of every payment id, each once. In the
    ledgers' own order, not a set's: with a million payments, hash order costs a cache miss per
    lookup and doubled the time."""
    get_p, get_c = payments.get, credits.get
    for pid, t in transfers.items():
        yield pid, get_p(pid), t, get_c(pid)
    for pid, p in payments.items():
        if pid not in transfers:
            yield pid, p, None, get_c(pid)
    for pid, c in credits.items():
        if pid not in transfers and pid not in payments:
            yield pid, None, None, c


def _holder(books: list[tuple[str, dict[str, dict[str, Any]]]], pid: str) -> str | None:
    """The last bank whose rows hold `pid`."""
    return next((code for code, rows in reversed(books) if pid in rows), None)


def _first_seen(p: dict[str, Any] | None, t: dict[str, Any] | None, c: dict[str, Any] | None) -> float:
    """Earliest timestamp any ledger has for the payment (0 if none)."""
    stamps = [r[k] for r, k in ((p, "created_at"), (t, "received_at"), (c, "received_at")) if r is not None and r[k]]
    return min(stamps) if stamps else 0.0


def reconcile(
    snap: Snapshot,
    opening_customer_money: int | None = None,
    opening_settlement_money: int | None = None,
    settled_before: float | None = None,
    currency: str = "",
    with_books: bool = True,
) -> Reconciliation:
    """Reconcile a snapshot. With `settled_before`, payments first seen after that time are still
    in their normal flight and are left out of the anomaly classes (used while load is running).
    `currency` names the amounts the books checks quote (harness.fmt.fmt_money, the one format).
    `with_books=False`: the payments only, no books checks (a chunk of the ledgers, read by payment id
    range, as the live sampler reads them: harness/observe/sampler.py)."""
    result = Reconciliation()
    # Tombstones (fingerprint null) are answers to status queries, not payments.
    transfers = {t["payment_id"]: t for t in snap["switch"]["transfers"] if t["fingerprint"] is not None}
    payments: dict[str, dict[str, Any]] = {}
    credits: dict[str, dict[str, Any]] = {}
    # Each bank's own payments and credits: which bank holds a payment is looked up only for the
    # anomalies (the last bank holding it, as in the merged dicts), not recorded for every payment.
    payers: list[tuple[str, dict[str, dict[str, Any]]]] = []
    payees: list[tuple[str, dict[str, dict[str, Any]]]] = []
    anomalies: dict[str, list[PaymentView]] = defaultdict(list)
    for code, books in snap["banks"].items():
        mine = {p["payment_id"]: p for p in books["payments"] if p["fingerprint"] is not None}
        payments.update(mine)
        payers.append((code, mine))
        theirs = {c["payment_id"]: c for c in books["credits"] if c["fingerprint"] is not None}
        credits.update(theirs)
        payees.append((code, theirs))
        for kind, n, pid in _duplicate_effects(books.get("entries", [])):
            anomalies[Anomaly.DUPLICATE_EFFECT.value].append(PaymentView(pid, code, None, f"{kind} x{n}", "", "", None))

    settled_add, failed_add = result.settled_ids.add, result.failed_ids.add
    for pid, p, t, c in _three_ways(payments, transfers, credits):
        result.payments += 1
        if settled_before is not None and _first_seen(p, t, c) > settled_before:
            result.payments -= 1
            continue  # still in its normal flight
        p_status = p["status"] if p is not None else None
        t_status = t["status"] if t is not None else None
        debited = p_status == "ACSC"
        credited = c is not None and c["status"] == "ACCP"
        cls: Anomaly | None
        if p_status == "PDNG" or t_status == "PDNG":
            cls = Anomaly.STUCK
        elif debited != credited:
            cls = Anomaly.DEBIT_WITHOUT_CREDIT if debited else Anomaly.CREDIT_WITHOUT_DEBIT
        elif (t_status == "ACSC") != debited:
            cls = Anomaly.SWITCH_DISAGREES
        elif debited and not (p["amount"] == c["amount"] == (t["amount"] if t else p["amount"])):  # type: ignore[index]
            cls = Anomaly.AMOUNT_MISMATCH
        else:
            settled_add(pid) if debited else failed_add(pid)
            continue
        # Only anomalies get a full three-way view: clean payments are the vast majority.
        anomalies[cls.value].append(
            PaymentView(
                payment_id=pid,
                payer_bank=_holder(payers, pid) or (t["debtor_bank"] if t else None),
                payee_bank=_holder(payees, pid) or (t["creditor_bank"] if t else None),
                payer=_state(p),
                switch=_state(t),
                payee=_state(c),
                amount=(p or t or c or {}).get("amount"),
                first_seen=_first_seen(p, t, c) or None,
            )
        )
    result.clean_settled, result.clean_failed = len(result.settled_ids), len(result.failed_ids)
    for views in anomalies.values():
        views.sort(key=lambda v: v.payment_id)
    result.anomalies = dict(anomalies)
    if not with_books:
        return result
    result.books = check_books(
        snap, transfers, opening_customer_money, opening_settlement_money, result.totals, currency
    )
    missing = set(snap.get("not_offered", ()))
    if missing:
        result.not_applicable = not_applicable(missing)
        result.books = [b for b in result.books if b.name not in result.not_applicable]
        for key in ("customer_balances", "held_in_flight", "opening_customer_money", "conservation_delta"):
            if "bank_books" in missing:
                result.totals.pop(key, None)
        if "positions" in missing:
            result.totals.pop("settlement_balances", None)
    return result


# The optional contract capabilities (harness/contract.py) each check reads, beyond the required ones.
CHECK_NEEDS: dict[str, tuple[str, ...]] = {
    "duplicate_effects": ("bank_books",),
    "conservation": ("bank_books",),
    "settlement_money_conserved": ("positions",),
    "positions_match_transfers": ("positions", "settlement"),
    "reservations_match_pending": ("positions",),
    "positions_sum_to_zero": ("positions",),
    "closed_credit_matches_windows": ("positions", "settlement"),
    "net_debit_cap_respected": ("positions",),
    "committed_in_a_window": ("settlement",),
    "settlement_windows": ("settlement",),
}


def not_applicable(missing: set[str]) -> dict[str, str]:
    """The checks that cannot be judged without the `missing` capabilities, each with the reason."""
    return {
        check: f"not applicable: the target does not offer {', '.join(c for c in needs if c in missing)}"
        for check, needs in CHECK_NEEDS.items()
        if missing.intersection(needs)
    }


def check_books(
    snap: Snapshot,
    transfers: dict[str, dict[str, Any]],
    opening_customer_money: int | None,
    opening_settlement_money: int | None,
    totals: dict[str, int],
    currency: str = "",
) -> list[BooksCheck]:
    def money(minor: int, signed: bool = False) -> str:
        return fmt_money(minor, currency, signed)

    def amounts(by_bank: Mapping[str, int]) -> str:
        return "{" + ", ".join(f"{bank}: {money(v)}" for bank, v in by_bank.items()) + "}"

    checks: list[BooksCheck] = []
    sw = {"participants": [], "windows": [], "movements": [], **snap["switch"]}  # a target's missing reads: none
    customer = sum(a["balance"] for b in snap["banks"].values() for a in b.get("accounts", []))
    held = sum(p["amount"] for b in snap["banks"].values() for p in b["payments"] if p["status"] == "PDNG")
    totals["customer_balances"] = customer
    totals["held_in_flight"] = held
    totals["settlement_balances"] = sum(p["settlement_balance"] for p in sw["participants"])
    if opening_customer_money is not None:
        # Money held for in-flight payments left the payer but has not reached anyone yet.
        delta = customer + held - opening_customer_money
        totals["opening_customer_money"] = opening_customer_money
        totals["conservation_delta"] = delta
        checks.append(
            BooksCheck(
                "conservation",
                delta == 0,
                f"customer money + held in flight - opening = {money(delta, signed=True)} (must be 0)",
            )
        )
    if opening_settlement_money is not None:
        moved = totals["settlement_balances"] - opening_settlement_money
        checks.append(
            BooksCheck(
                "settlement_money_conserved", moved == 0, f"settlement balances - opening = {money(moved, signed=True)}"
            )
        )

    windows = {w["window_id"]: w for w in sw["windows"]}
    settled = {wid for wid, w in windows.items() if w["state"] == "SETTLED"}
    unsettled: Counter[str] = Counter()
    reserved: Counter[str] = Counter()
    per_window: dict[int, Counter[str]] = defaultdict(Counter)
    # What closing/closed, unsettled windows still have pending, per debtor (for their receivables).
    pending_in: dict[int, Counter[str]] = defaultdict(Counter)
    missing: list[str] = []  # committed transfers outside any window
    # One pass over the transfers (a million in benchmarks/reconcile_scale.py) for every figure.
    for t in transfers.values():
        status = t["status"]
        if status == "ACSC":
            wid, amount, debtor, creditor = t["window_id"], t["amount"], t["debtor_bank"], t["creditor_bank"]
            net = per_window[wid]
            net[debtor] += amount
            net[creditor] -= amount
            if wid not in settled:
                unsettled[debtor] += amount
                unsettled[creditor] -= amount
            if wid not in windows:
                missing.append(t["payment_id"])
        elif status == "PDNG":
            reserved[t["debtor_bank"]] += t["amount"]
            if t.get("window_id") is not None:
                pending_in[t["window_id"]][t["debtor_bank"]] += t["amount"]

    bad_pos = [
        f"{p['bank']}: position {money(p['position'])} vs committed unsettled {money(unsettled[p['bank']])}"
        for p in sw["participants"]
        if p["position"] != unsettled[p["bank"]]
    ]
    checks.append(BooksCheck("positions_match_transfers", not bad_pos, "; ".join(bad_pos) or "every position"))
    bad_res = [
        f"{p['bank']}: reserved {money(p['reserved'])} vs pending {money(reserved[p['bank']])}"
        for p in sw["participants"]
        if p["reserved"] != reserved[p["bank"]]
    ]
    checks.append(BooksCheck("reservations_match_pending", not bad_res, "; ".join(bad_res) or "every reservation"))
    pos_sum = sum(p["position"] for p in sw["participants"])
    checks.append(BooksCheck("positions_sum_to_zero", pos_sum == 0, f"sum of positions = {money(pos_sum)}"))
    over = [
        f"{p['bank']}: peak {money(p['peak_exposure'])} > cap {money(p['net_debit_cap'])}"
        for p in sw["participants"]
        if p["peak_exposure"] > p["net_debit_cap"]
    ]
    over += [
        f"{p['bank']}: position {money(p['position'])} > cap {money(p['net_debit_cap'])}"
        for p in sw["participants"]
        if p["position"] > p["net_debit_cap"]
    ]
    # What closing/closed, unsettled windows owe each bank beyond its own pending debits in them.
    receivable: Counter[str] = Counter()
    for wid, w in windows.items():
        if w["state"] in ("CLOSING", "CLOSED"):
            for bank in {*per_window[wid], *pending_in[wid]}:
                receivable[bank] += max(0, -(per_window[wid][bank] + pending_in[wid][bank]))
    bad_credit = [
        f"{p['bank']}: closed_credit {money(p['closed_credit'])}"
        f" vs closed windows owe it {money(receivable[p['bank']])}"
        for p in sw["participants"]
        if p.get("closed_credit", 0) != receivable[p["bank"]]
    ]
    checks.append(BooksCheck("closed_credit_matches_windows", not bad_credit, "; ".join(bad_credit) or "every bank"))
    checks.append(BooksCheck("net_debit_cap_respected", not over, "; ".join(over) or "no cap ever exceeded"))

    checks.append(
        BooksCheck("committed_in_a_window", not missing, f"{len(missing)} committed transfers outside any window")
    )
    bad_windows = []
    movements: dict[int, dict[str, int]] = defaultdict(dict)
    for m in sw["movements"]:
        movements[m["window_id"]][m["bank"]] = m["amount"]
    for wid, w in windows.items():
        if w["state"] in ("OPEN", "CLOSING"):
            continue
        frozen = {k: v for k, v in w["net_positions"].items() if v}
        actual = {k: v for k, v in per_window[wid].items() if v}
        if frozen != actual:
            bad_windows.append(f"window {wid}: frozen net {amounts(frozen)} vs transfers {amounts(actual)}")
        if sum(w["net_positions"].values()) != 0:
            bad_windows.append(f"window {wid}: net positions sum to {money(sum(w['net_positions'].values()))}")
        if w["state"] == "SETTLED":
            paid = {k: -v for k, v in movements[wid].items() if v}
            if paid != frozen:
                bad_windows.append(f"window {wid}: moved {amounts(paid)} vs net {amounts(frozen)}")
    checks.append(
        BooksCheck(
            "settlement_windows", not bad_windows, "; ".join(bad_windows) or f"{len(windows)} windows consistent"
        )
    )
    return checks
