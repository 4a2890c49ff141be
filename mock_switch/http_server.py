"""A small HTTP/1.1 server on asyncio, for the switch and the banks.

aiohttp's server spends about 77 us of CPU per request on machinery these services do not use
(middleware chains, multidicts, stream readers, access-log hooks, a task per request); a payment
crosses about five served requests. This server reads a request's head and its Content-Length body
from the connection's buffer, finds the handler in one routing table, and writes the answer in one
`write()`. What it does (and its tests check, tests/test_http_server.py):

- HTTP/1.1 keep-alive (HTTP/1.0 only with `Connection: keep-alive`), `Connection: close` honoured;
- bodies by Content-Length only: a `Transfer-Encoding` is refused with 411 and the connection closed;
  a body over `max_body` is answered 413 (read and dropped when not larger than `DISCARD_MAX`, so
  the connection stays usable; else the connection is closed without reading it);
- HEAD is GET without the body; 404 for an unknown path, 405 with `Allow` for a known path with
  another method (HEAD listed wherever GET is);
- pipelined requests are answered one after the other, in order; a client that pipelines more than
  `MAX_PIPELINE` requests is not read further until the answers are out;
- `Expect: 100-continue` answered before the body is read;
- a malformed request head, or one over `MAX_HEAD` bytes, is answered (400, 431) and the
  connection closed; every such refusal passes through the service's error hook, so it carries
  the services' answer body;
- handlers are never cancelled when the client hangs up (their work may move money);
- `close()` stops listening and ends idle connections; busy ones end after their answer,
  within the grace period, then everything left is aborted.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast
from urllib.parse import parse_qsl, unquote

MAX_HEAD = 32 * 1024  # bytes of request line and headers
MAX_HEADERS = 100
MAX_PIPELINE = 16  # requests read ahead of their answers
DISCARD_MAX = 1024 * 1024  # an oversized body up to this size is read and dropped; beyond, the connection closes
LINGER_S = 2.0  # after a refusal that closes the connection: how long unread input is drained

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(r"[0-9]{1,18}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # not allowed in a request target


class HttpError(Exception):
    """A refusal decided by the server or the router (404, 405, 411, 413, 400 ...), before or
    instead of a handler; the service's error hook turns it into an answer."""

    def __init__(self, status: int, message: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.reason = _REASONS.get(status, "Error")
        super().__init__(message or self.reason)
        self.message = message or self.reason
        self.headers = headers or {}


class Request:
    """One request: method, decoded path, query, headers (names lower-case), body, path parameters."""

    __slots__ = ("_headers", "_query", "body", "match_info", "method", "path", "query_string", "version")

    def __init__(self, method: str, path: str, query_string: str, version: str,
                 headers: dict[str, list[str]], body: bytes = b"") -> None:  # fmt: skip
        self.method = method
        self.path = path
        self.query_string = query_string
        self.version = version
        self._headers = headers
        self.body = body
        self.match_info: dict[str, str] = {}
        self._query: dict[str, list[str]] | None = None

    def header(self, name: str) -> str | None:
        values = self._headers.get(name.lower())
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return self._headers.get(name.lower(), [])

    def query_all(self, name: str) -> list[str]:
        if self._query is None:
            self._query = {}
            for key, value in parse_qsl(self.query_string, keep_blank_values=True, max_num_fields=200):
                self._query.setdefault(key, []).append(value)
        return self._query.get(name, [])

    @property
    def content_type(self) -> str:
        """The media type, lower case (`application/octet-stream` when none is given)."""
        raw = self.header("content-type")
        return raw.partition(";")[0].strip().lower() if raw else "application/octet-stream"

    @property
    def charset(self) -> str | None:
        raw = self.header("content-type") or ""
        for param in raw.split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset":
                return value.strip().strip('"')
        return None

    async def read(self) -> bytes:
        return self.body


class Response:
    """An answer: status, body, content type and any extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, body: bytes = b"", status: int = 200, content_type: str = "application/json") -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers: dict[str, str] = {}

    def set_status(self, status: int) -> None:
        self.status = status


Handler = Callable[[Request], Awaitable[Response]]
ErrorHook = Callable[[Request, Exception], Response]


class Router:
    """The one routing table: (method, path template) -> handler. `{name}` matches one non-empty
    path segment (percent-decoded into `match_info`); a GET route answers HEAD too. A route whose
    path has no parameter wins over one that has; otherwise the first registered wins."""

    def __init__(self) -> None:
        self._table: list[tuple[str, str, Handler]] = []
        self._static: dict[str, dict[str, Handler]] = {}
        self._dynamic: list[tuple[list[str], str, Handler]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        assert path.startswith("/"), path
        self._table.append((method, path, handler))
        if "{" in path:
            self._dynamic.append((path.split("/"), method, handler))
        else:
            self._static.setdefault(path, {})[method] = handler

    def add_get(self, path: str, handler: Handler) -> None:
        self.add("GET", path, handler)

    def add_post(self, path: str, handler: Handler) -> None:
        self.add("POST", path, handler)

    def routes(self) -> list[tuple[str, str]]:
        """(method, path template) of every route, in the order they were added."""
        return [(method, path) for method, path, _ in self._table]

    def resolve(self, method: str, raw_path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and path parameters, or HttpError 404 / 405 (with Allow)."""
        want = "GET" if method == "HEAD" else method
        segments = raw_path.split("/")
        if "%" in raw_path:
            segments = [unquote(s) if "%" in s else s for s in segments]
            path = "/".join(segments)  # a decoded '/' then falls in no template's segment
        else:
            path = raw_path
        allowed: set[str] = set()
        static = self._static.get(path)
        if static is not None:
            handler = static.get(want)
            if handler is not None:
                return handler, {}
            allowed.update(static)
        for template, m, handler in self._dynamic:
            if len(template) != len(segments):
                continue
            params: dict[str, str] = {}
            for t, s in zip(template, segments, strict=True):
                if t.startswith("{"):
                    if not s:
                        break
                    params[t[1:-1]] = s
                elif t != s:
                    break
            else:
                if m == want:
                    return handler, params
                allowed.add(m)
        if not allowed:
            raise HttpError(404)
        if "GET" in allowed:
            allowed.add("HEAD")
        raise HttpError(405, headers={"Allow": ", ".join(sorted(allowed))})


class _Date:
    """The Date header line and the blank line after it, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def line(cls) -> bytes:
        t = int(time.time())
        if t != cls.second:
            cls.second, cls.value = t, b"Date: " + formatdate(t, usegmt=True).encode() + b"\r\n\r\n"
        return cls.value


class _Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()  # asked once: each ask costs a getpid() system call
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._head: tuple[Request, int, bool] | None = None  # request awaiting its body, length, keep-alive
        self._queue: deque[tuple[Request, bool, HttpError | None]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # no more requests are read; close once the queue is answered
        self._paused = False
        self._discard = 0  # bytes of an oversized body still to drop
        self._lingering: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._closing = True
        self._queue.clear()  # nobody is left to answer; a running handler finishes on its own
        if self._lingering is not None:
            self._lingering.cancel()

    def eof_received(self) -> bool:
        self._closing = True
        # True: answer what was asked, then close; False: close now
        return self._task is not None or bool(self._queue)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # draining after a refusal: dropped
        if self._closing:
            return
        self._buf += data
        try:
            self._parse()
        except HttpError as exc:
            self._refuse(exc)
        if self._queue and self._task is None:
            self._task = self.loop.create_task(self._answer_all())
        if len(self._queue) >= MAX_PIPELINE and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    # -- reading ------------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        while not self._closing:
            if self._discard:
                dropped = min(self._discard, len(buf))
                del buf[:dropped]
                self._discard -= dropped
                if self._discard:
                    return
            if self._head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise HttpError(431, f"request line and headers over {MAX_HEAD} bytes")
                    return
                if end > MAX_HEAD:
                    raise HttpError(431, f"request line and headers over {MAX_HEAD} bytes")
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._head = self._read_head(head)
            request, length, keep_alive = self._head
            if length > self.server.max_body:
                self._head = None
                refusal = HttpError(413, f"body over {self.server.max_body} bytes")
                if length > DISCARD_MAX:
                    self._queue.append((request, False, refusal))
                    self._closing = True
                    return
                self._discard = length
                self._queue.append((request, keep_alive, refusal))
                continue
            if len(buf) < length:
                if (
                    (request.header("expect") or "").lower() == "100-continue"
                    and not buf
                    and self.transport is not None
                ):
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            if length:
                request.body = bytes(buf[:length])
                del buf[:length]
            self._head = None
            self._queue.append((request, keep_alive, None))
            if not keep_alive:
                self._closing = True

    def _read_head(self, head: bytes) -> tuple[Request, int, bool]:
        try:
            text = head.decode("latin-1")
            lines = text.split("\r\n")
            method, target, version = lines[0].split(" ")
        except ValueError:
            raise HttpError(400, "malformed request line") from None
        if version not in ("HTTP/1.1", "HTTP/1.0") or not _TOKEN.fullmatch(method) or not target.startswith("/"):
            raise HttpError(400, "malformed request line")
        if len(lines) > MAX_HEADERS + 1:
            raise HttpError(431, f"more than {MAX_HEADERS} headers")
        # A NUL, or a CR or LF that is not a line end, anywhere in the header lines (one look at
        # the whole text instead of three per line).
        fields = text[len(lines[0]) :]
        if "\x00" in fields or fields.count("\r") != len(lines) - 1 or fields.count("\n") != len(lines) - 1:
            raise HttpError(400, "malformed header line")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name):
                raise HttpError(400, "malformed header line")
            headers.setdefault(name.lower(), []).append(value.strip(" \t"))
        path, _, query = target.partition("?")
        request = Request(method, path, query, version, headers)
        if _CONTROL.search(target):
            raise HttpError(400, "malformed request target")
        if "transfer-encoding" in headers:
            raise HttpError(411, "send the body with a Content-Length, not a Transfer-Encoding")
        lengths = headers.get("content-length")
        length = 0
        if lengths:
            if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0]):
                raise HttpError(400, "malformed Content-Length")
            length = int(lengths[0])
        token = (headers.get("connection") or [""])[0].lower()
        keep_alive = token != "close" if version == "HTTP/1.1" else token == "keep-alive"
        return request, length, keep_alive

    # -- answering ----------------------------------------------------------------------------

    async def _answer_all(self) -> None:
        try:
            while self._queue:
                request, keep_alive, refusal = self._queue.popleft()
                if refusal is not None:
                    response = self.server.on_error(request, refusal)
                else:
                    response = await self.server.dispatch(request)
                self._write(request, response, keep_alive)
                if self._paused and len(self._queue) < MAX_PIPELINE // 2 and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
        finally:
            self._task = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._closing:
            self._linger() if (self._buf or self._head or self._discard) else transport.close()
        elif self.server.closing:
            transport.close()

    def _write(self, request: Request, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status = response.status
        body = response.body
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(body)}\r\n")  # fmt: skip
        if response.headers:
            head += "".join([f"{name}: {value}\r\n" for name, value in response.headers.items()])
        if not keep_alive or self.server.closing:
            head += "Connection: close\r\n"
        elif request.version == "HTTP/1.0":
            head += "Connection: keep-alive\r\n"
        data = head.encode("latin-1") + _Date.line()
        transport.write(data if request.method == "HEAD" else data + body)

    def _refuse(self, exc: HttpError) -> None:
        """A request that cannot be read: answer it after what was queued, then close."""
        self._closing = True
        self._head = None
        self._queue.append((Request("-", "-", "", "HTTP/1.1", {}), False, exc))

    def _linger(self) -> None:
        """Close without resetting the connection under the answer: stop writing, drop what the
        client still sends, close when it does or after LINGER_S."""
        transport = self.transport
        assert transport is not None
        if transport.can_write_eof():
            transport.write_eof()
        self._lingering = self.loop.call_later(LINGER_S, transport.close)

    @property
    def idle(self) -> bool:
        return self._task is None and not self._queue


class HttpServer:
    """Serves one router; `on_error` answers every exception a handler, the router or the
    parser raises (HttpError for refusals decided here)."""

    def __init__(self, router: Router, on_error: ErrorHook, max_body: int) -> None:
        self.router = router
        self.on_error = on_error
        self.max_body = max_body
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.AbstractServer | None = None

    async def dispatch(self, request: Request) -> Response:
        try:
            handler, request.match_info = self.router.resolve(request.method, request.path)
            return await handler(request)
        except Exception as exc:
            return self.on_error(request, exc)

    async def start(self, host: str, port: int, backlog: int = 1024) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
        )

    async def close(self, grace_s: float = 2.0) -> None:
        """Stop listening, close idle connections, give busy ones `grace_s` to answer, abort the rest."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_s
        while True:
            for conn in list(self.connections):
                if conn.idle and conn.transport is not None:
                    conn.transport.close()
            busy = [c for c in self.connections if not c.idle]
            if not busy or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.connections.clear()
