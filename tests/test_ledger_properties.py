"""Property tests of the synchronous ledgers: one switch and three banks, driven directly (no HTTP).

A Hypothesis state machine plays payments hop by hop the way the services do (payer bank ->
switch -> payee bank -> switch -> payer bank), lets payments stop half way and finishes them later
either by delivering the delayed message or the ROBUST way (a status query at the next hop that
remembers "not received"), replays requests, and closes and settles windows. After every step it
checks the books: money is conserved, positions and windows agree with the transfers, no net debit
cap is exceeded, each payment has at most one ledger effect of each kind, and, whenever nothing is
in flight, the three-way reconciliation is clean.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness.checkers.reconcile import Anomaly, reconcile
from harness.checkers.replay import replay
from harness.ledgers import Snapshot
from harness.testbed.system import build_system
from mock_switch import bank_ledger, switch_ledger
from mock_switch.api import CreditRequest, PaymentRequest, TransferRequest
from mock_switch.bank_ledger import BankLedger, Originate, Receive
from mock_switch.codes import Reason, Status
from mock_switch.config import SystemConfig, account_number, party
from mock_switch.store import Store
from mock_switch.switch_ledger import Begin, SwitchLedger, WindowError

ACCOUNTS = 5
OPENING_BALANCE = 1_000  # a payment of up to MAX_AMOUNT can exceed it: AM04
NET_DEBIT_CAP = 800  # one large payment, or two in flight from one bank, exceed it: AM23
BLOCKED_EVERY = 4  # account index 3 of every bank is blocked: AC06
MAX_AMOUNT = 1_200
UNKNOWN_BANK = "BNKZ"  # well formed, not a participant: AC01 at the switch

# Only free ports are picked; nothing is started. "os" durability: no fsync per commit in tests.
SYSTEM: SystemConfig = build_system(
    banks=3,
    accounts=ACCOUNTS,
    opening_balance=OPENING_BALANCE,
    net_debit_cap=NET_DEBIT_CAP,
    blocked_every=BLOCKED_EVERY,
    durability="os",
)
CODES = [b.code for b in SYSTEM.banks]
# Mostly ordinary accounts; sometimes the blocked one (3: AC06) or one that does not exist (AC01).
ACCOUNT_INDEX = st.sampled_from([0, 1, 2, 4, 0, 1, 2, 4, 3, ACCOUNTS])
# Any amount, often one that needs a second payment (450) or alone exceeds the cap (850) or a balance (1,100).
AMOUNT = st.sampled_from([450, 850, 1_100]) | st.integers(1, MAX_AMOUNT)


class Stage(StrEnum):
    """Where an in-flight payment stopped: the next hop has not happened yet."""

    DEBITED = "debited"  # funds held at the payer bank; the transfer has not reached the switch
    RESERVED = "reserved"  # reserved at the switch; the credit has not reached the payee bank
    ANSWERED = "answered"  # the payee bank answered; the answer has not reached the switch
    DECIDED = "decided"  # the switch committed or aborted; the answer has not reached the payer
    DONE = "done"


Seen = Literal["none", "real", "tombstone"]  # what a ledger holds for the payment id


@dataclass
class Flow:
    """The model's view of one customer payment."""

    req: PaymentRequest
    payer: str
    stage: Stage
    at_switch: Seen = "none"
    at_payee: Seen = "none"
    payee_answer: tuple[Status, Reason | None] | None = None

    @property
    def pid(self) -> str:
        return self.req.payment_id

    @property
    def transfer(self) -> TransferRequest:
        r = self.req
        return TransferRequest(
            payment_id=r.payment_id,
            debtor_bank=self.payer,
            debtor_account=r.debtor_account,
            creditor_bank=r.creditor_bank,
            creditor_account=r.creditor_account,
            amount=r.amount,
            currency=r.currency,
        )

    @property
    def credit(self) -> CreditRequest:
        r = self.req
        return CreditRequest(
            payment_id=r.payment_id,
            debtor_bank=self.payer,
            debtor_account=r.debtor_account,
            creditor_account=r.creditor_account,
            amount=r.amount,
            currency=r.currency,
        )


@dataclass(frozen=True)
class Late:
    """A message that arrives after the receiver answered a status query with "not received"."""

    kind: Literal["payment", "transfer", "credit"]
    flow: Flow


def take_snapshot(switch: SwitchLedger, banks: dict[str, BankLedger]) -> Snapshot:
    """The ledgers' read models in the format of `harness.observe.snapshot.take`."""
    return {
        "switch": {
            "transfers": switch.transfers(),
            "participants": switch.participants(),
            "windows": switch.windows(),
            "movements": switch.movements(),
        },
        "banks": {
            code: {
                "payments": b.payments(),
                "credits": b.credits(),
                "accounts": b.accounts(),
                "entries": b.entries(),
            }
            for code, b in banks.items()
        },
    }


def without_late(snap: Snapshot) -> Any:
    """A snapshot without the tombstones' `late_at` (the one thing a late arrival writes)."""
    return json.loads(json.dumps(snap), object_hook=lambda d: {k: v for k, v in d.items() if k != "late_at"})


def open_ledgers(root: Path, now: float) -> tuple[dict[str, Store], SwitchLedger, dict[str, BankLedger]]:
    stores = {"switch": Store(root / "switch.db", switch_ledger.SCHEMA, SYSTEM.durability)}
    switch = SwitchLedger(stores["switch"], SYSTEM, now)
    banks: dict[str, BankLedger] = {}
    for code in CODES:
        stores[code] = Store(root / f"{code.lower()}.db", bank_ledger.SCHEMA, SYSTEM.durability)
        banks[code] = BankLedger(stores[code], SYSTEM, code)
    return stores, switch, banks


def count(what: str) -> None:
    """Record an outcome for `--hypothesis-show-statistics` (and nothing outside Hypothesis)."""
    if currently_in_test_context():
        event(what)


def payer_reason(reason: Reason | None) -> Reason:
    """How the payer bank records a switch rejection (as `BankService._decide` does)."""
    return Reason.AB06 if reason in (None, Reason.AG09) else reason


def switch_reason(reason: Reason | None) -> Reason:
    """How the switch records a payee rejection (as `SwitchService._decide` does)."""
    return Reason.AB05 if reason in (None, Reason.AG09) else reason


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="ledger-props-"))
        self.clock = 1_700_000_000.0
        self.stores, self.switch, self.banks = open_ledgers(self.root, self.clock)
        self.flows: list[Flow] = []
        self.late: list[Late] = []
        self.serial = 0
        # The model: every customer account's balance, and which accounts are blocked.
        self.balances: dict[str, int] = {}
        self.blocked: set[str] = set()
        for index, bank in enumerate(SYSTEM.banks):
            for i in range(bank.accounts):
                p = party(index, bank, i)
                self.balances[p.account] = p.opening_balance
                if p.blocked:
                    self.blocked.add(p.account)
        self.opening_customer = SYSTEM.total_customer_money()
        self.opening_settlement = SYSTEM.total_settlement_money()
        assert sum(self.balances.values()) == self.opening_customer

    def teardown(self) -> None:
        try:
            self.drain()
            result = reconcile(self.snapshot(), self.opening_customer, self.opening_settlement)
            assert result.ok and result.anomaly_count == 0, result.summary()
            assert result.payments == len(self.flows)
            self.books_agree()
            self.money_is_conserved()
            self.balances_match_the_model()
            self.net_debit_caps_hold()
            self.one_effect_per_payment()
        finally:
            for store in self.stores.values():
                store.close()
            shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------------------

    def now(self) -> float:
        self.clock += 1.0
        return self.clock

    def commit_all(self) -> None:
        for store in self.stores.values():
            store.commit()

    def snapshot(self) -> Snapshot:
        return take_snapshot(self.switch, self.banks)

    def in_flight(self, *stages: Stage) -> list[Flow]:
        wanted = stages or (Stage.DEBITED, Stage.RESERVED, Stage.ANSWERED, Stage.DECIDED)
        return [f for f in self.flows if f.stage in wanted]

    def participant(self, bank: str) -> dict[str, Any]:
        return next(p for p in self.switch.participants() if p["bank"] == bank)

    # -- the hops, as the services do them ---------------------------------------------------------

    def hop(self, f: Flow) -> None:
        """Deliver the message an in-flight payment is waiting on, and let the receiver act."""
        if f.stage is Stage.DEBITED:
            self.to_switch(f)
        elif f.stage is Stage.RESERVED:
            self.to_payee(f)
        elif f.stage is Stage.ANSWERED:
            assert f.payee_answer is not None
            self.switch_decides(f, *f.payee_answer)
        elif f.stage is Stage.DECIDED:
            t = self.switch.get(f.pid)
            assert t is not None and t.final
            self.payer_decides(f, t.status, t.reason)
        else:
            raise AssertionError(f"{f.pid} is not in flight")

    def to_switch(self, f: Flow) -> None:
        """Payer bank -> switch: idempotency, participant and net debit cap checks, reserve."""
        if f.req.creditor_bank not in CODES:
            expected: Reason | None = Reason.AC01
        else:
            p = self.participant(f.payer)
            # Receivables of closed, unsettled windows are not headroom (settling them raises the position).
            over = p["position"] + p["closed_credit"] + p["reserved"] + f.req.amount > p["net_debit_cap"]
            expected = Reason.AM23 if over else None
        kind, t = self.switch.begin_transfer(f.transfer, f.transfer.fingerprint(), self.now())
        assert t == self.switch.get(f.pid), "the transfer returned is the one stored"
        f.at_switch = "real"
        if expected is None:
            assert kind is Begin.RESERVED and t.status is Status.PDNG, (kind, t)
            f.stage = Stage.RESERVED
        else:
            assert kind is Begin.REJECTED and t.status is Status.RJCT and t.reason is expected, (kind, t, expected)
            count(f"switch rejects {expected}")
            self.payer_decides(f, t.status, t.reason)

    def to_payee(self, f: Flow) -> None:
        """Switch -> payee bank: credit the beneficiary or reject."""
        account = f.req.creditor_account
        expected = Reason.AC01 if account not in self.balances else Reason.AC06 if account in self.blocked else None
        kind, c = self.banks[f.req.creditor_bank].receive_credit(f.credit, f.credit.fingerprint(), self.now())
        assert c == self.banks[f.req.creditor_bank].credit(f.pid), "the credit returned is the one stored"
        f.at_payee = "real"
        if expected is None:
            assert kind is Receive.CREDITED and c.status is Status.ACCP, (kind, c)
            self.balances[account] += f.req.amount
        else:
            assert kind is Receive.REJECTED and c.status is Status.RJCT and c.reason is expected, (kind, c, expected)
            count(f"payee rejects {expected}")
        f.payee_answer = (c.status, c.reason)
        f.stage = Stage.ANSWERED

    def switch_decides(self, f: Flow, status: Status, reason: Reason | None) -> None:
        """The payee's answer (or status-query answer) reached the switch: commit or abort."""
        if status is Status.ACCP:
            t = self.switch.commit(f.pid, self.now())
            assert t.status is Status.ACSC and t.window_id is not None, t
        else:
            t = self.switch.abort(f.pid, switch_reason(reason), self.now())
            assert t.status is Status.RJCT and t.reason is switch_reason(reason), t
        assert t == self.switch.get(f.pid), "the transfer returned is the one stored"
        f.stage = Stage.DECIDED

    def payer_decides(self, f: Flow, status: Status, reason: Reason | None) -> None:
        """The switch's answer (or status-query answer) reached the payer bank: finalise or reverse."""
        payer = self.banks[f.payer]
        if status is Status.ACSC:
            p = payer.finalise(f.pid, self.now())
            assert p.status is Status.ACSC, p
            count("payment settled")
        else:
            p = payer.reverse(f.pid, payer_reason(reason), self.now())
            assert p.status is Status.RJCT and p.reason is payer_reason(reason), p
            self.balances[f.req.debtor_account] += f.req.amount
            count(f"payment reversed {payer_reason(reason)}")
        f.stage = Stage.DONE

    # -- the robust resolution of an unknown outcome: a status query at the next hop --------------

    def ask_switch(self, f: Flow) -> None:
        """The payer bank asks the switch (pacs.028); the switch remembers "not received"."""
        t = self.switch.status_query(f.pid, remember_not_received=True, now=self.now())
        assert t is not None
        if f.stage is Stage.DEBITED:
            # Never reached the switch: it now remembers "not received", so reversing is safe.
            assert t.status is Status.RJCT and t.reason is Reason.AG09 and t.fingerprint is None, t
            f.at_switch = "tombstone"
            self.payer_decides(f, t.status, t.reason)
            self.late.append(Late("transfer", f))
        elif f.stage in (Stage.RESERVED, Stage.ANSWERED):
            assert t.status is Status.PDNG, t  # not final yet: the payer keeps waiting
        else:
            assert f.stage is Stage.DECIDED and t.final, (f, t)
            self.payer_decides(f, t.status, t.reason)

    def ask_payee(self, f: Flow) -> None:
        """The switch asks the payee bank; the payee remembers "not received"."""
        assert f.stage in (Stage.RESERVED, Stage.ANSWERED), f
        c = self.banks[f.req.creditor_bank].credit_status_query(f.pid, remember_not_received=True, now=self.now())
        assert c is not None
        if f.stage is Stage.RESERVED:
            assert c.status is Status.RJCT and c.reason is Reason.AG09 and c.fingerprint is None, c
            f.at_payee = "tombstone"
            self.late.append(Late("credit", f))
        else:
            assert (c.status, c.reason) == f.payee_answer, (c, f.payee_answer)
        self.switch_decides(f, c.status, c.reason)

    def arrive_late(self, late: Late) -> None:
        """Deliver a message its receiver already answered "not received" for: LATE, nothing written
        but the time it arrived on the "not received" tombstone (`late_at`, for the stress record)."""
        f = late.flow
        before = self.snapshot()
        if late.kind == "payment":
            ok = self.banks[f.payer].originate(f.req, f.req.fingerprint(), self.now())[0] is Originate.LATE
        elif late.kind == "transfer":
            ok = self.switch.begin_transfer(f.transfer, f.transfer.fingerprint(), self.now())[0] is Begin.LATE
        else:
            payee, credit = self.banks[f.req.creditor_bank], f.credit
            ok = payee.receive_credit(credit, credit.fingerprint(), self.now())[0] is Receive.LATE
        assert ok, f"late {late.kind} for {f.pid} was not refused as LATE"
        count(f"late {late.kind} refused")
        self.commit_all()
        after = self.snapshot()
        table = {"payment": ("banks", f.payer, "payments"), "transfer": ("switch", "transfers")}.get(
            late.kind, ("banks", f.req.creditor_bank, "credits")
        )
        rows: Any = after
        for key in table:
            rows = rows[key]
        (tombstone,) = [r for r in rows if r["payment_id"] == f.pid]
        assert tombstone["fingerprint"] is None and tombstone["late_at"] is not None, tombstone
        assert without_late(after) == without_late(before)

    def drain(self) -> None:
        """Bring every in-flight payment to a final state the robust way, then deliver every late
        message: what the services converge to once the faults are healed."""
        for f in self.in_flight():
            while f.stage is not Stage.DONE:
                if f.stage in (Stage.RESERVED, Stage.ANSWERED):
                    self.ask_payee(f)
                else:
                    self.ask_switch(f)
            self.commit_all()
        while self.late:
            self.arrive_late(self.late.pop())

    # -- rules ------------------------------------------------------------------------------------

    @rule(
        payer=st.integers(0, len(CODES) - 1),
        debtor=ACCOUNT_INDEX,
        payee=st.sampled_from([*range(len(CODES)), *range(len(CODES)), len(CODES)]),  # last: not a participant
        creditor=ACCOUNT_INDEX,
        amount=AMOUNT,
        stop=st.sampled_from([Stage.DONE, Stage.DONE, Stage.DEBITED, Stage.RESERVED, Stage.ANSWERED, Stage.DECIDED]),
    )
    def pay(self, payer: int, debtor: int, payee: int, creditor: int, amount: int, stop: Stage) -> None:
        """A customer pays; the payment goes as far as `stop` (DONE: all the way) and waits there."""
        payer_code = CODES[payer]
        if payee == len(CODES):
            payee_code, payee_index = UNKNOWN_BANK, 98
        else:
            payee_index = payee if payee != payer else (payee + 1) % len(CODES)  # on-us is not offered
            payee_code = CODES[payee_index]
        self.serial += 1
        req = PaymentRequest(
            payment_id=f"p{self.serial:04d}",
            debtor_account=account_number(payer, debtor),
            creditor_bank=payee_code,
            creditor_account=account_number(payee_index, creditor),
            amount=amount,
            currency=SYSTEM.currency,
        )
        account = req.debtor_account
        if account not in self.balances:
            expected: Reason | None = Reason.AC01
        elif account in self.blocked:
            expected = Reason.AC06
        elif self.balances[account] < amount:
            expected = Reason.AM04
        else:
            expected = None
        kind, p = self.banks[payer_code].originate(req, req.fingerprint(), self.now())
        assert p == self.banks[payer_code].payment(req.payment_id), "the payment returned is the one stored"
        f = Flow(req=req, payer=payer_code, stage=Stage.DEBITED)
        self.flows.append(f)
        if expected is not None:
            assert kind is Originate.REJECTED and p.status is Status.RJCT and p.reason is expected, (kind, p)
            count(f"payer rejects {expected}")
            f.stage = Stage.DONE
        else:
            assert kind is Originate.DEBITED and p.status is Status.PDNG, (kind, p)
            self.balances[account] -= amount
            while f.stage is not Stage.DONE and f.stage is not stop:
                self.hop(f)
        self.commit_all()

    @precondition(lambda self: self.in_flight())
    @rule(i=st.integers(0, 10_000))
    def deliver(self, i: int) -> None:
        """The delayed message of an in-flight payment arrives after all."""
        flows = self.in_flight()
        self.hop(flows[i % len(flows)])
        self.commit_all()

    @precondition(lambda self: self.in_flight())
    @rule(i=st.integers(0, 10_000))
    def payer_asks_switch(self, i: int) -> None:
        """ROBUST payer bank: no answer in time, so it asks the switch what happened to the transfer."""
        flows = self.in_flight()
        self.ask_switch(flows[i % len(flows)])
        self.commit_all()

    @precondition(lambda self: self.in_flight(Stage.RESERVED, Stage.ANSWERED))
    @rule(i=st.integers(0, 10_000))
    def switch_asks_payee(self, i: int) -> None:
        """ROBUST switch: no answer from the payee in time, so it asks what happened to the credit."""
        flows = self.in_flight(Stage.RESERVED, Stage.ANSWERED)
        self.ask_payee(flows[i % len(flows)])
        self.commit_all()

    @rule(payer=st.integers(0, len(CODES) - 1))
    def customer_asks_first(self, payer: int) -> None:
        """The customer's payment request is lost on the way; the customer asks the bank about it."""
        self.serial += 1
        req = PaymentRequest(
            payment_id=f"p{self.serial:04d}",
            debtor_account=account_number(payer, 0),
            creditor_bank=CODES[(payer + 1) % len(CODES)],
            creditor_account=account_number((payer + 1) % len(CODES), 0),
            amount=1,
            currency=SYSTEM.currency,
        )
        p = self.banks[CODES[payer]].customer_status_query(req.payment_id, remember_not_received=True, now=self.now())
        assert p is not None and p.status is Status.RJCT and p.reason is Reason.AG09 and p.fingerprint is None, p
        self.late.append(Late("payment", Flow(req=req, payer=CODES[payer], stage=Stage.DONE)))
        self.commit_all()

    @precondition(lambda self: self.late)
    @rule(i=st.integers(0, 10_000))
    def deliver_late(self, i: int) -> None:
        """A message arrives after its receiver said "not received": refused, nothing written."""
        self.arrive_late(self.late.pop(i % len(self.late)))

    @precondition(lambda self: self.flows)
    @rule(i=st.integers(0, 10_000), same_body=st.booleans())
    def replay(self, i: int, same_body: bool) -> None:
        """A request is sent again with the same id, at every hop it reached: same body answers what is
        known (REPLAY), another body is refused (DUPLICATE); neither writes anything (but `late_at` on a
        "not received" tombstone it hits)."""
        f = self.flows[i % len(self.flows)]
        if same_body:
            req, transfer, credit = f.req, f.transfer, f.credit
        else:
            other = f.req.model_copy(update={"amount": f.req.amount + 1})
            req = other
            transfer = Flow(req=other, payer=f.payer, stage=f.stage).transfer
            credit = Flow(req=other, payer=f.payer, stage=f.stage).credit
        before = self.snapshot()
        kind, p = self.banks[f.payer].originate(req, req.fingerprint(), self.now())
        assert kind is (Originate.REPLAY if same_body else Originate.DUPLICATE), kind
        assert p.fingerprint == f.req.fingerprint()
        if f.at_switch != "none":
            sk, _ = self.switch.begin_transfer(transfer, transfer.fingerprint(), self.now())
            want_s = Begin.LATE if f.at_switch == "tombstone" else Begin.REPLAY if same_body else Begin.DUPLICATE
            assert sk is want_s, (sk, want_s)
        if f.at_payee != "none":
            rk, _ = self.banks[f.req.creditor_bank].receive_credit(credit, credit.fingerprint(), self.now())
            want_r = Receive.LATE if f.at_payee == "tombstone" else Receive.REPLAY if same_body else Receive.DUPLICATE
            assert rk is want_r, (rk, want_r)
        count("replay" if same_body else "duplicate")
        self.commit_all()
        assert without_late(self.snapshot()) == without_late(before)  # a copy hitting a tombstone: late_at only

    @rule()
    def close_window(self) -> None:
        w = self.switch.close_window(self.now())
        # Transfers reserved in the window commit into it: it stays CLOSING until they are decided.
        pending = [t for t in self.switch.transfers() if t["status"] == "PDNG" and t["window_id"] == w["window_id"]]
        if pending:
            count("close while transfers are in flight")
            assert w["state"] == "CLOSING" and w["net_positions"] == {}, w
        else:
            assert w["state"] == "CLOSED" and sum(w["net_positions"].values()) == 0, w
        self.commit_all()

    @rule(i=st.integers(0, 10_000))
    def settle_window(self, i: int) -> None:
        """Settle a closed window (or one already settled: a no-op); with none closed, settling the
        open window or one that does not exist is refused."""
        windows = self.switch.windows()
        for closing in (w for w in windows if w["state"] == "CLOSING"):
            with pytest.raises(WindowError) as exc:
                self.switch.settle_window(closing["window_id"], self.now())
            assert exc.value.http_status == 409 and "still closing" in exc.value.message
        closed = [w for w in windows if w["state"] in ("CLOSED", "SETTLED")]
        before = self.snapshot()
        if not closed:
            for window_id, http_status in ((windows[-1]["window_id"], 409), (len(windows) + 1, 404)):
                with pytest.raises(WindowError) as exc:
                    self.switch.settle_window(window_id, self.now())
                assert exc.value.http_status == http_status
            self.commit_all()
            assert self.snapshot() == before
            return
        w = closed[i % len(closed)]
        settled = self.switch.settle_window(w["window_id"], self.now())
        assert settled["state"] == "SETTLED"
        self.commit_all()
        if w["state"] == "SETTLED":
            count("settle twice")
            assert self.snapshot() == before  # settling twice is a no-op
        else:
            count("settle")
            paid = {m["bank"]: m["amount"] for m in self.switch.movements() if m["window_id"] == w["window_id"]}
            assert paid == {bank: -net for bank, net in w["net_positions"].items()}
            after = {p["bank"]: p for p in self.switch.participants()}
            for p in before["switch"]["participants"]:
                net = w["net_positions"][p["bank"]]
                assert after[p["bank"]]["position"] == p["position"] - net
                assert after[p["bank"]]["settlement_balance"] == p["settlement_balance"] - net

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def money_is_conserved(self) -> None:
        """Customer money + money held for payments pending at the payer - money already credited
        for such payments (the payee may credit before the payer finalises) is the opening total;
        settlement money never changes in total."""
        snap = self.snapshot()
        balances = sum(a["balance"] for b in snap["banks"].values() for a in b["accounts"])
        pending = {
            p["payment_id"]: p["amount"] for b in snap["banks"].values() for p in b["payments"] if p["status"] == "PDNG"
        }
        credited_early = sum(
            c["amount"]
            for b in snap["banks"].values()
            for c in b["credits"]
            if c["status"] == "ACCP" and c["payment_id"] in pending
        )
        assert balances + sum(pending.values()) - credited_early == self.opening_customer
        settlement = sum(p["settlement_balance"] for p in snap["switch"]["participants"])
        assert settlement == self.opening_settlement

    @invariant()
    def balances_match_the_model(self) -> None:
        actual = {a["account"]: a["balance"] for b in self.banks.values() for a in b.accounts()}
        assert actual == self.balances

    @invariant()
    def books_agree(self) -> None:
        """Positions = committed unsettled transfers, reservations = pending transfers, closed and
        settled windows' net positions sum to zero and match their transfers and movements; the only
        anomalies are the payments in flight (stuck), and none when nothing is in flight."""
        flying = self.in_flight()
        if flying:
            result = reconcile(self.snapshot(), None, self.opening_settlement)
        else:
            result = reconcile(self.snapshot(), self.opening_customer, self.opening_settlement)
        bad = [b for b in result.books if not b.ok]
        assert not bad, bad
        stuck = {v.payment_id for v in result.anomalies.get(Anomaly.STUCK.value, [])}
        assert stuck == {f.pid for f in flying}
        assert result.anomaly_count == len(flying), result.summary()
        assert result.payments == len(self.flows)

    @invariant()
    def net_debit_caps_hold(self) -> None:
        for p in self.switch.participants():
            assert p["position"] + p["closed_credit"] + p["reserved"] <= p["net_debit_cap"], p
            assert p["position"] <= p["net_debit_cap"], p
            assert p["peak_exposure"] <= p["net_debit_cap"], p
            assert p["reserved"] >= 0, p

    @invariant()
    def replayed_books_agree(self) -> None:
        """The switch's books rebuilt from its transfer records (harness/checkers/replay.py) hold at
        every step, and the peak it recorded is exactly the rebuilt one: the replay has no false
        positive on any sequence of the real ledger's operations."""
        found = replay(self.snapshot(), {b.code: b.settlement_balance for b in SYSTEM.banks})
        assert found.ok, found.failing()
        for e in found.exposure.values():
            assert e.peak_at_reservation == e.peak_recorded, e

    @invariant()
    def one_effect_per_payment(self) -> None:
        """At most one DEBIT, one REVERSAL, one CREDIT per payment id per bank; a DEBIT only at the
        payer, a CREDIT only at the payee, a REVERSAL only after a DEBIT."""
        by_id = {f.pid: f for f in self.flows}
        for code, b in self.banks.items():
            effects = Counter((e["payment_id"], e["kind"]) for e in b.entries())
            assert all(n == 1 for n in effects.values()), effects
            for pid, kind in effects:
                f = by_id[pid]
                if kind == "CREDIT":
                    assert code == f.req.creditor_bank
                else:
                    assert code == f.payer
                if kind == "REVERSAL":
                    assert (pid, "DEBIT") in effects


TestLedgerProperties = LedgerMachine.TestCase
TestLedgerProperties.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_reconcile_catches_corrupted_ledgers(tmp_path: Path) -> None:
    """The checks have teeth: money created behind the ledger's back, a position moved with no
    transfer, and a switch commit the payee never credited are each reported."""
    stores, switch, banks = open_ledgers(tmp_path, 1.0)
    opening = (SYSTEM.total_customer_money(), SYSTEM.total_settlement_money())

    def check() -> Any:
        for store in stores.values():
            store.commit()
        return reconcile(take_snapshot(switch, banks), *opening)

    assert check().ok

    # An account credited with no entry and no payment: only conservation can see it.
    banks["BNKC"].db.execute("UPDATE accounts SET balance = balance + 7 WHERE account = ?", (account_number(2, 0),))
    result = check()
    assert not result.ok and result.anomaly_count == 0
    assert [b.name for b in result.books if not b.ok] == ["conservation"]
    assert result.totals["conservation_delta"] == 7
    banks["BNKC"].db.execute("UPDATE accounts SET balance = balance - 7 WHERE account = ?", (account_number(2, 0),))
    assert check().ok

    # A position moved at the switch with no committed transfer behind it.
    switch.db.execute("UPDATE participants SET position = position + 5 WHERE bank = 'BNKA'")
    result = check()
    assert [b.name for b in result.books if not b.ok] == ["positions_match_transfers", "positions_sum_to_zero"]
    switch.db.execute("UPDATE participants SET position = position - 5 WHERE bank = 'BNKA'")
    assert check().ok

    # The switch commits a transfer the payee bank was never asked to credit; the payer finalises.
    req = PaymentRequest(
        payment_id="corrupt-1", debtor_account=account_number(0, 0), creditor_bank="BNKB",
        creditor_account=account_number(1, 0), amount=100, currency=SYSTEM.currency,
    )  # fmt: skip
    transfer = Flow(req=req, payer="BNKA", stage=Stage.DEBITED).transfer
    assert banks["BNKA"].originate(req, req.fingerprint(), 2.0)[0] is Originate.DEBITED
    assert switch.begin_transfer(transfer, transfer.fingerprint(), 3.0)[0] is Begin.RESERVED
    switch.commit(req.payment_id, 4.0)
    banks["BNKA"].finalise(req.payment_id, 5.0)
    result = check()
    assert {k: [v.payment_id for v in vs] for k, vs in result.anomalies.items()} == {
        Anomaly.DEBIT_WITHOUT_CREDIT.value: ["corrupt-1"]
    }
    assert [b.name for b in result.books if not b.ok] == ["conservation"]
    assert result.totals["conservation_delta"] == -100
    for store in stores.values():
        store.close()


def test_net_debit_cap_still_holds_after_settling_a_window_the_bank_received_in() -> None:
    """Regression (found by the state machine above): a credit in a closed, unsettled window used to
    lower BNKB's position enough to send up to the cap plus that credit in the next window; settling
    the closed window then took the credit away and left BNKB owing more than its cap. The switch
    now refuses that payment (AM23) and the cap holds after settlement."""
    machine = LedgerMachine()
    try:
        machine.pay(payer=0, debtor=0, payee=1, creditor=0, amount=1, stop=Stage.DONE)  # BNKA -> BNKB: 1
        machine.close_window()  # window 1 closed: BNKB net -1
        machine.pay(payer=1, debtor=0, payee=0, creditor=0, amount=NET_DEBIT_CAP + 1, stop=Stage.DONE)  # BNKB -> BNKA
        machine.settle_window(0)  # settle window 1
        machine.net_debit_caps_hold()
    finally:
        for store in machine.stores.values():
            store.close()
        shutil.rmtree(machine.root, ignore_errors=True)


def test_net_debit_cap_holds_when_a_window_closes_under_a_reservation() -> None:
    """Regression (found by the state machine on the first cap fix): BNKA's credit in the open window
    was headroom for a reservation; the window closed while that transfer was in flight, so it
    committed into the next window, and settling the first took the credit away, leaving BNKA over
    its cap. Now a window stays CLOSING until the transfers reserved in it are decided, and they
    commit into it."""
    machine = LedgerMachine()
    try:
        machine.pay(payer=1, debtor=0, payee=0, creditor=0, amount=450, stop=Stage.DONE)  # BNKB -> BNKA: 450
        machine.pay(payer=0, debtor=0, payee=1, creditor=0, amount=850, stop=Stage.RESERVED)  # BNKA -> BNKB
        machine.close_window()  # window 1 closing, with BNKA's 850 still reserved in it
        for _ in range(3):
            machine.deliver(0)  # the credit, the payee's answer, the switch's answer: committed in window 1
        machine.settle_window(0)  # settle window 1
        result = reconcile(machine.snapshot(), machine.opening_customer, machine.opening_settlement)
        assert [b.name for b in result.books if not b.ok] == []
        machine.net_debit_caps_hold()
    finally:
        for store in machine.stores.values():
            store.close()
        shutil.rmtree(machine.root, ignore_errors=True)
