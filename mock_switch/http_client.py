"""A small HTTP/1.1 client with keep-alive pools, for the services' calls to each other.

The services only ever call each other (through Toxiproxy) with one small JSON request and read one
small answer; aiohttp's client spends about 90 us of CPU per such call on machinery they do not use
(cookies, redirects, auto headers, tracing, compression), a large share of a payment's cost. This
client writes the request in one `write()` and parses the answer's status line, Content-Length and
body; connections are kept alive and reused, last used first.

Failures are told apart the way `peer.Reply` needs them:
- `NotSent`: the connection could not be made, so nothing was sent;
- `Disconnected`: the connection broke (reset, closed early, an answer it cannot read) after the
  request may have been sent: its effect is unknown;
- a timeout (`timeout_s`, or the caller's own `asyncio.timeout`) ends the exchange with
  `TimeoutError`: the connection is closed, never reused (its answer may still arrive).

`timeout_s` is one timer on the loop that fails the waiting answer, not `asyncio.timeout` (a
context manager, a handle and a task cancellation per call, about 10 us of CPU per call measured
by cProfile); `asyncio.timeout` bounds only the connect, when a new connection is needed.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from typing import cast

MAX_HEAD = 64 * 1024  # bytes of status line and headers


class NotSent(Exception):
    """Connecting failed: the request certainly did not leave."""


class Disconnected(Exception):
    """The connection broke, or the answer could not be read, after the request may have left."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()  # asked once: each ask costs a getpid() system call
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self._head: tuple[int, int | None, bool] | None = None  # status, content length, keep alive

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted any more
            return
        self._buf += data
        try:
            self._parse()
        except (ValueError, IndexError) as exc:
            self._fail(Disconnected(f"unreadable answer: {exc}"))

    def eof_received(self) -> bool:
        self.closed = True
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._head is not None and self._head[1] is None:  # no length: the body ends here
                self._waiter.set_result((self._head[0], bytes(self._buf), False))
            else:
                self._fail(Disconnected(f"connection closed before the answer was complete ({exc or 'EOF'})"))

    # -- exchange -----------------------------------------------------------------------------

    async def exchange(self, request: bytes, deadline: float | None = None) -> tuple[int, bytes, bool]:
        """Send `request`; the answer's (status, body, reusable). At `deadline` (loop time) the
        exchange fails with TimeoutError and the connection is closed."""
        assert self.transport is not None
        loop = self.loop
        waiter: asyncio.Future[tuple[int, bytes, bool]] = loop.create_future()
        self._waiter = waiter
        self._buf.clear()
        self._head = None
        self.transport.write(request)
        if deadline is None:
            return await waiter
        timer = loop.call_at(deadline, self._fail, TimeoutError())
        try:
            return await waiter
        finally:
            timer.cancel()

    def _parse(self) -> None:
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    raise ValueError("status line and headers too long")
                return
            lines = bytes(self._buf[:end]).split(b"\r\n")
            del self._buf[: end + 4]
            version, _, rest = lines[0].partition(b" ")
            status = int(rest[:3])
            length: int | None = None
            keep_alive = version == b"HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    raise ValueError("chunked answers are not read by this client")
                elif name == b"connection":
                    token = value.strip().lower()
                    keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
            if length is None:
                length = 0 if status in (204, 304) or 100 <= status < 200 else None
            self._head = (status, length, keep_alive and length is not None)
        status, length, keep_alive = self._head
        if length is not None and len(self._buf) >= length:
            body = bytes(self._buf[:length])
            reusable = keep_alive and len(self._buf) == length
            assert self._waiter is not None
            self._waiter.set_result((status, body, reusable))

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """Keep-alive connections per (host, port), the most recently used first."""

    def __init__(self, keepalive_s: float = 30.0, max_idle: int = 512) -> None:
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def request(
        self, method: str, host: str, port: int, path: str, body: bytes | None = None,
        headers: Mapping[str, str] | None = None, timeout_s: float | None = None,
    ) -> tuple[int, bytes]:  # fmt: skip
        """One exchange: (HTTP status, body); TimeoutError after `timeout_s` (connecting included).
        Without `timeout_s`, bound it with the caller's `asyncio.timeout`."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        if headers:
            head += "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        request = (head + "\r\n").encode("latin-1") + (body or b"")
        conn = self._idle_connection((host, port))
        loop = conn.loop if conn is not None else asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        if conn is None:
            async with asyncio.timeout_at(deadline):
                conn = await self._connect(host, port)
        try:
            status, answer, reusable = await conn.exchange(request, deadline)
        except BaseException:  # broken, timed out or cancelled: its answer may still come; never reuse
            conn.close()
            raise
        if reusable and not conn.closed:
            self._release((host, port), conn)
        else:
            conn.close()
        return status, answer

    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            usable = not conn.closed and conn.transport is not None and not conn.transport.is_closing()
            if usable and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(_Connection, host, port)
        except OSError as exc:
            raise NotSent(f"cannot connect to {host}:{port}: {exc}") from exc
        return conn

    def _release(self, key: tuple[str, int], conn: _Connection) -> None:
        pool = self._idle.setdefault(key, [])
        if self._closed or len(pool) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    def close(self) -> None:
        self._closed = True
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
