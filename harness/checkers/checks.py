"""The checks of a run, one function each: what it measures and which of the scenario's expectations
it judges. Each takes the loaded `RunInputs` and returns a `CheckVerdict` with its own failure lines
and figures; harness.checkers.run composes them (see compose.py) into the run's result.

Failure lines are worded as they always were: tests and people grep them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from harness.checkers.availability import SLO, PhaseTarget, check_availability
from harness.checkers.compose import Checker
from harness.checkers.consistency import customer_view as compare_customer_view
from harness.checkers.consistency import time_to_consistency as measure_time_to_consistency
from harness.checkers.evidence import evidence as measure_evidence
from harness.checkers.reconcile import Reconciliation, reconcile
from harness.checkers.replay import replay
from harness.checkers.stress import stress_record, unexercised
from harness.fmt import fmt_duration
from harness.history import NAME_ENQUIRY, Op, is_available, is_payment
from harness.ledgers import Snapshot
from harness.result import CheckVerdict
from harness.scenario import LoadSpec, Scenario
from harness.timeline import fault_windows, last_heal
from mock_switch.config import SystemConfig


@dataclass(frozen=True)
class RunInputs:
    """Everything the checks read, loaded once from a run directory (harness.checkers.run.load_inputs)."""

    scenario: Scenario
    system: SystemConfig
    history: list[Op]
    faults: list[dict[str, Any]]  # faults.jsonl, as recorded
    ledgers: Snapshot  # ledgers.json, after quiescence and settlement
    samples: list[dict[str, Any]]  # consistency.jsonl: open anomalies while the run went
    # proxy_counters.jsonl: Toxiproxy's byte counters at each apply and heal (none in older runs)
    proxy_counters: list[dict[str, Any]] = field(default_factory=list)
    load_figures: dict[str, Any] | None = None  # load.json: the open-model generator's figures
    # opening.json of an external run: its money before the load (its books may hold earlier runs')
    opening: dict[str, Any] | None = None

    @cached_property
    def reconciliation(self) -> Reconciliation:
        """Three checks judge the same reconciliation: it is computed once. When it raises, each of
        them raises too and is unknown (cached_property caches only a value)."""
        if self.opening is not None:
            customer, settlement = self.opening.get("customer_money"), self.opening.get("settlement_money")
        else:
            customer, settlement = self.system.total_customer_money(), self.system.total_settlement_money()
        return reconcile(self.ledgers, customer, settlement, currency=self.system.currency)


# -- availability ---------------------------------------------------------------------------------


def slo_of(scenario: Scenario) -> SLO:
    """The availability checker's SLO from the scenario's expectations."""
    ae = scenario.expect.availability
    phases: dict[str, PhaseTarget] = {}
    if ae.baseline_success_ratio is None:
        phases["baseline"] = PhaseTarget(judged=False)  # null in the scenario: no baseline verdict
    if ae.steady_success_ratio is None:
        phases["steady"] = PhaseTarget(judged=False)  # no floor after the faults
    elif ae.steady_success_ratio != ae.baseline_success_ratio:
        phases["steady"] = PhaseTarget(success_ratio=ae.steady_success_ratio)
    return SLO(
        latency_slo_ms=ae.latency_slo_ms,
        success_ratio=min(ae.baseline_success_ratio or 0.99, 0.999999),
        max_recovery_s=ae.max_time_to_recover_s,
        phase_targets=phases,
    )


def slo_failure(v: Mapping[str, Any], slo: Mapping[str, Any]) -> str:
    """One failed SLO verdict of the availability summary, in words."""
    if v["name"] == "time_to_recover_s":
        if v["measured"] is None:
            return (
                "availability did not recover after the last heal before the run ended (recovery needs"
                f" {slo['recovery_window_s']} consecutive seconds at the baseline success ratio)"
            )
        return f"time to recover {fmt_duration(v['measured'])} > objective {fmt_duration(v['target'])}"
    return f"availability SLO {v['name']}: target {v['target']}, measured {v['measured']}"


def load_model(spec: LoadSpec, figures: Mapping[str, Any] | None) -> dict[str, Any]:
    """Which load produced the availability figures (result.json `availability.load`): the model and
    its parameters, and for the open model what the generator did (load.json)."""
    remote = {}  # Locust workers on other hosts (load/collect.py), under either model
    if figures is not None and figures.get("workers"):
        remote = {k: figures.get(k) for k in ("workers", "lost_workers", "unreported")}
    if spec.model == "closed":
        return {"model": "closed", "users": spec.users, "shape": spec.shape, "describe": spec.describe(), **remote}
    out: dict[str, Any] = {
        "model": "open",
        "rate": spec.rate,
        "shape": spec.shape,
        "base_rate": spec.effective_base_rate if spec.shape != "constant" else None,
        "arrivals": spec.arrivals,
        "max_in_flight_bound": spec.max_in_flight,
        "describe": spec.describe(),
    }
    keys = (
        *("scheduled", "sent", "late", "not_sent", "in_flight_bound", "max_in_flight", "max_late_ms"),
        *("late_after_s", "not_sent_after_s"),
    )
    out.update({k: figures.get(k) for k in keys} if figures is not None else dict.fromkeys(keys))
    return out | remote


def load_warnings(load: Mapping[str, Any]) -> list[str]:
    """What a reader must know before trusting an open-model figure."""
    warnings = [str(lost["message"]) for lost in load.get("lost_workers") or []]
    if load.get("not_sent"):
        warnings.append(
            f"{load['not_sent']:,} arrivals could not be sent within {load['not_sent_after_s']} s of their time"
            " (the load generator was starved of CPU); they count as unavailable (error not-sent)"
        )
    if load.get("in_flight_bound"):
        warnings.append(
            f"{load['in_flight_bound']:,} arrivals found {load['max_in_flight_bound']:,} customers already in flight"
            " (load.max_in_flight); they count as unavailable (error in-flight-bound)"
        )
    return warnings


def name_enquiries(run: RunInputs, slo: SLO) -> dict[str, Any] | None:
    """Availability of name enquiries (GET /parties), by the same rule, reported beside payments."""
    found = check_availability(run.history, run.faults, slo, op_types=(NAME_ENQUIRY,))
    if not found.operations:
        return None
    summary = found.summary()

    def brief(s: Mapping[str, Any]) -> dict[str, Any]:
        keys = ("operations", "good", "success_ratio", "p50_ms", "p99_ms", "errors")
        return {k: s[k] for k in keys}

    return {**brief(summary["overall"]), "phases": {p: brief(s) for p, s in summary["phases"].items()}}


def availability(run: RunInputs) -> CheckVerdict:
    """SLO verdicts per phase and time to recover; the overall success ratio against its target."""
    slo = slo_of(run.scenario)
    summary = check_availability(run.history, run.faults, slo).summary()
    summary["load"] = load_model(run.scenario.load, run.load_figures)
    summary["warnings"] = [*summary["warnings"], *load_warnings(summary["load"])]
    summary["name_enquiries"] = name_enquiries(run, slo)
    # The summary's (rounded) figures, so a failure line quotes what result.json shows.
    failures = [slo_failure(v, summary["slo"]) for v in summary["verdicts"] if not v["ok"]]
    target = run.scenario.expect.availability.overall_success_ratio
    overall = summary["overall"]["success_ratio"]
    if target is not None:
        met = overall is not None and overall >= target
        # A verdict like the phases' own, so every expectation of this check has one (the report's scorecard).
        summary["verdicts"].append({"name": "success_ratio.overall", "target": target, "measured": overall, "ok": met})
        if not met:
            failures.append(f"availability overall: target {target}, measured {overall}")
    return CheckVerdict.judged(failures, availability=summary)


# -- bulkhead -------------------------------------------------------------------------------------


def affected_banks(faults: Sequence[Mapping[str, Any]]) -> set[str]:
    """Banks some fault touched (a link names two ends; customers and the switch are not banks)."""
    banks: set[str] = set()
    for f in faults:
        for target in f["targets"]:
            banks.update(p for p in target.split("->") if p not in ("customers", "switch"))
    return banks


def bulkhead_ratio(
    history: Sequence[Mapping[str, Any]], faults: Sequence[Mapping[str, Any]], slo_ms: float
) -> float | None:
    """Success ratio of payments between banks no fault touched, completed while a fault was active.

    Placed by completion time, like every other figure: a payment sent just before a fault and
    answered inside it is the fault's to spoil (and one sent inside it, answered after, is not)."""
    if any("switch" in t and "->" not in t for f in faults for t in f["targets"]):
        return None  # a switch-wide fault touches everyone: no bulkhead to measure
    windows = [(w.apply, w.end) for w in fault_windows(faults)]
    affected = affected_banks(faults)
    ops = [
        op for op in history
        if is_payment(op) and op["payer"] not in affected and op["payee"] not in affected
        and any(a <= op["complete"] <= b for a, b in windows)
    ]  # fmt: skip
    if not ops:
        return None
    good = sum(1 for op in ops if is_available(op, slo_ms))
    return good / len(ops)


def bulkhead(run: RunInputs) -> CheckVerdict:
    """A fault at some banks leaves payments between the others available."""
    ae = run.scenario.expect.availability
    ratio = bulkhead_ratio(run.history, run.faults, ae.latency_slo_ms)
    failures: list[str] = []
    if ae.unaffected_banks_success_ratio is not None:
        if ratio is None:
            failures.append("bulkhead: no payments between banks untouched by faults were made during faults")
        elif ratio < ae.unaffected_banks_success_ratio:
            failures.append(
                f"bulkhead: success ratio between untouched banks during faults {ratio:.4f}"
                f" < {ae.unaffected_banks_success_ratio}"
            )
    return CheckVerdict.judged(failures, bulkhead_success_ratio=ratio)


# -- settlement consistency -----------------------------------------------------------------------


def consistency(run: RunInputs) -> CheckVerdict:
    """Three-way reconciliation and the books. Naive-component scenarios expect anomalies: there,
    finding none is the failure."""
    rec = run.reconciliation
    failures: list[str] = []
    if run.scenario.expect.consistency.verdict == "consistent":
        if not rec.ok:
            counts = {k: v for k, v in rec.counts().items() if v}
            broken = "; ".join(f"{b.name} ({b.detail})" for b in rec.books if not b.ok) or "none"
            failures.append(f"consistency: {rec.anomaly_count} anomalies {counts}, books failing: {broken}")
    elif rec.ok:
        failures.append("consistency: expected the checker to detect anomalies (naive components), found none")
    return CheckVerdict.judged(failures, reconciliation=rec.summary())


def time_to_consistency(run: RunInputs) -> CheckVerdict:
    """From the last heal until open anomalies reached zero for good, against its objective ("no
    anomaly opened" meets any objective)."""
    taken_at = run.ledgers.get("taken_at")
    conv = measure_time_to_consistency(
        run.samples,
        last_heal(fault_windows(run.faults)),
        run.reconciliation.anomaly_count,
        float(taken_at) if isinstance(taken_at, int | float) else None,
    )
    ttc = conv.seconds
    ce = run.scenario.expect.consistency
    failures: list[str] = []
    objective = ce.max_time_to_consistency_s
    if ce.verdict == "consistent" and objective is not None and (ttc is None or ttc > objective):
        failures.append(
            f"time to consistency {'never reached' if ttc is None else fmt_duration(ttc)}"
            f" (objective {fmt_duration(objective)})"
        )
    return CheckVerdict.judged(
        failures,
        time_to_consistency_s=_round(ttc),
        anomaly_opened=conv.anomaly_opened,
        time_to_consistency_resolution_s=_round(conv.resolution_s),
    )


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def customer_view(run: RunInputs) -> CheckVerdict:
    """What customers were told against what the ledgers say: no acknowledged payment may be lost."""
    ops = [op for op in run.history if op.get("op", "payment") in ("payment", "status_query")]
    view = compare_customer_view(ops, run.reconciliation)
    ce = run.scenario.expect.consistency
    failures: list[str] = []
    if ce.verdict == "consistent" and ce.no_acknowledged_payment_lost and view.lost_acknowledged:
        failures.append(f"{len(view.lost_acknowledged)} acknowledged payments lost, e.g. {view.lost_acknowledged[:3]}")
    return CheckVerdict.judged(failures, customer_view=view.summary())


# -- evidence per fault ---------------------------------------------------------------------------


def evidence(run: RunInputs) -> CheckVerdict:
    """What each fault did (history and Toxiproxy's counters); a fault with no observable effect is
    flagged in the figures, not failed: the scenario's expectations say nothing about it."""
    slo_ms = run.scenario.expect.availability.latency_slo_ms
    return CheckVerdict.judged([], evidence=measure_evidence(run.history, run.faults, run.proxy_counters, slo_ms))


# -- independent checks and the stress record ---------------------------------------------------


def _not_offered(run: RunInputs, *capabilities: str) -> str:
    """'not applicable: the target does not offer settlement' when an external target lacks one of
    the capabilities a check reads (ledgers.json `not_offered`), else ''."""
    lacking = [c for c in capabilities if c in run.ledgers.get("not_offered", ())]
    return f"not applicable: the target does not offer {', '.join(lacking)}" if lacking else ""


def ledger_replay(run: RunInputs) -> CheckVerdict:
    """The switch's books rebuilt from its transfer records (harness/checkers/replay.py): exposure
    against the cap at every instant, windows and settlement movements. Naive-component scenarios
    expect breaks: there the figures are shown, not judged."""
    lacking = _not_offered(run, "positions", "settlement")
    if lacking:
        return CheckVerdict.judged([], ledger_replay={"not_applicable": lacking, "checks": []})
    opening = {b.code: b.settlement_balance for b in run.system.banks}
    if run.opening is not None and run.opening.get("settlement_origin") is not None:
        opening = run.opening["settlement_origin"]  # an external target's, before any movement it recorded
    found = replay(run.ledgers, opening, currency=run.system.currency)
    failures: list[str] = []
    if run.scenario.expect.consistency.verdict == "consistent":
        failures = [f"ledger replay: {c.name} ({c.detail})" for c in found.failing()]
    return CheckVerdict.judged(failures, ledger_replay=found.summary())


def stress(run: RunInputs) -> CheckVerdict:
    """What the run put under stress (harness/checkers/stress.py); a consistent scenario fails when
    a stress it declares (expect.stress) was not exercised."""
    declared = list(run.scenario.expect.stress)
    lacking = _not_offered(run, "settlement")
    if lacking:
        failures = [f"stress: expect.stress {declared} cannot be measured, {lacking}"] if declared else []
        return CheckVerdict.judged(failures, stress={})
    record = stress_record(run.ledgers, run.faults, run.history, run.system.switch.payee_timeout_s)
    for kind, figures in record.items():
        figures["declared"] = kind in declared
    failures = unexercised(record, declared) if run.scenario.expect.consistency.verdict == "consistent" else []
    return CheckVerdict.judged(failures, stress=record)


# The run's checks, in the order their failures are listed.
CHECKS: dict[str, Checker[RunInputs]] = {
    "availability": availability,
    "bulkhead": bulkhead,
    "consistency": consistency,
    "time_to_consistency": time_to_consistency,
    "customer_view": customer_view,
    "evidence": evidence,
    "ledger_replay": ledger_replay,
    "stress": stress,
}
