"""The history: one `Op` per customer operation, and the one rule of what counts as available.

`history.jsonl` holds one JSON object per line (docs/run-directory.md); the Locust customers write
it, the availability checker, the report, the live panel, the bulkhead figure and Locust's own
statistics judge each operation with `is_available` (DESIGN.md section 5):

- *definitive*: the customer got ACSC, or a reject that is the customer's or the request's doing
  (BUSINESS_REASONS): the system answered correctly, so it was available; a name enquiry answered
  (the party, or AC01 "no such account"); a status query answered AG09 ("not received": the
  question has its answer);
- everything else spends error budget: technical rejects (AB05/AB06 timeouts, AB08 offline, AG09
  "not received" to a payment), PDNG, 5xx, timeouts, connection errors, and an arrival of the open
  model that was never sent (`not-sent`, `in-flight-bound`);
- *available*: definitive within the latency SLO, measured from `invoke` (for the open model the
  scheduled arrival time, so a late send is the customer's wait too).

Payments (op `payment`) make the availability figures; name enquiries (`name_enquiry`) are reported
beside them, never mixed in; status queries (`status_query`) follow up an unknown payment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal, NotRequired, TypedDict

import orjson

from harness.errors import RunFileError

Outcome = Literal["ok", "fail", "unknown"]

# Definitive rejects that are the customer's or the request's fault, not the system's. DUPL (same
# payment id, other body) and FF01 (malformed request) are the switch doing its job correctly.
BUSINESS_REASONS = frozenset({"AM04", "AM23", "AC01", "AC06", "DUPL", "FF01"})


# Operation kinds (the `op` field; a line without one is a payment, as in the first histories).
PAYMENT, STATUS_QUERY, NAME_ENQUIRY = "payment", "status_query", "name_enquiry"
OP_KINDS = (PAYMENT, STATUS_QUERY, NAME_ENQUIRY)
# Errors of open-model arrivals that were never sent (docs/run-directory.md).
NOT_SENT, IN_FLIGHT_BOUND = "not-sent", "in-flight-bound"


class Op(TypedDict):
    """One line of history.jsonl: an operation as the customer saw it."""

    op: NotRequired[str]  # "payment" (the default), "status_query" or "name_enquiry"
    id: str
    payer: str
    payee: str
    amount: int
    invoke: float  # epoch seconds: when the customer wanted it (open model: the scheduled arrival)
    sent: NotRequired[float | None]  # epoch seconds: request sent; null when it never was
    complete: float  # epoch seconds: answer received, or given up
    outcome: Outcome
    status: str | None
    reason: str | None
    http: int | None
    error: str | None  # timeout | connection | http-5xx ... when there was no definitive answer
    latency_ms: NotRequired[float]


def op_kind(op: Mapping[str, Any]) -> str:
    return str(op.get("op", PAYMENT))


def is_payment(op: Mapping[str, Any]) -> bool:
    """A customer payment (status queries follow up an unknown payment; name enquiries precede one)."""
    return op_kind(op) == PAYMENT


def is_name_enquiry(op: Mapping[str, Any]) -> bool:
    return op_kind(op) == NAME_ENQUIRY


def is_business_reject(reason: str | None) -> bool:
    return reason is not None and reason in BUSINESS_REASONS


def is_definitive(op: Mapping[str, Any]) -> bool:
    """ACSC (a name enquiry: the party found), or a business reject: the system answered and was
    right to. A status query answered AG09 ("not received") is definitive too: that is its answer."""
    outcome = op.get("outcome")
    if outcome == "ok":
        return True
    if outcome != "fail":
        return False
    reason = op.get("reason")
    return reason in BUSINESS_REASONS or (reason == "AG09" and op_kind(op) == STATUS_QUERY)


def latency_ms(op: Mapping[str, Any]) -> float:
    """The recorded latency, else complete - invoke. KeyError/TypeError when neither is usable."""
    lat = op.get("latency_ms")
    if lat is None:
        lat = (op["complete"] - op["invoke"]) * 1000.0
    return float(lat)


def is_available(op: Mapping[str, Any], slo_ms: float) -> bool:
    """Definitive within the latency SLO: the one definition every reader uses."""
    return is_definitive(op) and latency_ms(op) <= slo_ms


def read_jsonl(
    path: str | Path, check: Callable[[Mapping[str, Any]], str | None] | None = None
) -> list[dict[str, Any]]:
    """Every object of a run-directory JSONL file; a bad line raises RunFileError naming file and line."""
    return list(iter_jsonl(path, check))


class JsonlAppender:
    """Appends objects to a run-directory JSONL file, opened on the first line and flushed per line
    (a killed harness keeps what it wrote); safe to share between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: IO[bytes] | None = None
        self._lock = threading.Lock()

    def append(self, line: Mapping[str, Any]) -> None:
        with self._lock:
            if self._out is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._out = self.path.open("ab")
            self._out.write(orjson.dumps(line) + b"\n")
            self._out.flush()

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None


def iter_jsonl(
    path: str | Path, check: Callable[[Mapping[str, Any]], str | None] | None = None
) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise RunFileError(
                    f"{path}:{lineno}: not valid JSON ({exc})",
                    fix="each line must be one JSON object (see docs/run-directory.md)",
                ) from None
            if not isinstance(row, dict):
                raise RunFileError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            problem = check(row) if check else None
            if problem:
                raise RunFileError(f"{path}:{lineno}: {problem}")
            yield row


def read_history(path: str | Path) -> list[Op]:
    """The operations of a history.jsonl."""
    return read_jsonl(path)  # type: ignore[return-value]


def encode(op: Op) -> bytes:
    """One history line (with its newline), as every writer writes it."""
    return orjson.dumps(op) + b"\n"
