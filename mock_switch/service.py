"""What the switch and the banks share as HTTP services: error handling, health, OpenAPI,
background work that outlives a request, and a graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

from mock_switch.api import MAX_BODY, Refused, answer, error_response, json_response
from mock_switch.codes import Status
from mock_switch.http_client import HttpClient
from mock_switch.http_server import HttpError, HttpServer, Request, Response, Router
from mock_switch.store import Store

log = logging.getLogger("mock_switch")


def _errors(request: Request, exc: Exception) -> Response:
    """The one place a refusal is answered: every error body is an `Answer` (RJCT, reason, message)."""
    if isinstance(exc, Refused):
        return exc.response()
    if isinstance(exc, HttpError) and 400 <= exc.status < 500:
        # unknown route, wrong method, body too large, unreadable request: still a coded answer
        resp = error_response(exc.status, f"{request.method} {request.path}: {exc.message}")
        resp.headers.update(exc.headers)  # 405 must say which methods the resource has (RFC 9110)
        return resp
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    resp = answer("", Status.PDNG, None, f"internal error: {type(exc).__name__}")
    resp.set_status(500)
    return resp


class Service:
    """Base of the switch and bank services."""

    name = "service"

    def __init__(self, store: Store, openapi: dict[str, Any]) -> None:
        self.store = store
        self.openapi = openapi
        self.started_at = time.time()
        self.router = Router()  # the one routing table; subclasses add their routes
        self.router.add_get("/health", self._health)
        self.router.add_get("/openapi.json", self._openapi)
        self.session: HttpClient | None = None  # calls to the other services (mock_switch/peer.py)
        # Work that must finish even if the caller hangs up: driving a payment to an outcome.
        self.inflight: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def _on_startup(self) -> None:
        self.session = HttpClient(keepalive_s=30.0)
        await self.started()

    async def _on_cleanup(self) -> None:
        for task in list(self.inflight.values()):
            task.cancel()
        await asyncio.gather(*self.inflight.values(), return_exceptions=True)
        if self.session is not None:
            self.session.close()
        self.store.close()

    async def started(self) -> None:
        """Hook: recover unfinished payments after a restart."""

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, asked once per loop: each ask costs a getpid() system call, and the
        request path asks several times per payment."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def spawn(self, payment_id: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self.loop().create_task(work)
        self.inflight[payment_id] = task
        task.add_done_callback(lambda t: self._done(payment_id, t))
        return task

    def _done(self, payment_id: str, task: asyncio.Task[None]) -> None:
        if self.inflight.get(payment_id) is task:
            del self.inflight[payment_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("payment %s: driver failed", payment_id, exc_info=task.exception())

    async def wait_for_outcome(self, payment_id: str, deadline: float) -> None:
        """Wait for the payment's driver until the caller's deadline (loop time)."""
        task = self.inflight.get(payment_id)
        if task is None or task.done():
            return
        loop = self.loop()
        if deadline <= loop.time():
            return
        # What asyncio.wait({task}, timeout) does, without its sets and bookkeeping (this runs for
        # every payment): a future woken by the driver's end or by the deadline, whichever is first.
        # The driver is never cancelled.
        woken = loop.create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        task.add_done_callback(wake)
        timer = loop.call_at(deadline, wake)
        try:
            await woken
        finally:
            timer.cancel()
            task.remove_done_callback(wake)

    # -- common routes ------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return json_response(
            {
                "service": self.name,
                "status": "up",
                "pid": os.getpid(),
                "started_at": self.started_at,
            }
        )

    async def _openapi(self, request: Request) -> Response:
        return json_response(self.openapi)

    # -- running ------------------------------------------------------------------------------

    def run(self, host: str, port: int, parent_pid: int | None = None) -> None:
        """Serve until SIGTERM/SIGINT (or until `parent_pid` dies), then stop accepting, finish the
        books and exit 0."""
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is optional; asyncio works, slower
            pass
        asyncio.run(self._serve(host, port, parent_pid))

    @staticmethod
    async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
        while os.getppid() == parent_pid:
            await asyncio.sleep(0.5)
        log.warning("parent %d is gone: shutting down", parent_pid)
        stop.set()

    async def _serve(self, host: str, port: int, parent_pid: int | None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if parent_pid is not None:
            # No orphans: when the harness dies (even by kill -9) we are re-parented, so leave.
            # Polling the parent pid works whichever harness thread started us, unlike
            # PR_SET_PDEATHSIG, which fires when that *thread* exits.
            watchdog = asyncio.create_task(self._watch_parent(parent_pid, stop))
        await self._on_startup()  # recovery is under way before the first request is read
        server = HttpServer(self.router, _errors, MAX_BODY)
        await server.start(host, port, backlog=1024)
        print(f"{self.name} listening on {host}:{port} pid={os.getpid()}", file=sys.stderr, flush=True)
        await stop.wait()
        if parent_pid is not None:
            watchdog.cancel()
        log.warning("%s: shutting down", self.name)
        await server.close(grace_s=2.0)
        await self._on_cleanup()
