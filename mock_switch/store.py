"""Embedded SQLite ledger store with group commit.

Each service runs one asyncio loop and one SQLite connection. A handler changes the ledger in a
`unit()` (a savepoint: all or nothing, no awaits inside) and, before it tells anyone about the
change, awaits `durable()`. Units from many concurrent handlers share one transaction that a
single COMMIT (one fsync) makes durable: that is what lets a Python service take thousands of
durable writes per second. Nothing is acknowledged before its COMMIT returns, so kill -9 at any
moment loses only unacknowledged work and never leaves a half-applied unit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import TracebackType

from mock_switch.config import Durability


class Store:
    def __init__(self, path: Path, schema: str, durability: Durability = "fsync") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'fsync' else 'NORMAL'}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(schema)
        self._in_txn = False
        self._waiters: list[asyncio.Future[None]] = []
        self._flush_scheduled = False
        self.commits = 0  # group commits done, for benchmarks and tests
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unit = _Unit(self)

    def unit(self) -> _Unit:
        """An atomic unit of ledger work (`with store.unit() as db:`). Must not await: units never
        interleave."""
        return self._unit

    async def durable(self) -> None:
        """Return once everything written so far is committed."""
        if not self._in_txn:
            return
        loop = self._loop
        if loop is None or loop.is_closed():  # the service's one loop, asked once (each ask costs a getpid())
            loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiters.append(fut)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # call_soon lets every handler that is ready in this loop turn add its units first.
            loop.call_soon(self._flush)
        await fut

    def commit(self) -> None:
        """Synchronous commit, for start-up, shutdown and tests that drive the ledger directly."""
        if self._in_txn:
            self.conn.execute("COMMIT")
            self._in_txn = False
            self.commits += 1

    def _flush(self) -> None:
        self._flush_scheduled = False
        waiters, self._waiters = self._waiters, []
        try:
            self.commit()
        except sqlite3.Error as exc:  # disk full, I/O error: nobody may be told "done"
            self.conn.execute("ROLLBACK")
            self._in_txn = False
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        self.commit()
        self.conn.close()


class _Unit:
    """`Store.unit()`: a savepoint inside the shared transaction (a class, not a generator: this
    runs several times per payment)."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        conn = store.conn
        if not store._in_txn:
            conn.execute("BEGIN IMMEDIATE")
            store._in_txn = True
        conn.execute("SAVEPOINT unit")
        return conn

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        conn = self.store.conn
        if kind is not None:
            conn.execute("ROLLBACK TO unit")
        conn.execute("RELEASE unit")
