"""The history: one `Op` per customer operation, and the one rule of what counts as available.

`history.jsonl` holds one JSON object per line (docs/run-directory.md); the Locust customers write
it, the availability checker, the report, the live panel and the bulkhead figure read it, and all of
them judge an operation with `is_available` (DESIGN.md section 5):

- *definitive*: the customer got ACSC, or a reject that is the customer's or the request's doing
  (BUSINESS_REASONS): the system answered correctly, so it was available;
- everything else spends error budget: technical rejects (AB05/AB06 timeouts, AB08 offline, AG09
  "not received" after an unknown), PDNG, 5xx, timeouts, connection errors;
- *available*: definitive within the latency SLO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from harness.errors import RunFileError

Outcome = Literal["ok", "fail", "unknown"]

# Definitive rejects that are the customer's or the request's fault, not the system's. DUPL (same
# payment id, other body) and FF01 (malformed request) are the switch doing its job correctly.
BUSINESS_REASONS = frozenset({"AM04", "AM23", "AC01", "AC06", "DUPL", "FF01"})


class Op(TypedDict):
    """One line of history.jsonl: an operation as the customer saw it."""

    op: NotRequired[str]  # "payment" (the default) or "status_query"
    id: str
    payer: str
    payee: str
    amount: int
    invoke: float  # epoch seconds: request sent
    complete: float  # epoch seconds: answer received, or given up
    outcome: Outcome
    status: str | None
    reason: str | None
    http: int | None
    error: str | None  # timeout | connection | http-5xx ... when there was no definitive answer
    latency_ms: NotRequired[float]


def is_payment(op: Mapping[str, Any]) -> bool:
    """A customer payment (status queries follow up an unknown payment; they are not payments)."""
    return bool(op.get("op", "payment") == "payment")


def is_business_reject(reason: str | None) -> bool:
    return reason is not None and reason in BUSINESS_REASONS


def is_definitive(op: Mapping[str, Any]) -> bool:
    """ACSC, or a business reject: the system answered and was right to."""
    outcome = op.get("outcome")
    return outcome == "ok" or (outcome == "fail" and op.get("reason") in BUSINESS_REASONS)


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
