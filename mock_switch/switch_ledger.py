"""The switch's books: participants and positions, transfers, settlement windows.

Synchronous and database-backed, so the HTTP service, the Hypothesis state machine and the
reconciliation tools all exercise the same code. Position sign: a bank's position is what it owes
the others (sent minus received) over committed, not yet settled transfers.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mock_switch.api import Refused, TransferRequest
from mock_switch.bugs import one_in
from mock_switch.codes import REASON_OF, STATUS_OF, Reason, Status
from mock_switch.config import SystemConfig
from mock_switch.store import Store

SCHEMA = """
-- Tables keyed by text are WITHOUT ROWID: one b-tree per table, not a table plus its key's index.
-- CHECKs spell lists with OR: SQLite builds a temporary b-tree for IN of 3+ values on every write.
CREATE TABLE IF NOT EXISTS participants (
    bank TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    net_debit_cap INTEGER NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    -- highest exposure (see SwitchLedger.exposure) ever seen: proves the cap was never exceeded
    peak_exposure INTEGER NOT NULL DEFAULT 0,
    settlement_balance INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS windows (
    window_id INTEGER PRIMARY KEY,
    -- CLOSING: no new transfers, waiting for the ones reserved in it to be decided
    state TEXT NOT NULL CHECK (state IN ('OPEN', 'CLOSING', 'CLOSED', 'SETTLED')),
    opened_at REAL NOT NULL,
    closed_at REAL,
    settled_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_window ON windows(state) WHERE state = 'OPEN';
CREATE TABLE IF NOT EXISTS transfers (
    payment_id TEXT PRIMARY KEY,
    fingerprint TEXT,
    debtor_bank TEXT,
    debtor_account TEXT,
    creditor_bank TEXT,
    creditor_account TEXT,
    amount INTEGER,
    status TEXT NOT NULL CHECK (status = 'PDNG' OR status = 'ACSC' OR status = 'RJCT'),
    reason TEXT,
    -- the window that was open when the transfer was reserved; it commits into that window
    window_id INTEGER REFERENCES windows(window_id),
    received_at REAL NOT NULL,
    decided_at REAL,
    -- on a "not received" tombstone: when a copy of the transfer first arrived after that answer
    late_at REAL,
    CHECK (status != 'ACSC' OR window_id IS NOT NULL)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS transfers_by_window ON transfers(window_id, status);
-- Running per-window figures, so the cap check never scans transfers.
CREATE TABLE IF NOT EXISTS window_exposure (
    window_id INTEGER NOT NULL REFERENCES windows(window_id),
    bank TEXT NOT NULL REFERENCES participants(bank),
    committed_net INTEGER NOT NULL DEFAULT 0,  -- sent minus received, committed
    pending_debits INTEGER NOT NULL DEFAULT 0,  -- reserved by this bank, not yet decided
    PRIMARY KEY (window_id, bank)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS window_positions (
    window_id INTEGER NOT NULL REFERENCES windows(window_id),
    bank TEXT NOT NULL REFERENCES participants(bank),
    net_position INTEGER NOT NULL,
    PRIMARY KEY (window_id, bank)
);
CREATE TABLE IF NOT EXISTS settlement_movements (
    movement_id INTEGER PRIMARY KEY,
    window_id INTEGER NOT NULL REFERENCES windows(window_id),
    bank TEXT NOT NULL REFERENCES participants(bank),
    amount INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    at REAL NOT NULL,
    UNIQUE (window_id, bank)
);
"""


class Begin(StrEnum):
    """What `begin_transfer` did with a request."""

    RESERVED = "reserved"  # new transfer, funds reserved: forward it to the payee
    REJECTED = "rejected"  # new transfer, rejected and recorded (AM23, AC01)
    REPLAY = "replay"  # same id, same body: answer what we know
    DUPLICATE = "duplicate"  # same id, different body: RJCT DUPL, nothing written
    LATE = "late"  # we already answered "not received" for this id: RJCT AB06


@dataclass(frozen=True, slots=True)
class Transfer:
    payment_id: str
    fingerprint: str | None
    debtor_bank: str | None
    debtor_account: str | None
    creditor_bank: str | None
    creditor_account: str | None
    amount: int | None
    status: Status
    reason: Reason | None
    window_id: int | None
    received_at: float
    decided_at: float | None
    late_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Transfer:
        # By position (the columns of `transfers`, in order): dict(row) and the enums' calls cost
        # several microseconds on every transfer.
        return cls(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], STATUS_OF[row[7]], REASON_OF[row[8]], row[9],
            row[10], row[11], row[12],
        )  # fmt: skip

    @property
    def final(self) -> bool:
        return self.status is not Status.PDNG


# What closing or closed, unsettled windows owe a bank beyond its own pending debits in them.
_RECEIVABLE = (
    "SELECT coalesce(sum(max(0, -(e.committed_net + e.pending_debits))), 0) FROM window_exposure e"
    " JOIN windows w USING (window_id) WHERE e.bank = {bank} AND w.state IN ('CLOSING', 'CLOSED')"
)
RECEIVABLE = _RECEIVABLE.format(bank="?")
# Position + reservations + receivable in one statement (the net debit cap check of every transfer).
EXPOSURE = f"SELECT position + reserved + ({_RECEIVABLE.format(bank='p.bank')}) FROM participants p WHERE p.bank = ?"


class WindowError(Refused):
    """No such window (404) or not settleable yet (409): RJCT without a payment reason."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(http_status, message)


class SwitchLedger:
    def __init__(self, store: Store, config: SystemConfig, now: float) -> None:
        self.store = store
        self.db = store.conn
        self._seed(config, now)
        # Participants and their caps are written only by _seed: read them once, not per transfer.
        self._caps: dict[str, int] = dict(self.db.execute("SELECT bank, net_debit_cap FROM participants"))
        self.bug = config.bug  # a deliberately broken variant (mock_switch/bugs.py); None in real runs

    def _seed(self, config: SystemConfig, now: float) -> None:
        """First start only: register participants and open window 1. Restarts keep the books."""
        with self.store.unit() as db:
            db.executemany(
                "INSERT OR IGNORE INTO participants(bank, name, net_debit_cap, settlement_balance) VALUES (?, ?, ?, ?)",
                [(b.code, b.name or b.code, b.net_debit_cap, b.settlement_balance) for b in config.banks],
            )
            if db.execute("SELECT 1 FROM windows LIMIT 1").fetchone() is None:
                db.execute("INSERT INTO windows(state, opened_at) VALUES ('OPEN', ?)", (now,))
        self.store.commit()

    # -- transfers --------------------------------------------------------------------------

    def get(self, payment_id: str) -> Transfer | None:
        row = self.db.execute("SELECT * FROM transfers WHERE payment_id = ?", (payment_id,)).fetchone()
        return Transfer.from_row(row) if row else None

    def status(self, payment_id: str) -> tuple[Status, Reason | None] | None:
        """A transfer's status and reason, for its answer (lighter than `get`)."""
        row = self.db.execute("SELECT status, reason FROM transfers WHERE payment_id = ?", (payment_id,)).fetchone()
        return (STATUS_OF[row[0]], REASON_OF[row[1]]) if row else None

    def is_participant(self, bank: str) -> bool:
        return bank in self._caps

    def begin_transfer(self, req: TransferRequest, fingerprint: str, now: float) -> tuple[Begin, Transfer]:
        """Idempotency, participant and net-debit-cap checks, then reserve. One atomic unit."""
        with self.store.unit() as db:
            existing = self.get(req.payment_id)
            if existing is not None:
                if existing.fingerprint is None:
                    db.execute(
                        "UPDATE transfers SET late_at = coalesce(late_at, ?) WHERE payment_id = ?",
                        (now, req.payment_id),
                    )
                    return Begin.LATE, existing
                if existing.fingerprint != fingerprint:
                    return Begin.DUPLICATE, existing
                return Begin.REPLAY, existing
            reason: Reason | None = None
            if not self.is_participant(req.creditor_bank):
                reason = Reason.AC01
            else:
                exposure = self.exposure(req.debtor_bank)
                admitted = exposure + req.amount
                if self.bug == "cap-race":  # BUG(cap-race): reservations in flight are not counted
                    exposure -= self.db.execute(
                        "SELECT reserved FROM participants WHERE bank = ?", (req.debtor_bank,)
                    ).fetchone()[0]
                    admitted = exposure + req.amount
                if self.bug == "peak-underreported":  # BUG(peak-underreported): the amount is left out
                    admitted = exposure
                if admitted > self._caps[req.debtor_bank]:
                    reason = Reason.AM23
            status = Status.RJCT if reason else Status.PDNG
            window_id = None if reason else self._open_window()
            db.execute(
                "INSERT INTO transfers(payment_id, fingerprint, debtor_bank, debtor_account,"
                " creditor_bank, creditor_account, amount, status, reason, window_id, received_at, decided_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    req.payment_id, fingerprint, req.debtor_bank, req.debtor_account,
                    req.creditor_bank, req.creditor_account, req.amount, status.value,
                    reason.value if reason else None, window_id, now, now if reason else None,
                ),
            )  # fmt: skip
            if reason is None:
                db.execute(
                    "UPDATE participants SET reserved = reserved + ?,"
                    " peak_exposure = max(peak_exposure, ?) WHERE bank = ?",
                    (req.amount, admitted, req.debtor_bank),
                )
                self._window_figures(window_id, req.debtor_bank, pending=req.amount)
        transfer = Transfer(  # the row just inserted, not read back
            payment_id=req.payment_id,
            fingerprint=fingerprint,
            debtor_bank=req.debtor_bank,
            debtor_account=req.debtor_account,
            creditor_bank=req.creditor_bank,
            creditor_account=req.creditor_account,
            amount=req.amount,
            status=status,
            reason=reason,
            window_id=window_id,
            received_at=now,
            decided_at=now if reason else None,
        )
        return (Begin.REJECTED if reason else Begin.RESERVED), transfer

    def commit(self, payment_id: str, now: float) -> Transfer:
        """Payee accepted: move positions; the transfer lands in the window it was reserved in."""
        with self.store.unit() as db:
            t = self._decide(payment_id, "ACSC", None, now)
            if t is None:
                return self._must_get(payment_id)
            assert t.amount is not None and t.window_id is not None
            db.execute(
                "UPDATE participants SET reserved = reserved - ?, position = position + ? WHERE bank = ?",
                (t.amount, t.amount, t.debtor_bank),
            )
            if not (self.bug == "position-drift" and one_in(payment_id, 10)):  # BUG(position-drift)
                db.execute(
                    "UPDATE participants SET position = position - ? WHERE bank = ?",
                    (t.amount, t.creditor_bank),
                )
            self._window_figures(t.window_id, t.debtor_bank or "", pending=-t.amount, net=t.amount)
            self._window_figures(t.window_id, t.creditor_bank or "", net=-t.amount)
            self._finish_closing(t.window_id, now)
        return t

    def abort(self, payment_id: str, reason: Reason, now: float) -> Transfer:
        """Payee rejected (or, in naive mode, did not answer in time): release the reservation."""
        with self.store.unit() as db:
            t = self._decide(payment_id, "RJCT", reason, now)
            if t is None:
                return self._must_get(payment_id)
            assert t.amount is not None and t.window_id is not None
            if self.bug != "phantom-reservation":  # BUG(phantom-reservation): never released
                db.execute(
                    "UPDATE participants SET reserved = reserved - ? WHERE bank = ?",
                    (t.amount, t.debtor_bank),
                )
            self._window_figures(t.window_id, t.debtor_bank or "", pending=-t.amount)
            self._finish_closing(t.window_id, now)
        return t

    def exposure(self, bank: str) -> int:
        """What the net debit cap limits: position + reservations + what closing/closed, unsettled
        windows owe the bank beyond its own debits in them. That receivable is not headroom: settling
        those windows raises the position by exactly that much."""
        (exposure,) = self.db.execute(EXPOSURE, (bank,)).fetchone()
        return int(exposure)

    def receivable(self, bank: str) -> int:
        (owed,) = self.db.execute(RECEIVABLE, (bank,)).fetchone()
        return int(owed)

    def _open_window(self) -> int:
        (window_id,) = self.db.execute("SELECT window_id FROM windows WHERE state = 'OPEN'").fetchone()
        return int(window_id)

    def _window_figures(self, window_id: int | None, bank: str, pending: int = 0, net: int = 0) -> None:
        self.db.execute(
            "INSERT INTO window_exposure(window_id, bank, committed_net, pending_debits) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (window_id, bank) DO UPDATE SET committed_net = committed_net + excluded.committed_net,"
            " pending_debits = pending_debits + excluded.pending_debits",
            (window_id, bank, net, pending),
        )

    def _finish_closing(self, window_id: int, now: float) -> None:
        """A CLOSING window whose last reserved transfer was just decided becomes CLOSED."""
        state = self.db.execute("SELECT state FROM windows WHERE window_id = ?", (window_id,)).fetchone()[0]
        if state == "CLOSING" and self._in_flight(window_id) == 0:
            self._freeze(window_id, now)

    def _in_flight(self, window_id: int) -> int:
        (n,) = self.db.execute(
            "SELECT count(*) FROM transfers WHERE window_id = ? AND status = 'PDNG'", (window_id,)
        ).fetchone()
        return int(n)

    def _freeze(self, window_id: int, now: float) -> None:
        """CLOSED: every transfer of the window is decided; its net positions are final."""
        self.db.execute("UPDATE windows SET state = 'CLOSED', closed_at = ? WHERE window_id = ?", (now, window_id))
        self.db.execute(
            "INSERT INTO window_positions(window_id, bank, net_position)"
            " SELECT ?, p.bank, coalesce((SELECT committed_net FROM window_exposure e"
            "  WHERE e.window_id = ? AND e.bank = p.bank), 0) FROM participants p",
            (window_id, window_id),
        )

    def status_query(self, payment_id: str, remember_not_received: bool, now: float) -> Transfer | None:
        """pacs.028: what happened to this payment? Unknown ids may be remembered as AG09."""
        t = self.get(payment_id)
        if t is not None or not remember_not_received:
            return t
        with self.store.unit() as db:
            db.execute(
                "INSERT INTO transfers(payment_id, status, reason, received_at, decided_at)"
                " VALUES (?, 'RJCT', 'AG09', ?, ?)",
                (payment_id, now, now),
            )
        return self._must_get(payment_id)

    def pending(self) -> list[Transfer]:
        rows = self.db.execute("SELECT * FROM transfers WHERE status = 'PDNG' ORDER BY received_at")
        return [Transfer.from_row(r) for r in rows]

    def _decide(self, payment_id: str, status: str, reason: Reason | None, now: float) -> Transfer | None:
        """A pending transfer becomes final; the transfer as decided, or None if it was not pending."""
        row = self.db.execute(
            "UPDATE transfers SET status = ?, reason = ?, decided_at = ? WHERE payment_id = ? AND status = 'PDNG'"
            " RETURNING *",
            (status, reason.value if reason else None, now, payment_id),
        ).fetchone()
        return Transfer.from_row(row) if row else None

    def _must_get(self, payment_id: str) -> Transfer:
        t = self.get(payment_id)
        if t is None:
            raise KeyError(payment_id)
        return t

    # -- settlement -------------------------------------------------------------------------

    def close_window(self, now: float) -> dict[str, Any]:
        """Stop taking transfers into the open window and open the next one. The closed window
        stays CLOSING until every transfer reserved in it is decided (they commit into it), then
        its net positions are frozen (CLOSED)."""
        with self.store.unit() as db:
            window_id = self._open_window()
            db.execute("UPDATE windows SET state = 'CLOSING', closed_at = ? WHERE window_id = ?", (now, window_id))
            db.execute("INSERT INTO windows(state, opened_at) VALUES ('OPEN', ?)", (now,))
            if self._in_flight(window_id) == 0 or self.bug == "close-early":  # BUG(close-early)
                self._freeze(window_id, now)
        return self.window(window_id)

    def settle_window(self, window_id: int, now: float) -> dict[str, Any]:
        """Move each bank's net position between settlement accounts. Settling twice is a no-op."""
        with self.store.unit() as db:
            row = db.execute("SELECT state FROM windows WHERE window_id = ?", (window_id,)).fetchone()
            if row is None:
                raise WindowError(404, f"settlement window {window_id} does not exist")
            if row["state"] == "OPEN":
                raise WindowError(409, f"settlement window {window_id} is open; close it first")
            if row["state"] == "CLOSING":
                raise WindowError(
                    409,
                    f"settlement window {window_id} is still closing: {self._in_flight(window_id)} transfers"
                    " reserved in it are in flight; settle it once it is CLOSED",
                )
            if row["state"] == "CLOSED":
                for bank, net in db.execute(
                    "SELECT bank, net_position FROM window_positions WHERE window_id = ?",
                    (window_id,),
                ).fetchall():
                    moved = 2 * net if self.bug == "double-settle" else net  # BUG(double-settle)
                    db.execute(
                        "UPDATE participants SET settlement_balance = settlement_balance - ?,"
                        " position = position - ? WHERE bank = ?",
                        (moved, net, bank),
                    )
                    db.execute(
                        "INSERT INTO settlement_movements(window_id, bank, amount, balance_after, at)"
                        " SELECT ?, bank, ?, settlement_balance, ? FROM participants WHERE bank = ?",
                        (window_id, -net, now, bank),
                    )
                db.execute(
                    "UPDATE windows SET state = 'SETTLED', settled_at = ? WHERE window_id = ?",
                    (now, window_id),
                )
        return self.window(window_id)

    # -- read models (everything reconciliation needs) ---------------------------------------

    def window(self, window_id: int) -> dict[str, Any]:
        row = self.db.execute("SELECT * FROM windows WHERE window_id = ?", (window_id,)).fetchone()
        if row is None:
            raise WindowError(404, f"settlement window {window_id} does not exist")
        w = dict(row)
        w["net_positions"] = {
            bank: net
            for bank, net in self.db.execute(
                "SELECT bank, net_position FROM window_positions WHERE window_id = ? ORDER BY bank",
                (window_id,),
            )
        }
        (w["transfer_count"], w["transfer_value"]) = self.db.execute(
            "SELECT count(*), coalesce(sum(amount), 0) FROM transfers WHERE window_id = ? AND status = 'ACSC'",
            (window_id,),
        ).fetchone()
        return w

    def windows(self) -> list[dict[str, Any]]:
        ids = [r[0] for r in self.db.execute("SELECT window_id FROM windows ORDER BY window_id")]
        return [self.window(i) for i in ids]

    def participants(self) -> list[dict[str, Any]]:
        rows = [dict(r) for r in self.db.execute("SELECT * FROM participants ORDER BY bank")]
        for row in rows:  # derived, for reconciliation and people: not headroom under the cap
            row["closed_credit"] = self.receivable(row["bank"])
        return rows

    def transfers(self, after: str = "", limit: int = 1_000_000) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM transfers WHERE payment_id > ? ORDER BY payment_id LIMIT ?",
            (after, limit),
        )
        return [dict(r) for r in rows]

    def movements(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM settlement_movements ORDER BY movement_id")]
