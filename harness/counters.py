"""`proxy_counters.jsonl`: Toxiproxy's own byte counters per link, sampled by the nemesis at the start
of a fault schedule and at every apply and heal. Its writer, its reader and its deltas live here only.

One JSON object per line:

    {"event": "apply", "fault": "resets", "event_at": 1795440010.0, "at": 1795440009.998,
     "links": {"BNKA->switch": {"upstream": {"received": 4740, "sent": 4740},
                                "downstream": {"received": 2302, "sent": 1494}}, ...}}

- `event`: `start` (the schedule began: the baseline's first sample; no `fault`), `apply`, `heal` or
  `heal-failed` of the fault named `fault`; `event_at` is the `at` of that fault's line in
  faults.jsonl (the exact pairing key), `at` when the counters were read (just before applying
  began; just after the heal completed).
- `links`: every link of the testbed, per direction (`upstream`: caller to callee, the requests;
  `downstream`: callee to caller, the answers), bytes Toxiproxy `received` from one side and `sent`
  on to the other, counted since the server started.
- `error` instead of `links` when the counters could not be read (the fault went ahead anyway).

What the counters can and cannot say (Toxiproxy 2.12, `-proxy-metrics`): they are credited when a
connection's direction ends, not as bytes flow, so a keep-alive connection that outlives a sample
counts after it; `sent` is credited only when the write ended without an error, so bytes of a
connection that broke (a reset, a peer that gave up) stay `received` and never `sent`. There is no
connection count. `undelivered` (received minus sent over a window) is therefore the bytes a toxic
dropped or a broken connection lost, which a healthy link keeps at zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.history import JsonlAppender, read_jsonl

EVENTS = ("start", "apply", "heal", "heal-failed")
DIRECTIONS = ("upstream", "downstream")

# {link name: {direction: {"received": bytes, "sent": bytes}}}
LinkCounters = dict[str, dict[str, dict[str, int]]]


def sample_problem(s: Mapping[str, Any]) -> str | None:
    """What is wrong with one line, or None."""
    if s.get("event") not in EVENTS:
        return f"event {s.get('event')!r} is not one of {', '.join(EVENTS)}"
    at = s.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        return f"'at' must be epoch seconds, got {at!r}"
    if s["event"] != "start" and not isinstance(s.get("fault"), str):
        return f"a {s['event']} sample needs the 'fault' it belongs to"
    links = s.get("links")
    if links is None:
        return None if isinstance(s.get("error"), str) else "a sample needs 'links' or an 'error'"
    if not isinstance(links, dict):
        return "'links' must be an object {link: {direction: {received, sent}}}"
    return None


def read_counters(path: str | Path) -> list[dict[str, Any]]:
    """The samples of a proxy_counters.jsonl, each checked; a missing file is no sample (older runs,
    or a testbed whose Toxiproxy has no metrics)."""
    if not Path(path).exists():
        return []
    return read_jsonl(path, sample_problem)


class CounterWriter:
    """Appends samples to proxy_counters.jsonl, flushed per line (a killed harness keeps them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = JsonlAppender(path)

    def write(
        self,
        event: str,
        fault: str | None,
        event_at: float | None,
        at: float,
        links: LinkCounters | None = None,
        error: str | None = None,
    ) -> None:
        line: dict[str, Any] = {"event": event, "fault": fault, "event_at": event_at, "at": at}
        if error is not None:
            line["error"] = error
        else:
            line["links"] = links or {}
        self._file.append(line)

    def close(self) -> None:
        self._file.close()


def delta(before: Mapping[str, Any], after: Mapping[str, Any], link: str) -> dict[str, dict[str, int]]:
    """Bytes of one link between two samples, per direction: received, sent, and undelivered
    (received minus sent; it can dip below zero by the bytes of a connection that was counted
    `received` before `before` and `sent` after it)."""
    out: dict[str, dict[str, int]] = {}
    for d in DIRECTIONS:
        b = ((before.get("links") or {}).get(link) or {}).get(d) or {}
        a = ((after.get("links") or {}).get(link) or {}).get(d) or {}
        received = int(a.get("received", 0)) - int(b.get("received", 0))
        sent = int(a.get("sent", 0)) - int(b.get("sent", 0))
        out[d] = {"received": received, "sent": sent, "undelivered": received - sent}
    return out
