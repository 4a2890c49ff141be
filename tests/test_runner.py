"""The runner and its checkers have teeth: a naive run is caught, and flipping an expectation
flips the verdict. Re-checking a saved run directory gives the same result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.faults import FaultSpec
from harness.runner import RunOutcome, check, run
from harness.scenario import (
    AvailabilityExpectation,
    ConsistencyExpectation,
    Expectations,
    LoadSpec,
    Scenario,
    TopologySpec,
)

pytestmark = pytest.mark.slow
pytest_plugins = ["pytester"]


def short_scenario(resilience: str, verdict: str) -> Scenario:
    return Scenario(
        name=f"teeth-{resilience}",
        topology=TopologySpec(banks=2, resilience=resilience, accounts=100),  # type: ignore[arg-type]
        # The naive run keeps the closed model working end to end; the robust one runs the default.
        load=LoadSpec(model="closed", users=8, duration=10)
        if resilience == "naive"
        else LoadSpec(rate=60, duration=10),
        faults=[
            FaultSpec(
                name="slow-payee",
                kind="latency",
                targets=["switch->BNKB"],
                start=2,
                duration=4,
                attributes={"latency": 2500},
            )
        ],
        expect=Expectations(
            availability=AvailabilityExpectation(baseline_success_ratio=None, steady_success_ratio=None),
            consistency=ConsistencyExpectation(verdict=verdict, max_time_to_consistency_s=20),  # type: ignore[arg-type]
        ),
    )


@pytest.fixture(scope="module")
def naive_run(tmp_path_factory: pytest.TempPathFactory) -> RunOutcome:
    return run(short_scenario("naive", "anomalies_detected"), tmp_path_factory.mktemp("runs"), progress=None)


def flipped(outcome: RunOutcome, tmp_path: Path, verdict: str) -> RunOutcome:
    copy = tmp_path / "copy"
    shutil.copytree(outcome.run_dir, copy)
    scenario = yaml.safe_load((copy / "scenario.yaml").read_text())
    scenario["expect"]["consistency"]["verdict"] = verdict
    (copy / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    return check(copy, progress=None)


def test_naive_components_are_caught(naive_run: RunOutcome) -> None:
    rec = naive_run.result["consistency"]["reconciliation"]
    load = naive_run.result["availability"]["load"]
    assert (load["model"], load["users"], load["describe"]) == ("closed", 8, "closed model, 8 customers")
    assert not (naive_run.run_dir / "load.json").exists()  # no arrival generator in the closed model
    page = (naive_run.run_dir / "report.html").read_text()
    assert "Load model: closed model, 8 customers" in page and "undercounts outages" in page
    assert naive_run.ok, naive_run.failure_report()  # it expected anomalies, and they were found
    assert rec["anomalies"]["credit_without_debit"] > 0
    examples = rec["examples"]["credit_without_debit"][0]
    assert (examples["payer"], examples["payee"]) == ("RJCT:AB05", "ACCP")


def test_flipping_the_expectation_flips_the_verdict(naive_run: RunOutcome, tmp_path: Path) -> None:
    strict = flipped(naive_run, tmp_path, "consistent")
    assert not strict.ok
    assert any("credit_without_debit" in f for f in strict.failures), strict.failures
    assert strict.result["verdict"] == "fail"


def test_check_from_a_saved_run_directory_reproduces_the_result(naive_run: RunOutcome) -> None:
    again = check(naive_run.run_dir, progress=None)
    first = json.loads((naive_run.run_dir / "result.json").read_text())
    assert again.result["consistency"] == naive_run.result["consistency"] == first["consistency"]
    assert again.result["availability"] == naive_run.result["availability"]


def test_robust_components_pass_and_an_anomaly_expectation_fails(tmp_path: Path) -> None:
    outcome = run(short_scenario("robust", "consistent"), tmp_path / "runs", progress=None)
    assert outcome.ok, outcome.failure_report()
    load = outcome.result["availability"]["load"]
    operations = outcome.result["availability"]["operations"]
    assert (load["model"], load["rate"], load["scheduled"]) == ("open", 60, operations)
    assert outcome.result["consistency"]["time_to_consistency_s"] is not None
    assert not flipped(outcome, tmp_path, "anomalies_detected").ok


def test_a_malformed_scenario_file_is_a_collection_error_naming_file_field_and_fix(
    pytester: pytest.Pytester,
) -> None:
    scenarios = pytester.mkdir("scenarios")
    (scenarios / "broken.yaml").write_text(
        "name: broken\nfaults:\n  - {kind: latency, targets: switch->ZBNK, start: 1, duration: 2}\n"
    )
    result = pytester.runpytest("scenarios", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*broken.yaml: faults[[]0[]].targets*'switch->ZBNK'*links are*"])
    assert result.ret != 0
