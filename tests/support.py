"""Small helpers shared by the tests: JSON over HTTP and waiting on a condition with a deadline."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def call(
    method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 15,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:  # fmt: skip
    status, _, answer = exchange(method, url, body, raw, timeout, headers)
    return status, answer


def exchange(
    method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 15,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:  # fmt: skip
    """(status, response headers, JSON body); `headers` replace the default JSON Content-Type."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json"} if headers is None else headers
    req = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


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
