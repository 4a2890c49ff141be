"""The consistency sampler: reconciles the live ledgers every few seconds while a run goes.

Each sample (consistency.jsonl) is the open anomaly count by class; payments younger than a grace
period are still in normal flight and are not counted. harness/checkers/consistency.py turns the
samples into time to consistency.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.checkers.reconcile import reconcile
from harness.observe import snapshot


class ConsistencySampler(threading.Thread):
    def __init__(
        self, switch_url: str, bank_urls: dict[str, str], out: Path, grace_s: float, every_s: float = 2.0,
        offers: snapshot.Offers = snapshot.everything,
    ) -> None:  # fmt: skip
        super().__init__(name="consistency-sampler", daemon=True)
        self.switch_url, self.bank_urls, self.offers = switch_url, bank_urls, offers
        self.out, self.grace_s, self.every_s = out, grace_s, every_s
        self.stop_event = threading.Event()
        self.samples: list[dict[str, Any]] = []
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
        snap = snapshot.take(self.switch_url, self.bank_urls, self.offers)
        rec = reconcile(snap, settled_before=at - self.grace_s)
        line = {
            "at": at,
            "open_anomalies": rec.anomaly_count,
            "by_class": {k: len(v) for k, v in rec.anomalies.items()},
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
