"""`load.json`: what the open-model arrival generator did, next to the history it wrote.

The history has a line for every scheduled arrival; this file says how well the generator kept to
the schedule, so a reader can tell a slow system from a starved load generator: arrivals scheduled,
sent, sent late (more than LATE_S after their time), not sent (more than NOT_SENT_AFTER_S late:
recorded as unavailable, error `not-sent`), refused by the in-flight bound (error
`in-flight-bound`), and the most customers in flight at once. Written by the locustfile (each
worker process its own `load.<pid>.json`), merged by harness.load.control, read by the checkers;
docs/run-directory.md describes it. No Locust here: any layer may read it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import RunFileError

# A customer sent more than this after its scheduled time counts as late (the benchmark's measure).
LATE_S = 0.05
# A customer the generator could not send within this of its scheduled time is not sent at all: it
# is recorded as unavailable at its scheduled time (the customer gave up), so a starved generator
# shows up as lost demand instead of silently shifting arrivals later.
NOT_SENT_AFTER_S = 1.0

COUNTS = ("planned", "scheduled", "sent", "late", "not_sent", "in_flight_bound")
FILE = "load.json"


def part_path(path: Path, pid: int) -> Path:
    """A worker process's own file beside load.json: load.<pid>.json."""
    return path.with_name(f"{path.stem}.{pid}{path.suffix}")


def parts(run_dir: Path) -> list[Path]:
    def is_part(tag: str) -> bool:  # a pid, or a remote worker's name (w1, w2, ...: harness/load/collect.py)
        return tag.isdigit() or (tag[:1] == "w" and tag[1:].isdigit())

    return sorted(p for p in run_dir.glob("load.*.json") if is_part(p.name.split(".")[1]))


def write(path: Path, figures: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(figures), indent=2))
    tmp.replace(path)  # a reader never sees half a file


def merge(target: Path) -> Path | None:
    """Fold the workers' load.<pid>.json into load.json (counts added; `max_in_flight` is the largest
    of one process: processes hold their own bounds), then delete the parts. None when there is nothing."""
    found = parts(target.parent)
    if not found:
        return target if target.exists() else None
    merged: dict[str, Any] = {}
    for p in found:
        try:
            one = json.loads(p.read_text())
        except ValueError:
            continue  # a worker killed while writing: its arrivals are still in the history
        if not merged:
            merged = {**one, "processes": 0}
        else:
            for key in COUNTS:
                merged[key] = merged.get(key, 0) + one.get(key, 0)
            merged["max_in_flight"] = max(merged.get("max_in_flight", 0), one.get("max_in_flight", 0))
            merged["max_late_ms"] = max(merged.get("max_late_ms") or 0.0, one.get("max_late_ms") or 0.0)
        merged["processes"] += 1
    if merged:
        write(target, merged)
    for p in found:
        with contextlib.suppress(OSError):
            p.unlink()
    return target if merged else None


def read(path: Path) -> dict[str, Any] | None:
    """The figures of load.json; None when the run had no open-model generator (closed model, or older)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc})", fix="run the scenario again") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
