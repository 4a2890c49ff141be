"""The services' HTTP client (mock_switch/http_client.py) through mock_switch.peer.Peer: answers,
keep-alive reuse, and each failure classified as the payment logic needs it (refused = never sent)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from harness.procs import free_port
from mock_switch.codes import Status
from mock_switch.http_client import HttpClient
from mock_switch.peer import Peer, Reply

ANSWER = b'{"payment_id":"p1","status":"ACCP"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


@dataclass
class Server:
    """A raw HTTP server whose `answer` decides what each request gets (bytes, then close or not)."""

    answer: Callable[[int], Awaitable[tuple[bytes, bool]]]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                data, close = await self.answer(len(self.requests))
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def calls(server: Server | None, *requests: tuple[str, float]) -> list[Reply]:
    """Make the requests (method, timeout) one after the other through one Peer."""

    async def main() -> list[Reply]:
        port = free_port()
        listening = await asyncio.start_server(server.handle, "127.0.0.1", port) if server else None
        client = HttpClient()
        peer = Peer("test->peer", f"http://127.0.0.1:{port}", client)
        replies = []
        for method, timeout in requests:
            body = {"payment_id": "p1"} if method == "POST" else None
            replies.append(await peer.call(method, "/credits", timeout, body, {"X-Deadline-Ms": "100"}))
        client.close()
        if listening is not None:
            listening.close()
        return replies

    return asyncio.run(main())


def test_answers_are_read_and_the_connection_is_reused() -> None:
    async def ok(_n: int) -> tuple[bytes, bool]:
        return OK, False

    server = Server(ok)
    replies = calls(server, ("POST", 5.0), ("GET", 5.0), ("POST", 5.0))
    assert [r.status for r in replies] == [Status.ACCP] * 3
    assert server.connections == 1
    post = server.requests[0]
    assert post.startswith(b"POST /credits HTTP/1.1\r\n")
    assert b"Content-Type: application/json\r\n" in post and b"X-Deadline-Ms: 100\r\n" in post
    assert post.endswith(b'\r\n\r\n{"payment_id":"p1"}')
    assert b"Content-Length" not in server.requests[1]


def test_an_answer_in_pieces_is_assembled() -> None:
    async def sliced(_n: int) -> tuple[bytes, bool]:
        return OK, False

    class Slicing(Server):
        async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(len(b'{"payment_id":"p1"}'))
            for i in range(0, len(OK), 7):  # like Toxiproxy's slicer toxic
                writer.write(OK[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)
            writer.close()

    assert calls(Slicing(sliced), ("POST", 5.0))[0].status is Status.ACCP


def test_connection_close_is_honoured() -> None:
    async def closing(_n: int) -> tuple[bytes, bool]:
        return OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1), True

    server = Server(closing)
    assert [r.status for r in calls(server, ("POST", 5.0), ("POST", 5.0))] == [Status.ACCP] * 2
    assert server.connections == 2


def test_refused_means_never_sent() -> None:
    reply = calls(None, ("POST", 5.0))[0]
    assert reply.error == "refused" and reply.never_sent


def test_a_connection_closed_mid_answer_is_disconnected_not_refused() -> None:
    async def cut(_n: int) -> tuple[bytes, bool]:
        return OK[: len(OK) - 5], True

    reply = calls(Server(cut), ("POST", 5.0))[0]
    assert reply.error == "disconnected" and not reply.never_sent


def test_no_answer_is_a_timeout_and_the_connection_is_not_reused() -> None:
    async def silent_then_ok(n: int) -> tuple[bytes, bool]:
        if n == 1:
            await asyncio.sleep(3600)  # cancelled when the client hangs up
        return OK, False

    server = Server(silent_then_ok)
    replies = calls(server, ("POST", 0.2), ("POST", 5.0))
    assert replies[0].error == "timeout"
    assert replies[1].status is Status.ACCP
    assert server.connections == 2  # the timed-out connection was closed, not reused


def test_an_unreadable_answer_is_disconnected() -> None:
    async def garbage(_n: int) -> tuple[bytes, bool]:
        return b"HTTP/1.1 2xx\r\n\r\n", True

    assert calls(Server(garbage), ("POST", 5.0))[0].error == "disconnected"


def test_exchange_hands_over_the_answer_bytes_as_they_came() -> None:
    """The name enquiry forwards the switch's answer without decoding it: Peer.exchange gives the
    raw status and body, and the reason there is none as the Reply error word."""
    odd = b'{"bank": "BNKB",  "name":"A\\u00e9"}'  # spacing and escapes a re-encoding would change

    async def main() -> tuple[object, object]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(odd), odd))
            await writer.drain()
            writer.close()

        port = free_port()
        listening = await asyncio.start_server(handle, "127.0.0.1", port)
        client = HttpClient()
        first = await Peer("test->peer", f"http://127.0.0.1:{port}", client).exchange("GET", "/parties/x", 5.0)
        listening.close()
        refused = await Peer("test->none", f"http://127.0.0.1:{free_port()}", client).exchange("GET", "/", 5.0)
        client.close()
        return first, refused

    first, refused = asyncio.run(main())
    assert first == (404, odd)
    assert refused == "refused"


async def silent_server() -> tuple[asyncio.Server, int]:
    """A server on loopback that reads a request's head and never answers; and its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(3600)

    port = free_port()
    return await asyncio.start_server(handle, "127.0.0.1", port), port


def test_without_timeout_s_the_callers_asyncio_timeout_bounds_the_exchange() -> None:
    async def main() -> int:
        listening, port = await silent_server()
        client = HttpClient()
        try:
            async with asyncio.timeout(0.2):
                await client.request("GET", "127.0.0.1", port, "/slow")
        except TimeoutError:
            pass
        else:
            raise AssertionError("no timeout")
        idle = sum(len(pool) for pool in client._idle.values())
        client.close()
        listening.close()
        return idle

    assert asyncio.run(main()) == 0  # the timed-out connection is not kept for reuse


def test_timeout_s_ends_a_silent_exchange_with_timeout_error() -> None:
    async def main() -> tuple[float, int]:
        listening, port = await silent_server()
        client = HttpClient()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await client.request("GET", "127.0.0.1", port, "/slow", timeout_s=0.2)
        except TimeoutError:
            waited = loop.time() - started
        else:
            raise AssertionError("no timeout")
        idle = sum(len(pool) for pool in client._idle.values())
        client.close()
        listening.close()
        return waited, idle

    waited, idle = asyncio.run(main())
    assert waited >= 0.2 and idle == 0  # no earlier than asked; the connection is not reused
