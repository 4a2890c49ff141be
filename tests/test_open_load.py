"""The open model against real services: customers keep arriving whatever the system answers.

A frozen switch must show up as demand that was not served (about 4*R arrivals in a 4 s freeze at R
per second, none of them available), not as a quiet few seconds; the in-flight bound and the split
over Locust processes must be exact. Slowness is made by the faults and the services' own knobs,
never by racing the clock: every count below follows from the schedule, which is exact.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import post
from test_load import bank_payment_ids, read_history

from harness.faults import FaultSpec
from harness.load.control import OpenLoad, run_load
from harness.runner import run
from harness.scenario import (
    AvailabilityExpectation,
    ConsistencyExpectation,
    Expectations,
    LoadSpec,
    Scenario,
    TopologySpec,
)
from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system
from harness.timeline import fault_windows, read_timeline

pytestmark = pytest.mark.slow

RATE = 60  # arrivals per second: gentle enough for a busy 2-core machine, 240 in a 4 s freeze
# An arrival in the last SLO-worth of the freeze can still be served in time after the thaw; a short
# SLO keeps that share small, so the freeze's demand must come out near 0 % available.
SLO_MS = 500.0


def payments(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["op"] == "payment"]


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario = Scenario(
        name="open-freeze",
        topology=TopologySpec(banks=2, accounts=100),
        load=LoadSpec(rate=RATE, duration=14),
        faults=[FaultSpec(name="freeze", kind="pause", targets=["switch"], start=4, duration=4)],
        expect=Expectations(
            availability=AvailabilityExpectation(
                latency_slo_ms=SLO_MS, baseline_success_ratio=None, steady_success_ratio=None
            ),
            consistency=ConsistencyExpectation(max_time_to_consistency_s=30),
        ),
    )
    return run(scenario, tmp_path_factory.mktemp("runs"), progress=None).run_dir


def test_a_frozen_switch_meets_the_full_demand_and_serves_none_of_it(frozen_run: Path) -> None:
    lines = read_history(frozen_run / "history.jsonl")
    window = fault_windows(read_timeline(frozen_run / "faults.jsonl"))[0]
    assert window.heal is not None
    frozen_s = window.heal - window.apply
    inside = [p for p in payments(lines) if window.apply <= p["invoke"] < window.heal]
    # Evenly spaced arrivals: the freeze holds rate * its length of them, give or take one per
    # generator, whether or not anything answered (a closed loop would have sent about 20 here).
    assert abs(len(inside) - RATE * frozen_s) <= 2, (len(inside), frozen_s)
    assert 0.9 * 4 * RATE <= len(inside) <= 1.25 * 4 * RATE
    # Those that arrived more than the latency SLO before the thaw cannot have been served in time.
    early = [p for p in inside if p["invoke"] < window.heal - SLO_MS / 1000]
    assert early and not [p for p in early if p["outcome"] == "ok" and p["latency_ms"] <= SLO_MS]

    result = json.loads((frozen_run / "result.json").read_text())
    a = result["availability"]
    assert a["load"]["model"] == "open" and a["load"]["rate"] == RATE
    assert a["load"]["scheduled"] == len(payments(lines)) == len({p["id"] for p in payments(lines)})
    # Availability of the freeze's demand: its arrivals, wherever their answers landed. (By completion
    # the fault phase holds only the few answers that came back during it: a name enquiry waits out
    # the switch timeout first, so most answers land after the thaw, in recovery.)
    # (The fault phase by demand also holds the payments in flight when the freeze began.)
    fault_demand = a["phases"]["fault"]
    assert abs(fault_demand["operations"] - RATE * frozen_s) <= 4, fault_demand
    assert fault_demand["success_ratio"] <= SLO_MS / 1000 / frozen_s + 0.05, fault_demand
    assert a["phases_by_completion"]["fault"]["operations"] < fault_demand["operations"] / 2
    assert a["overall"]["operations"] == a["load"]["scheduled"]  # every arrival counted once
    assert a["name_enquiries"]["operations"] == a["load"]["sent"]  # one enquiry per customer that left


def test_the_report_and_the_console_name_the_load_model(frozen_run: Path) -> None:
    from harness.runner import RunOutcome, console_summary

    page = (frozen_run / "report.html").read_text()
    block = page[page.index('id="load-model"') :]
    assert f"Load model: open model, {RATE} arrivals/s" in block[:400]
    assert "Name enquiries" in block[: block.index("Phases:")]
    banner = page[page.index('id="availability-basis"') :][:200]
    assert f"by demand, open model, {RATE} arrivals/s" in banner  # the headline figure says its load model
    result = json.loads((frozen_run / "result.json").read_text())
    text = console_summary(RunOutcome(frozen_run, result))
    assert f"overall by demand (open model, {RATE} arrivals/s)" in text
    assert "name enquiry" in text and "by demand" in text


def test_name_enquiries_during_the_freeze_are_reported_apart(frozen_run: Path) -> None:
    result = json.loads((frozen_run / "result.json").read_text())
    enquiries = result["availability"]["name_enquiries"]
    assert enquiries["operations"] > 0 and enquiries["phases"]["baseline"]["operations"] > 0
    # The payer bank asks the frozen switch: no enquiry made more than the SLO before the thaw is
    # answered in time (AB06 after the bank's switch timeout, or the party after the thaw).
    lines = read_history(frozen_run / "history.jsonl")
    window = fault_windows(read_timeline(frozen_run / "faults.jsonl"))[0]
    assert window.heal is not None
    thaw_s = window.heal - SLO_MS / 1000
    asked = [e for e in lines if e["op"] == "name_enquiry" and window.apply <= e["invoke"] < thaw_s]
    assert asked and all(e["outcome"] != "ok" or e["latency_ms"] > SLO_MS for e in asked)


@pytest.fixture(scope="module")
def slow_credits(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTopology]:
    """Payees take 0.8 s to credit; banks answer PDNG after 0.3 s and customers ask again."""
    run_dir = tmp_path_factory.mktemp("slow-credits-open")
    system = build_system(banks=2, accounts=50, customer_timeout_s=0.3, switch_timeout_s=3.0, payee_timeout_s=2.0)
    with LocalTopology(system, run_dir) as topo:
        for code in topo.bank_codes:
            assert post(topo.bank(code).url + "/admin/behaviour", {"credit_delay_ms": 800})[0] == 200
        yield topo


def test_arrivals_over_the_in_flight_bound_are_recorded_unavailable(slow_credits: LocalTopology) -> None:
    """Each journey takes at least the 0.3 s PDNG plus a status query: 3 customers in flight cannot
    carry 40 arrivals a second, and the rest must be in the history, not silently dropped."""
    run_dir = slow_credits.run_dir
    result = run_load(run_dir, open=OpenLoad(rate=40, duration_s=3, max_in_flight=3), request_timeout_s=5)
    assert result.history is not None and result.returncode == 0
    lines = payments(read_history(result.history))
    assert len(lines) == len({p["id"] for p in lines}) == 120  # every scheduled arrival, once
    refused = [p for p in lines if p["error"] == "in-flight-bound"]
    assert refused and all(p["sent"] is None and p["outcome"] == "unknown" for p in refused)
    figures = json.loads((run_dir / "load.json").read_text())
    assert figures["scheduled"] == figures["planned"] == 120
    assert figures["in_flight_bound"] == len(refused)
    assert figures["sent"] == 120 - len(refused) - figures["not_sent"]
    assert figures["max_in_flight"] == figures["max_in_flight_bound"] == 3
    sent_ids = {p["id"] for p in lines if p["sent"] is not None}
    assert sent_ids == set(bank_payment_ids(slow_credits))  # what left reached the banks; nothing else did
    # Locust counts the refused arrivals as failed requests of their own.
    assert result.stats()["arrival not sent"]["failures"] == len(refused) + figures["not_sent"]


def test_two_processes_share_the_schedule_without_duplicates(tmp_path: Path) -> None:
    with LocalTopology(build_system(banks=3, accounts=100), tmp_path) as topo:
        result = run_load(tmp_path, open=OpenLoad(rate=50, duration_s=4), processes=2)
        banks_saw = bank_payment_ids(topo)
    assert result.history is not None
    lines = read_history(result.history)
    ids = [p["id"] for p in payments(lines)]
    assert len(ids) == len(set(ids)) == 200
    assert len({i.split("-")[1] for i in ids}) == 2, "expected arrivals from two worker processes"
    # Arrival numbers (the id's last part) are the schedule's, 0..199, each played by one process.
    assert sorted(int(i.rsplit("-", 1)[1].lstrip("a")) for i in ids) == list(range(200))
    assert sorted(p["id"] for p in payments(lines) if p["sent"] is not None) == sorted(banks_saw)
    assert Counter(line["op"] for line in lines)["name_enquiry"] == sum(p["sent"] is not None for p in payments(lines))
    figures = json.loads((tmp_path / "load.json").read_text())
    assert (figures["processes"], figures["scheduled"], figures["planned"]) == (2, 200, 200)
    assert not (tmp_path / "history.1.jsonl").exists() and not list(tmp_path.glob("load.*.json"))
