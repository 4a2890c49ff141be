"""Long runs (benchmarks/soak.py, README "Long runs (soak)"): what keeps a soak bounded.

- the live consistency sampler reads the ledgers a chunk of payment ids at a time and counts the
  same anomalies as one whole reconciliation, on the saved real run tests/fixtures/naive-run.tar.gz
  (and on the same books broken in more ways); a walk that does not align its chunks is caught;
- duplicate effects are found from each bank's new entries only, within a bounded horizon;
- the report's charts keep a bounded number of points and the extremes;
- a load duration above the proven bound is refused, naming the field and the fix.
"""

from __future__ import annotations

import copy
import json
import math
import random
import tarfile
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.checkers import evidence as evidence_mod
from harness.checkers.reconcile import reconcile
from harness.errors import ScenarioError
from harness.history import read_history
from harness.observe import sampler
from harness.observe.sampler import DuplicateEffects, LiveReconciler, live_counts, walk
from harness.report import page
from harness.scenario import MAX_LOAD_DURATION_S
from harness.scenario import load as load_scenario

FIXTURE = Path(__file__).parent / "fixtures" / "naive-run.tar.gz"


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("naive")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp, filter="data")
    snap: dict[str, Any] = json.loads((tmp / "naive-run" / "ledgers.json").read_text())
    return snap


class Books:
    """A snapshot's rows served as the contract's paged read lists (`after`, `limit`, id order)."""

    def __init__(self, snap: dict[str, Any]) -> None:
        self.lists: dict[str, list[dict[str, Any]]] = {
            "switch/transfers": sorted(snap["switch"]["transfers"], key=lambda r: r["payment_id"])
        }
        for code, books in snap["banks"].items():
            for key in ("payments", "credits"):
                self.lists[f"{code}/{key}"] = sorted(books[key], key=lambda r: r["payment_id"])
            self.lists[f"{code}/entries"] = sorted(books.get("entries", []), key=lambda r: r["entry_id"])
        self.calls = 0

    def fetch(self, url: str, after: str | int | None, limit: int) -> list[dict[str, Any]]:
        self.calls += 1
        rows = self.lists[url]
        if url.endswith("/entries"):
            start = bisect_right([r["entry_id"] for r in rows], int(after or 0))
        else:
            start = bisect_right([r["payment_id"] for r in rows], str(after or ""))
        return rows[start : start + limit]


def whole(snap: dict[str, Any], settled_before: float | None) -> Counter[str]:
    rec = reconcile(snap, settled_before=settled_before)
    return Counter({k: len(v) for k, v in rec.anomalies.items() if v and k != "duplicate_effect"})


def broken_more(snap: dict[str, Any]) -> dict[str, Any]:
    """The same books with more kinds of anomaly: a stuck payment, a switch that disagrees, an
    amount mismatch, a credit whose payment the payer bank never recorded."""
    s = copy.deepcopy(snap)
    a, b = s["banks"]["BNKA"], s["banks"]["BNKB"]
    settled = [p for p in a["payments"] if p["status"] == "ACSC" and p["fingerprint"]]
    settled[3]["status"] = "PDNG"
    by_id = {t["payment_id"]: t for t in s["switch"]["transfers"]}
    by_id[settled[7]["payment_id"]]["status"] = "RJCT"
    settled[11]["amount"] += 1
    b["payments"] = [p for p in b["payments"] if p["status"] != "ACSC"] + [
        p for p in b["payments"] if p["status"] == "ACSC"
    ][5:]
    return s


@pytest.mark.parametrize("page_size", [1, 7, 100, 5000])
@pytest.mark.parametrize("variant", ["recorded", "broken-more"])
def test_the_chunked_walk_counts_what_one_whole_reconciliation_counts(
    ledgers: dict[str, Any], page_size: int, variant: str
) -> None:
    snap = ledgers if variant == "recorded" else broken_more(ledgers)
    books = Books(snap)
    urls = {code: code for code in snap["banks"]}
    stamps = sorted(p["created_at"] for b in snap["banks"].values() for p in b["payments"])
    for settled_before in (None, stamps[len(stamps) // 2]):
        expected = whole(snap, settled_before)
        assert sum(expected.values()) > 0  # the books have anomalies to count
        got = live_counts("switch", urls, settled_before or 1e12, page_size, books.fetch)
        assert got == expected
    if variant == "broken-more":
        assert len(expected) >= 4  # stuck, switch disagrees, amount mismatch, credit without debit ...


def test_every_chunk_holds_each_payment_whole_and_a_bounded_number_of_rows(ledgers: dict[str, Any]) -> None:
    books = Books(ledgers)
    urls = {code: code for code in ledgers["banks"]}
    seen: set[str] = set()
    lists = 1 + 2 * len(urls)
    for chunk in walk("switch", urls, 50, books.fetch):
        rows = [*chunk["switch"]["transfers"]]
        for b in chunk["banks"].values():
            rows += b["payments"] + b["credits"]
        ids = {r["payment_id"] for r in rows}
        assert not ids & seen  # no payment id in two chunks: its three rows are judged together
        seen |= ids
        assert len(rows) <= 2 * 50 * lists
    every = {r["payment_id"] for name, rows in books.lists.items() if not name.endswith("/entries") for r in rows}
    assert seen == every


def unaligned_walk(
    switch_url: str, bank_urls: dict[str, str], page: int, fetch: sampler.Fetch, start: str = ""
) -> Iterator[Any]:
    """A broken variant: pages of each list taken side by side, not cut at a common payment id."""
    lists = [("switch", "transfers", switch_url + "/transfers")]
    for code, url in bank_urls.items():
        lists += [(code, "payments", url + "/payments"), (code, "credits", url + "/credits")]
    cursors = [start] * len(lists)
    while True:
        chunk: dict[str, Any] = {
            "switch": {"transfers": []},
            "banks": {c: {"payments": [], "credits": []} for c in bank_urls},
        }
        got = False
        for i, (owner, key, url) in enumerate(lists):
            rows = fetch(url, cursors[i], page)
            if rows:
                got, cursors[i] = True, rows[-1]["payment_id"]
            (chunk["switch"] if owner == "switch" else chunk["banks"][owner])[key] += rows
        if not got:
            return
        yield chunk


def test_a_walk_that_does_not_align_its_chunks_is_caught(
    ledgers: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    books = Books(ledgers)
    urls = {code: code for code in ledgers["banks"]}
    monkeypatch.setattr(sampler, "walk", unaligned_walk)
    assert live_counts("switch", urls, 1e12, 100, books.fetch) != whole(ledgers, None)


@pytest.mark.parametrize("variant", ["recorded", "broken-more"])
def test_the_floor_skips_old_clean_payments_and_still_counts_every_anomaly(
    ledgers: dict[str, Any], variant: str
) -> None:
    snap = ledgers if variant == "recorded" else broken_more(ledgers)
    books = Books(snap)
    live = LiveReconciler("switch", {code: code for code in snap["banks"]}, 40, books.fetch)
    expected = whole(snap, None)
    later = snap["taken_at"] + 3600.0  # every payment is long final
    assert live.counts(settled_before=later, now=later) == expected
    everything = live.rows_read
    assert live.floor  # the ids before the first anomalous one are not read again ...
    for _ in range(2):
        assert live.counts(settled_before=later, now=later) == expected  # ... and nothing is missed
    assert live.rows_read < everything
    fresh = LiveReconciler("switch", {code: code for code in snap["banks"]}, 40, books.fetch)
    fresh.counts(settled_before=later, now=snap["taken_at"])  # nothing a minute old yet: no floor
    assert fresh.floor == ""


def test_a_read_list_that_does_not_page_is_refused() -> None:
    rows = [{"payment_id": f"p{i:03d}", "fingerprint": None, "status": "RJCT"} for i in range(10)]
    with pytest.raises(ValueError, match=r"\?after= is not honoured"):
        list(walk("switch", {}, 5, lambda url, after, limit: rows[:limit]))


def test_duplicate_effects_are_found_from_new_entries_within_the_horizon() -> None:
    entries: list[dict[str, Any]] = []

    def add(pid: str, kind: str = "DEBIT") -> None:
        entries.append({"entry_id": len(entries) + 1, "payment_id": pid, "kind": kind})

    def fetch(url: str, after: str | int | None, limit: int) -> list[dict[str, Any]]:
        return [e for e in entries if e["entry_id"] > int(after or 0)][:limit]

    effects = DuplicateEffects(horizon=5, page=2, fetch=fetch)
    for pid in ("a", "b", "c"):
        add(pid)
    add("a", "REVERSAL")  # a debit and its reversal: not a duplicate
    effects.update("BNKA", "x")
    assert effects.count == 0
    add("b")  # a second debit of b, within the horizon
    effects.update("BNKA", "x")
    assert effects.count == 1 and ("BNKA", "DEBIT", "b") in effects.found
    for pid in "defghij":
        add(pid)
    add("c")  # c's first debit has left the 5-entry horizon: left to the final reconciliation
    effects.update("BNKA", "x")
    assert effects.count == 1
    assert max(len(d) for d in effects.recent.values()) <= 5


def test_downsampling_keeps_a_bounded_point_count_and_the_extremes() -> None:
    n = 86_400 // 2  # a day of samples every 2 s
    t = [2.0 * i for i in range(n)]
    v = [3.0 + (i % 7) for i in range(n)]
    v[12_345], v[40_001] = 950.0, 0.0  # one spike, one dip, each a single point
    for max_points in (10, 600, 601):
        ds_t, ds_v = page.minmax_downsample(t, v, max_points)
        assert len(ds_t) == len(ds_v) <= max_points
        assert max(ds_v) == 950.0 and min(ds_v) == 0.0
        assert ds_t[ds_v.index(950.0)] == t[12_345] and ds_t == sorted(ds_t)
    assert page.minmax_downsample(t[:50], v[:50], 600) == (t[:50], v[:50])  # short: every point


def test_a_long_run_s_charts_are_bounded_and_keep_the_worst_second() -> None:
    def second(t: int, count: int = 40, good: int = 40, p99: float = 60.0) -> dict[str, Any]:
        return {"t": t, "count": count, "good": good, "p50_ms": p99 / 2, "p95_ms": p99, "p99_ms": p99, "errors": {}}

    seconds = [second(t) for t in range(4 * 3600)]
    seconds[5000] = second(5000, count=0, good=0)  # a crashed second: nothing answered
    seconds[9000] = second(9000, count=40, good=2)  # a second at 5 %
    samples = [{"at": 1000.0 + 2 * i, "open_anomalies": 0} for i in range(7200)]
    samples[3000]["open_anomalies"] = 17
    avail = {"start": 1000.0, "end": 1000.0 + len(seconds), "per_second": seconds, "faults": [], "recoveries": []}
    data = page.chart_data(avail | {"slo": {"success_ratio": 0.99, "latency_slo_ms": 2000}}, samples, 1000.0)
    assert len(data["t"]) <= page.MAX_POINTS and data["step_s"] > 1
    assert min(data["throughput_min"]) == 0 and min(p for p in data["success_pct"] if p is not None) == 5.0
    assert len(data["anomalies"]["t"]) <= page.MAX_POINTS and max(data["anomalies"]["open"]) == 17
    assert data["anomalies"]["samples"] == 7200


def test_a_load_longer_than_the_proven_bound_is_refused_naming_the_field(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"name: soak\nload: {{rate: 40, duration: {MAX_LOAD_DURATION_S:g}}}\n")
    assert load_scenario(ok).load.duration == MAX_LOAD_DURATION_S
    too_long = tmp_path / "long.yaml"
    too_long.write_text(f"name: soak\nload: {{rate: 40, duration: {MAX_LOAD_DURATION_S + 1:g}}}\n")
    with pytest.raises(ScenarioError, match=r"long\.yaml: load\.duration: .* split the run") as caught:
        load_scenario(too_long)
    assert "benchmarks/soak.py" in str(caught.value)


def test_evidence_windows_found_by_binary_search_hold_what_a_full_scan_holds(tmp_path: Path) -> None:
    """A fault a minute over hours must not cost a scan of the whole history per window: the window's
    payments are found by binary search over completion times, and they are the same payments, in
    the same order, with the same follow-ups, as a full scan finds, on the saved real run."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    history = read_history(tmp_path / "naive-run" / "history.jsonl")
    h = evidence_mod._History(history)
    assert h.start is not None and h.end is not None
    rnd = random.Random(5)
    scopes = [evidence_mod.scope_of(t) for t in (["switch"], ["BNKB"], ["switch->BNKB"], ["BNKA->switch"])]
    for _ in range(200):
        lo = rnd.uniform(h.start - 1, h.end + 1)
        completes = sorted(op["complete"] for op in rnd.sample(h.payments, 2))  # ends on a payment: closed or not
        hi = rnd.choice([lo + rnd.uniform(0, 8), math.inf, lo, completes[1]])
        lo = rnd.choice([lo, -math.inf, completes[0]])
        scope, closed = rnd.choice(scopes), rnd.random() < 0.5
        scope = rnd.choice([scope, scope.untouched])

        def inside(t: float, lo: float = lo, hi: float = hi, closed: bool = closed) -> bool:
            return lo <= t <= hi if closed else lo <= t < hi

        got = h.tally(scope, lo, hi, 2000.0, closed)
        assert [op["id"] for op in got.payments] == [
            op["id"] for op in h.payments if inside(op["complete"]) and scope(op)
        ]
        firsts = [op["id"] for op in h.first if inside(op["complete"]) and scope(op)]
        assert got.firsts == len(firsts)
        assert got.follow_ups == (sum(h.status_queries[i] for i in firsts), sum(h.resends[i] for i in firsts))
