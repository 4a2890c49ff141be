"""CPU per service-to-service call of the mock services' own HTTP code: one process, one uvloop,
`mock_switch.peer.Peer` -> `HttpClient` -> loopback -> `HttpServer` -> a handler that answers at
once. No ledger, no Toxiproxy, no other process: what it measures is the request path alone
(client and server, JSON, timers, the kernel's loopback), so two versions of that code can be
compared on a busy machine where `cpu_per_payment.py` cannot tell a few per cent apart.

Each round is the two calls a payment makes over a link: a POST of a credit-sized body with
X-Deadline-Ms, and a GET like a name enquiry. The figure is process CPU (user + system) per round.
Alternate two versions' runs (`PYTHONPATH=...`) and compare their minimums.

Prints, on its last line: rounds=<n> cpu_us_per_round=<a>
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
import uvloop

from mock_switch.api import error_response
from mock_switch.http_client import HttpClient
from mock_switch.http_server import HttpServer, Request, Response, Router
from mock_switch.peer import Peer

CREDIT = {
    "payment_id": "b-123456-000789",
    "debtor_bank": "BNKA",
    "debtor_account": "0100000001",
    "creditor_account": "0200000002",
    "amount": 1500,
    "currency": "NGN",
}
ANSWER = b'{"payment_id":"b-123456-000789","status":"ACCP"}'


async def _answer(request: Request) -> Response:
    return Response(ANSWER)


async def run(rounds: int, warmup: int) -> float:
    router = Router()
    router.add_post("/credits", _answer)
    router.add_get("/parties/{party_id}", _answer)
    server = HttpServer(router, lambda request, exc: error_response(500, str(exc)), 64 * 1024)
    await server.start("127.0.0.1", 0)
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    client = HttpClient()
    peer = Peer("bench->self", f"http://127.0.0.1:{port}", client)

    async def one_round() -> None:
        credit = await peer.call("POST", "/credits", 5.0, CREDIT, {"X-Deadline-Ms": "5000"})
        party = await peer.call("GET", "/parties/0200000002", 5.0)
        assert credit.http_status == 200 and party.http_status == 200, (credit, party)

    for _ in range(warmup):
        await one_round()
    started = time.process_time()
    for _ in range(rounds):
        await one_round()
    used = time.process_time() - started
    client.close()
    await server.close(grace_s=0.1)
    return used / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8000, help="rounds measured (a POST and a GET each)")
    parser.add_argument("--warmup", type=int, default=500, help="rounds before measuring starts")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be at least 1 and --warmup at least 0")
    uvloop.install()
    per_round = asyncio.run(run(args.rounds, args.warmup))
    print(orjson.dumps({"rounds": args.rounds, "cpu_us_per_round": round(per_round, 1)}).decode())
    print(f"rounds={args.rounds} cpu_us_per_round={per_round:.1f}")


if __name__ == "__main__":
    main()
