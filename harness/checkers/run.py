"""Check a run directory: load its files, run the composed checks, build the Result.

Pure and re-runnable: `harness check RUN_DIR` gives the same result from the same files. A file the
checks cannot do without is a RunDirError naming it and the fix (a killed run leaves a partial
directory); a check that crashes on what it read is an "unknown" verdict, and the others still run.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import loadfile
from harness.checkers.checks import CHECKS, RunInputs
from harness.checkers.compose import Checker, compose
from harness.counters import read_counters
from harness.errors import RunDirError
from harness.history import read_history, read_jsonl
from harness.result import VERDICT_OF, ConsistencyFigures, Result, ScenarioInfo
from harness.rundir import RunDir
from harness.scenario import load_recorded as load_scenario
from harness.timeline import read_timeline
from mock_switch.config import ConfigError, SystemConfig


def _rundir(run_dir: Path | RunDir) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise RunDirError(
            f"{path}: not valid JSON ({exc}); the run stopped while writing it",
            fix="run the scenario again (`harness run` with the scenario.yaml it holds)",
        ) from None


def load_inputs(run_dir: Path | RunDir) -> RunInputs:
    """Read what the checks need; RunDirError (or ScenarioError, RunFileError) names what is wrong."""
    rd = _rundir(run_dir)
    rd.require(rd.scenario, rd.system, rd.history, rd.ledgers)
    try:
        system = SystemConfig.load(rd.system)
    except ConfigError as exc:
        raise RunDirError(str(exc)) from None
    return RunInputs(
        scenario=load_scenario(rd.scenario),
        system=system,
        history=read_history(rd.history),
        faults=read_timeline(rd.faults),  # no faults.jsonl: no fault
        ledgers=_json(rd.ledgers),
        samples=read_jsonl(rd.consistency) if rd.consistency.exists() else [],
        proxy_counters=read_counters(rd.proxy_counters),  # none: no Toxiproxy evidence, history only
        load_figures=loadfile.read(rd.load_figures),
        opening=_json(rd.opening) if rd.opening.exists() else None,  # an external run's opening money
    )


def check_inputs(
    inputs: RunInputs, run_dir: Path | RunDir, checks: Mapping[str, Checker[RunInputs]] = CHECKS
) -> Result:
    """Run the checks on loaded inputs and build the Result (the run directory gives its metadata)."""
    rd = _rundir(run_dir)
    composed = compose(checks)(inputs)
    figures: dict[str, Any] = {}
    for verdict in composed.checks.values():
        figures.update(verdict.figures)
    scenario = inputs.scenario
    return Result(
        scenario=ScenarioInfo(
            name=scenario.name,
            description=scenario.description,
            backend=scenario.backend,
            seed=scenario.seed,
            source=scenario.source,
            expects_anomalies=scenario.expect.consistency.verdict == "anomalies_detected",
        ),
        verdict=VERDICT_OF[composed.verdict],
        failures=composed.failures,
        checks=composed.checks,
        availability=figures.get("availability"),
        bulkhead_success_ratio=figures.get("bulkhead_success_ratio"),
        consistency=ConsistencyFigures(
            reconciliation=figures.get("reconciliation"),
            customer_view=figures.get("customer_view"),
            time_to_consistency_s=figures.get("time_to_consistency_s"),
            anomaly_opened=figures.get("anomaly_opened"),
            time_to_consistency_resolution_s=figures.get("time_to_consistency_resolution_s"),
        ),
        faults=inputs.faults,
        evidence=figures.get("evidence"),
        ledger_replay=figures.get("ledger_replay"),
        stress=figures.get("stress"),
        environment=_json(rd.environment) if rd.environment.exists() else {},
        # No command.txt (a hand-made directory): the scenario file it holds re-runs it.
        reproduce=rd.command.read_text().strip()
        if rd.command.exists()
        else f"harness run {shlex.quote(scenario.source or str(rd.scenario))}",
        run_dir=str(rd.path),
    )


def check_run(run_dir: Path | RunDir) -> Result:
    """Every check of a run directory, from its files alone. Writes nothing (see result.write_result)."""
    return check_inputs(load_inputs(run_dir), run_dir)
