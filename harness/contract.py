"""The participant contract: what a system under test must offer the harness, per capability.

One declaration serves three readers, so they cannot drift apart:
- the OpenAPI documents under docs/contract/ (generated here: `python -m harness.contract --write`;
  tests/test_contract.py fails when the committed files differ from what this module generates);
- `harness conform` (harness/conform/), which checks a live target against these capabilities and
  validates every row of the read API with the row models below;
- docs/contract.md, which explains them for people (and names this module as the source).

The request and answer bodies are the bundled mock's own (mock_switch/api.py): the mock is the
reference implementation of the contract. The row models of the read API are declared here, from
what the checkers read (harness/checkers/reconcile.py): a target may add fields, never drop these.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mock_switch.api import AFTER_ENTRY, AFTER_ID, LIMIT, PARTY_ID_PATH, PAYMENT_ID_PATH, WINDOW_ID, PaymentRequest
from mock_switch.codes import TECHNICAL_REASONS, Reason
from mock_switch.openapi import ANSWER_CODES, PARTY, Op, document

# Bumped when a change would make a conforming target stop conforming (a new required field or path).
CONTRACT_VERSION = "1.0"
OPENAPI_DIR = Path(__file__).resolve().parent.parent / "docs" / "contract"
REGENERATE = "python -m harness.contract --write"

Side = Literal["bank", "switch"]


# -- rows of the read API ---------------------------------------------------------------------------


class _Row(BaseModel):
    # Extra fields are allowed (a target's books know more than the harness reads); these must be there.
    model_config = ConfigDict(extra="allow")


Timestamp = float  # seconds since the epoch (UNIX time), as a JSON number


class PaymentRow(_Row):
    """A payer bank's outgoing payment (GET /payments)."""

    payment_id: str
    fingerprint: str | None = Field(
        description="Any string that identifies the request body; null marks a row that only remembers a"
        " status query's 'not received' answer (a tombstone): reconciliation ignores it."
    )
    debtor_account: str | None
    creditor_bank: str | None
    creditor_account: str | None
    amount: int | None = Field(description="Minor units; null only on a tombstone.")
    status: Literal["PDNG", "ACSC", "RJCT"] = Field(
        description="PDNG: money held, outcome unknown; ACSC: debited for good; RJCT: not debited (or reversed)."
    )
    reason: Reason | None
    created_at: Timestamp
    decided_at: Timestamp | None


class CreditRow(_Row):
    """A payee bank's incoming credit (GET /credits)."""

    payment_id: str
    fingerprint: str | None = Field(description="As on a payment row: null marks a tombstone.")
    debtor_bank: str | None
    debtor_account: str | None
    creditor_account: str | None
    amount: int | None
    status: Literal["ACCP", "RJCT"] = Field(description="ACCP: the beneficiary was credited; RJCT: not credited.")
    reason: Reason | None
    received_at: Timestamp


class TransferRow(_Row):
    """The switch's record of one transfer (GET /transfers)."""

    payment_id: str
    fingerprint: str | None = Field(description="As on a payment row: null marks a tombstone.")
    debtor_bank: str | None
    debtor_account: str | None
    creditor_bank: str | None
    creditor_account: str | None
    amount: int | None
    status: Literal["PDNG", "ACSC", "RJCT"] = Field(description="ACSC: committed (money moves between the banks).")
    reason: Reason | None
    window_id: int | None = Field(
        description="The settlement window it commits into; required when ACSC if settlement windows are offered."
    )
    received_at: Timestamp
    decided_at: Timestamp | None


class AccountRow(_Row):
    """A customer account at a bank (GET /accounts)."""

    account: str
    balance: int = Field(ge=0, description="Minor units.")


class EntryRow(_Row):
    """One posting on a customer account (GET /entries): at most one of each kind per payment."""

    entry_id: int
    payment_id: str
    account: str
    kind: Literal["DEBIT", "REVERSAL", "CREDIT"]
    amount: int
    at: Timestamp


class ParticipantRow(_Row):
    """A participant's position at the switch (GET /participants)."""

    bank: str
    net_debit_cap: int
    position: int = Field(description="Committed, unsettled: sent minus received (minor units).")
    reserved: int = Field(description="Held for transfers not yet decided.")
    peak_exposure: int = Field(description="Highest position + reserved ever reached (must stay under the cap).")
    settlement_balance: int
    closed_credit: int = Field(0, description="What closed, unsettled windows owe this bank.")


class WindowRow(_Row):
    """A deferred net settlement window (GET /settlement/windows)."""

    window_id: int
    state: Literal["OPEN", "CLOSING", "CLOSED", "SETTLED"]
    opened_at: Timestamp
    closed_at: Timestamp | None
    settled_at: Timestamp | None
    net_positions: dict[str, int] = Field(description="Per bank code, frozen when the window closed.")


class MovementRow(_Row):
    """A settlement account movement (GET /settlement/movements)."""

    window_id: int
    bank: str
    amount: int


class PartyAnswer(_Row):
    """A name enquiry's answer (GET /parties/{party_id})."""

    bank: str
    account: str
    name: str = Field(min_length=1)


# -- capabilities -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """A read endpoint: a JSON array of `row` (or one `row` object when `one`)."""

    op: Op
    row: type[BaseModel]
    one: bool = False


@dataclass(frozen=True)
class Capability:
    name: str
    side: Side
    required: bool
    purpose: str  # what the harness does with it
    without: str  # what happens when a target does not offer it
    ops: tuple[Op, ...] = ()
    reads: tuple[Read, ...] = ()

    def all_ops(self) -> list[Op]:
        return [*self.ops, *(r.op for r in self.reads)]


_PAGED = (AFTER_ID, LIMIT)
_CUSTOMER_ANSWERS = {k: v for k, v in ANSWER_CODES.items() if k != "202"} | {
    "202": "PDNG: outcome not known yet; the customer asks again with GET /payments/{payment_id}."
}

CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "payments", "bank", True,
        "The load's customers pay here (POST, idempotent by payment_id) and ask about a payment whose"
        " answer they did not get (GET).",
        "Nothing can run: this is what the load drives.",
        ops=(
            Op("POST", "/payments", "A customer pays another bank's customer (idempotent by payment_id)",
               PaymentRequest, _CUSTOMER_ANSWERS, payment_answer=True),
            Op("GET", "/payments/{payment_id}", "Customer status query: the payment's answer, or RJCT AG09 if never"
               " seen", answers=_CUSTOMER_ANSWERS, payment_answer=True, params=(PAYMENT_ID_PATH,)),
        ),
    ),
    Capability(
        "name_enquiry", "bank", True,
        "Each customer looks the payee up before paying (the load's op `name_enquiry`).",
        "The load's name enquiries fail, so availability counts them as unavailable.",
        ops=(
            Op("GET", "/parties/{party_id}", "Name enquiry: bank, account and name of a payee", answers=PARTY,
               params=(PARTY_ID_PATH,)),
        ),
    ),
    Capability(
        "bank_reads", "bank", True,
        "Three-way reconciliation: the payer's debit and the payee's credit of every payment id.",
        "No reconciliation: the run is judged on availability only.",
        reads=(
            Read(Op("GET", "/payments", "Outgoing payments with states and timestamps, by payment id",
                    params=_PAGED), PaymentRow),
            Read(Op("GET", "/credits", "Incoming credits with states and timestamps, by payment id",
                    params=_PAGED), CreditRow),
        ),
    ),
    Capability(
        "bank_books", "bank", False,
        "Conservation of customer money (balances + money held in flight) and duplicate effects"
        " (two debits or credits for one payment id).",
        "The conservation and duplicate-effect checks do not apply.",
        reads=(
            Read(Op("GET", "/accounts", "Customer accounts and balances"), AccountRow),
            Read(Op("GET", "/entries", "Ledger entries, by entry id", params=(AFTER_ENTRY, LIMIT)), EntryRow),
        ),
    ),
    Capability(
        "switch_reads", "switch", True,
        "Three-way reconciliation: the switch's decision on every payment id.",
        "No reconciliation: the run is judged on availability only.",
        reads=(
            Read(Op("GET", "/transfers", "All transfers with states and timestamps, by payment id", params=_PAGED),
                 TransferRow),
        ),
    ),
    Capability(
        "positions", "switch", False,
        "Positions match committed transfers, reservations match pending ones, the net debit cap held.",
        "The position, reservation and net-debit-cap checks do not apply.",
        reads=(
            Read(Op("GET", "/participants", "Participants: net debit cap, position, reservations, settlement"
                    " balance"), ParticipantRow),
        ),
    ),
    Capability(
        "settlement", "switch", False,
        "Deferred net settlement: every committed transfer is in a window, frozen net positions match the"
        " transfers, settled windows moved exactly the net; scenarios' settlement actions close and settle.",
        "The settlement checks do not apply; the payment checks still run.",
        ops=(
            Op("POST", "/settlement/windows/close", "Close the open window and open the next"),
            Op("POST", "/settlement/windows/{window_id}/settle", "Settle a closed window (idempotent)",
               answers={"200": "Settled window", "404": "RJCT: no such window",
                        "409": "RJCT: window open or closing"}, params=(WINDOW_ID,)),
        ),
        reads=(
            Read(Op("GET", "/settlement/windows", "Settlement windows with per-bank net positions"), WindowRow),
            Read(Op("GET", "/settlement/movements", "Settlement account movements"), MovementRow),
        ),
    ),
    Capability(
        "health", "bank", False,
        "A liveness probe: answers 200 when the service takes requests (also offered by the switch).",
        "The harness waits for the first answer of another endpoint instead.",
        ops=(Op("GET", "/health", "Liveness: 200 when the service takes requests"),),
    ),
)  # fmt: skip

# Reasons a conformance run can provoke with a well-chosen request, and the ones that need a fault.
FAULT_ONLY_REASONS = TECHNICAL_REASONS
REQUIRED_REASONS = tuple(r for r in Reason if r not in TECHNICAL_REASONS)


def capability(name: str) -> Capability:
    for cap in CAPABILITIES:
        if cap.name == name:
            return cap
    raise KeyError(name)


# -- the OpenAPI documents ---------------------------------------------------------------------------


def _with_rows(doc: dict[str, Any], caps: list[Capability]) -> dict[str, Any]:
    """Type the read endpoints' 200 answers with their row models, and mark each operation required
    or optional (`x-capability`, `x-required`)."""
    schemas = doc["components"]["schemas"]
    for cap in caps:
        for op in cap.all_ops():
            spec = doc["paths"][op.path][op.method.lower()]
            spec["x-capability"] = cap.name
            spec["x-required"] = cap.required
            if not cap.required:
                spec["summary"] = f"(optional) {spec['summary']}"
        for read in cap.reads:
            row = read.row
            schema = row.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[row.__name__] = schema
            ref = {"$ref": f"#/components/schemas/{row.__name__}"}
            content = read.op.method.lower()
            doc["paths"][read.op.path][content]["responses"]["200"]["content"]["application/json"]["schema"] = (
                ref if read.one else {"type": "array", "items": ref}
            )
    party = doc["paths"].get("/parties/{party_id}")
    if party is not None:
        schemas[PartyAnswer.__name__] = PartyAnswer.model_json_schema()
        party["get"]["responses"]["200"]["content"]["application/json"]["schema"] = {
            "$ref": f"#/components/schemas/{PartyAnswer.__name__}"
        }
    doc["components"]["schemas"] = dict(sorted(schemas.items()))
    doc["info"]["version"] = CONTRACT_VERSION
    return doc


def side_document(side: Side) -> dict[str, Any]:
    caps = [c for c in CAPABILITIES if c.side == side or (c.name == "health")]
    ops = [op for c in caps for op in c.all_ops()]
    if side == "bank":
        title = "Participant contract: each participant bank"
        description = (
            "What each participant bank of a system under test must offer the payswitch-chaos harness:"
            " the customer-facing payment API the load drives, the customer status query, the name"
            " enquiry, and the read API reconciliation needs. Operations marked x-required: false are"
            " optional; see docs/contract.md for what does not apply without them. Generated by"
            f" harness/contract.py ({REGENERATE})."
        )
    else:
        title = "Participant contract: the switch"
        description = (
            "What the switch of a system under test must offer the payswitch-chaos harness: the read"
            " API of its transfers (required), positions and settlement windows (optional). The"
            " switch's own API towards the banks is not part of the contract: the harness only"
            f" routes those links through Toxiproxy. Generated by harness/contract.py ({REGENERATE})."
        )
    return _with_rows(document(title, description, ops), caps)


def openapi_files() -> dict[str, str]:
    """File name under docs/contract/ -> its exact text."""
    return {
        f"{side}.openapi.json": json.dumps(side_document(side), indent=2, sort_keys=False) + "\n"
        for side in ("bank", "switch")
    }


def stale_files(directory: Path = OPENAPI_DIR) -> list[str]:
    """The generated files that are missing or differ from what the code generates."""
    return [name for name, text in openapi_files().items() if _read(directory / name) != text]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.contract", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write the OpenAPI files into {OPENAPI_DIR}")
    args = parser.parse_args(argv)
    if args.write:
        OPENAPI_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in openapi_files().items():
            (OPENAPI_DIR / name).write_text(text)
            print(f"wrote {OPENAPI_DIR / name}")
        return 0
    stale = stale_files()
    for name in stale:
        print(f"{OPENAPI_DIR / name}: out of date; regenerate with `{REGENERATE}`")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
