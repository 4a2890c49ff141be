"""The availability checker on synthetic histories: phases, time to detect and recover, what counts
as available, the SLO verdicts, the JSONL readers, and properties that hold for any history."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.checkers.availability import (
    MAX_NINES,
    SLO,
    PhaseTarget,
    check_availability,
    error_budget_burn,
    nines,
    percentile,
)
from harness.errors import RunFileError, TimelineError
from harness.history import BUSINESS_REASONS
from harness.history import read_history as load_history
from harness.timeline import read_timeline as load_faults

T0 = 1_795_440_000.0  # an epoch second; every time below is an offset from it


def op(n: int, invoke: float, latency_ms: float = 50.0, outcome: str = "ok", **kw: Any) -> dict[str, Any]:
    status = {"ok": "ACSC", "fail": "RJCT"}.get(outcome)
    row = {
        "op": "payment",
        "id": f"p{n:06d}",
        "payer": "BNKA",
        "payee": "BNKB",
        "amount": 1500,
        "invoke": T0 + invoke,
        "complete": T0 + invoke + latency_ms / 1000,
        "outcome": outcome,
        "status": status,
        "reason": None,
        "http": 200 if outcome == "ok" else None,
        "error": None,
        "latency_ms": latency_ms,
    }
    row.update(kw)
    return row


def timeout(n: int, invoke: float, after_ms: float = 3000.0) -> dict[str, Any]:
    return op(n, invoke, after_ms, "unknown", error="timeout")


def fault(name: str, apply: float, heal: float | None) -> list[dict[str, Any]]:
    events = [{"event": "apply", "fault": name, "kind": "timeout", "targets": ["switch->BNKB"], "at": T0 + apply}]
    if heal is not None:
        events.append({"event": "heal", "fault": name, "kind": "timeout", "targets": ["switch->BNKB"], "at": T0 + heal})
    return events


def load(seconds: float, rate: int = 10, bad: Any = None) -> list[dict[str, Any]]:
    """`rate` payments a second for `seconds`; `bad(t)` says whether a payment sent at t fails, and how."""
    ops = []
    for n in range(int(seconds * rate)):
        t = n / rate
        kind = bad(t) if bad else None
        if kind == "timeout":
            ops.append(timeout(n, t))
        elif kind == "connection":
            ops.append(op(n, t, 5.0, "unknown", error="connection"))
        else:
            ops.append(op(n, t))
    return ops


def phases_of(summary: dict[str, Any]) -> list[str]:
    return [seg["phase"] for seg in summary["timeline"]]


def verdict(summary: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [v for v in summary["verdicts"] if v["name"] == name]
    assert len(found) == 1, f"verdict {name!r} not in {[v['name'] for v in summary['verdicts']]}"
    return found[0]


# ----------------------------------------------------------------------------- (1) no faults


def test_no_faults_all_ok_is_one_baseline_phase() -> None:
    result = check_availability(load(20), [], SLO(p99_ms=100))
    s = result.summary()
    assert phases_of(s) == ["baseline"]
    assert s["phases"]["baseline"]["operations"] == 200
    assert s["phases"]["baseline"]["success_ratio"] == 1.0
    assert s["phases"]["fault"]["operations"] == 0 and s["phases"]["fault"]["success_ratio"] is None
    assert s["overall"]["nines"] == MAX_NINES
    assert s["overall"]["error_budget_burn"] == 0.0
    assert s["time_to_recover_s"] is None and s["faults"] == [] and s["recoveries"] == []
    assert {v["name"] for v in s["verdicts"]} == {"success_ratio.baseline", "p99_ms.baseline"}
    assert result.ok and s["ok"]
    assert len(s["per_second"]) == 20 and sum(b["count"] for b in s["per_second"]) == 200
    assert s["per_second"][0]["t"] == 0 and s["per_second"][0]["throughput"] == 10
    json.dumps(s, allow_nan=False)


def test_baseline_p99_over_target_fails() -> None:
    s = check_availability(load(5), [], SLO(p99_ms=40)).summary()
    assert verdict(s, "p99_ms.baseline") == {"name": "p99_ms.baseline", "target": 40, "measured": 50.0, "ok": False}
    assert not s["ok"]


# ----------------------------------------------------------------------------- (2) a timeout fault


def timeout_run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # Payments sent while the fault is on hang for the 3 s client timeout.
    history = load(40, bad=lambda t: "timeout" if 10 <= t < 20 else None)
    return history, fault("payee-timeout", 10, 20)


def test_timeout_fault_detect_and_recover() -> None:
    history, faults = timeout_run()
    s = check_availability(history, faults, SLO(max_recovery_s=5)).summary()
    assert phases_of(s) == ["baseline", "fault", "recovery", "steady"]
    # By completion time: nobody saw a failure before the first timeout expired, 3 s after the apply.
    (f,) = s["faults"]
    assert f["healed"] and f["apply"] == pytest.approx(10 - 0.05) and f["heal"] == pytest.approx(20 - 0.05)
    assert f["time_to_detect_s"] == pytest.approx(3.0, abs=1.0)
    by_completion = s["phases_by_completion"]
    assert by_completion["baseline"]["success_ratio"] == 1.0
    assert by_completion["fault"]["success_ratio"] < 0.1
    assert by_completion["fault"]["errors"] == {
        "timeout": by_completion["fault"]["operations"] - by_completion["fault"]["good"]
    }
    # By demand the fault phase is exactly the 100 payments asked while it was on, none served.
    assert (s["phases"]["fault"]["operations"], s["phases"]["fault"]["good"]) == (100, 0)
    assert s["phases"]["baseline"]["success_ratio"] == 1.0
    # Payments sent just before the heal time out after it: recovery waits for those stragglers. The
    # last one (sent at 19.9) times out at 22.9; the next answer, at 22.95, is the recovery.
    assert s["time_to_recover_s"] == pytest.approx(2.95, abs=1e-6)
    assert s["resolution_s"]["time_to_recover_s"] == pytest.approx(0.05, abs=1e-6)
    assert s["recoveries"][0]["recovered"] == pytest.approx(s["recoveries"][0]["heal"] + s["time_to_recover_s"])
    assert by_completion["recovery"]["success_ratio"] < 1.0
    assert by_completion["steady"]["success_ratio"] == 1.0 and by_completion["steady"]["operations"] > 150
    assert s["phases"]["recovery"]["success_ratio"] == 1.0  # asked after the heal: all served
    assert verdict(s, "time_to_recover_s")["ok"] and s["ok"]
    # Seconds 14-19 after the start see only timeouts.
    assert all(b["success_ratio"] == 0.0 for b in s["per_second"] if 14 <= b["t"] < 20)
    assert s["per_second"][15]["errors"] == {"timeout": 10} and s["per_second"][15]["p50_ms"] == 3000.0


def test_recovery_slower_than_objective_fails() -> None:
    history, faults = timeout_run()
    result = check_availability(history, faults, SLO(max_recovery_s=1))
    assert not result.ok
    assert verdict(result.summary(), "time_to_recover_s")["ok"] is False


def test_fault_phase_target_can_be_set() -> None:
    history, faults = timeout_run()
    s = check_availability(history, faults, SLO(phase_targets={"fault": PhaseTarget(success_ratio=0.5)})).summary()
    assert verdict(s, "success_ratio.fault")["ok"] is False


def test_recovery_needs_consecutive_good_seconds() -> None:
    # After the heal, failures complete until 21.705 and again from 23.205 to 23.705: the first three
    # clean seconds start with the next answer, at 23.85 (not at the next whole second).
    history = load(40, bad=lambda t: "connection" if 10 <= t < 20 or 21.2 <= t < 21.8 or 23.2 <= t < 23.8 else None)
    s = check_availability(history, fault("crash", 10, 20)).summary()
    assert s["time_to_recover_s"] == pytest.approx(3.85, abs=1e-6)
    assert s["recoveries"][0]["resolution_s"] == pytest.approx(0.145, abs=1e-6)  # since the failure at 23.705


def test_recovery_needs_answers_not_silence() -> None:
    # After the heal nothing completes for 5 s (customers hang), then every payment is fine: the
    # first answer is the recovery, and the silence before it is how little is known of when.
    history = [o for o in load(40) if not 20 <= o["complete"] - T0 < 25]
    s = check_availability(history, fault("pause", 10, 20)).summary()
    assert s["time_to_recover_s"] == pytest.approx(5.05, abs=1e-6)
    assert s["resolution_s"]["time_to_recover_s"] == pytest.approx(5.05, abs=1e-6)


def test_recovery_is_found_to_the_answer_not_snapped_to_a_whole_second() -> None:
    # 100 payments a second, 5 ms each; failures until 0.30 s after a heal just past a bucket edge
    # (buckets start at the first completion, 0.005). Whole-second buckets reported the next edge,
    # 0.995 s after the heal; the answers say 0.3 s.
    heal, back = 20.01, 20.31
    history = [
        op(n, n / 100, 5.0, "unknown", error="connection") if 10 <= n / 100 < back else op(n, n / 100, 5.0)
        for n in range(4000)
    ]
    s = check_availability(history, fault("crash", 10, heal)).summary()
    ttr, resolution = s["time_to_recover_s"], s["resolution_s"]["time_to_recover_s"]
    assert resolution is not None and 0 < resolution <= 0.1
    assert abs(ttr - 0.30) <= resolution  # the last failure at +0.295, the first good answer at +0.305
    assert ttr == pytest.approx(0.305, abs=1e-6)
    assert s["phases"]["recovery"]["duration_s"] == pytest.approx(ttr, abs=1e-3)
    assert s["resolution_s"]["buckets_s"] == 1.0  # the per-second figures stay per second


def test_time_to_detect_is_the_first_bad_completion_exactly() -> None:
    history = load(30)
    history[95] = op(95, 9.5, 50.0, "fail", reason="AB05")  # before the apply: not this fault's doing
    history[102] = op(102, 10.2, 37.0, "unknown", error="connection")  # completes at 10.237
    history[103] = timeout(103, 10.3)  # sent later, known only at 13.3
    s = check_availability(history, fault("crash", 10, 15)).summary()
    assert s["faults"][0]["time_to_detect_s"] == pytest.approx(0.237, abs=1e-6)
    assert s["resolution_s"]["time_to_detect_s"] == 0.0


# ----------------------------------------------------------------------------- (3) what is available


def test_business_rejects_are_available_technical_ones_are_not() -> None:
    history = [op(n, n / 10) for n in range(70)]
    history += [op(100 + n, 7 + n / 10, outcome="fail", reason="AM04") for n in range(10)]
    history += [op(200 + n, 8 + n / 10, outcome="fail", reason="AC01") for n in range(5)]
    history += [op(300 + n, 9 + n / 10, outcome="fail", reason="AB05") for n in range(5)]
    history += [timeout(400 + n, 10 + n / 10) for n in range(5)]
    history += [op(500 + n, 11 + n / 10, outcome="unknown", status="PDNG", http=202) for n in range(5)]
    s = check_availability(history).summary()
    assert s["operations"] == 100
    assert s["overall"]["success_ratio"] == 0.85
    assert s["overall"]["errors"] == {"AM04": 10, "AB05": 5, "AC01": 5, "PDNG": 5, "timeout": 5}
    assert s["overall"]["nines"] == pytest.approx(-math.log10(0.15), abs=1e-3)
    assert s["overall"]["error_budget_burn"] == pytest.approx(150.0)
    assert not s["ok"]


@pytest.mark.parametrize(
    ("reason", "available"),
    [
        *((r, True) for r in sorted(BUSINESS_REASONS)),
        ("AB05", False),
        ("AB06", False),
        ("AB08", False),
        ("AG09", False),
    ],
)
def test_each_reason_code(reason: str, available: bool) -> None:
    s = check_availability([op(0, 0.0, outcome="fail", reason=reason)]).summary()
    assert s["overall"]["good"] == int(available)
    assert s["overall"]["errors"] == {reason: 1}


@pytest.mark.parametrize(
    "row",
    [
        {"outcome": "fail", "reason": None},  # a reject without a reason is not a business answer
        {"outcome": "unknown", "error": "http-5xx", "http": 503},
        {"outcome": "unknown", "error": "connection"},
        {"outcome": "weird"},
    ],
)
def test_no_definitive_answer_is_unavailable(row: dict[str, Any]) -> None:
    s = check_availability([op(0, 0.0, **row)]).summary()
    assert s["overall"]["good"] == 0 and s["overall"]["success_ratio"] == 0.0


def test_status_queries_do_not_count_unless_asked() -> None:
    history = [op(0, 0.0), op(1, 0.1, outcome="fail", reason="AG09", op="status_query")]
    assert check_availability(history).operations == 1
    assert check_availability(history, op_types=None).operations == 2


# ----------------------------------------------------------------------------- (4) never recovers


def test_fault_that_never_recovers() -> None:
    history = load(40, bad=lambda t: "connection" if t >= 10 else None)
    result = check_availability(history, fault("crash", 10, 20))
    s = result.summary()
    assert s["time_to_recover_s"] is None and s["recoveries"][0]["recovered"] is None
    assert phases_of(s) == ["baseline", "fault", "recovery"]
    assert s["phases"]["steady"]["operations"] == 0
    assert verdict(s, "time_to_recover_s") == {
        "name": "time_to_recover_s",
        "target": None,
        "measured": None,
        "ok": False,
    }
    assert not result.ok
    assert any("never recovered" in w for w in s["warnings"])


def test_unhealed_fault_is_open_until_the_end_and_flagged() -> None:
    history = load(30, bad=lambda t: "connection" if t >= 10 else None)
    s = check_availability(history, fault("crash", 10, None)).summary()
    assert phases_of(s) == ["baseline", "fault"]
    assert s["faults"][0]["healed"] is False and s["faults"][0]["heal"] is None
    # Open from the apply to the last completion (29.9 s + 5 ms, measured from the first at 5 ms).
    assert s["phases"]["fault"]["duration_s"] == pytest.approx(19.905, abs=0.001)
    assert s["time_to_recover_s"] is None and not s["ok"]
    assert any("never healed" in w for w in s["warnings"])


def test_run_ending_right_after_the_heal_has_not_recovered() -> None:
    history = load(21, bad=lambda t: "connection" if 10 <= t < 20 else None)
    assert check_availability(history, fault("crash", 10, 20)).time_to_recover_s is None


# ----------------------------------------------------------------------------- (5) flapping


def test_flapping_fault_phases() -> None:
    windows = [(10, 15), (25, 30), (40, 45)]
    history = load(60, bad=lambda t: "connection" if any(a <= t < h for a, h in windows) else None)
    faults = [e for a, h in windows for e in fault("flap", a, h)]
    s = check_availability(history, faults).summary()
    assert phases_of(s) == ["baseline"] + ["fault", "recovery", "steady"] * 3
    assert [f["fault"] for f in s["faults"]] == ["flap"] * 3
    assert all(f["time_to_detect_s"] < 0.2 for f in s["faults"])
    assert s["phases"]["fault"]["duration_s"] == pytest.approx(15.0, abs=0.01)
    assert s["phases"]["fault"]["success_ratio"] == 0.0
    assert len(s["recoveries"]) == 3 and all(r["time_to_recover_s"] < 1.5 for r in s["recoveries"])
    assert s["time_to_recover_s"] == s["recoveries"][-1]["time_to_recover_s"]
    assert s["phases"]["steady"]["success_ratio"] == 1.0 and s["ok"]


def test_flapping_faster_than_recovery_stays_in_recovery() -> None:
    # 1 s gaps between flaps are shorter than the 3 s recovery window: never steady in between.
    windows = [(10, 12), (13, 15), (16, 18)]
    history = load(30, bad=lambda t: "connection" if any(a <= t < h for a, h in windows) else None)
    faults = [e for a, h in windows for e in fault("flap", a, h)]
    s = check_availability(history, faults).summary()
    assert phases_of(s) == ["baseline", "fault", "recovery", "fault", "recovery", "fault", "recovery", "steady"]


def test_overlapping_faults_make_one_fault_period() -> None:
    history = load(40, bad=lambda t: "connection" if 10 <= t < 25 else None)
    s = check_availability(history, fault("a", 10, 20) + fault("b", 15, 25)).summary()
    assert phases_of(s) == ["baseline", "fault", "recovery", "steady"]
    assert s["phases"]["fault"]["duration_s"] == pytest.approx(15.0, abs=0.01)
    assert s["faults"][1]["time_to_detect_s"] == pytest.approx(0.005, abs=0.01)


def test_bad_fault_timelines_name_the_fault() -> None:
    with pytest.raises(TimelineError, match=r"'x'.*heal at .* without an apply"):
        check_availability([op(0, 0.0)], [{"event": "heal", "fault": "x", "at": T0}])
    with pytest.raises(TimelineError, match="'x': applied again"):
        check_availability([op(0, 0.0)], fault("x", 1, None) + fault("x", 2, None))
    with pytest.raises(TimelineError, match="fault event 0: event 'stop'"):
        check_availability([op(0, 0.0)], [{"event": "stop", "fault": "x", "at": T0}])


# ----------------------------------------------------------------------------- (6) latency SLO


def test_latency_over_the_slo_is_unavailable() -> None:
    history = [op(0, 0.0, 1999.0), op(1, 0.1, 2000.0), op(2, 0.2, 2000.5), op(3, 0.3, 2500.0, "fail", reason="AM04")]
    s = check_availability(history).summary()
    assert s["overall"]["good"] == 2 and s["overall"]["slow"] == 2
    assert s["overall"]["errors"] == {"AM04": 1}
    assert check_availability(history, slo=SLO(latency_slo_ms=3000)).overall.good == 4


def test_slow_answers_are_detected_as_failures() -> None:
    history = load(30, bad=None)
    history = [op(n, o["invoke"] - T0, 2500.0) if 10 <= o["invoke"] - T0 < 20 else o for n, o in enumerate(history)]
    s = check_availability(history, fault("latency", 10, 20)).summary()
    assert s["faults"][0]["time_to_detect_s"] == pytest.approx(2.5, abs=0.01)
    assert s["phases"]["fault"]["slow"] > 0 and s["phases"]["fault"]["errors"] == {}


# ----------------------------------------------------------------------------- (7) run files


def test_load_history_and_faults(tmp_path: Path) -> None:
    history, faults = timeout_run()
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(o) + "\n" for o in history) + "\n")
    (tmp_path / "faults.jsonl").write_text("".join(json.dumps(e) + "\n" for e in faults))
    assert load_history(tmp_path / "history.jsonl") == history
    assert load_faults(tmp_path / "faults.jsonl") == faults


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text(json.dumps(op(0, 0.0)) + "\n\n" + '{"op": "payment", "id": \n' + json.dumps(op(1, 0.1)) + "\n")
    with pytest.raises(RunFileError, match=r"history\.jsonl:3: not valid JSON"):
        load_history(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(RunFileError, match=r"history\.jsonl:1: expected a JSON object, got list"):
        load_history(path)
    faults = tmp_path / "faults.jsonl"
    faults.write_text(json.dumps(fault("x", 1, 2)[0]) + "\n" + '{"event": "heal", "fault": "x", "at": "soon"}\n')
    with pytest.raises(RunFileError, match=r"faults\.jsonl:2: fault 'x': 'at' must be epoch seconds"):
        load_faults(faults)


def test_bad_operation_names_the_operation() -> None:
    with pytest.raises(ValueError, match=r"'p000001'.*'complete'"):
        check_availability([op(0, 0.0), op(1, 0.1, complete=None)])
    with pytest.raises(ValueError, match=r"'p000001'.*'complete'"):
        check_availability([op(0, 0.0), op(1, 0.1, complete=math.nan)])
    no_latency = op(0, 0.0)
    no_latency["latency_ms"] = no_latency["invoke"] = None
    with pytest.raises(ValueError, match=r"'p000000'.*latency"):
        check_availability([no_latency])


# ----------------------------------------------------------------------------- measures and edges


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    assert percentile([7.0], 0.5) == 7.0
    assert percentile([], 0.99) is None


def test_nines_and_budget() -> None:
    assert nines(0.999) == pytest.approx(3.0)
    assert nines(1.0) == MAX_NINES
    assert nines(None) is None
    assert error_budget_burn(0.998, 0.999) == pytest.approx(2.0)
    assert error_budget_burn(1.0, 0.999) == 0.0


def test_empty_history_is_not_ok_and_serialises() -> None:
    result = check_availability([], fault("x", 1, 2))
    assert not result.ok
    json.dumps(result.summary(), allow_nan=False)


def test_slo_errors_name_the_setting() -> None:
    with pytest.raises(ValueError, match="success_ratio=1"):
        SLO(success_ratio=1)
    with pytest.raises(ValueError, match="unknown phases \\['stedy'\\]"):
        SLO(phase_targets={"stedy": PhaseTarget(0.99)})


def test_a_large_history_buckets_every_second() -> None:
    # Speed is measured by benchmarks, not asserted here; this checks the bucketing at scale.
    history = [op(n, n / 500, 20.0 + n % 97) for n in range(100_000)]
    result = check_availability(history, fault("f", 50, 100))
    # 200 s of sends, and the last answers arrive up to 116 ms later: 201 one-second buckets.
    assert result.operations == 100_000 and len(result.per_second) == 201


# ----------------------------------------------------------------------------- properties

OUTCOMES = st.sampled_from(
    [{"outcome": "ok"}] * 4
    + [{"outcome": "fail", "reason": r} for r in ("AM04", "AC01", "AB05", "AG09")]
    + [{"outcome": "unknown", "error": "timeout"}, {"outcome": "unknown", "status": "PDNG"}]
)
OPS = st.lists(
    st.tuples(st.floats(0, 60, allow_nan=False), st.floats(0, 4000, allow_nan=False), OUTCOMES),
    min_size=1,
    max_size=200,
)
WINDOWS = st.lists(st.tuples(st.floats(-5, 70), st.floats(0, 20), st.booleans()), max_size=3)
FLAPS = st.lists(st.floats(-5, 70), max_size=6, unique=True)


def build(ops: list[tuple[float, float, dict[str, Any]]], windows: Any, flaps: list[float]) -> tuple[Any, Any]:
    history = [op(n, t, lat, **kind) for n, (t, lat, kind) in enumerate(ops)]
    faults = []
    for k, (start, length, healed) in enumerate(windows):
        faults += fault(f"f{k}", start, start + length if healed else None)
    points = sorted(flaps)  # one flapping fault: apply, heal, apply, heal, ...
    for k, at in enumerate(points):
        faults.append({"event": "heal" if k % 2 else "apply", "fault": "flap", "at": T0 + at})
    return history, faults


@settings(max_examples=100, deadline=None)
@given(OPS, WINDOWS, FLAPS, st.data())
def test_properties(ops: Any, windows: Any, flaps: list[float], data: st.DataObject) -> None:
    history, faults = build(ops, windows, flaps)
    result = check_availability(history, faults)
    s = result.summary()
    # Each phase's percentiles are those of the operations completing in its segments.
    by_phase: dict[str, list[float]] = {}
    for o in history:
        seg = next(g for g in result.timeline if g.start <= o["complete"] < g.end or g is result.timeline[-1])
        by_phase.setdefault(seg.phase, []).append(o["latency_ms"])
    for phase, stats in result.phases_by_completion.items():
        lats = sorted(by_phase.get(phase, []))
        assert (stats.operations, stats.p50_ms, stats.p999_ms) == (
            len(lats),
            percentile(lats, 0.5),
            percentile(lats, 0.999),
        )
    # By demand: each in the phase its invoke falls in, or the fault's when one was applied in flight.
    applies = [f["at"] for f in faults if f["event"] == "apply"]
    by_demand: dict[str, list[float]] = {}
    for o in history:
        seg = next((g for g in result.timeline if g.start <= o["invoke"] < g.end), None)
        phase = (
            seg.phase
            if seg
            else (result.timeline[0] if o["invoke"] < result.timeline[0].start else result.timeline[-1]).phase
        )
        if any(o["invoke"] < a <= o["complete"] for a in applies):
            phase = "fault"
        by_demand.setdefault(phase, []).append(o["latency_ms"])
    for phase, stats in result.phases.items():
        lats = sorted(by_demand.get(phase, []))
        assert (stats.operations, stats.p50_ms, stats.p999_ms) == (
            len(lats),
            percentile(lats, 0.5),
            percentile(lats, 0.999),
        )
    json.dumps(s, allow_nan=False)
    # The phases partition the run: contiguous, from the first completion to the last.
    timeline = s["timeline"]
    assert timeline[0]["start"] == 0 and timeline[-1]["end"] == s["duration_s"]
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(timeline))
    assert sum(p["duration_s"] for p in s["phases"].values()) == pytest.approx(s["duration_s"], abs=0.01)
    assert sum(p["operations"] for p in s["phases"].values()) == len(history)
    assert sum(b["count"] for b in s["per_second"]) == len(history)
    assert sum(b["good"] for b in s["per_second"]) == s["overall"]["good"]
    ratios = [s["overall"]["success_ratio"]] + [p["success_ratio"] for p in s["phases"].values()]
    ratios += [b["success_ratio"] for b in s["per_second"]]
    assert all(r is None or 0 <= r <= 1 for r in ratios)
    assert all(f["time_to_detect_s"] is None or f["time_to_detect_s"] >= 0 for f in s["faults"])
    assert s["time_to_recover_s"] is None or s["time_to_recover_s"] >= 0
    # The order the lines were written in does not matter.
    shuffled = check_availability(data.draw(st.permutations(history)), data.draw(st.permutations(faults)))
    assert shuffled.summary() == s


# ----------------------------------------------------------------------------- open model: demand


def test_demand_places_each_arrival_by_its_scheduled_time() -> None:
    """A frozen system: arrivals scheduled inside the fault are answered only after the heal. By
    completion they land in recovery; by demand they are the fault's, and none of them was served."""
    history = []
    for n in range(200):  # 10 arrivals a second for 20 s
        t = n / 10
        if 5 <= t < 9:  # frozen: answered late, after the heal at 9 s, over the 2 s SLO
            history.append(op(n, t, (9.5 - t) * 1000 + 2500))
        else:
            history.append(op(n, t))
    s = check_availability(history, fault("freeze", 5, 9)).summary()
    assert (s["phases"]["fault"]["operations"], s["phases"]["fault"]["good"]) == (40, 0)
    assert s["phases"]["baseline"]["operations"] == 50 and s["phases"]["baseline"]["success_ratio"] == 1.0
    assert s["phases_by_completion"]["fault"]["operations"] == 0  # nothing finished inside the freeze
    assert sum(d["operations"] for d in s["phases"].values()) == s["overall"]["operations"] == 200
    # The verdicts judge the demand: the baseline's 50 arrivals, all served.
    baseline = next(v for v in s["verdicts"] if v["name"] == "success_ratio.baseline")
    assert baseline["measured"] == 1.0


def test_a_payment_in_flight_when_a_fault_is_applied_is_the_faults() -> None:
    """Asked in the baseline, answered late because the fault began meanwhile: it is the fault's,
    so a baseline verdict is not spent by payments the fault decided, and steady is judged on
    payments asked after recovery."""
    history = [op(n, n / 10) for n in range(50)]  # baseline, 10 a second, answered in 1 ms
    history.append({**op(50, 4.95, 3000.0, "unknown", error="timeout")})  # in flight at the apply (5 s)
    history += [op(n, n / 10) for n in range(51, 200) if not 50 <= n < 90]  # nothing asked during the fault
    s = check_availability(history, fault("crash", 5, 9)).summary()
    assert s["phases"]["baseline"]["operations"] == 50 and s["phases"]["baseline"]["success_ratio"] == 1.0
    assert (s["phases"]["fault"]["operations"], s["phases"]["fault"]["good"]) == (1, 0)
    assert s["phases_by_completion"]["baseline"]["operations"] == 50  # completed at 7.95 s, inside the fault
    assert all(v["ok"] for v in s["verdicts"] if v["name"].startswith("success_ratio")), s["verdicts"]


def test_a_null_phase_expectation_makes_no_verdict() -> None:
    slo = SLO(phase_targets={"baseline": PhaseTarget(judged=False), "steady": PhaseTarget(judged=False)})
    history = [op(n, n / 10, 3000.0 if n < 40 else 1.0) for n in range(200)]  # baseline over the SLO
    s = check_availability(history, fault("f", 5, 6), slo).summary()
    names = {v["name"] for v in s["verdicts"]}
    assert "success_ratio.baseline" not in names and "success_ratio.steady" not in names, names
    assert s["phases"]["baseline"]["success_ratio"] < 0.5  # measured all the same


def test_arrivals_never_sent_are_unavailable_at_their_scheduled_time() -> None:
    history = [op(0, 0.0), op(1, 0.5), op(2, 1.0)]
    for n, error in ((3, "not-sent"), (4, "in-flight-bound")):
        history.append(op(n, 1.5, 0.0, "unknown", error=error, sent=None))
    s = check_availability(history).summary()
    assert s["overall"]["operations"] == 5 and s["overall"]["good"] == 3
    assert s["overall"]["errors"] == {"in-flight-bound": 1, "not-sent": 1}


def test_name_enquiries_are_measured_apart_from_payments() -> None:
    history = [
        op(0, 0.0),
        op(1, 0.1, op="name_enquiry"),
        op(2, 0.2, 50.0, "unknown", op="name_enquiry", error="timeout"),
    ]
    assert check_availability(history).operations == 1
    enquiries = check_availability(history, op_types=("name_enquiry",)).summary()["overall"]
    assert (enquiries["operations"], enquiries["good"]) == (2, 1)
