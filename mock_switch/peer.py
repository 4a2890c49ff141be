"""Calls to another service over one link, with every outcome classified.

A call either gets a definitive answer (ACSC/ACCP/RJCT) or its outcome is unknown. Unknown is the
dangerous case: the request may or may not have taken effect. Only a refused connection proves
the request never left, because nothing was sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from mock_switch.codes import Reason, Status
from mock_switch.http_client import Disconnected, HttpClient, NotSent

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

    def __init__(self, name: str, base_url: str, client: HttpClient) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        url = urlsplit(self.base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"{name}: {base_url!r} must look like http://HOST:PORT")
        self.host, self.port, self.prefix = url.hostname, url.port or 80, url.path
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        timeout_s: float,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        answer = await self.exchange(method, path, timeout_s, body, headers)
        return Reply(error=answer) if isinstance(answer, str) else classify(*answer)

    async def exchange(
        self,
        method: str,
        path: str,
        timeout_s: float,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes] | str:
        """The raw answer (HTTP status, body bytes), or why there is none (a `Reply.error`)."""
        data = orjson.dumps(body) if body is not None else None
        try:
            return await self.client.request(
                method, self.host, self.port, self.prefix + path, data, headers, timeout_s=timeout_s
            )
        except TimeoutError:
            return "timeout"
        except NotSent:
            return "refused"
        except (Disconnected, OSError):
            return "disconnected"


def classify(http: int, raw: bytes) -> Reply:
    """What an answer (HTTP status, body bytes) says."""
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
