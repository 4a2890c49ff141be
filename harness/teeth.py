"""`harness teeth`: the harness checks its own teeth.

Each deliberately broken variant of the mock (mock_switch/bugs.py) runs a short scenario whose
expectations are the robust system's (consistent, with its stress declared); a variant is caught
when some check fails on it, and the table says which. The robust system runs the same scenario
and must pass: a check that fails on everything catches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.faults import FaultSpec
from harness.scenario import (
    AvailabilityExpectation,
    ConsistencyExpectation,
    Expectations,
    LoadSpec,
    Scenario,
    SettlementAction,
    TopologySpec,
    dump,
    load,
)
from mock_switch.bugs import BUGS

ROBUST = "robust"  # the row of the unbroken system: it must pass


def teeth_scenario(bug: str | None) -> Scenario:
    """One short scenario that stresses every invariant a variant breaks: BNKA's customers pay into
    a small net debit cap (NGN 3,000) while every credit is 300 ms slow (reservations pile up, so
    the cap is reached under the fault); twice, a window is settled (headroom freed) and the next one
    closed a quarter second later, on the payments that rushed in. Blocked accounts (one in
    50) make aborts. About 13 s of load at 50 arrivals/s."""
    name = f"teeth-{bug or ROBUST}"
    return Scenario(
        name=name,
        description=f"harness teeth: the {bug or 'unbroken'} variant under a short cap-and-settlement scenario",
        topology=TopologySpec(net_debit_cap=300_000, bug=bug),
        load=LoadSpec(rate=50, duration=13, payer_banks=["BNKA"], amount_min=5_000, amount_max=20_000),
        faults=[
            FaultSpec(
                name="slow-credits",
                kind="latency",
                targets=["switch->BNKB", "switch->BNKC", "switch->BNKD"],
                start=1,
                duration=11,
                attributes={"latency": 300},
            )
        ],
        # Settling frees headroom, BNKA's next payments rush in, and the window is closed on them.
        settlement=[
            SettlementAction(at=4, action="close_and_settle"),
            SettlementAction(at=4.25, action="close"),
            SettlementAction(at=8, action="close_and_settle"),
            SettlementAction(at=8.25, action="close"),
        ],
        expect=Expectations(
            # Availability is not what this judges: only the books and the payments.
            availability=AvailabilityExpectation(baseline_success_ratio=None, steady_success_ratio=None),
            consistency=ConsistencyExpectation(verdict="consistent", max_time_to_consistency_s=30),
            stress=["net_debit_cap", "settlement_window"],
        ),
    )


# Checks whose failure is not a catch: availability says nothing about the books.
NOT_A_CATCH = ("availability", "bulkhead", "evidence")


def caught_by(result: Mapping[str, Any]) -> list[str]:
    """Which checks failed, named down to the books or replay item (e.g. `ledger_replay:
    cap_held_at_every_instant`, `consistency: debit_without_credit`)."""
    names: list[str] = []
    checks = result.get("checks") or {}
    for check, verdict in checks.items():
        if check in NOT_A_CATCH or verdict.get("verdict") == "valid":
            continue
        if check == "consistency":
            rec = (result.get("consistency") or {}).get("reconciliation") or {}
            names += [f"consistency: {k}" for k, n in (rec.get("anomalies") or {}).items() if n]
            names += [f"consistency: {b['name']}" for b in rec.get("books", []) if not b["ok"]]
        elif check == "ledger_replay":
            names += [
                f"ledger_replay: {c['name']}"
                for c in (result.get("ledger_replay") or {}).get("checks", [])
                if not c["ok"]
            ]
        else:
            names.append(check)
    return names


@dataclass(frozen=True)
class Row:
    variant: str
    invariant: str
    scenario: str
    caught: bool
    by: list[str]
    verdict: str
    run_dir: str

    @property
    def as_expected(self) -> bool:
        """A variant must be caught; the robust system must pass."""
        return self.caught if self.variant != ROBUST else self.verdict == "pass"


def variants(names: Sequence[str] | None) -> list[str]:
    """The variants to run (every one, then the robust system, by default)."""
    if not names:
        return [*BUGS, ROBUST]
    unknown = [n for n in names if n not in BUGS and n != ROBUST]
    if unknown:
        raise HarnessError(f"--variant: no variant {unknown}", fix=f"choose among {', '.join([*BUGS, ROBUST])}")
    return list(names)


def run_teeth(
    names: Sequence[str] | None,
    out: Path,
    run: Callable[[Scenario, Path], Mapping[str, Any]],
) -> list[Row]:
    """Run the teeth scenario against each variant; `run` runs one scenario and returns its result."""
    rows = []
    for name in variants(names):
        bug = None if name == ROBUST else name
        # Written as a file beside the runs, so each run's `reproduce` command names it.
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{teeth_scenario(bug).name}.yaml"
        path.write_text(dump(teeth_scenario(bug)))
        scenario = load(path)
        result = run(scenario, out)
        by = caught_by(result)
        rows.append(
            Row(
                variant=name,
                invariant=BUGS[name][0] if bug else "(none: must pass)",
                scenario=scenario.name,
                caught=bool(by) and result.get("verdict") == "fail",
                by=by,
                verdict=str(result.get("verdict")),
                run_dir=str(result.get("run_dir", "")),
            )
        )
    return rows


def table(rows: Sequence[Row]) -> str:
    """The teeth table, in Markdown (reads as plain text too)."""
    lines = [
        "| variant | invariant | scenario | caught | by which check |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.variant == ROBUST:
            caught = "no (pass)" if r.verdict == "pass" else f"FALSE POSITIVE ({r.verdict})"
        else:
            caught = "yes" if r.caught else "NO"
        lines.append(f"| {r.variant} | {r.invariant} | {r.scenario} | {caught} | {', '.join(r.by) or '-'} |")
    return "\n".join(lines)
