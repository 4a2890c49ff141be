"""A closed-loop asyncio payment driver straight at the banks (no Locust, no proxy).

Used where the question is "how fast / how durable is the system itself": `make demo`'s burst,
the switch throughput benchmark and the crash tests. Chaos scenarios drive load with Locust.
Bounded in time and in count.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from harness.checkers.availability import percentile
from mock_switch.config import SystemConfig, account_number


@dataclass(frozen=True, slots=True)
class Outcome:
    payment_id: str
    payer_bank: str
    payee_bank: str
    amount: int
    invoked: float
    completed: float
    http_status: int | None
    status: str | None  # ACSC | RJCT | PDNG | None (no answer)
    reason: str | None
    error: str | None

    @property
    def outcome(self) -> str:
        """ok (ACSC), fail (definitive RJCT) or unknown (anything else)."""
        if self.status == "ACSC":
            return "ok"
        if self.status == "RJCT":
            return "fail"
        return "unknown"

    @property
    def latency_ms(self) -> float:
        return (self.completed - self.invoked) * 1000


class Customers:
    """Draws realistic payments from the system's deterministic customer base."""

    def __init__(self, system: SystemConfig, seed: int = 1, unknown_account_ratio: float = 0.01) -> None:
        self.system = system
        self.rng = random.Random(seed)
        self.unknown_ratio = unknown_account_ratio
        self.codes = [b.code for b in system.banks]

    def draw(self, payment_id: str) -> dict[str, Any]:
        rng = self.rng
        payer_i = rng.randrange(len(self.codes))
        payee_i = rng.choice([i for i in range(len(self.codes)) if i != payer_i])
        payer, payee = self.system.banks[payer_i], self.system.banks[payee_i]
        payee_acct = rng.randrange(payee.accounts)
        if rng.random() < self.unknown_ratio:
            payee_acct = payee.accounts + rng.randrange(1000)  # AC01 at the payee
        return {
            "payment_id": payment_id,
            "debtor_account": account_number(payer_i, rng.randrange(payer.accounts)),
            "creditor_bank": payee.code,
            "creditor_account": account_number(payee_i, payee_acct),
            "amount": rng.randrange(100, 20_000),
            "currency": self.system.currency,
        }


async def drive(
    system: SystemConfig,
    bank_urls: dict[str, str],
    seconds: float,
    concurrency: int = 64,
    max_payments: int = 1_000_000,
    seed: int = 1,
    prefix: str = "pay",
    timeout_s: float = 10.0,
) -> list[Outcome]:
    """Run `concurrency` customers paying back to back until `seconds` or `max_payments`."""
    customers = Customers(system, seed)
    codes = {account_number(i, 0)[:2]: b.code for i, b in enumerate(system.banks)}
    results: list[Outcome] = []
    seq = iter(range(max_payments))
    stop_at = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def customer() -> None:
            for n in seq:
                if time.monotonic() >= stop_at:
                    return
                body = customers.draw(f"{prefix}-{n:07d}")
                payer = codes[body["debtor_account"][:2]]
                invoked = time.time()
                http = status = reason = error = None
                try:
                    async with session.post(
                        bank_urls[payer] + "/payments",
                        data=orjson.dumps(body),
                        headers={"Content-Type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=timeout_s),
                    ) as resp:
                        http = resp.status
                        answer = orjson.loads(await resp.read())
                        status, reason = answer.get("status"), answer.get("reason")
                except TimeoutError:
                    error = "timeout"
                except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
                    error = type(exc).__name__
                results.append(
                    Outcome(
                        body["payment_id"], payer, body["creditor_bank"], body["amount"],
                        invoked, time.time(), http, status, reason, error,
                    )
                )  # fmt: skip

        await asyncio.gather(*(customer() for _ in range(concurrency)))
    return results


def summarise(results: list[Outcome], seconds: float) -> dict[str, Any]:
    lat = sorted(r.latency_ms for r in results)
    return {
        "payments": len(results),
        "payments_per_s": len(results) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) or float("nan"),
        "p99_ms": percentile(lat, 0.99) or float("nan"),
        "outcomes": dict(Counter(r.outcome for r in results)),
        "reasons": dict(Counter(r.reason or r.error or r.status for r in results if r.outcome != "ok")),
    }
