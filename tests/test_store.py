"""The ledger store's group commit: units of concurrent handlers share one COMMIT (one fsync), nobody
is answered before that COMMIT, and a steady stream of units cannot hold a commit back for long.

Counted in event-loop turns (asyncio.sleep(0)), never in time, so a slow machine cannot change them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mock_switch import store as store_module
from mock_switch.store import MAX_WAIT_TURNS, Store

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY);"


def committed(path: Path) -> set[int]:
    """What another process would see: the rows committed to the database file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {k for (k,) in conn.execute("SELECT k FROM t")}
    finally:
        conn.close()


async def handler(store: Store, key: int, turns_before: int, seen: dict[int, set[int]]) -> None:
    """A request that arrives `turns_before` loop turns from now: one unit, then durable, then the
    answer (which records what was committed at that moment)."""
    for _ in range(turns_before):
        await asyncio.sleep(0)
    with store.unit() as db:
        db.execute("INSERT INTO t(k) VALUES (?)", (key,))
    await store.durable()
    seen[key] = committed(store.path)


def test_handlers_arriving_over_consecutive_turns_share_one_commit(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", SCHEMA)
    seen: dict[int, set[int]] = {}

    async def main() -> None:
        # Two handlers per turn over MAX_WAIT_TURNS + 1 turns: the load a busy service sees.
        await asyncio.gather(*(handler(store, k, k // 2, seen) for k in range(2 * (MAX_WAIT_TURNS + 1))))

    asyncio.run(main())
    assert store.commits == 1  # committing at the first turn would have taken MAX_WAIT_TURNS + 1 commits
    for key, rows in seen.items():
        assert key in rows, f"handler {key} was answered before its unit was committed"
    store.close()


def test_one_request_at_a_time_commits_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", SCHEMA)
    seen: dict[int, set[int]] = {}

    async def main() -> None:
        for k in range(3):
            await handler(store, k, 0, seen)

    asyncio.run(main())
    assert store.commits == 3
    assert all(key in rows for key, rows in seen.items())
    store.close()


def test_a_steady_stream_of_units_cannot_hold_a_commit_back(tmp_path: Path) -> None:
    """Two new handlers every turn for 60 turns: each is still answered within MAX_WAIT_TURNS + 2
    turns of its unit, and each COMMIT covers the units of at most MAX_WAIT_TURNS + 1 turns."""
    store = Store(tmp_path / "s.db", SCHEMA)
    turn = 0
    waited: list[int] = []

    async def ticker() -> None:
        nonlocal turn
        for _ in range(200):  # bounded
            turn += 1
            await asyncio.sleep(0)

    async def timed(key: int) -> None:
        for _ in range(key // 2):
            await asyncio.sleep(0)
        began = turn
        with store.unit() as db:
            db.execute("INSERT INTO t(k) VALUES (?)", (key,))
        await store.durable()
        assert key in committed(store.path)
        waited.append(turn - began)

    async def main() -> None:
        await asyncio.gather(ticker(), *(timed(k) for k in range(120)))

    asyncio.run(main())
    assert len(waited) == 120
    assert max(waited) <= MAX_WAIT_TURNS + 2, f"a handler waited {max(waited)} turns for its commit"
    assert 60 // (MAX_WAIT_TURNS + 1) <= store.commits < 60
    store.close()


def test_the_wait_is_what_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first test has teeth: without the wait (MAX_WAIT_TURNS = 0, the store before it) the
    same load takes one commit per turn."""
    monkeypatch.setattr(store_module, "MAX_WAIT_TURNS", 0)
    store = Store(tmp_path / "s.db", SCHEMA)
    seen: dict[int, set[int]] = {}

    async def main() -> None:
        await asyncio.gather(*(handler(store, k, k // 2, seen) for k in range(6)))

    asyncio.run(main())
    assert store.commits == 3
    assert all(key in rows for key, rows in seen.items())
    store.close()
