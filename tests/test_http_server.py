"""The services' HTTP server (mock_switch/http_server.py) over real sockets, in this process: keep-alive,
pipelining in order, Connection: close, HEAD, the refusals it decides (404, 405 with Allow, 411, 413,
400, 431) through the error hook, handlers that outlive their client, and the graceful close.
No test races a clock: every wait is on an event or on bytes, bounded by a generous timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from mock_switch.http_server import HttpError, HttpServer, Request, Response, Router

T = 10.0  # bound on every wait; nothing here should come near it


class App:
    """A router with a few handlers that record what they saw."""

    def __init__(self) -> None:
        self.router = Router()
        self.seen: list[str] = []
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()
        self.finished = asyncio.Event()
        self.router.add_get("/things", self.things)
        self.router.add_post("/things", self.echo)
        self.router.add_get("/things/{thing_id}", self.thing)
        self.router.add_post("/things/close", self.echo)
        self.router.add_get("/slow/{n}", self.slow)
        self.router.add_get("/held", self.held)
        self.router.add_get("/boom", self.boom)

    async def _track(self, what: str, work: Awaitable[None] | None = None) -> None:
        self.seen.append(what)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if work is not None:
                await work
        finally:
            self.running -= 1

    async def things(self, request: Request) -> Response:
        await self._track("things")
        return Response(orjson.dumps({"things": request.query_all("x")}))

    async def echo(self, request: Request) -> Response:
        await self._track("echo " + request.path)
        return Response(orjson.dumps({"body": (await request.read()).decode(), "type": request.content_type}))

    async def thing(self, request: Request) -> Response:
        await self._track("thing")
        return Response(orjson.dumps({"thing_id": request.match_info["thing_id"]}))

    async def slow(self, request: Request) -> Response:
        n = int(request.match_info["n"])
        # Yield to the loop n times: a server that ran requests side by side would finish them out of order.
        await self._track(f"slow {n}", _spin(n))
        return Response(orjson.dumps({"n": n}))

    async def held(self, request: Request) -> Response:
        await self._track("held", self.release.wait())
        self.finished.set()
        return Response(b'{"held":true}')

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("boom")


async def _spin(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def on_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, HttpError) else 500
    resp = Response(orjson.dumps({"error": str(exc), "path": request.path}), status)
    if isinstance(exc, HttpError):
        resp.headers.update(exc.headers)
    return resp


async def read_answer(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), lines[0]  # stray bytes before it would be a framing bug
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    length = int(headers.get("content-length", "0"))
    body = b"" if head_only or status == 100 else await asyncio.wait_for(reader.readexactly(length), T)
    return status, headers, body


async def closed(reader: asyncio.StreamReader) -> bool:
    """True once the server has closed the connection (EOF, or a reset), without racing a clock."""
    try:
        return await asyncio.wait_for(reader.read(1), T) == b""
    except ConnectionResetError:
        return True


def run(test: Callable[[App, HttpServer, int], Awaitable[Any]], max_body: int = 1024) -> Any:
    async def main() -> Any:
        app = App()
        server = HttpServer(app.router, on_error, max_body)
        await server.start("127.0.0.1", 0)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(test(app, server, port), 3 * T)
        finally:
            await server.close(grace_s=1.0)

    return asyncio.run(main())


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):
            writer.write(post("/things", f'{{"i":{i}}}'.encode()))
            status, headers, body = await read_answer(reader)
            assert status == 200 and orjson.loads(body) == {"body": f'{{"i":{i}}}', "type": "application/json"}
            assert "connection" not in headers and headers["content-type"] == "application/json"
        assert len(server.connections) == 1
        writer.close()

    run(test)


def test_pipelined_requests_are_answered_one_at_a_time_in_order() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The first takes longest: run side by side, it would finish last.
        writer.write(get("/slow/50") + get("/slow/5") + get("/things?x=1&x=2") + get("/slow/0"))
        answers = [orjson.loads((await read_answer(reader))[2]) for _ in range(4)]
        assert answers == [{"n": 50}, {"n": 5}, {"things": ["1", "2"]}, {"n": 0}]
        assert app.most_running == 1
        writer.close()

    run(test)


def test_a_deep_pipeline_is_read_in_bounded_steps_and_all_answered() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(get(f"/things/{i}") for i in range(200)))
        ids = [orjson.loads((await read_answer(reader))[2])["thing_id"] for _ in range(200)]
        assert ids == [str(i) for i in range(200)]
        writer.close()

    run(test)


def test_connection_close_and_http_1_0_end_the_connection_after_the_answer() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        for request in (get("/things", "Connection: close\r\n"), b"GET /things HTTP/1.0\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, _ = await read_answer(reader)
            assert status == 200 and headers["connection"] == "close"
            assert await closed(reader)
            writer.close()
        # HTTP/1.0 may ask to keep the connection.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /things HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert (await read_answer(reader))[1]["connection"] == "keep-alive"
        writer.close()

    run(test)


def test_head_is_get_without_the_body() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /things/abc HTTP/1.1\r\nHost: x\r\n\r\n" + get("/things/def"))
        status, headers, _ = await read_answer(reader, head_only=True)
        assert status == 200 and headers["content-length"] == str(len(b'{"thing_id":"abc"}'))
        # The next answer starts right after the head: no body bytes were sent for HEAD.
        assert orjson.loads((await read_answer(reader))[2]) == {"thing_id": "def"}
        writer.close()

    run(test)


def test_routing_404_405_with_allow_and_percent_decoded_parameters() -> None:
    async def test(app: App, server: HttpServer, port: int) -> list[Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out = []
        for request in (get("/nowhere"), b"DELETE /things HTTP/1.1\r\n\r\n", post("/things/abc", b"{}"),
                        get("/things/a%2Fb"), get("/things/%2B234"), get("/things/"), post("/things/close", b"{}"),
                        get("/things/close"), get("/boom")):  # fmt: skip
            writer.write(request)
            status, headers, body = await read_answer(reader)
            out.append((status, headers.get("allow"), orjson.loads(body)))
        writer.close()
        return out

    nowhere, delete, post_thing, slash, plus, empty, close_post, close_get, boom = run(test)
    assert nowhere[:2] == (404, None) and nowhere[2]["path"] == "/nowhere"
    assert delete[:2] == (405, "GET, HEAD, POST")
    assert post_thing[:2] == (405, "GET, HEAD")
    assert slash[2] == {"thing_id": "a/b"}  # one segment, decoded: it never walks to another route
    assert plus[2] == {"thing_id": "+234"}
    assert empty[0] == 404  # a parameter is never empty
    assert close_post[2]["body"] == "{}" and close_get[2] == {"thing_id": "close"}
    assert boom[0] == 500 and boom[2]["error"] == "boom"


def test_a_body_over_the_limit_is_413_and_the_connection_still_serves() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/things", b"x" * 5000) + get("/things/after"))
        status, _, body = await read_answer(reader)
        assert status == 413 and b"over 1024 bytes" in body
        assert orjson.loads((await read_answer(reader))[2]) == {"thing_id": "after"}
        assert "echo /things" not in app.seen
        writer.close()

    run(test)


def test_a_huge_body_is_refused_unread_and_the_answer_arrives_before_the_close() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/things", b"x" * 3_000_000))  # more than the server drops unread
        status, headers, _ = await read_answer(reader)
        assert status == 413 and headers["connection"] == "close"
        assert await closed(reader)
        writer.close()

    run(test)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /things HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
        (b"GET /things HTTP/2.0\r\n\r\n", 400),
        (b"GET  /things HTTP/1.1\r\n\r\n", 400),
        (b"GET things HTTP/1.1\r\n\r\n", 400),
        (b"GET /things HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /things HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"POST /things HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
        (b"POST /things HTTP/1.1\r\nContent-Length: -2\r\n\r\n{}", 400),
        (b"GET /th\x01ings HTTP/1.1\r\n\r\n", 400),
        (b"GET /things HTTP/1.1\r\nX-Big: " + b"y" * 40_000 + b"\r\n\r\n", 431),
        (b"GET /things HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_an_unreadable_request_is_refused_through_the_hook_and_the_connection_closed(
    request_bytes: bytes, status: int
) -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/things/first") + request_bytes + get("/things/never"))
        assert orjson.loads((await read_answer(reader))[2]) == {"thing_id": "first"}  # what came before is served
        code, headers, body = await read_answer(reader)
        assert (code, headers["connection"]) == (status, "close") and orjson.loads(body)["error"]
        assert await closed(reader)
        assert app.seen == ["thing"]  # nothing after the bad request ran
        writer.close()

    run(test)


def test_expect_100_continue_is_answered_before_the_body() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post("/things", b"", "Expect: 100-continue\r\n").replace(b"Length: 0", b"Length: 2"))
        assert (await read_answer(reader))[0] == 100
        writer.write(b"{}")
        assert (await read_answer(reader))[0] == 200
        writer.close()

    run(test)


def test_a_handler_outlives_its_client_and_a_close_waits_for_busy_connections() -> None:
    async def test(app: App, server: HttpServer, port: int) -> None:
        # A client hangs up while its handler is held: the handler is not cancelled.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/held"))
        while "held" not in app.seen:
            await asyncio.sleep(0.01)
        writer.close()
        await closed(reader)
        app.release.set()
        await asyncio.wait_for(app.finished.wait(), T)

        # A close: idle connections end at once, a busy one gets its answer (with Connection: close).
        app.release.clear()
        app.finished.clear()
        app.seen.clear()
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", port)
        busy_writer.write(get("/held"))
        while "held" not in app.seen:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(server.close(grace_s=T))
        assert await closed(idle_reader)
        with pytest.raises(OSError):  # no longer listening
            await asyncio.open_connection("127.0.0.1", port)
        app.release.set()
        status, headers, _ = await read_answer(busy_reader)
        assert status == 200 and headers["connection"] == "close"
        assert await closed(busy_reader)
        await closing
        idle_writer.close()
        busy_writer.close()

    run(test)
