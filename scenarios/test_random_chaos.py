"""Random chaos: Hypothesis draws fault schedules and runs each one for real.

- Against robust components, every schedule must leave the books consistent.
- Against naive components, Hypothesis must find a schedule that breaks consistency and shrink it
  to a small one, printed as a scenario file a person can replay with `harness run`.

Each example is a full run (Toxiproxy, services, Locust), so CI draws few examples from small
domains. For a longer hunt: HARNESS_CHAOS_EXAMPLES=50 pytest scenarios/test_random_chaos.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from harness.faults import FaultSpec, schedule_conflict
from harness.runner import RunOutcome, run
from harness.scenario import (
    AvailabilityExpectation,
    ConsistencyExpectation,
    Expectations,
    LoadSpec,
    Scenario,
    TopologySpec,
    dump,
)

pytestmark = pytest.mark.scenario

EXAMPLES = int(os.environ.get("HARNESS_CHAOS_EXAMPLES", "2"))
# Real runs the naive hunt may spend, searching and shrinking together (each is ~20 s).
RUN_BUDGET = int(os.environ.get("HARNESS_CHAOS_RUNS", "8"))
LOAD_S = 12.0
RATE = 60.0  # arrivals per second
TOPOLOGY_BANKS = 3
LINKS = [n for n in TopologySpec(banks=TOPOLOGY_BANKS).link_names if not n.startswith("customers->")]
SERVICES = TopologySpec(banks=TOPOLOGY_BANKS).service_names


@st.composite
def faults(draw: st.DrawFn) -> FaultSpec:
    # Order matters: Hypothesis shrinks towards the first choice, so the simplest faults come first.
    kind = draw(st.sampled_from(["latency", "timeout", "down", "crash", "pause", "reset_peer"]))
    start = draw(st.sampled_from([2.0, 4.0, 6.0]))
    duration = draw(st.sampled_from([2.0, 4.0]))
    if kind in ("crash", "pause"):
        return FaultSpec(kind=kind, targets=[draw(st.sampled_from(SERVICES))], start=start, duration=duration)
    attributes = {"latency": {"latency": draw(st.sampled_from([1500, 3000]))}, "timeout": {"timeout": 0},
                  "reset_peer": {"timeout": 0}}.get(kind, {})  # fmt: skip
    return FaultSpec(kind=kind, targets=[draw(st.sampled_from(LINKS))], start=start, duration=duration,
                     attributes=attributes)  # fmt: skip


schedules = (
    st.lists(faults(), min_size=1, max_size=3)
    .map(lambda fs: [f.model_copy(update={"name": f"f{i + 1}-{f.kind.replace('_', '-')}"}) for i, f in enumerate(fs)])
    # A scenario refuses two faults on one service at once (healing one would undo the other).
    .filter(lambda fs: schedule_conflict(fs, TopologySpec(banks=TOPOLOGY_BANKS).link_names, SERVICES) is None)
)


def scenario_for(schedule: list[FaultSpec], resilience: str) -> Scenario:
    return Scenario(
        name=f"random-chaos-{resilience}",
        description="A fault schedule drawn by Hypothesis.",
        topology=TopologySpec(banks=TOPOLOGY_BANKS, resilience=resilience, accounts=200),  # type: ignore[arg-type]
        # Open model at a modest rate: faults meet steady demand, and a 12 s run stays quick on 2 cores.
        load=LoadSpec(rate=RATE, duration=LOAD_S),
        faults=schedule,
        expect=Expectations(
            # Random schedules say nothing about availability targets; this hunt is about money.
            availability=AvailabilityExpectation(baseline_success_ratio=None, steady_success_ratio=None),
            consistency=ConsistencyExpectation(verdict="consistent", max_time_to_consistency_s=30),
        ),
    )


def run_schedule(schedule: list[FaultSpec], resilience: str, out: Path) -> RunOutcome:
    return run(scenario_for(schedule, resilience), out, progress=None)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])  # fmt: skip
@given(schedule=schedules)
def test_robust_components_stay_consistent_under_random_faults(
    schedule: list[FaultSpec], pytestconfig: pytest.Config
) -> None:
    outcome = run_schedule(schedule, "robust", Path(pytestconfig.getoption("--harness-out")))
    consistency = outcome.result["consistency"]
    assert consistency["reconciliation"]["anomaly_count"] == 0, outcome.failure_report()
    assert consistency["customer_view"]["lost_acknowledged"] == 0, outcome.failure_report()


def test_naive_components_break_and_hypothesis_shrinks_the_schedule(pytestconfig: pytest.Config) -> None:
    # The hunt's runs fail on purpose (that is what it searches for): keep them out of the suite
    # page's scenario list, in a folder of their own.
    out = Path(pytestconfig.getoption("--harness-out")) / "random-chaos-hunt"
    runs: list[RunOutcome] = []
    verdicts: dict[str, bool] = {}

    def breaks_consistency(schedule: list[FaultSpec]) -> bool:
        key = dump(scenario_for(schedule, "naive"))
        if key not in verdicts:
            if len(runs) >= RUN_BUDGET:
                return False  # budget spent: keep the smallest breaking schedule found so far
            outcome = run_schedule(schedule, "naive", out)
            runs.append(outcome)
            verdicts[key] = int(outcome.result["consistency"]["reconciliation"]["anomaly_count"]) > 0
        return verdicts[key]

    hunt = settings(
        max_examples=max(EXAMPLES, 6),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    try:
        minimal = find(schedules, breaks_consistency, settings=hunt)
    except NoSuchExample:
        pytest.fail(f"no drawn schedule broke the naive components in {len(runs)} real runs: the checker has no teeth")
    replay = out / "random-chaos-naive-minimal.yaml"
    replay.parent.mkdir(parents=True, exist_ok=True)
    text = dump(scenario_for(minimal, "naive"))
    replay.write_text(text)
    print(f"\nminimal schedule that breaks naive components ({len(runs)} runs), replay with `harness run {replay}`:")
    print(text)
    # The schedule reported is one that really broke consistency in a real run, not a guess.
    assert verdicts[dump(scenario_for(minimal, "naive"))] is True
    assert 1 <= len(minimal) <= 3
