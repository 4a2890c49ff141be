"""Live availability: the customers' success ratio so far, read incrementally from history.jsonl.

The chaos panel draws it while a person plays with faults. It reads the same lines, with the same
rule (harness.history.is_available), that the availability checker will judge at the end.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.history import is_available, is_payment

RECENT_S = 10.0  # "availability, last 10 s"
BARS_S = 60  # per-second bars drawn in the panel


@dataclass
class LiveAvailability:
    """Availability of customer payments so far, read incrementally from the session's history.jsonl
    (the file Locust appends to every half second; the same lines `runner.check` will judge)."""

    path: Path
    slo_ms: float
    offset: int = 0
    total: int = 0
    good: int = 0
    seconds: dict[int, list[int]] = field(default_factory=dict)  # epoch second -> [ops, good]
    recent: deque[tuple[float, bool]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self._lock:
            self._read_new_lines(now)
            while self.recent and self.recent[0][0] < now - RECENT_S:
                self.recent.popleft()
            recent_good = sum(1 for _, good in self.recent if good)
            first = int(now) - BARS_S
            for second in [s for s in self.seconds if s < first]:
                del self.seconds[second]
            return {
                "slo_ms": self.slo_ms,
                "window_s": RECENT_S,
                "last_10s": _ratio(len(self.recent), recent_good),
                "session": _ratio(self.total, self.good),
                "per_second": [
                    {"t": s, "ops": self.seconds.get(s, [0, 0])[0], "good": self.seconds.get(s, [0, 0])[1]}
                    for s in range(first, int(now))
                ],
            }

    def _read_new_lines(self, now: float) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        for raw in chunk[:end].splitlines():
            try:
                op = json.loads(raw)
                if not is_payment(op):
                    continue  # status queries follow up an unknown payment; they are not payments
                good, complete = is_available(op, self.slo_ms), float(op["complete"])
            except (ValueError, KeyError, TypeError):
                continue
            self.total += 1
            self.good += good
            bucket = self.seconds.setdefault(int(complete), [0, 0])
            bucket[0] += 1
            bucket[1] += good
            if complete >= now - RECENT_S:
                self.recent.append((complete, good))


def _ratio(ops: int, good: int) -> dict[str, Any]:
    return {"ops": ops, "good": good, "ratio": good / ops if ops else None}
