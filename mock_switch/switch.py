"""The switch service: validates, reserves against the net debit cap, forwards to the payee bank,
commits or aborts, answers status queries, and runs deferred net settlement windows."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mock_switch.api import (
    AFTER_ID,
    DEADLINE_MS,
    LIMIT,
    PARTY_ID_PATH,
    PAYMENT_ID_PATH,
    WINDOW_ID,
    InvalidRequest,
    Refused,
    TransferRequest,
    answer,
    json_response,
    read_body,
)
from mock_switch.codes import Reason, Status
from mock_switch.config import Party, SystemConfig
from mock_switch.http_server import Request, Response
from mock_switch.openapi import switch_document
from mock_switch.peer import Peer, Reply, resolve
from mock_switch.service import Service
from mock_switch.store import Store
from mock_switch.switch_ledger import SCHEMA, Begin, SwitchLedger, Transfer

log = logging.getLogger("mock_switch.switch")

# Answer the payer bank this long before its own timeout, so a PDNG reaches it in time.
DEADLINE_MARGIN_S = 0.2


class SwitchService(Service):
    name = "switch"

    def __init__(self, config: SystemConfig, data_dir: Path) -> None:
        store = Store(data_dir / "switch.db", SCHEMA, config.durability)
        super().__init__(store, switch_document())
        self.config = config
        self.ledger = SwitchLedger(store, config, time.time())
        self.robust = config.switch.resilience == "robust"
        self.participants = frozenset(b.code for b in config.banks)
        self.directory: dict[str, Party] = {}
        for p in config.parties():
            self.directory[p.account] = p
            self.directory[p.msisdn] = p
        self.peers: dict[str, Peer] = {}
        r = self.router
        r.add_post("/transfers", self.post_transfer)
        r.add_get("/transfers/{payment_id}", self.get_transfer)
        r.add_get("/transfers", self.list_transfers)
        r.add_get("/parties/{party_id}", self.get_party)
        r.add_get("/participants", self.list_participants)
        r.add_get("/settlement/windows", self.list_windows)
        r.add_get("/settlement/windows/{window_id}", self.get_window)
        r.add_post("/settlement/windows/close", self.close_window)
        r.add_post("/settlement/windows/{window_id}/settle", self.settle_window)
        r.add_get("/settlement/movements", self.list_movements)

    async def started(self) -> None:
        assert self.session is not None
        for bank in self.config.banks:
            url = self.config.switch.bank_urls.get(bank.code)
            if url:
                self.peers[bank.code] = Peer(f"switch->{bank.code}", url, self.session)
        # Transfers reserved before a crash are still in doubt: settle each one's fate.
        for t in self.ledger.pending():
            self.spawn(t.payment_id, self._recover(t))

    # -- credit transfer ------------------------------------------------------------------------

    async def post_transfer(self, request: Request) -> Response:
        req = await read_body(request, TransferRequest)
        self._validate(req)
        deadline = self.loop().time() + self._budget(request, req.debtor_bank)
        kind, t = self.ledger.begin_transfer(req, req.fingerprint(), time.time())
        await self.store.durable()  # the reservation is durable before anyone hears of it
        if kind is Begin.DUPLICATE:
            return answer(
                req.payment_id,
                Status.RJCT,
                Reason.DUPL,
                "payment id already used with another body",
            )
        if kind is Begin.LATE:
            return answer(
                req.payment_id,
                Status.RJCT,
                Reason.AB06,
                "arrived after a status query was answered 'not received'",
            )
        if kind is Begin.RESERVED:
            self.spawn(t.payment_id, self._drive(t))
        await self.wait_for_outcome(t.payment_id, deadline)
        return await self._answer(t.payment_id)

    def _validate(self, req: TransferRequest) -> None:
        if req.currency != self.config.currency:
            raise InvalidRequest(f"field 'currency': this switch settles {self.config.currency} only")
        if req.debtor_bank not in self.participants:
            raise InvalidRequest(f"field 'debtor_bank': {req.debtor_bank} is not a participant")
        if req.creditor_bank == req.debtor_bank:
            raise InvalidRequest("field 'creditor_bank': on-us payments do not go through the switch")

    def _budget(self, request: Request, debtor_bank: str) -> float:
        """Seconds the payer bank will wait for us: its X-Deadline-Ms header, else its config."""
        deadline_ms = DEADLINE_MS.read(request)
        budget = deadline_ms / 1000 if deadline_ms is not None else self.config.bank(debtor_bank).switch_timeout_s
        return max(0.0, budget - DEADLINE_MARGIN_S)

    async def _answer(self, payment_id: str) -> Response:
        known = self.ledger.status(payment_id)
        assert known is not None
        await self.store.durable()
        return answer(payment_id, *known)

    async def _drive(self, t: Transfer) -> None:
        """Forward a reserved transfer to the payee bank and bring it to a final state."""
        peer = self.peers.get(t.creditor_bank or "")
        if peer is None:
            await self._decide(t.payment_id, Reply(status=Status.RJCT, reason=Reason.AB08))
            return
        # Built from a transfer that passed TransferRequest validation: no need to validate again.
        credit = {
            "payment_id": t.payment_id,
            "debtor_bank": t.debtor_bank,
            "debtor_account": t.debtor_account,
            "creditor_account": t.creditor_account,
            "amount": t.amount,
            "currency": self.config.currency,
        }
        reply = await peer.call("POST", "/credits", self.config.switch.payee_timeout_s, credit)
        if reply.definitive:
            await self._decide(t.payment_id, reply)
        elif reply.never_sent:
            # Connection refused: nothing was sent, so the payee cannot have credited. Safe to abort.
            await self._decide(t.payment_id, Reply(status=Status.RJCT, reason=Reason.AB08))
        elif not self.robust:
            # NAIVE: the payee did not answer in time, so give up and abort. If the payee did credit
            # (it was only slow), the payer bank now reverses a payment whose money already moved.
            await self._decide(t.payment_id, Reply(status=Status.RJCT, reason=Reason.AB05))
        else:
            await self._resolve_with_payee(t.payment_id, peer)

    async def _resolve_with_payee(self, payment_id: str, peer: Peer) -> None:
        # ROBUST: the outcome is unknown, so never guess. Ask the payee what happened until it
        # knows; a robust payee remembers "not received", so AG09 is final and safe to abort on.
        reply = await resolve(
            lambda: peer.call("GET", f"/credits/{payment_id}", self.config.switch.payee_timeout_s),
            self.config.status_query.delays(),
        )
        await self._decide(payment_id, reply)

    async def _decide(self, payment_id: str, reply: Reply) -> None:
        now = time.time()
        if reply.status in (Status.ACCP, Status.ACSC):
            self.ledger.commit(payment_id, now)
        else:
            # AG09 from a status query means the payee never got it in time: a timeout at the
            # creditor agent, as far as the payer is concerned.
            reason = Reason.AB05 if reply.reason in (None, Reason.AG09) else reply.reason
            self.ledger.abort(payment_id, reason, now)
        await self.store.durable()

    async def _recover(self, t: Transfer) -> None:
        peer = self.peers.get(t.creditor_bank or "")
        if peer is None or not self.robust:
            # NAIVE restart: whatever was in flight is aborted blindly.
            await self._decide(t.payment_id, Reply(status=Status.RJCT, reason=Reason.AB05))
            return
        await self._resolve_with_payee(t.payment_id, peer)

    # -- status query -----------------------------------------------------------------------

    async def get_transfer(self, request: Request) -> Response:
        payment_id = PAYMENT_ID_PATH.require(request)  # before anything is remembered about it
        # ROBUST remembers "not received" so a late copy of the transfer is refused; NAIVE forgets.
        t = self.ledger.status_query(payment_id, remember_not_received=self.robust, now=time.time())
        await self.store.durable()
        if t is None:
            return answer(payment_id, Status.RJCT, Reason.AG09, "no such payment")
        return answer(payment_id, t.status, t.reason)

    # -- directory, reads, settlement -------------------------------------------------------

    async def get_party(self, request: Request) -> Response:
        p = self.directory.get(PARTY_ID_PATH.require(request))
        if p is None:
            raise Refused(404, "unknown party", Reason.AC01)
        return json_response({"bank": p.bank, "account": p.account, "msisdn": p.msisdn, "name": p.name})

    async def list_transfers(self, request: Request) -> Response:
        rows = self.ledger.transfers(AFTER_ID.read(request) or "", LIMIT.require(request))
        await self.store.durable()
        return json_response(rows)

    async def list_participants(self, request: Request) -> Response:
        rows = self.ledger.participants()
        await self.store.durable()
        return json_response(rows)

    async def list_windows(self, request: Request) -> Response:
        rows = self.ledger.windows()
        await self.store.durable()
        return json_response(rows)

    async def get_window(self, request: Request) -> Response:
        w = self.ledger.window(WINDOW_ID.require(request))
        await self.store.durable()
        return json_response(w)

    async def close_window(self, request: Request) -> Response:
        w = self.ledger.close_window(time.time())
        await self.store.durable()
        return json_response(w)

    async def settle_window(self, request: Request) -> Response:
        w = self.ledger.settle_window(WINDOW_ID.require(request), time.time())
        await self.store.durable()
        return json_response(w)

    async def list_movements(self, request: Request) -> Response:
        rows = self.ledger.movements()
        await self.store.durable()
        return json_response(rows)
