"""Calls to another service over one link, with every outcome classified.

A call either gets a definitive answer (ACSC/ACCP/RJCT) or its outcome is unknown. Unknown is the
dangerous case: the request may or may not have taken effect. Only a refused connection proves
the request never left, because nothing was sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from mock_switch.codes import Reason, Status

DEFINITIVE = frozenset({Status.ACSC, Status.ACCP, Status.RJCT})


@dataclass(frozen=True, slots=True)
class Reply:
    status: Status | None = None  # None: no usable answer
    reason: Reason | None = None
    http_status: int | None = None
    error: str | None = None  # timeout | refused | disconnected | http-5xx | bad-body
    body: Any = None

    @property
    def definitive(self) -> bool:
        return self.status in DEFINITIVE

    @property
    def never_sent(self) -> bool:
        """True only when the request certainly did not reach the peer."""
        return self.error == "refused"


class Peer:
    """One outbound link (e.g. switch->BNKB), addressed by a configurable base URL."""

    def __init__(self, name: str, base_url: str, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        timeout_s: float,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = orjson.dumps(body) if body is not None else None
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        if headers:
            hdrs.update(headers)
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                data=data,
                headers=hdrs,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                raw = await resp.read()
                http = resp.status
        except TimeoutError:
            return Reply(error="timeout")
        except aiohttp.ClientConnectorError:
            return Reply(error="refused")
        except (aiohttp.ClientError, OSError):
            return Reply(error="disconnected")
        return _classify(http, raw)


def _classify(http: int, raw: bytes) -> Reply:
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if http >= 500 and not (isinstance(body, dict) and "status" in body):
        return Reply(http_status=http, error=f"http-{http}", body=body)
    if not isinstance(body, dict) or "status" not in body:
        # Not a payment answer (e.g. directory lookups): hand the body to the caller as is.
        return Reply(http_status=http, error=None if http < 400 else f"http-{http}", body=body)
    try:
        status = Status(body["status"])
        reason = Reason(body["reason"]) if body.get("reason") else None
    except ValueError:
        return Reply(http_status=http, error="bad-body", body=body)
    return Reply(status=status, reason=reason, http_status=http, body=body)


async def resolve(query: Any, delays: Any, attempts: int | None = None) -> Reply:
    """Ask `query()` until it gives a definitive answer, sleeping the policy's delays between.

    Robust mode uses this for unknown outcomes: it never guesses, it asks until it knows.
    """
    reply = Reply(error="not-asked")
    for n, delay in enumerate(delays):
        reply = await query()
        if reply.definitive or (attempts is not None and n + 1 >= attempts):
            return reply  # type: ignore[no-any-return]
        await asyncio.sleep(delay)
    return reply
