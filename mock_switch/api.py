"""Request and answer bodies of the switch and bank APIs, how requests are parsed, and how a refusal
is answered. Every handler parses through here and every refusal is answered by one error hook
(mock_switch/service.py), so the rules below hold on every route:

- A malformed request gets HTTP 400 with status RJCT, reason FF01 and a message naming the field or
  parameter; nothing is written before a request has passed validation.
- Integer parameters (path, query, header) are ASCII digits only and fit SQLite's INTEGER
  (at most 2**63-1): `str.isdigit()` also accepts '²' or '٣', which `int()` then refuses.
- Ids in a path (status queries, name enquiries) are validated exactly like the same field in a
  body, so a status query never stores an id that a payment could not carry.
- A parameter given twice in the query is refused, like a key given twice in a JSON body (orjson and
  pydantic keep the last one silently: two readers of one request could disagree on the amount).
- A request body is read only as `application/json` (UTF-8): anything else gets 415 RJCT FF01, so a
  form or text/plain body (what a browser may post cross-site without asking) never moves money.
- Every refusal, 405 included (with `Allow`), has the `Answer` body the OpenAPI documents describe.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from mock_switch.codes import Reason, Status, http_status
from mock_switch.http_server import Request, Response

# At least one character that is not a dot: a path segment '.' or '..' is rewritten by every HTTP
# client, so such a payment could never be asked about. (pydantic's regex engine has no lookahead.)
PAYMENT_ID = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]*[A-Za-z0-9_:-][A-Za-z0-9_.:-]*$")
ACCOUNT = Field(min_length=1, max_length=34, pattern=r"^[A-Za-z0-9+]+$")
BANK = Field(pattern=r"^[A-Z]{4}$")
# Amounts are integers in minor units; the cap keeps sums far from any overflow.
AMOUNT = Field(gt=0, le=10**12, strict=True)
CURRENCY = Field(pattern=r"^[A-Z]{3}$")
# The largest value an SQLite INTEGER holds; beyond it a query raises OverflowError.
SQLITE_MAX = 2**63 - 1
MAX_BODY = 64 * 1024  # bytes; a larger body is refused unread (413)

PaymentId = Annotated[str, PAYMENT_ID]
PartyId = Annotated[str, ACCOUNT]  # an account number or an MSISDN (+234...)


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

    credit_delay_ms: int = Field(ge=0, le=600_000, strict=True)  # strict: `false` is not 0 ms


class Answer(BaseModel):
    """Every payment answer and every refusal: the pacs.002-style status with an optional reason."""

    payment_id: str
    status: Status
    reason: Reason | None = None
    message: str | None = None


# -- refusals ---------------------------------------------------------------------------------------


class Refused(Exception):
    """A request the service will not carry out; the error hook answers it (one place)."""

    def __init__(self, http: int, message: str, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.http_status = http
        self.message = message
        self.reason = reason

    def response(self) -> Response:
        return error_response(self.http_status, self.message, self.reason)


class InvalidRequest(Refused):
    """Malformed input: 400 RJCT FF01, the message naming the field or parameter."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, Reason.FF01)


class UnsupportedMediaType(Refused):
    def __init__(self, message: str) -> None:
        super().__init__(415, message, Reason.FF01)


# -- parameters: one declaration serves the handler (read) and the OpenAPI document (openapi) -----

Location = Literal["path", "query", "header"]
_ASCII_DIGITS = re.compile(r"[0-9]{1,19}")  # fullmatch: no sign, no space, no '_', no trailing newline


def _raw(request: Request, name: str, location: Location) -> str | None:
    if location == "path":
        return request.match_info[name]
    values = request.query_all(name) if location == "query" else request.header_all(name)
    if len(values) > 1:
        raise InvalidRequest(f"{location} '{name}': given {len(values)} times; give it once")
    return values[0] if values else None


@dataclass(frozen=True)
class IntParam:
    """A non-negative integer in a path, query or header: ASCII digits, `minimum` to `maximum`."""

    name: str
    location: Location
    description: str
    minimum: int = 0
    maximum: int = SQLITE_MAX
    default: int | None = None

    def read(self, request: Request) -> int | None:
        raw = _raw(request, self.name, self.location)
        if raw is None:
            return self.default
        if _ASCII_DIGITS.fullmatch(raw) and self.minimum <= (value := int(raw)) <= self.maximum:
            return value
        raise InvalidRequest(f"{self.location} '{self.name}': must be an integer from {self.minimum} to {self.maximum}")

    def require(self, request: Request) -> int:
        value = self.read(request)
        assert value is not None, f"{self.name} has no default"
        return value

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        if self.default is not None:
            schema["default"] = self.default
        return _param_doc(self.name, self.location, self.description, schema)


@dataclass(frozen=True)
class TextParam:
    """A string in a path or query, validated by the same pydantic field as in the bodies."""

    name: str
    location: Location
    description: str
    kind: TypeAdapter[str]

    def read(self, request: Request) -> str | None:
        raw = _raw(request, self.name, self.location)
        if raw is None:
            return None
        try:
            return self.kind.validate_python(raw)
        except ValidationError as exc:
            raise InvalidRequest(f"{self.location} '{self.name}': {exc.errors()[0]['msg']}") from None

    def require(self, request: Request) -> str:
        value = self.read(request)
        assert value is not None, f"{self.name} is optional"
        return value

    def openapi(self) -> dict[str, Any]:
        return _param_doc(self.name, self.location, self.description, self.kind.json_schema())


Param = IntParam | TextParam


def _param_doc(name: str, location: Location, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": location, "required": location == "path", "description": description, "schema": schema}


_PAYMENT_ID: TypeAdapter[str] = TypeAdapter(PaymentId)
_PARTY_ID: TypeAdapter[str] = TypeAdapter(PartyId)

PAYMENT_ID_PATH = TextParam("payment_id", "path", "The payment id (idempotency key) of the payment.", _PAYMENT_ID)
PARTY_ID_PATH = TextParam("party_id", "path", "An account number or an MSISDN ('+' as %2B).", _PARTY_ID)
AFTER_ID = TextParam("after", "query", "Only rows whose payment id sorts after this one (paging).", _PAYMENT_ID)
AFTER_ENTRY = IntParam("after", "query", "Only entries after this entry id (paging).", default=0)
LIMIT = IntParam("limit", "query", "At most this many rows.", minimum=1, default=1_000_000)
WINDOW_ID = IntParam("window_id", "path", "A settlement window number.", minimum=1)
# How long the payer bank waits for the switch; a day at most keeps the loop's timers sane.
DEADLINE_MS = IntParam("X-Deadline-Ms", "header", "Milliseconds the caller will wait for the answer.",
                       maximum=86_400_000)  # fmt: skip


# -- bodies -----------------------------------------------------------------------------------------


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


M = TypeVar("M", bound=BaseModel)


def _no_repeated_key(raw: bytes) -> bool:
    """True when `raw` certainly repeats no key, decided in C (about 1 us, against 8 us for the
    stdlib's hook): a flat JSON object, no backslash (so no key is spelled with escapes), and each
    of its keys occurs once in the text as a quoted string. A repeated key occurs at least twice."""
    if b"\\" in raw:
        return False
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    if type(obj) is not dict:
        return False
    for key, value in obj.items():
        if type(value) in (dict, list) or raw.count(b'"' + key.encode() + b'"') != 1:
            return False
    return True


def parse(model: type[M], raw: bytes) -> M:
    """Validate a JSON body; raise InvalidRequest naming the first bad field or a repeated key."""
    if not _no_repeated_key(raw):
        try:
            # orjson and pydantic keep the last of two equal keys without a word; the stdlib's
            # parser has a hook that sees every pair. Bodies it cannot read are left to pydantic.
            json.loads(raw.decode("utf-8"), object_pairs_hook=_refuse_duplicate_keys)
        except _DuplicateKey as dup:
            raise InvalidRequest(f"field '{dup.key}': given more than once") from None
        except (ValueError, RecursionError):
            pass
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


async def read_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`: only `application/json` in UTF-8 is read."""
    if request.header_all("content-type") == ["application/json"]:  # what the services send
        return parse(model, await request.read())
    charset = (request.charset or "utf-8").lower()
    if request.content_type != "application/json" or charset not in ("utf-8", "utf8"):
        sent = request.header("Content-Type")
        raise UnsupportedMediaType(
            "send the body as application/json (UTF-8), "
            + (f"not {sent[:80]!r}" if sent is not None else "with that Content-Type")
        )
    return parse(model, await request.read())


# -- answers ----------------------------------------------------------------------------------------


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status)


def answer(payment_id: str, status: Status, reason: Reason | None = None, message: str | None = None) -> Response:
    return json_response(_answer_body(payment_id, status, reason, message), http_status(status, reason))


def error_response(http: int, message: str, reason: Reason | None = Reason.FF01) -> Response:
    """A refusal: RJCT with `reason` (if any) and a message, under any 4xx."""
    return json_response(_answer_body("", Status.RJCT, reason, message), http)


def _answer_body(payment_id: str, status: Status, reason: Reason | None, message: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"payment_id": payment_id, "status": status.value}
    if reason is not None:
        body["reason"] = reason.value
    if message:
        body["message"] = message
    return body
