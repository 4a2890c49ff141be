"""Independent invariant checks: the switch's books rebuilt from its own transfer records.

The books checks of reconcile.py compare the switch's summaries (recorded peak exposure, final
positions, frozen window figures) with its transfers at the end of the run. This module trusts no
summary: it replays every reservation (`received_at` of a transfer reserved in a window), commit
and abort (`decided_at`), window close (the next window's `opened_at`) and settlement
(`settled_at`) in time order, rebuilds each bank's exposure as the switch defines it (position +
reservations + what closing or closed windows still owe it) at every instant, and holds it against
the cap. It also rebuilds each window's net positions and each bank's settlement balance from the
movements and the opening balances of the system configuration.

At equal timestamps releases (commits, aborts, settlements) are replayed before reservations and
closes, so a tie can only under-state exposure: a breach found is a breach.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from typing import Any

from harness.errors import HarnessError
from harness.fmt import fmt_money

Snapshot = Mapping[str, Any]

# Rank of each event kind at one timestamp (see the module docstring).
_COMMIT, _ABORT, _SETTLE, _CLOSE, _RESERVE, _REJECT = 0, 0, 1, 2, 3, 4
_EXAMPLES = 5


@dataclass
class ReplayCheck:
    name: str
    ok: bool
    detail: str


@dataclass
class BankExposure:
    cap: int
    peak: int = 0  # highest rebuilt exposure at any instant
    peak_at: float | None = None
    peak_recorded: int | None = None  # what the switch says (participants.peak_exposure)
    # The switch records its peak at reservations (exposure rises at reservations and closes only):
    # the highest rebuilt exposure right after a reservation is what it must have recorded at least.
    peak_at_reservation: int = 0
    over_cap: int = 0  # reservations after which the rebuilt exposure was over the cap
    worst_over: int = 0  # how far over, at most
    spurious_am23: int = 0  # AM23 rejections the rebuilt exposure says had room
    examples: list[str] = field(default_factory=list)


@dataclass
class Replay:
    events: int = 0
    exposure: dict[str, BankExposure] = field(default_factory=dict)
    checks: list[ReplayCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failing(self) -> list[ReplayCheck]:
        return [c for c in self.checks if not c.ok]

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "checks": [asdict(c) for c in self.checks],
            "exposure": {bank: asdict(e) for bank, e in self.exposure.items()},
        }


class SnapshotTooOld(HarnessError):
    """The ledgers.json lacks a field the replay needs (a snapshot of an older mock)."""


_NEEDS = {
    "transfers": ("payment_id", "fingerprint", "status", "reason", "window_id", "received_at", "decided_at"),
    "windows": ("window_id", "state", "opened_at", "closed_at", "settled_at", "net_positions"),
    "participants": ("bank", "net_debit_cap", "position", "reserved", "peak_exposure", "settlement_balance"),
    "movements": ("window_id", "bank", "amount", "balance_after", "at"),
}


def _require(sw: Mapping[str, Any]) -> None:
    for table, keys in _NEEDS.items():
        if table not in sw:
            raise SnapshotTooOld(
                f"ledgers.json: switch.{table} is missing; the ledger replay needs it",
                fix="run the scenario again with this harness (`harness run`) to take a complete snapshot",
            )
        for row in sw[table][:1]:
            missing = [k for k in keys if k not in row]
            if missing:
                raise SnapshotTooOld(
                    f"ledgers.json: switch.{table} rows have no {missing}; the ledger replay needs them",
                    fix="run the scenario again with this harness (`harness run`) to take a complete snapshot",
                )


def replay(snap: Snapshot, opening_settlement: Mapping[str, int] | None = None, currency: str = "") -> Replay:
    """Rebuild the switch's books from its transfers, windows and movements (see the module doc).

    `opening_settlement`: each bank's settlement balance before the run (system.json), for the
    settlement-balance rebuild; without it that check is left out."""

    def money(minor: int) -> str:
        return fmt_money(minor, currency)

    sw = snap["switch"]
    _require(sw)
    out = Replay()
    caps = {p["bank"]: int(p["net_debit_cap"]) for p in sw["participants"]}
    out.exposure = {bank: BankExposure(cap=cap) for bank, cap in caps.items()}
    for p in sw["participants"]:
        out.exposure[p["bank"]].peak_recorded = int(p["peak_exposure"])
    windows = {int(w["window_id"]): w for w in sw["windows"]}
    order = sorted(windows)
    # A window stopped taking transfers when the next one opened (closed_at is when it froze).
    close_at = {wid: float(windows[nxt]["opened_at"]) for wid, nxt in pairwise(order)}
    transfers = [t for t in sw["transfers"] if t["fingerprint"] is not None]  # not status-query tombstones

    events: list[tuple[float, int, int, str, Any]] = []
    seq = 0

    def add(at: float, rank: int, kind: str, data: Any) -> None:
        nonlocal seq
        events.append((float(at), rank, seq, kind, data))
        seq += 1

    window_problems: list[str] = []
    for t in transfers:
        wid = t["window_id"]
        if wid is None:
            if t["status"] == "RJCT" and t["reason"] == "AM23":
                add(t["received_at"], _REJECT, "am23", t)
            continue  # rejected before any reservation
        add(t["received_at"], _RESERVE, "reserve", t)
        if t["status"] == "ACSC":
            add(t["decided_at"], _COMMIT, "commit", t)
        elif t["status"] == "RJCT":
            add(t["decided_at"], _ABORT, "abort", t)
        w = windows.get(wid)
        if w is None:
            window_problems.append(f"{t['payment_id']}: reserved in window {wid}, which does not exist")
            continue
        if t["received_at"] < w["opened_at"] or (wid in close_at and t["received_at"] > close_at[wid]):
            window_problems.append(f"{t['payment_id']}: reserved at {t['received_at']:.3f}, window {wid} was not open")
        frozen = w["closed_at"] if w["state"] in ("CLOSED", "SETTLED") else None
        if t["decided_at"] is not None and frozen is not None and t["decided_at"] > frozen:
            window_problems.append(
                f"{t['payment_id']}: decided {t['decided_at'] - frozen:.3f} s after window {wid} froze its net"
                " positions"
            )
    for wid, at in close_at.items():
        add(at, _CLOSE, "close", wid)
    for wid, w in windows.items():
        if w["settled_at"] is not None:
            add(w["settled_at"], _SETTLE, "settle", wid)
    events.sort(key=lambda e: e[:3])
    out.events = len(events)

    # Per window and bank: committed net (sent - received) and pending debits, as the switch keeps them.
    net: dict[int, Counter[str]] = defaultdict(Counter)
    pending: dict[int, Counter[str]] = defaultdict(Counter)
    closed: set[int] = set()
    settled: set[int] = set()
    live: dict[str, set[int]] = defaultdict(set)  # windows (not settled) each bank has figures in
    recorded_short: list[str] = []

    def exposure(bank: str) -> int:
        total = 0
        for wid in live[bank]:
            x = net[wid][bank] + pending[wid][bank]
            total += max(0, x) if wid in closed else x
        return total

    def note(bank: str, at: float) -> int:
        x = exposure(bank)
        e = out.exposure.get(bank)
        if e is not None and x > e.peak:
            e.peak, e.peak_at = x, at
        return x

    for at, _, _, kind, data in events:
        if kind == "reserve":
            bank, wid, amount = data["debtor_bank"], data["window_id"], int(data["amount"])
            pending[wid][bank] += amount
            live[bank].add(wid)
            x = note(bank, at)
            e = out.exposure.get(bank)
            if e is not None:
                e.peak_at_reservation = max(e.peak_at_reservation, x)
            if e is not None and x > e.cap:
                e.over_cap += 1
                e.worst_over = max(e.worst_over, x - e.cap)
                if len(e.examples) < _EXAMPLES:
                    e.examples.append(f"{data['payment_id']} at {at:.3f}: exposure {money(x)} > cap {money(e.cap)}")
        elif kind == "am23":
            bank = data["debtor_bank"]
            e = out.exposure.get(bank)
            if e is not None and exposure(bank) + int(data["amount"]) <= e.cap:
                e.spurious_am23 += 1
        elif kind in ("commit", "abort"):
            debtor, wid, amount = data["debtor_bank"], data["window_id"], int(data["amount"])
            pending[wid][debtor] -= amount
            if kind == "commit":
                creditor = data["creditor_bank"]
                net[wid][debtor] += amount
                net[wid][creditor] -= amount
                live[creditor].add(wid)
                note(creditor, at)
            note(debtor, at)
        elif kind == "close":
            closed.add(data)
            for bank in [b for b, ws in live.items() if data in ws]:
                note(bank, at)
        elif kind == "settle":
            settled.add(data)
            for ws in live.values():
                ws.discard(data)

    for bank, e in out.exposure.items():
        if e.peak_recorded is not None and e.peak_recorded < e.peak_at_reservation:
            recorded_short.append(
                f"{bank}: recorded peak {money(e.peak_recorded)} < rebuilt {money(e.peak_at_reservation)}"
            )

    checks = out.checks
    over = [
        f"{bank}: {e.over_cap} reservations over the cap, worst by {money(e.worst_over)}, e.g. {e.examples[0]}"
        for bank, e in out.exposure.items()
        if e.over_cap
    ]
    checks.append(
        ReplayCheck(
            "cap_held_at_every_instant",
            not over,
            "; ".join(over)
            or "rebuilt peak exposure under the cap for every bank: "
            + ", ".join(f"{b} {money(e.peak)} / {money(e.cap)}" for b, e in out.exposure.items()),
        )
    )
    checks.append(
        ReplayCheck("recorded_peak_not_understated", not recorded_short, "; ".join(recorded_short) or "every bank")
    )
    spurious = [f"{b}: {e.spurious_am23}" for b, e in out.exposure.items() if e.spurious_am23]
    checks.append(
        ReplayCheck(
            "am23_only_when_over_cap",
            not spurious,
            ("AM23 rejections with room under the rebuilt exposure: " + ", ".join(spurious))
            if spurious
            else "every AM23 had no room",
        )
    )

    # The end state the replay reached against the switch's own summaries.
    end_problems = []
    for p in sw["participants"]:
        bank = p["bank"]
        position = sum(net[w][bank] for w in live[bank])
        reserved = sum(pending[w][bank] for w in pending)
        if position != p["position"]:
            end_problems.append(f"{bank}: position {money(p['position'])} vs replayed {money(position)}")
        if reserved != p["reserved"]:
            end_problems.append(f"{bank}: reserved {money(p['reserved'])} vs replayed {money(reserved)}")
    checks.append(
        ReplayCheck("end_state_matches_replay", not end_problems, "; ".join(end_problems) or "positions, reservations")
    )

    # Windows: each transfer reserved while its window was open, decided before it froze; each frozen
    # window's net positions are its transfers' net.
    for wid, w in windows.items():
        if w["state"] in ("CLOSED", "SETTLED"):
            frozen = {k: v for k, v in w["net_positions"].items() if v}
            actual = {k: v for k, v in net[wid].items() if v}
            if frozen != actual:
                window_problems.append(f"window {wid}: frozen net {frozen} vs replayed {actual}")
            if w["settled_at"] is not None and w["closed_at"] is not None and w["settled_at"] < w["closed_at"]:
                window_problems.append(f"window {wid}: settled before it was closed")
    checks.append(
        ReplayCheck(
            "windows_rebuilt_from_transfers",
            not window_problems,
            _listed(window_problems) or f"{len(windows)} windows",
        )
    )

    # Settlement: every movement is its window's replayed net, and the balances follow from them.
    settle_problems: list[str] = []
    moved: dict[int, dict[str, int]] = defaultdict(dict)
    for m in sw["movements"]:
        moved[int(m["window_id"])][m["bank"]] = int(m["amount"])
        w = windows.get(int(m["window_id"]))
        if w is None or w["settled_at"] is None:
            settle_problems.append(f"movement for window {m['window_id']}, which is not settled")
    for wid in settled:
        paid = {k: v for k, v in moved[wid].items() if v}
        owed = {k: -v for k, v in net[wid].items() if v}
        if paid != owed:
            settle_problems.append(f"window {wid}: moved {paid} vs replayed net {owed}")
    if opening_settlement is not None:
        balance = dict(opening_settlement)
        for m in sorted(sw["movements"], key=lambda m: int(m.get("movement_id") or 0)):
            balance[m["bank"]] = balance.get(m["bank"], 0) + int(m["amount"])
            if int(m["balance_after"]) != balance[m["bank"]]:
                settle_problems.append(
                    f"{m['bank']} window {m['window_id']}: balance after {money(int(m['balance_after']))}"
                    f" vs opening + movements {money(balance[m['bank']])}"
                )
        for p in sw["participants"]:
            if int(p["settlement_balance"]) != balance.get(p["bank"], 0):
                settle_problems.append(
                    f"{p['bank']}: settlement balance {money(int(p['settlement_balance']))}"
                    f" vs opening + movements {money(balance.get(p['bank'], 0))}"
                )
    checks.append(
        ReplayCheck(
            "settlement_rebuilt_from_movements",
            not settle_problems,
            _listed(settle_problems) or f"{len(settled)} settled windows, {len(sw['movements'])} movements",
        )
    )
    return out


def _listed(problems: list[str]) -> str:
    if not problems:
        return ""
    more = f" (and {len(problems) - _EXAMPLES} more)" if len(problems) > _EXAMPLES else ""
    return "; ".join(problems[:_EXAMPLES]) + more
