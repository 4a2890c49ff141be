"""The run's typed hand-offs: one availability rule for every reader, one fault-timeline reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.checkers.availability import SLO, check_availability
from harness.errors import TimelineError
from harness.history import BUSINESS_REASONS, is_available
from harness.observe.live import LiveAvailability
from harness.timeline import TimelineWriter, fault_windows, read_timeline


def op(i: int, outcome: str, reason: str | None = None, latency_ms: float = 10.0, t: float = 1000.0) -> dict[str, Any]:
    return {
        "op": "payment", "id": f"p{i}", "payer": "BNKA", "payee": "BNKB", "amount": 100,
        "invoke": t, "complete": t + latency_ms / 1000, "outcome": outcome,
        "status": {"ok": "ACSC", "fail": "RJCT"}.get(outcome, "PDNG"), "reason": reason,
        "http": 200, "error": None, "latency_ms": latency_ms,
    }  # fmt: skip


CASES = [
    (op(1, "ok"), True),
    (op(2, "fail", "AM04"), True),
    (op(3, "fail", "DUPL"), True),  # the switch refusing a re-used id with another body is doing its job
    (op(4, "fail", "FF01"), True),
    (op(5, "fail", "AB05"), False),
    (op(6, "fail", "AG09"), False),
    (op(7, "unknown"), False),
    (op(8, "ok", latency_ms=2500.0), False),  # definitive, but over the 2 s SLO
]


@pytest.mark.parametrize(("operation", "available"), CASES)
def test_one_availability_rule(operation: dict[str, Any], available: bool) -> None:
    assert is_available(operation, slo_ms=2000) is available


def test_the_checker_and_the_live_panel_count_alike(tmp_path: Path) -> None:
    """Every reader judges with history.is_available: the checker's ratio equals the panel's."""
    history = [
        {**o, "invoke": 1000.0 + i, "complete": 1000.0 + i + o["latency_ms"] / 1000} for i, (o, _) in enumerate(CASES)
    ]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(o) + "\n" for o in history))
    live = LiveAvailability(path, slo_ms=2000).poll(now=2000.0)
    checked = check_availability(history, [], SLO(latency_slo_ms=2000)).summary()
    expected = sum(a for _, a in CASES)
    assert live["session"]["good"] == expected
    assert checked["overall"]["success_ratio"] == pytest.approx(expected / len(CASES))


def test_locust_counts_business_rejects_as_the_checker_does() -> None:
    """Locust marks a request failed only when the checker would count it unavailable (DUPL included),
    by the same rule: the reason, the kind of request (AG09 answers a status query) and the latency SLO.

    The locustfile is imported in a child: Locust monkey-patches the standard library on import."""
    probe = (
        "import json, sys\n"
        "from harness.load.locustfile import Seen, failure_message\n"
        "cases = json.loads(sys.argv[1])\n"
        "print(json.dumps([failure_message(Seen(o, 'ACSC' if o == 'ok' else 'RJCT', r, 200), k, ms, 2000.0)"
        " for o, r, k, ms in cases]))\n"
    )
    cases = [("fail", code, "payment", 50.0) for code in sorted(BUSINESS_REASONS | {"AB05", "AB06", "AB08", "AG09"})]
    cases += [("ok", None, "payment", 50.0), ("ok", None, "payment", 2500.0), ("fail", "DUPL", "payment", 2500.0)]
    cases += [("fail", "AG09", "status_query", 50.0), ("fail", "AC01", "name_enquiry", 50.0)]
    cases += [("ok", None, "name_enquiry", 50.0), ("fail", "AB06", "name_enquiry", 50.0)]
    out = subprocess.run([sys.executable, "-c", probe, json.dumps(cases)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    verdicts = json.loads(out.stdout.strip().splitlines()[-1])
    for (outcome, reason, kind, ms), failure in zip(cases, verdicts, strict=True):
        line = {"op": kind, "outcome": outcome, "reason": reason, "latency_ms": ms}
        assert (failure is None) is is_available(line, slo_ms=2000), (line, failure)
    assert "over the 2,000 ms latency SLO" in verdicts[-5]  # DUPL, but too late


def test_a_heal_failed_event_closes_its_window_and_is_readable(tmp_path: Path) -> None:
    """The nemesis writes heal-failed when it cannot undo a fault; `harness check` must still read the run."""
    writer = TimelineWriter(tmp_path / "faults.jsonl")
    writer.write("apply", "freeze", "pause", ["switch"], at=10.0)
    writer.write("heal-failed", "freeze", "pause", ["switch"], at=15.0, error="SIGCONT: no such process")
    writer.write("apply", "slow", "latency", ["switch->BNKB"], at=12.0, attributes={"latency": 100})
    writer.write("heal", "slow", "latency", ["switch->BNKB"], at=14.0)
    writer.close()
    events = read_timeline(tmp_path / "faults.jsonl")
    windows = {w.fault: w for w in fault_windows(events)}
    assert windows["freeze"].heal == 15.0 and windows["freeze"].heal_failed == "SIGCONT: no such process"
    assert windows["slow"].heal == 14.0 and windows["slow"].heal_failed is None


def test_the_timeline_reader_names_what_is_wrong(tmp_path: Path) -> None:
    assert read_timeline(tmp_path / "absent.jsonl") == []  # a run without faults has no timeline
    with pytest.raises(TimelineError, match=r"'x': heal-failed at 5 without an apply"):
        fault_windows([{"event": "heal-failed", "fault": "x", "at": 5}])
    with pytest.raises(TimelineError, match="event 'undo' is not one of apply, heal, heal-failed"):
        fault_windows([{"event": "undo", "fault": "x", "at": 5}])
