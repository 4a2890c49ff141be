"""Bringing a run to rest: in-doubt payments, settlement windows, the scenario's settlement actions.

After the faults are healed, robust components resolve their unknown outcomes by status queries;
`wait_in_doubt` waits until no payment is pending anywhere (or the grace is over), and
`settle_all` closes the open window and settles every closed one, so every committed transfer ends
settled before the final ledger snapshot. `SettlementPlayer` plays a scenario's settlement actions
(e.g. close a window in the middle of a fault) against the wall clock.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from harness.ledgers import Snapshot
from harness.observe import snapshot
from harness.scenario import SettlementAction

POLL_S = 0.5


def _post(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as resp:
        return json.loads(resp.read())


def settle_all(switch_url: str) -> None:
    """Close the open window and settle every closed one: every committed transfer ends settled."""
    _post(switch_url + "/settlement/windows/close")
    with urllib.request.urlopen(switch_url + "/settlement/windows", timeout=30) as resp:
        windows = json.loads(resp.read())
    for w in windows:
        if w["state"] == "CLOSED":
            _post(switch_url + f"/settlement/windows/{w['window_id']}/settle")


def pending(snap: Snapshot) -> int:
    """Payments still PDNG at the switch or at a payer bank."""
    n = sum(1 for t in snap["switch"]["transfers"] if t["status"] == "PDNG")
    return n + sum(1 for b in snap["banks"].values() for p in b["payments"] if p["status"] == "PDNG")


def wait_in_doubt(switch_url: str, bank_urls: dict[str, str], grace_s: float) -> int:
    """Wait until no payment is pending anywhere, at most `grace_s`; returns how many still are."""
    deadline = time.monotonic() + grace_s
    left = -1
    while True:
        with contextlib.suppress(OSError):  # a service restarting after a crash: ask again
            left = pending(snapshot.take(switch_url, bank_urls, snapshot.required_only))
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_S)


class SettlementPlayer(threading.Thread):
    """Plays the scenario's settlement actions; each is logged to settlement.jsonl."""

    def __init__(self, switch_url: str, actions: list[SettlementAction], t0: float, log: Path) -> None:
        super().__init__(name="settlement", daemon=True)
        self.switch_url, self.actions, self.t0, self.log = switch_url, actions, t0, log
        self.stop_event = threading.Event()

    def run(self) -> None:
        for action in sorted(self.actions, key=lambda a: a.at):
            if self.stop_event.wait(max(0.0, self.t0 + action.at - time.time())):
                return
            record: dict[str, Any] = {"action": action.action, "at": time.time()}
            try:
                if action.action in ("close", "close_and_settle"):
                    record["window"] = _post(self.switch_url + "/settlement/windows/close")["window_id"]
                if action.action in ("settle", "close_and_settle"):
                    settle_all(self.switch_url)
            except OSError as exc:  # the switch may be down on purpose; the operator would retry later
                record["error"] = str(exc)
            with self.log.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout_s)
