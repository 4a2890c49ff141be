"""Request and answer bodies of the switch and bank APIs, and how malformed input is reported.

Every malformed request gets HTTP 400 with status RJCT, reason FF01 and a message naming the
field; nothing is written before a request has passed validation.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mock_switch.codes import Reason, Status, http_status

PAYMENT_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
ACCOUNT = Field(min_length=1, max_length=34, pattern=r"^[A-Za-z0-9+]+$")
BANK = Field(pattern=r"^[A-Z]{4}$")
# Amounts are integers in minor units; the cap keeps sums far from any overflow.
AMOUNT = Field(gt=0, le=10**12, strict=True)
CURRENCY = Field(pattern=r"^[A-Z]{3}$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def fingerprint(self) -> str:
        """Canonical hash of the body: same id + same fingerprint means a replay, else DUPL."""
        raw = orjson.dumps(self.model_dump(), option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(raw, digest_size=12).hexdigest()


class PaymentRequest(_Body):
    """Customer -> payer bank: pay `amount` to `creditor_account` at `creditor_bank`."""

    payment_id: str = PAYMENT_ID
    debtor_account: str = ACCOUNT
    creditor_bank: str = BANK
    creditor_account: str = ACCOUNT
    amount: int = AMOUNT
    currency: str = CURRENCY


class TransferRequest(_Body):
    """Payer bank -> switch: a credit transfer (pacs.008 in spirit)."""

    payment_id: str = PAYMENT_ID
    debtor_bank: str = BANK
    debtor_account: str = ACCOUNT
    creditor_bank: str = BANK
    creditor_account: str = ACCOUNT
    amount: int = AMOUNT
    currency: str = CURRENCY


class CreditRequest(_Body):
    """Switch -> payee bank: credit the beneficiary."""

    payment_id: str = PAYMENT_ID
    debtor_bank: str = BANK
    debtor_account: str = ACCOUNT
    creditor_account: str = ACCOUNT
    amount: int = AMOUNT
    currency: str = CURRENCY


class BehaviourRequest(_Body):
    """Bank admin: simulate slow core banking on incoming credits."""

    credit_delay_ms: int = Field(ge=0, le=600_000)


class Answer(BaseModel):
    """Every payment answer: the pacs.002-style status with an optional reason."""

    payment_id: str
    status: Status
    reason: Reason | None = None
    message: str | None = None


class InvalidRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], raw: bytes) -> M:
    """Validate a JSON body; raise InvalidRequest naming the first bad field."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            raise InvalidRequest(f"body is not valid JSON: {err['msg']}") from None
        if not loc:
            raise InvalidRequest(f"body must be a JSON object: {err['msg']}") from None
        raise InvalidRequest(f"field '{loc}': {err['msg']}") from None


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def answer(payment_id: str, status: Status, reason: Reason | None = None, message: str | None = None) -> web.Response:
    body: dict[str, Any] = {"payment_id": payment_id, "status": status.value}
    if reason is not None:
        body["reason"] = reason.value
    if message:
        body["message"] = message
    return json_response(body, http_status(status, reason))


def format_error(message: str, payment_id: str = "") -> web.Response:
    return answer(payment_id, Status.RJCT, Reason.FF01, message)
