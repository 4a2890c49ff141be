"""Read every ledger of the running system into one snapshot (harness/ledgers.py owns its file).

The snapshot is taken through a `LedgerSource`: `HttpLedgerSource` reads the participant contract's
read API (harness/contract.py; the bundled mock is its reference implementation), the same for the
mock the harness started and for an external target. A read of an optional capability the target
does not offer is left out, and the snapshot's `not_offered` names the capability: the checks that
need it are then "not applicable" rather than failed.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from harness import ledger_export
from harness.ledger_export import ExportError
from harness.ledgers import Snapshot
from harness.target import Target

Offers = Callable[[str], bool]  # whether the target offers an optional capability

# Snapshot key -> (the contract capability it belongs to, the read path).
SWITCH_READS = {
    "transfers": ("switch_reads", "/transfers"),
    "participants": ("positions", "/participants"),
    "windows": ("settlement", "/settlement/windows"),
    "movements": ("settlement", "/settlement/movements"),
}
BANK_READS = {
    "payments": ("bank_reads", "/payments"),
    "credits": ("bank_reads", "/credits"),
    "accounts": ("bank_books", "/accounts"),
    "entries": ("bank_books", "/entries"),
}


def everything(capability: str) -> bool:
    return True


def required_only(capability: str) -> bool:
    """Only the required reads (payments, credits, transfers): enough to count what is pending."""
    return capability in ("switch_reads", "bank_reads")


class LedgerSource(Protocol):
    """Where the checkers' snapshot comes from."""

    def take(self) -> Snapshot: ...


def _get(url: str, timeout_s: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read())


class HttpLedgerSource:
    """The contract's read API of a switch and its banks (the mock's, or an external target's)."""

    def __init__(self, switch_url: str, bank_urls: dict[str, str], offers: Offers = everything) -> None:
        self.switch_url = switch_url
        self.bank_urls = bank_urls
        self.offers = offers

    def take(self) -> Snapshot:
        offered = self.offers
        snap: Snapshot = {
            "taken_at": time.time(),
            "switch": {key: _get(self.switch_url + path) for key, (cap, path) in SWITCH_READS.items() if offered(cap)},
            "banks": {
                code: {key: _get(url + path) for key, (cap, path) in BANK_READS.items() if offered(cap)}
                for code, url in self.bank_urls.items()
            },
        }
        missing = sorted({cap for cap, _ in (*SWITCH_READS.values(), *BANK_READS.values()) if not offered(cap)})
        if missing:
            snap["not_offered"] = missing
        return snap


class ExportLedgerSource:
    """Ledger export files the target's own system writes (harness/ledger_export.py): `command`, when
    given, is run first (sh, from the working directory) to write them; then every file is read and
    validated."""

    def __init__(
        self, directory: Path, codes: list[str], offers: Offers = everything, command: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:  # fmt: skip
        self.directory = directory
        self.codes = codes
        self.offers = offers
        self.command = command
        self.timeout_s = timeout_s

    def take(self) -> Snapshot:
        if self.command:
            try:
                done = subprocess.run(
                    ["sh", "-c", self.command], capture_output=True, text=True, timeout=self.timeout_s,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise ExportError(
                    f"ledgers.command did not finish within {self.timeout_s:.0f} s: {self.command}",
                    "make the exporter finish, or write the files yourself and drop ledgers.command",
                ) from None
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise ExportError(
                    f"ledgers.command exited {done.returncode}: {self.command}"
                    + (f" ({' / '.join(tail)})" if tail else ""),
                    "fix the exporter; it must write the files under ledgers.dir and exit 0",
                )
        return ledger_export.read(self.directory, self.codes, self.offers)


def source_for(target: Target, stable: bool = True) -> LedgerSource:
    """Where the checkers read an external target's books: its read API (read until two reads agree
    when `stable`) or its export files, as its target file says (`ledgers:`)."""
    urls = {p.code: p.url for p in target.participants}
    if target.ledgers.source == "export":
        assert target.ledgers.dir is not None  # validated with the target file
        return ExportLedgerSource(Path(target.ledgers.dir), target.codes, target.offers, target.ledgers.command)
    if stable:
        return _Stable(target.switch.url, urls, target.offers)
    return HttpLedgerSource(target.switch.url, urls, target.offers)


class _Stable:
    def __init__(self, switch_url: str, bank_urls: dict[str, str], offers: Offers) -> None:
        self.args = (switch_url, bank_urls)
        self.offers = offers

    def take(self) -> Snapshot:
        return take_stable(*self.args, offers=self.offers)


def take(switch_url: str, bank_urls: dict[str, str], offers: Offers = everything) -> Snapshot:
    """Fetch the switch's and every bank's books over their read endpoints."""
    return HttpLedgerSource(switch_url, bank_urls, offers).take()


def opening_money(snap: Snapshot) -> dict[str, Any]:
    """Customer money (balances + held in flight) and settlement money of a snapshot: None where the
    target does not offer the reads."""
    banks = snap["banks"].values()
    customer = None
    if all("accounts" in b for b in banks):
        customer = sum(a["balance"] for b in banks for a in b["accounts"]) + sum(
            p["amount"] for b in banks for p in b["payments"] if p["status"] == "PDNG"
        )
    participants = snap["switch"].get("participants")
    settlement = None if participants is None else sum(p["settlement_balance"] for p in participants)
    # Each bank's settlement balance before every movement its books hold: where the ledger replay
    # starts rebuilding them from (the target may have settled windows before this run).
    origin = None
    movements = snap["switch"].get("movements")
    if participants is not None and movements is not None:
        origin = {p["bank"]: p["settlement_balance"] for p in participants}
        for m in movements:
            origin[m["bank"]] = origin.get(m["bank"], 0) - m["amount"]
    return {"customer_money": customer, "settlement_money": settlement, "settlement_origin": origin}


def take_stable(
    switch_url: str, bank_urls: dict[str, str], attempts: int = 20, offers: Offers = everything
) -> Snapshot:
    """A snapshot that two consecutive reads agree on.

    Each ledger is read over several HTTP calls, one service after another, so a payment still
    moving while we read (a debit between a bank's payments and its accounts) would show as money
    lost or created. Reading until nothing changes makes the checkers judge a settled state."""
    source = HttpLedgerSource(switch_url, bank_urls, offers)
    previous = source.take()
    for _ in range(attempts):
        current = source.take()
        if _books(current) == _books(previous):
            return current
        previous = current
        time.sleep(0.2)
    raise RuntimeError(f"the ledgers kept changing over {attempts + 1} reads; is something still sending payments?")


def _books(snap: Snapshot) -> tuple[Any, Any]:
    return snap["switch"], snap["banks"]
