"""Read every ledger of the running system into one snapshot (harness/ledgers.py owns its file)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from harness.ledgers import Snapshot


def _get(url: str, timeout_s: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def take(switch_url: str, bank_urls: dict[str, str]) -> Snapshot:
    """Fetch the switch's and every bank's books over their read endpoints."""
    return {
        "taken_at": time.time(),
        "switch": {
            "transfers": _get(switch_url + "/transfers"),
            "participants": _get(switch_url + "/participants"),
            "windows": _get(switch_url + "/settlement/windows"),
            "movements": _get(switch_url + "/settlement/movements"),
        },
        "banks": {
            code: {
                "payments": _get(url + "/payments"),
                "credits": _get(url + "/credits"),
                "accounts": _get(url + "/accounts"),
                "entries": _get(url + "/entries"),
            }
            for code, url in bank_urls.items()
        },
    }


def take_stable(switch_url: str, bank_urls: dict[str, str], attempts: int = 20) -> Snapshot:
    """A snapshot that two consecutive reads agree on.

    Each ledger is read over several HTTP calls, one service after another, so a payment still
    moving while we read (a debit between a bank's payments and its accounts) would show as money
    lost or created. Reading until nothing changes makes the checkers judge a settled state."""
    previous = take(switch_url, bank_urls)
    for _ in range(attempts):
        current = take(switch_url, bank_urls)
        if _books(current) == _books(previous):
            return current
        previous = current
        time.sleep(0.2)
    raise RuntimeError(f"the ledgers kept changing over {attempts + 1} reads; is something still sending payments?")


def _books(snap: Snapshot) -> tuple[Any, Any]:
    return snap["switch"], snap["banks"]
