"""The fault timeline (`faults.jsonl`): what the nemesis did, when, to what. Written and read here only.

One JSON object per line: `{"event": "apply" | "heal" | "heal-failed", "fault": NAME, "kind": KIND,
"targets": [...], "at": EPOCH_SECONDS, ...}`. `apply` is stamped when applying began, `heal` when the
heal completed, so neither edge flatters the system. `heal-failed` means the nemesis could not undo
the fault (it then reset Toxiproxy): the window ends there, and every reader shows it.

`fault_windows` is the one pairing of applies with heals; the availability checker, the bulkhead
figure, the report and the web session's replayable scenario all use it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

from harness.errors import TimelineError
from harness.history import JsonlAppender, read_jsonl

EVENTS = ("apply", "heal", "heal-failed")
CLOSING = ("heal", "heal-failed")


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """One apply..heal of a named fault (a flapping fault has several)."""

    fault: str
    kind: str | None
    targets: tuple[str, ...]
    apply: float
    heal: float | None  # None: never healed, active until the end of the history
    time_to_detect_s: float | None = None
    operations: int = 0
    good: int = 0
    heal_failed: str | None = None  # the nemesis's error when it could not heal

    @property
    def end(self) -> float:
        return math.inf if self.heal is None else self.heal


def event_problem(e: Mapping[str, Any]) -> str | None:
    """What is wrong with one event, or None."""
    if e.get("event") not in EVENTS:
        return f"event {e.get('event')!r} is not one of {', '.join(EVENTS)}"
    if not isinstance(e.get("fault"), str):
        return "fault event has no 'fault' name"
    at = e.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        return f"fault {e['fault']!r}: 'at' must be epoch seconds, got {at!r}"
    return None


def read_timeline(path: str | Path) -> list[dict[str, Any]]:
    """The events of a faults.jsonl, each checked; a missing file is an empty timeline (no faults)."""
    if not Path(path).exists():
        return []
    return read_jsonl(path, event_problem)


class TimelineWriter:
    """Appends events to faults.jsonl, flushed per line (a killed harness keeps what it did)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = JsonlAppender(path)

    def write(self, event: str, fault: str, kind: str, targets: Sequence[str], at: float, **extra: Any) -> None:
        line: dict[str, Any] = {"event": event, "fault": fault, "kind": kind, "targets": list(targets), "at": at}
        line.update({k: v for k, v in extra.items() if v is not None and v != {}})
        self._file.append(line)

    def close(self) -> None:
        self._file.close()


def fault_windows(faults: Iterable[Mapping[str, Any]]) -> list[FaultWindow]:
    """Pair apply and heal events per fault name, in time order; an apply without a heal stays open.

    Events of one fault at the same instant pair in whichever order is valid (heal then re-apply
    when open, apply then heal when closed), so the result does not depend on the input order.
    """
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for i, e in enumerate(faults):
        problem = event_problem(e)
        if problem:
            raise TimelineError(f"fault event {i}: {problem}")
        by_name.setdefault(e["fault"], []).append(e)
    windows: list[FaultWindow] = []
    for name, events in by_name.items():
        events.sort(key=itemgetter("at"))
        opened: Mapping[str, Any] | None = None
        k = 0
        while k < len(events):
            at = events[k]["at"]
            group = [e for e in events[k:] if e["at"] == at]
            k += len(group)
            applies = [e for e in group if e["event"] == "apply"]
            heals = [e for e in group if e["event"] in CLOSING]
            while applies or heals:
                if opened is None:
                    if not applies:
                        raise TimelineError(
                            f"fault {name!r}: {heals[0]['event']} at {at} without an apply before it",
                            fix="every heal must follow an apply of the same fault",
                        )
                    opened = applies.pop()
                elif heals:
                    closing = heals.pop()
                    failed = str(closing.get("error", "heal failed")) if closing["event"] == "heal-failed" else None
                    windows.append(_window(name, opened, at, failed))
                    opened = None
                else:
                    raise TimelineError(
                        f"fault {name!r}: applied again at {at} while active since {opened['at']}",
                        fix="heal it before applying it again",
                    )
        if opened is not None:
            windows.append(_window(name, opened, None))
    windows.sort(key=lambda w: (w.apply, w.fault))
    return windows


def _window(name: str, apply: Mapping[str, Any], heal: float | None, failed: str | None = None) -> FaultWindow:
    targets = apply.get("targets") or ()
    if isinstance(targets, str):
        targets = (targets,)
    return FaultWindow(
        name, apply.get("kind"), tuple(str(t) for t in targets), float(apply["at"]), heal, heal_failed=failed
    )


def active_periods(windows: Sequence[FaultWindow]) -> list[tuple[float, float]]:
    """Union of the fault windows: when at least one fault is active (touching windows merge)."""
    periods: list[tuple[float, float]] = []
    for w in sorted(windows, key=lambda w: w.apply):
        if periods and w.apply <= periods[-1][1]:
            periods[-1] = (periods[-1][0], max(periods[-1][1], w.end))
        else:
            periods.append((w.apply, w.end))
    return periods


def last_heal(windows: Sequence[FaultWindow]) -> float | None:
    heals = [w.heal for w in windows if w.heal is not None]
    return max(heals) if heals else None
