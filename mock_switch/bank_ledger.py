"""A participant bank's books: customer accounts, outgoing payments, incoming credits, entries.

Every money movement is an entry; the UNIQUE (payment_id, kind) constraint makes "one ledger
effect per payment id" something the database enforces, not something we hope for.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mock_switch.api import CreditRequest, PaymentRequest
from mock_switch.bugs import one_in
from mock_switch.codes import REASON_OF, STATUS_OF, Reason, Status
from mock_switch.config import SystemConfig, party
from mock_switch.store import Store

SCHEMA = """
-- Tables keyed by text are WITHOUT ROWID: one b-tree per table, not a table plus its key's index.
-- CHECKs spell lists with OR: SQLite builds a temporary b-tree for IN of 3+ values on every write.
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    msisdn TEXT NOT NULL,
    name TEXT NOT NULL,
    balance INTEGER NOT NULL CHECK (balance >= 0),
    blocked INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS payments (
    payment_id TEXT PRIMARY KEY,
    fingerprint TEXT,
    debtor_account TEXT,
    creditor_bank TEXT,
    creditor_account TEXT,
    amount INTEGER,
    status TEXT NOT NULL CHECK (status = 'PDNG' OR status = 'ACSC' OR status = 'RJCT'),
    reason TEXT,
    created_at REAL NOT NULL,
    decided_at REAL,
    -- on a "not received" tombstone: when a copy of the payment first arrived after that answer
    late_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS credits (
    payment_id TEXT PRIMARY KEY,
    fingerprint TEXT,
    debtor_bank TEXT,
    debtor_account TEXT,
    creditor_account TEXT,
    amount INTEGER,
    status TEXT NOT NULL CHECK (status IN ('ACCP', 'RJCT')),
    reason TEXT,
    received_at REAL NOT NULL,
    -- on a "not received" tombstone: when the credit first arrived after that answer (refused)
    late_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    entry_id INTEGER PRIMARY KEY,
    payment_id TEXT NOT NULL,
    account TEXT NOT NULL REFERENCES accounts(account),
    kind TEXT NOT NULL CHECK (kind = 'DEBIT' OR kind = 'REVERSAL' OR kind = 'CREDIT'),
    amount INTEGER NOT NULL,
    at REAL NOT NULL,
    UNIQUE (payment_id, kind)
);
"""


class Originate(StrEnum):
    DEBITED = "debited"  # funds taken from the customer: send to the switch
    REJECTED = "rejected"  # recorded as RJCT (AM04, AC01, AC06)
    REPLAY = "replay"
    DUPLICATE = "duplicate"
    LATE = "late"  # we answered the customer "not received" already


class Receive(StrEnum):
    CREDITED = "credited"
    REJECTED = "rejected"
    REPLAY = "replay"
    DUPLICATE = "duplicate"
    LATE = "late"  # we told the switch "not received": refuse, AB05


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    fingerprint: str | None
    debtor_account: str | None
    creditor_bank: str | None
    creditor_account: str | None
    amount: int | None
    status: Status
    reason: Reason | None
    created_at: float
    decided_at: float | None
    late_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Payment:
        # By position (the columns of `payments`, in order): dict(row) and the enums' calls cost
        # several microseconds on every payment.
        return cls(
            row[0], row[1], row[2], row[3], row[4], row[5], STATUS_OF[row[6]], REASON_OF[row[7]], row[8], row[9],
            row[10],
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Credit:
    payment_id: str
    fingerprint: str | None
    status: Status
    reason: Reason | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Credit:
        return cls(row["payment_id"], row["fingerprint"], STATUS_OF[row["status"]], REASON_OF[row["reason"]])


class BankLedger:
    def __init__(self, store: Store, config: SystemConfig, code: str) -> None:
        self.store = store
        self.db = store.conn
        self.code = code
        self.bug = config.bug  # a deliberately broken variant (mock_switch/bugs.py); None in real runs
        self._seed(config)

    def _seed(self, config: SystemConfig) -> None:
        """First start only: open the customer accounts with their opening balances."""
        if self.db.execute("SELECT 1 FROM accounts LIMIT 1").fetchone() is not None:
            return
        index = config.bank_index(self.code)
        bank = config.bank(self.code)
        with self.store.unit() as db:
            db.executemany(
                "INSERT INTO accounts(account, msisdn, name, balance, blocked) VALUES (?, ?, ?, ?, ?)",
                (
                    (p.account, p.msisdn, p.name, p.opening_balance, int(p.blocked))
                    for p in (party(index, bank, i) for i in range(bank.accounts))
                ),
            )
        self.store.commit()

    def _account(self, account: str) -> sqlite3.Row | None:
        return self.db.execute(  # type: ignore[no-any-return]
            "SELECT balance, blocked FROM accounts WHERE account = ?", (account,)
        ).fetchone()

    # -- outgoing: customer -> this bank -> switch ------------------------------------------

    def payment(self, payment_id: str) -> Payment | None:
        row = self.db.execute("SELECT * FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
        return Payment.from_row(row) if row else None

    def payment_status(self, payment_id: str) -> tuple[Status, Reason | None] | None:
        """A payment's status and reason, for its answer (lighter than `payment`)."""
        row = self.db.execute("SELECT status, reason FROM payments WHERE payment_id = ?", (payment_id,)).fetchone()
        return (STATUS_OF[row[0]], REASON_OF[row[1]]) if row else None

    def originate(self, req: PaymentRequest, fingerprint: str, now: float) -> tuple[Originate, Payment]:
        """Idempotency and account checks, then hold the funds (debit). One atomic unit."""
        with self.store.unit() as db:
            existing = self.payment(req.payment_id)
            if existing is not None:
                if existing.fingerprint is None:
                    db.execute(
                        "UPDATE payments SET late_at = coalesce(late_at, ?) WHERE payment_id = ?",
                        (now, req.payment_id),
                    )
                    return Originate.LATE, existing
                if existing.fingerprint != fingerprint:
                    return Originate.DUPLICATE, existing
                return Originate.REPLAY, existing
            acct = self._account(req.debtor_account)
            reason: Reason | None = None
            if acct is None:
                reason = Reason.AC01
            elif acct["blocked"]:
                reason = Reason.AC06
            elif acct["balance"] < req.amount:
                reason = Reason.AM04
            db.execute(
                "INSERT INTO payments(payment_id, fingerprint, debtor_account, creditor_bank,"
                " creditor_account, amount, status, reason, created_at, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    req.payment_id, fingerprint, req.debtor_account, req.creditor_bank,
                    req.creditor_account, req.amount, "RJCT" if reason else "PDNG",
                    reason.value if reason else None, now, now if reason else None,
                ),
            )  # fmt: skip
            if reason is None:
                self._post(req.payment_id, req.debtor_account, "DEBIT", -req.amount, now)
        payment = Payment(  # the row just inserted, not read back
            payment_id=req.payment_id,
            fingerprint=fingerprint,
            debtor_account=req.debtor_account,
            creditor_bank=req.creditor_bank,
            creditor_account=req.creditor_account,
            amount=req.amount,
            status=Status.RJCT if reason else Status.PDNG,
            reason=reason,
            created_at=now,
            decided_at=now if reason else None,
        )
        return (Originate.REJECTED if reason else Originate.DEBITED), payment

    def finalise(self, payment_id: str, now: float) -> Payment:
        """The switch committed: the held debit becomes final."""
        with self.store.unit() as db:
            row = db.execute(
                "UPDATE payments SET status = 'ACSC', decided_at = ? WHERE payment_id = ? AND status = 'PDNG'"
                " RETURNING *",
                (now, payment_id),
            ).fetchone()
        return Payment.from_row(row) if row else self._must(payment_id)  # not pending: already decided

    def reverse(self, payment_id: str, reason: Reason, now: float) -> Payment:
        """The payment failed (or, in naive mode, we gave up): give the customer the money back."""
        with self.store.unit() as db:
            row = db.execute(
                "UPDATE payments SET status = 'RJCT', reason = ?, decided_at = ?"
                " WHERE payment_id = ? AND status = 'PDNG' RETURNING *",
                (reason.value, now, payment_id),
            ).fetchone()
            if row is None:  # not pending: already decided
                return self._must(payment_id)
            p = Payment.from_row(row)
            assert p.debtor_account is not None and p.amount is not None
            self._post(payment_id, p.debtor_account, "REVERSAL", p.amount, now)
        return p

    def customer_status_query(self, payment_id: str, remember_not_received: bool, now: float) -> Payment | None:
        p = self.payment(payment_id)
        if p is not None or not remember_not_received:
            return p
        with self.store.unit() as db:
            db.execute(
                "INSERT INTO payments(payment_id, status, reason, created_at, decided_at)"
                " VALUES (?, 'RJCT', 'AG09', ?, ?)",
                (payment_id, now, now),
            )
        return self._must(payment_id)

    def pending(self) -> list[Payment]:
        rows = self.db.execute("SELECT * FROM payments WHERE status = 'PDNG' ORDER BY created_at")
        return [Payment.from_row(r) for r in rows]

    def _must(self, payment_id: str) -> Payment:
        p = self.payment(payment_id)
        if p is None:
            raise KeyError(payment_id)
        return p

    # -- incoming: switch -> this bank ------------------------------------------------------

    def credit(self, payment_id: str) -> Credit | None:
        row = self.db.execute("SELECT * FROM credits WHERE payment_id = ?", (payment_id,)).fetchone()
        return Credit.from_row(row) if row else None

    def receive_credit(self, req: CreditRequest, fingerprint: str, now: float) -> tuple[Receive, Credit]:
        with self.store.unit() as db:
            existing = self.credit(req.payment_id)
            if existing is not None:
                if existing.fingerprint is None:
                    db.execute(
                        "UPDATE credits SET late_at = coalesce(late_at, ?) WHERE payment_id = ?",
                        (now, req.payment_id),
                    )
                    return Receive.LATE, existing
                if existing.fingerprint != fingerprint:
                    return Receive.DUPLICATE, existing
                return Receive.REPLAY, existing
            acct = self._account(req.creditor_account)
            reason = Reason.AC01 if acct is None else Reason.AC06 if acct["blocked"] else None
            if reason is None and self.bug == "lost-credit" and one_in(req.payment_id, 10):
                # BUG(lost-credit): answer ACCP, write nothing
                return Receive.CREDITED, Credit(req.payment_id, fingerprint, Status.ACCP, None)
            db.execute(
                "INSERT INTO credits(payment_id, fingerprint, debtor_bank, debtor_account,"
                " creditor_account, amount, status, reason, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    req.payment_id, fingerprint, req.debtor_bank, req.debtor_account,
                    req.creditor_account, req.amount, "RJCT" if reason else "ACCP",
                    reason.value if reason else None, now,
                ),
            )  # fmt: skip
            if reason is None:
                self._post(req.payment_id, req.creditor_account, "CREDIT", req.amount, now)
        credit = Credit(req.payment_id, fingerprint, Status.RJCT if reason else Status.ACCP, reason)  # not read back
        return (Receive.REJECTED if reason else Receive.CREDITED), credit

    def credit_status_query(self, payment_id: str, remember_not_received: bool, now: float) -> Credit | None:
        c = self.credit(payment_id)
        if c is not None or not remember_not_received:
            return c
        with self.store.unit() as db:
            db.execute(
                "INSERT INTO credits(payment_id, status, reason, received_at) VALUES (?, 'RJCT', 'AG09', ?)",
                (payment_id, now),
            )
        credit = self.credit(payment_id)
        assert credit is not None
        return credit

    # -- money movement ---------------------------------------------------------------------

    def _post(self, payment_id: str, account: str, kind: str, amount: int, now: float) -> None:
        self.db.execute("UPDATE accounts SET balance = balance + ? WHERE account = ?", (amount, account))
        self.db.execute(
            "INSERT INTO entries(payment_id, account, kind, amount, at) VALUES (?, ?, ?, ?, ?)",
            (payment_id, account, kind, amount, now),
        )

    # -- read models ------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM accounts ORDER BY account")]

    def payments(self, after: str = "", limit: int = 1_000_000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM payments WHERE payment_id > ? ORDER BY payment_id LIMIT ?",
            (after, limit),
        )
        return [dict(r) for r in rows]

    def credits(self, after: str = "", limit: int = 1_000_000) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM credits WHERE payment_id > ? ORDER BY payment_id LIMIT ?", (after, limit))
        return [dict(r) for r in rows]

    def entries(self, after: int = 0, limit: int = 1_000_000) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM entries WHERE entry_id > ? ORDER BY entry_id LIMIT ?", (after, limit))
        return [dict(r) for r in rows]

    def totals(self) -> dict[str, int]:
        """Customer money and money held for payments still in flight."""
        (balances,) = self.db.execute("SELECT coalesce(sum(balance), 0) FROM accounts").fetchone()
        (held,) = self.db.execute("SELECT coalesce(sum(amount), 0) FROM payments WHERE status = 'PDNG'").fetchone()
        return {"customer_balances": balances, "held_in_flight": held}
