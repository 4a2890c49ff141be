"""The consistency sampler: reconciles the live ledgers every few seconds while a run goes.

Each sample (consistency.jsonl) is the open anomaly count by class; payments younger than a grace
period are still in normal flight and are not counted. harness/checkers/consistency.py turns the
samples into time to consistency.

Memory stays flat however long the run (README "Long runs (soak)"): a sample never holds the whole
ledgers. It walks the payer banks' payments, the switch's transfers and the payee banks' credits
together, a page of payment ids at a time (the contract's `after`/`limit` paging, every list in
payment-id order), and reconciles each chunk of ids on its own: a payment's three rows are always in
the same chunk, so the counts are those of one whole reconciliation. Duplicate effects (two entries
of one kind for one payment in a bank's books) are found by reading each bank's new entries since
the last sample, remembering the keys of the last `ENTRY_HORIZON` entries per bank: a duplicate
further apart than that is left to the final reconciliation (ledgers.json), which reads every entry.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.checkers.reconcile import Anomaly, reconcile
from harness.observe import snapshot

PAGE = 1000  # payment ids per chunk: a sample holds at most about twice this many rows per ledger list
ENTRY_HORIZON = 20_000  # entries per bank whose keys a sample remembers for duplicate effects (~10 min at 40/s)
# A payment clean this long after it was first seen is taken as final by the live samples' floor
# (LiveReconciler): every timeout of the mock and its status-query retries end well within it.
FLOOR_MARGIN_S = 60.0
KEEP_SAMPLES = 100  # samples kept in memory (the live panel shows the last); all go to the file


Fetch = Callable[[str, str | int | None, int], list[dict[str, Any]]]  # (list url, after, limit) -> rows


def _page(url: str, after: str | int | None, limit: int) -> list[dict[str, Any]]:
    """One page of a read list over HTTP (the contract's `after` and `limit`)."""
    query = {"limit": limit} | ({} if after in (None, "") else {"after": after})
    rows = snapshot._get(f"{url}?{urllib.parse.urlencode(query)}")
    if not isinstance(rows, list):
        raise ValueError(f"{url}: expected a JSON list of rows, got {type(rows).__name__}")
    return rows


def walk(
    switch_url: str, bank_urls: dict[str, str], page: int = PAGE, fetch: Fetch = _page, start: str = ""
) -> Iterator[dict[str, Any]]:
    """The required reads (transfers, payments, credits) as a series of partial snapshots, each
    holding every row of a range of payment ids (after `start`) and nothing else; at most about 2
    pages per list are in memory at once. ValueError when a list does not page (a row not after
    the cursor)."""
    lists: list[tuple[str, str, str]] = [("switch", "transfers", switch_url + "/transfers")]
    for code, url in bank_urls.items():
        lists += [(code, "payments", url + "/payments"), (code, "credits", url + "/credits")]
    buffers: list[deque[dict[str, Any]]] = [deque() for _ in lists]
    cursors: list[str] = [start] * len(lists)
    done = [False] * len(lists)
    while True:
        for i, (_, _, url) in enumerate(lists):
            if done[i] or buffers[i]:
                continue
            rows = fetch(url, cursors[i], page)
            if rows and cursors[i] and not str(rows[0]["payment_id"]) > cursors[i]:
                raise ValueError(f"{url}: ?after= is not honoured (row {rows[0]['payment_id']!r} after {cursors[i]!r})")
            buffers[i].extend(rows)
            if rows:
                cursors[i] = str(rows[-1]["payment_id"])
            done[i] = len(rows) < page
        if all(done) and not any(buffers):
            return
        open_lists = [str(buffers[i][-1]["payment_id"]) for i in range(len(lists)) if not done[i]]
        bound = min(open_lists) if open_lists else None  # ids up to here are complete in every list
        chunk: dict[str, Any] = {
            "switch": {"transfers": []},
            "banks": {c: {"payments": [], "credits": []} for c in bank_urls},
        }
        for i, (owner, key, _) in enumerate(lists):
            rows_out = chunk["switch"][key] if owner == "switch" else chunk["banks"][owner][key]
            buf = buffers[i]
            while buf and (bound is None or str(buf[0]["payment_id"]) <= bound):
                rows_out.append(buf.popleft())
        yield chunk


class DuplicateEffects:
    """Duplicate effects among each bank's entries, read incrementally (new entries only)."""

    def __init__(self, horizon: int = ENTRY_HORIZON, page: int = PAGE, fetch: Fetch = _page) -> None:
        self.horizon, self.page, self.fetch = horizon, page, fetch
        self.cursor: dict[str, int] = {}
        self.recent: dict[str, deque[str]] = {}  # "<kind> <payment id>", oldest first
        self.seen: dict[str, Counter[str]] = {}
        self.found: Counter[tuple[str, str, str]] = Counter()  # (bank, kind, payment id) -> extra entries

    def update(self, code: str, url: str) -> None:
        recent = self.recent.setdefault(code, deque())
        seen = self.seen.setdefault(code, Counter())
        while True:
            rows = self.fetch(url + "/entries", self.cursor.get(code, 0), self.page)
            for e in rows:
                key = f"{e['kind']} {e['payment_id']}"  # one string: about half the memory of a pair
                if seen[key]:
                    self.found[(code, str(e["kind"]), str(e["payment_id"]))] += 1
                seen[key] += 1
                recent.append(key)
                if len(recent) > self.horizon:
                    old = recent.popleft()
                    seen[old] -= 1
                    if not seen[old]:
                        del seen[old]
            if rows:
                self.cursor[code] = int(rows[-1]["entry_id"])
            if len(rows) < self.page:
                return

    @property
    def count(self) -> int:
        """Payments with a duplicated kind of entry, per bank (as the whole reconciliation counts them)."""
        return len(self.found)


def live_counts(
    switch_url: str, bank_urls: dict[str, str], settled_before: float, page: int = PAGE, fetch: Fetch = _page
) -> Counter[str]:
    """Open anomalies by class over the whole ledgers, a chunk at a time (duplicate effects apart)."""
    return LiveReconciler(switch_url, bank_urls, page, fetch, floor_margin_s=None).counts(settled_before)


def _first_seen(rows: list[dict[str, Any]]) -> float:
    stamps = [r.get("created_at") or r.get("received_at") or 0.0 for r in rows]
    return min(stamps) if stamps else 0.0


class LiveReconciler:
    """The live samples' reconciliation, with a floor: a prefix of payment ids (in id order, across
    every list) found clean and final when each was at least `floor_margin_s` old is not read again
    (a payment id's arrivals of one Locust process sort in arrival order), so a sample's reads are
    the payments since the oldest one not yet clean, not the whole run. The floor stops at the first
    id that is anomalous, young or in flight; a payment below it that changes afterwards (a late
    duplicate more than the margin after it looked final) is left to the final reconciliation,
    which reads everything. `floor_margin_s=None`: no floor, every sample reads everything."""

    def __init__(
        self, switch_url: str, bank_urls: dict[str, str], page: int = PAGE, fetch: Fetch = _page,
        floor_margin_s: float | None = FLOOR_MARGIN_S,
    ) -> None:  # fmt: skip
        self.switch_url, self.bank_urls, self.page, self.fetch = switch_url, bank_urls, page, fetch
        self.floor_margin_s = floor_margin_s
        self.floor = ""
        self.rows_read = 0  # rows the last call read (what a sample costs)

    def counts(self, settled_before: float, now: float | None = None) -> Counter[str]:
        counts: Counter[str] = Counter()
        final_before = None if self.floor_margin_s is None else (now or time.time()) - self.floor_margin_s
        floor, advancing, read = self.floor, final_before is not None, 0
        # Looked up at call time: a test swaps in a broken walk to show the comparison catches it.
        for chunk in walk(self.switch_url, self.bank_urls, self.page, self.fetch, start=self.floor):
            rec = reconcile(chunk, settled_before=settled_before, with_books=False)
            for cls, views in rec.anomalies.items():
                counts[cls] += len(views)
            by_id: dict[str, list[dict[str, Any]]] = {}
            for row in (
                *chunk["switch"]["transfers"],
                *(r for b in chunk["banks"].values() for r in (*b["payments"], *b["credits"])),
            ):
                by_id.setdefault(str(row["payment_id"]), []).append(row)
            read += sum(len(v) for v in by_id.values())
            if advancing:
                assert final_before is not None
                clean = rec.settled_ids | rec.failed_ids
                for pid in sorted(by_id):
                    rows = by_id[pid]
                    tombstones = all(r.get("fingerprint") is None for r in rows)  # status-query answers only
                    if (pid in clean or tombstones) and _first_seen(rows) < final_before:
                        floor = pid
                    else:
                        advancing = False
                        break
        self.floor, self.rows_read = floor, read
        return counts


class ConsistencySampler(threading.Thread):
    def __init__(
        self, switch_url: str, bank_urls: dict[str, str], out: Path, grace_s: float, every_s: float = 2.0,
        offers: snapshot.Offers = snapshot.everything,
    ) -> None:  # fmt: skip
        super().__init__(name="consistency-sampler", daemon=True)
        self.switch_url, self.bank_urls, self.offers = switch_url, bank_urls, offers
        self.out, self.grace_s, self.every_s = out, grace_s, every_s
        self.stop_event = threading.Event()
        self.samples: deque[dict[str, Any]] = deque(maxlen=KEEP_SAMPLES)
        self.effects = DuplicateEffects()
        self.live = LiveReconciler(switch_url, bank_urls)
        self._lock = threading.Lock()  # held while settling: no sample reads a half-settled ledger

    def sample(self) -> dict[str, Any]:
        with self._lock:
            return self.sample_now()

    @contextlib.contextmanager
    def held(self) -> Iterator[ConsistencySampler]:
        """No periodic sample runs while this is held (sample_now() still works inside)."""
        with self._lock:
            yield self

    def sample_now(self) -> dict[str, Any]:
        """One sample, now; inside held(), or through sample()."""
        at = time.time()
        counts = self.live.counts(settled_before=at - self.grace_s, now=at)
        if self.offers("bank_books"):
            for code, url in self.bank_urls.items():
                self.effects.update(code, url)
            counts[Anomaly.DUPLICATE_EFFECT.value] += self.effects.count
        line = {
            "at": at,
            "open_anomalies": sum(counts.values()),
            "by_class": {k: v for k, v in counts.items() if v},
        }
        self.samples.append(line)
        with self.out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        return line

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            try:
                self.sample()
            except OSError:  # a crashed service cannot be read now; the next sample will tell
                continue

    def stop(self) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(30)
