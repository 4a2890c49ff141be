"""OpenAPI 3.1 documents for the switch and bank APIs, built from the same pydantic models that
validate requests, so the published contract cannot drift from the code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from mock_switch import __version__
from mock_switch.api import (
    AFTER_ENTRY,
    AFTER_ID,
    DEADLINE_MS,
    LIMIT,
    MAX_BODY,
    PARTY_ID_PATH,
    PAYMENT_ID_PATH,
    WINDOW_ID,
    Answer,
    BehaviourRequest,
    CreditRequest,
    Param,
    PaymentRequest,
    TransferRequest,
)
from mock_switch.codes import Reason

MALFORMED = (
    "RJCT FF01: malformed request; the message names the field or parameter. Nothing was written"
    " (a status query about an id that no payment could carry is not remembered)."
)
UNSUPPORTED = "RJCT FF01: the body was not sent as application/json (UTF-8). Nothing was written."
TOO_LARGE = f"RJCT FF01: the body is over {MAX_BODY} bytes. Nothing was written."
ANSWER_CODES = {
    "200": "Definitive success (ACSC or ACCP).",
    "202": "PDNG: outcome not known yet; ask again with a status query.",
    "409": "RJCT DUPL: this payment id was used with a different body.",
    "422": "RJCT with a business reason (AM04, AM23, AC01, AC06, AB05, AB06, AG09).",
    "503": "RJCT AB08: creditor agent offline.",
    "504": "RJCT AB05/AB06: timeout at the creditor or instructed agent.",
}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    body: type[BaseModel] | None = None
    answers: dict[str, str] = field(default_factory=lambda: {"200": "OK"})
    payment_answer: bool = False
    params: tuple[Param, ...] = ()  # the same objects the handler reads them with


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def document(title: str, description: str, ops: list[Op]) -> dict[str, Any]:
    models: set[type[BaseModel]] = {Answer}
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        in_path = {seg[1:-1] for seg in op.path.split("/") if seg.startswith("{")}
        declared = {p.name for p in op.params if p.location == "path"}
        assert in_path == declared, f"{op.method} {op.path}: path parameters {in_path} declared as {declared}"
        params = [p.openapi() for p in op.params]
        answers = dict(op.answers)
        if op.params or op.body is not None:  # every parsed input can be refused
            answers.setdefault("400", MALFORMED)
        if op.body is not None:
            answers.setdefault("413", TOO_LARGE)
            answers.setdefault("415", UNSUPPORTED)
        responses: dict[str, Any] = {}
        for code, desc in sorted(answers.items()):
            resp: dict[str, Any] = {"description": desc}
            if op.payment_answer or code != "200":
                resp["content"] = {"application/json": {"schema": _ref(Answer)}}
            else:
                resp["content"] = {"application/json": {"schema": {}}}
            responses[code] = resp
        spec: dict[str, Any] = {"summary": op.summary, "responses": responses}
        if params:
            spec["parameters"] = params
        if op.body is not None:
            models.add(op.body)
            spec["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(op.body)}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = spec
    schemas = {}
    for model in sorted(models, key=lambda m: m.__name__):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": __version__,
            "description": description + "\n\nReason codes: " + ", ".join(r.value for r in Reason),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


# A status query answers what the payment's answer was, or RJCT AG09 (422) for an id never seen.
STATUS_QUERY = (PAYMENT_ID_PATH,)
PAGED = (AFTER_ID, LIMIT)
PARTY = {"200": "bank, account and name", "404": "RJCT AC01: no such party"}
DOCUMENT = Op("GET", "/openapi.json", "This OpenAPI document")

SWITCH_OPS = [
    Op("POST", "/transfers", "Credit transfer from a payer bank (idempotent by payment_id)",
       TransferRequest, ANSWER_CODES, payment_answer=True, params=(DEADLINE_MS,)),
    Op("GET", "/transfers/{payment_id}", "Status query (pacs.028): ACSC, RJCT, PDNG, or RJCT AG09",
       answers=ANSWER_CODES, payment_answer=True, params=STATUS_QUERY),
    Op("GET", "/transfers", "All transfers with states and timestamps, by payment id", params=PAGED),
    Op("GET", "/parties/{party_id}", "Name enquiry by account number or MSISDN", answers=PARTY,
       params=(PARTY_ID_PATH,)),
    Op("GET", "/participants", "Participants: net debit cap, position, reservations, settlement balance"),
    Op("GET", "/settlement/windows", "Settlement windows with per-bank net positions"),
    Op("GET", "/settlement/windows/{window_id}", "One settlement window",
       answers={"200": "The window", "404": "RJCT: no such window"}, params=(WINDOW_ID,)),
    Op("POST", "/settlement/windows/close", "Close the open window and open the next"),
    Op("POST", "/settlement/windows/{window_id}/settle", "Settle a closed window (idempotent)",
       answers={"200": "Settled window", "404": "RJCT: no such window", "409": "RJCT: window open or closing"},
       params=(WINDOW_ID,)),
    Op("GET", "/settlement/movements", "Settlement account movements"),
    Op("GET", "/health", "Liveness"),
    DOCUMENT,
]  # fmt: skip

BANK_OPS = [
    Op("POST", "/payments", "A customer pays another bank's customer (idempotent by payment_id)",
       PaymentRequest, ANSWER_CODES, payment_answer=True),
    Op("GET", "/payments/{payment_id}", "Customer status query", answers=ANSWER_CODES, payment_answer=True,
       params=STATUS_QUERY),
    Op("GET", "/payments", "Outgoing payments, by payment id", params=PAGED),
    Op("GET", "/parties/{party_id}", "Name enquiry (forwarded to the switch's directory)",
       answers={**PARTY, "504": "RJCT AB06: the switch did not answer"}, params=(PARTY_ID_PATH,)),
    Op("POST", "/credits", "Incoming credit from the switch (idempotent by payment_id)",
       CreditRequest, ANSWER_CODES, payment_answer=True),
    Op("GET", "/credits/{payment_id}", "Status query from the switch: ACCP, RJCT, PDNG or RJCT AG09",
       answers=ANSWER_CODES, payment_answer=True, params=STATUS_QUERY),
    Op("GET", "/credits", "Incoming credits, by payment id", params=PAGED),
    Op("GET", "/accounts", "Customer accounts and balances"),
    Op("GET", "/entries", "Ledger entries, by entry id", params=(AFTER_ENTRY, LIMIT)),
    Op("GET", "/totals", "Customer money and money held for payments in flight"),
    Op("POST", "/admin/behaviour", "Simulate slow core banking on incoming credits", BehaviourRequest),
    Op("GET", "/health", "Liveness"),
    DOCUMENT,
]  # fmt: skip


def switch_document() -> dict[str, Any]:
    return document(
        "Mock national payment switch",
        "Switch API: credit transfers, status queries, party directory, positions and deferred net settlement windows.",
        SWITCH_OPS,
    )


def bank_document() -> dict[str, Any]:
    return document(
        "Mock participant bank",
        "Bank API: customer payments, incoming credits, status queries and ledger read models.",
        BANK_OPS,
    )
