"""A participant bank: originates its customers' payments through the switch and credits the
payments other banks send to its customers. One process per bank, configured by bank code."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from urllib.parse import quote

import orjson

from mock_switch.api import (
    AFTER_ENTRY,
    AFTER_ID,
    LIMIT,
    PARTY_ID_PATH,
    PAYMENT_ID_PATH,
    BehaviourRequest,
    CreditRequest,
    InvalidRequest,
    PaymentRequest,
    answer,
    json_response,
    read_body,
)
from mock_switch.bank_ledger import SCHEMA, BankLedger, Originate, Payment, Receive
from mock_switch.bugs import one_in
from mock_switch.codes import Reason, Status
from mock_switch.config import SystemConfig
from mock_switch.http_server import Request, Response
from mock_switch.openapi import bank_document
from mock_switch.peer import Peer, Reply, classify, resolve
from mock_switch.service import Service
from mock_switch.store import Store

log = logging.getLogger("mock_switch.bank")


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


class BankService(Service):
    def __init__(self, config: SystemConfig, code: str, data_dir: Path) -> None:
        self.bank = config.bank(code)
        store = Store(data_dir / f"{code.lower()}.db", SCHEMA, config.durability)
        super().__init__(store, bank_document())
        self.name = f"bank {code}"
        self.code = code
        self.config = config
        self.ledger = BankLedger(store, config, code)
        self.robust = self.bank.resilience == "robust"
        self.credit_delay_s = self.bank.credit_delay_ms / 1000
        self.crediting: set[str] = set()  # credits being processed by the (slow) core banking
        self.switch: Peer | None = None
        r = self.router
        r.add_post("/payments", self.post_payment)
        r.add_get("/payments/{payment_id}", self.get_payment)
        r.add_get("/payments", self.list_payments)
        r.add_get("/parties/{party_id}", self.get_party)
        r.add_post("/credits", self.post_credit)
        r.add_get("/credits/{payment_id}", self.get_credit)
        r.add_get("/credits", self.list_credits)
        r.add_get("/accounts", self.list_accounts)
        r.add_get("/entries", self.list_entries)
        r.add_get("/totals", self.get_totals)
        r.add_post("/admin/behaviour", self.set_behaviour)

    async def started(self) -> None:
        assert self.session is not None
        self.switch = Peer(f"{self.code}->switch", self.bank.switch_url, self.session)
        # Customers' payments debited before a crash are still in doubt: find out what happened.
        for p in self.ledger.pending():
            self.spawn(p.payment_id, self._recover(p))

    # -- outgoing payments --------------------------------------------------------------------

    async def post_payment(self, request: Request) -> Response:
        req = await read_body(request, PaymentRequest)
        if req.currency != self.config.currency:
            raise InvalidRequest(f"field 'currency': accounts are held in {self.config.currency}")
        if req.creditor_bank == self.code:
            raise InvalidRequest("field 'creditor_bank': on-us transfers are not offered by this mock")
        deadline = self.loop().time() + self.bank.customer_timeout_s
        kind, p = self.ledger.originate(req, req.fingerprint(), time.time())
        await self.store.durable()  # the debit is durable before the switch hears of it
        if kind is Originate.DUPLICATE:
            return answer(
                req.payment_id,
                Status.RJCT,
                Reason.DUPL,
                "payment id already used with another body",
            )
        if kind is Originate.LATE:
            return answer(
                req.payment_id,
                Status.RJCT,
                Reason.AB06,
                "arrived after a status query was answered 'not received'",
            )
        if kind is Originate.DEBITED:
            self.spawn(p.payment_id, self._drive(p))
        await self.wait_for_outcome(p.payment_id, deadline)
        return await self._answer_payment(p.payment_id)

    async def _answer_payment(self, payment_id: str) -> Response:
        known = self.ledger.payment_status(payment_id)
        assert known is not None
        status, reason = known
        await self.store.durable()
        if self.config.bug == "lost-ack" and status is Status.RJCT and one_in(payment_id, 10):
            return answer(payment_id, Status.ACSC, None)  # BUG(lost-ack): a rejection told as success
        return answer(payment_id, status, reason)

    async def _drive(self, p: Payment) -> None:
        """Send a debited payment to the switch and finalise or reverse it."""
        assert self.switch is not None
        # Built from a payment that passed PaymentRequest validation: no need to validate again.
        transfer = {
            "payment_id": p.payment_id,
            "debtor_bank": self.code,
            "debtor_account": p.debtor_account,
            "creditor_bank": p.creditor_bank,
            "creditor_account": p.creditor_account,
            "amount": p.amount,
            "currency": self.config.currency,
        }
        timeout = self.bank.switch_timeout_s
        reply = await self.switch.call(
            "POST",
            "/transfers",
            timeout,
            transfer,
            {"X-Deadline-Ms": str(int(timeout * 1000))},
        )
        if reply.definitive:
            await self._decide(p.payment_id, reply)
        elif reply.never_sent:
            # Connection refused: the switch cannot have seen it. Safe to give the money back.
            await self._decide(p.payment_id, Reply(status=Status.RJCT, reason=Reason.AB06))
        elif not self.robust:
            # NAIVE: no definitive answer in time (timeout, reset, PDNG), so reverse the debit. If
            # the switch committed anyway, the payee is credited and our customer keeps the money.
            await self._decide(p.payment_id, Reply(status=Status.RJCT, reason=Reason.AB06))
        else:
            await self._resolve_with_switch(p.payment_id)

    async def _resolve_with_switch(self, payment_id: str) -> None:
        # ROBUST: ask the switch until it gives a final answer. The switch remembers "not
        # received" (AG09), so reversing on AG09 cannot race a late arrival of the transfer.
        assert self.switch is not None
        switch = self.switch
        reply = await resolve(
            lambda: switch.call("GET", f"/transfers/{payment_id}", self.bank.switch_timeout_s),
            self.config.status_query.delays(),
        )
        await self._decide(payment_id, reply)

    async def _decide(self, payment_id: str, reply: Reply) -> None:
        now = time.time()
        if reply.status is Status.ACSC:
            self.ledger.finalise(payment_id, now)
        else:
            reason = Reason.AB06 if reply.reason in (None, Reason.AG09) else reply.reason
            self.ledger.reverse(payment_id, reason, now)
        await self.store.durable()

    async def _recover(self, p: Payment) -> None:
        if not self.robust:
            # NAIVE restart: reverse whatever was in flight without asking.
            await self._decide(p.payment_id, Reply(status=Status.RJCT, reason=Reason.AB06))
            return
        await self._resolve_with_switch(p.payment_id)

    async def get_payment(self, request: Request) -> Response:
        payment_id = PAYMENT_ID_PATH.require(request)  # before anything is remembered about it
        p = self.ledger.customer_status_query(payment_id, remember_not_received=self.robust, now=time.time())
        await self.store.durable()
        if p is None:
            return answer(payment_id, Status.RJCT, Reason.AG09, "no such payment")
        return answer(payment_id, p.status, p.reason)

    async def get_party(self, request: Request) -> Response:
        """Name enquiry: this bank asks the switch's directory, over its link to the switch."""
        assert self.switch is not None
        # Validated here, not only at the switch: a raw '../transfers' would walk the switch's paths.
        party_id = quote(PARTY_ID_PATH.require(request), safe="")
        # Pure forwarding: the switch's JSON answer is passed on as it came, not decoded and
        # encoded again. Never cached: every enquiry crosses the link, faults included.
        got = await self.switch.exchange("GET", f"/parties/{party_id}", self.bank.switch_timeout_s)
        if isinstance(got, str):
            return answer("", Status.RJCT, Reason.AB06, f"name enquiry failed: {got}")
        http, raw = got
        if http in (200, 404):
            return Response(raw, http) if _is_json(raw) else json_response(None, http)
        return answer("", Status.RJCT, Reason.AB06, f"name enquiry failed: {classify(http, raw).error}")

    # -- incoming credits ---------------------------------------------------------------------

    async def post_credit(self, request: Request) -> Response:
        req = await read_body(request, CreditRequest)
        if req.currency != self.config.currency:
            raise InvalidRequest(f"field 'currency': accounts are held in {self.config.currency}")
        if req.payment_id in self.crediting:
            return answer(req.payment_id, Status.PDNG, None, "credit in progress")
        if self.credit_delay_s > 0 and self.ledger.credit(req.payment_id) is None:
            self.crediting.add(req.payment_id)
            try:
                await asyncio.sleep(self.credit_delay_s)
            finally:
                self.crediting.discard(req.payment_id)
        kind, c = self.ledger.receive_credit(req, req.fingerprint(), time.time())
        await self.store.durable()  # credited durably before the switch is told ACCP
        if kind is Receive.DUPLICATE:
            return answer(
                req.payment_id,
                Status.RJCT,
                Reason.DUPL,
                "payment id already used with another body",
            )
        if kind is Receive.LATE:
            return answer(
                req.payment_id,
                Status.RJCT,
                Reason.AB05,
                "arrived after a status query was answered 'not received'",
            )
        return answer(req.payment_id, c.status, c.reason)

    async def get_credit(self, request: Request) -> Response:
        payment_id = PAYMENT_ID_PATH.require(request)  # before anything is remembered about it
        if payment_id in self.crediting:
            return answer(payment_id, Status.PDNG, None, "credit in progress")
        # ROBUST remembers "not received" so a late credit is refused; NAIVE forgets, and a late
        # credit then lands after the switch has already aborted the payment.
        c = self.ledger.credit_status_query(payment_id, remember_not_received=self.robust, now=time.time())
        await self.store.durable()
        if c is None:
            return answer(payment_id, Status.RJCT, Reason.AG09, "no such payment")
        return answer(payment_id, c.status, c.reason)

    async def set_behaviour(self, request: Request) -> Response:
        req = await read_body(request, BehaviourRequest)
        self.credit_delay_s = req.credit_delay_ms / 1000
        return json_response({"credit_delay_ms": req.credit_delay_ms})

    # -- read models --------------------------------------------------------------------------

    async def list_payments(self, request: Request) -> Response:
        rows = self.ledger.payments(AFTER_ID.read(request) or "", LIMIT.require(request))
        await self.store.durable()
        return json_response(rows)

    async def list_credits(self, request: Request) -> Response:
        rows = self.ledger.credits(AFTER_ID.read(request) or "", LIMIT.require(request))
        await self.store.durable()
        return json_response(rows)

    async def list_accounts(self, request: Request) -> Response:
        rows = self.ledger.accounts()
        await self.store.durable()
        return json_response(rows)

    async def list_entries(self, request: Request) -> Response:
        rows = self.ledger.entries(AFTER_ENTRY.require(request), LIMIT.require(request))
        await self.store.durable()
        return json_response(rows)

    async def get_totals(self, request: Request) -> Response:
        totals = self.ledger.totals()
        await self.store.durable()
        return json_response(totals)
