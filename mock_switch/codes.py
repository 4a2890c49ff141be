"""ISO 20022 status and reason codes used on every API, and how they map to HTTP."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """pacs.002 transaction status words."""

    ACSC = "ACSC"  # settled / committed at the switch, final debit at the payer bank
    ACCP = "ACCP"  # accepted (credited) by the payee bank
    PDNG = "PDNG"  # pending: outcome not yet known
    RJCT = "RJCT"  # rejected: definitive, with a reason


class Reason(StrEnum):
    AM04 = "AM04"  # insufficient funds
    AM23 = "AM23"  # amount exceeds settlement limit (net debit cap)
    AC01 = "AC01"  # incorrect account number
    AC06 = "AC06"  # blocked account
    AB05 = "AB05"  # timeout at creditor agent
    AB06 = "AB06"  # timeout at instructed agent
    AB08 = "AB08"  # creditor agent offline
    AG09 = "AG09"  # payment not received (status-query answer)
    DUPL = "DUPL"  # duplicate payment id with a different body
    FF01 = "FF01"  # invalid format


# Enum members by value: a dict lookup is several times cheaper than calling the enum, on the hot
# path of every ledger read. REASON_OF maps None (no reason) to None.
STATUS_OF: dict[str, Status] = {s.value: s for s in Status}
REASON_OF: dict[str | None, Reason | None] = {None: None, "": None, **{r.value: r for r in Reason}}

# Technical failures: the service was not available. Business rejects (AM04, AC01, ...) are
# definitive answers and count as available.
TECHNICAL_REASONS = frozenset({Reason.AB05, Reason.AB06, Reason.AB08})


def http_status(status: Status, reason: Reason | None) -> int:
    """HTTP status for an answer. Clients must read `status`/`reason`; this is for humans and tools."""
    if status in (Status.ACSC, Status.ACCP):
        return 200
    if status is Status.PDNG:
        return 202
    if reason is Reason.FF01:
        return 400
    if reason is Reason.DUPL:
        return 409
    if reason is Reason.AB08:
        return 503
    if reason in (Reason.AB05, Reason.AB06):
        return 504
    return 422
