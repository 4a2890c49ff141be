"""Small helpers shared by the tests: JSON over HTTP and waiting on a condition with a deadline."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def call(method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 15) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    return call("POST", url, body, raw)


def get(url: str) -> tuple[int, Any]:
    return call("GET", url)


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy, or fail naming what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def payment(pid: str, debtor: str = "0100000001", creditor_bank: str = "BNKB", creditor: str = "0200000003",
            amount: int = 1_500) -> dict[str, Any]:  # fmt: skip
    return {
        "payment_id": pid,
        "debtor_account": debtor,
        "creditor_bank": creditor_bank,
        "creditor_account": creditor,
        "amount": amount,
        "currency": "NGN",
    }
