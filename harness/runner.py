"""Run a scenario: collect a run directory (live), then check it (pure, re-runnable later).

collect: testbed up -> consistency sampler -> Locust load + fault schedule + settlement actions ->
         heal everything -> wait for in-doubt payments to resolve -> settle -> ledger snapshot.
check:   availability (history + fault timeline), consistency (ledgers + history), expectations
         -> result.json. `harness check RUN_DIR` runs only this half.
"""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.checkers.consistency import ConsistencySampler, customer_view, load_samples, time_to_consistency
from harness.checkers.reconcile import reconcile
from harness.history import is_available, is_payment, read_history
from harness.observe import snapshot
from harness.report.page import fmt_duration, fmt_pct, write_report
from harness.scenario import Scenario, SettlementAction, dump
from harness.scenario import load as load_scenario
from harness.testbed.bed import make_testbed
from harness.testbed.local import build_system
from harness.timeline import fault_windows, read_timeline
from mock_switch.config import SystemConfig

Progress = Callable[[str], None] | None
LOCUST_BOOT_S = 4.0


@dataclass
class RunOutcome:
    run_dir: Path
    result: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def failure_report(self) -> str:
        lines = [f"scenario {self.result['scenario']['name']} did not meet its expectations:"]
        lines += [f"  - {f}" for f in self.failures]
        lines += [f"run directory: {self.run_dir}", f"reproduce: {self.result['reproduce']}"]
        if (self.run_dir / "report.html").exists():
            lines.append(f"report: {self.run_dir / 'report.html'}")
        return "\n".join(lines)


def system_for(scenario: Scenario) -> SystemConfig:
    t = scenario.topology
    return build_system(
        banks=t.banks,
        resilience=t.resilience,
        switch_resilience=t.switch_resilience,
        payee_timeout_s=t.payee_timeout_s,
        accounts=t.accounts,
        net_debit_cap=t.net_debit_cap,
        switch_timeout_s=t.switch_timeout_s,
        customer_timeout_s=t.customer_timeout_s,
        durability=t.durability,
        # Robust components resolve quickly once a fault heals: that is what time to consistency shows.
        status_query={"initial_s": 0.05, "max_s": 0.5},
    )


def run(scenario: Scenario, out_root: Path, progress: Progress = print) -> RunOutcome:
    run_dir = out_root / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"
    run_dir.mkdir(parents=True)
    (run_dir / "scenario.yaml").write_text(dump(scenario))
    (run_dir / "command.txt").write_text(reproduce_command(scenario) + "\n")
    collect(scenario, run_dir, progress)
    return check(run_dir, progress)


def reproduce_command(scenario: Scenario) -> str:
    if scenario.source:
        cmd = f"harness run {shlex.quote(scenario.source)}"
        # `harness run --backend` overrode the file: the command must say so to reproduce this run.
        return cmd if scenario.backend == _declared_backend(scenario.source) else f"{cmd} --backend {scenario.backend}"
    return "pytest " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv else "pytest"


def _declared_backend(source: str) -> str:
    try:
        return str(load_scenario(Path(source)).backend)
    except Exception:  # the file changed or went away since: assume it said nothing
        return "local"


def _say(progress: Progress, msg: str) -> None:
    if progress is not None:
        progress(msg)


def _post(url: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as resp:
        return json.loads(resp.read())


def _settle_all(switch_url: str) -> None:
    """Close the open window and settle every closed one: every committed transfer ends settled."""
    _post(switch_url + "/settlement/windows/close")
    with urllib.request.urlopen(switch_url + "/settlement/windows", timeout=30) as resp:
        windows = json.loads(resp.read())
    for w in windows:
        if w["state"] == "CLOSED":
            _post(switch_url + f"/settlement/windows/{w['window_id']}/settle")


class _Settlement(threading.Thread):
    """Plays the scenario's settlement actions (e.g. close a window in the middle of a fault)."""

    def __init__(self, switch_url: str, actions: list[SettlementAction], t0: float, log: Path) -> None:
        super().__init__(name="settlement", daemon=True)
        self.switch_url, self.actions, self.t0, self.log = switch_url, actions, t0, log
        self.stop_event = threading.Event()

    def run(self) -> None:
        for action in sorted(self.actions, key=lambda a: a.at):
            if self.stop_event.wait(max(0.0, self.t0 + action.at - time.time())):
                return
            record: dict[str, Any] = {"action": action.action, "at": time.time()}
            try:
                if action.action in ("close", "close_and_settle"):
                    record["window"] = _post(self.switch_url + "/settlement/windows/close")["window_id"]
                if action.action in ("settle", "close_and_settle"):
                    _settle_all(self.switch_url)
            except OSError as exc:  # the switch may be down on purpose; the operator would retry later
                record["error"] = str(exc)
            with self.log.open("a") as f:
                f.write(json.dumps(record) + "\n")


def _pending(snap: snapshot.Snapshot) -> int:
    n = sum(1 for t in snap["switch"]["transfers"] if t["status"] == "PDNG")
    return n + sum(1 for b in snap["banks"].values() for p in b["payments"] if p["status"] == "PDNG")


def collect(scenario: Scenario, run_dir: Path, progress: Progress = print) -> None:
    from harness.load.control import start_load

    system = system_for(scenario)
    bed = make_testbed(system, run_dir, scenario.backend)
    banks = len(system.banks)
    _say(progress, f"[{scenario.name}] starting Toxiproxy, the switch and {banks} banks ({scenario.backend}) ...")
    with bed:
        direct = bed.direct_urls
        switch_url = direct.pop("switch")
        sampler = ConsistencySampler(
            switch_url, direct, run_dir / "consistency.jsonl", grace_s=scenario.topology.customer_timeout_s + 1.0
        )
        # Locust needs a few seconds to boot; give it that on top, so `load.duration` seconds of
        # load follow the first answered payment.
        booted = scenario.load.model_copy(update={"duration": scenario.load.duration + LOCUST_BOOT_S})
        load = start_load(scenario.model_copy(update={"load": booted}), bed.customer_urls, run_dir)
        # Offsets in the scenario count from the first answered payment, not from Locust's boot.
        first_op_by = time.time() + 30
        while load.operations() == 0 and load.running() and time.time() < first_op_by:
            time.sleep(0.05)
        if load.operations() == 0:
            load.stop()
            raise RuntimeError(f"Locust produced no operation within 30 s; see {run_dir / 'logs' / 'locust.log'}")
        t0 = time.time()
        from harness.nemesis.injector import SchedulePlayer

        player = SchedulePlayer(bed.nemesis, scenario.named_faults(), t0)
        settlement = _Settlement(switch_url, list(scenario.settlement), t0, run_dir / "settlement.jsonl")
        player.start()
        settlement.start()
        sampler.start()
        try:
            deadline = t0 + scenario.load.duration + 60
            while not load.wait(1.0 if progress is None else 2.0):
                if time.time() > deadline:
                    raise TimeoutError(f"load did not finish within {scenario.load.duration + 60:.0f}s")
                active = ", ".join(bed.nemesis.active) or "none"
                _say(
                    progress, f"[{scenario.name}] {time.time() - t0:5.1f}s  ops {load.operations():,}  faults: {active}"
                )
        finally:
            load.stop()
            settlement.stop_event.set()
            player.stop()  # heals every fault, resets Toxiproxy
        if player.error is not None:
            raise RuntimeError(f"fault schedule failed: {player.error}") from player.error
        _say(progress, f"[{scenario.name}] load done; waiting for in-doubt payments to resolve ...")
        quiet_by = time.time() + (scenario.expect.consistency.max_time_to_consistency_s or 30) + 15
        while True:
            snap = snapshot.take(switch_url, direct)
            if _pending(snap) == 0 or time.time() > quiet_by:
                break
            time.sleep(0.5)
        sampler.stop()
        sampler.sample()
        _settle_all(switch_url)
        snapshot.save(snapshot.take_stable(switch_url, direct), run_dir / "ledgers.json")
        versions = bed.versions()  # backend, Toxiproxy (and the Docker engine and images on docker)
    (run_dir / "environment.json").write_text(json.dumps(_environment(versions), indent=2))


def _environment(extra: dict[str, str]) -> dict[str, str]:
    import platform

    env = {"harness": __version__, "python": platform.python_version(), "platform": platform.platform(), **extra}
    try:
        import importlib.metadata as md

        env["locust"] = md.version("locust")
    except Exception:
        env["locust"] = "unknown"
    return env


def check(run_dir: Path, progress: Progress = print) -> RunOutcome:
    """Every checker, from the files of a run directory alone."""
    from harness.checkers import availability

    scenario = load_scenario(run_dir / "scenario.yaml")
    system = SystemConfig.load(run_dir / "system.json")
    history = read_history(run_dir / "history.jsonl")
    faults = read_timeline(run_dir / "faults.jsonl")
    ledgers = snapshot.load(run_dir / "ledgers.json")

    exp = scenario.expect
    avail = availability.check_availability(history, faults, _slo(scenario))
    rec = reconcile(ledgers, system.total_customer_money(), system.total_settlement_money())
    view = customer_view([op for op in history if op.get("op", "payment") in ("payment", "status_query")], rec)
    heals = [f["at"] for f in faults if f["event"] == "heal"]
    ttc = time_to_consistency(load_samples(run_dir / "consistency.jsonl"), max(heals) if heals else None,
                              rec.anomaly_count)  # fmt: skip
    bulkhead = _bulkhead_ratio(history, faults, scenario)
    avail_summary = avail.summary()

    failures: list[str] = []
    failures += [_slo_failure(v, avail_summary["slo"]) for v in avail_summary["verdicts"] if not v["ok"]]
    overall = avail_summary["overall"]["success_ratio"]
    if exp.availability.overall_success_ratio is not None and (
        overall is None or overall < exp.availability.overall_success_ratio
    ):
        failures.append(f"availability overall: target {exp.availability.overall_success_ratio}, measured {overall}")
    ae = exp.availability
    if ae.unaffected_banks_success_ratio is not None:
        if bulkhead is None:
            failures.append("bulkhead: no payments between banks untouched by faults were made during faults")
        elif bulkhead < ae.unaffected_banks_success_ratio:
            failures.append(
                f"bulkhead: success ratio between untouched banks during faults {bulkhead:.4f}"
                f" < {ae.unaffected_banks_success_ratio}"
            )
    ce = exp.consistency
    if ce.verdict == "consistent":
        if not rec.ok:
            counts = {k: v for k, v in rec.counts().items() if v}
            broken = "; ".join(f"{b.name} ({b.detail})" for b in rec.books if not b.ok) or "none"
            failures.append(f"consistency: {rec.anomaly_count} anomalies {counts}, books failing: {broken}")
        if ce.max_time_to_consistency_s is not None and (ttc is None or ttc > ce.max_time_to_consistency_s):
            failures.append(
                f"time to consistency {'never reached' if ttc is None else fmt_duration(ttc)}"
                f" (objective {fmt_duration(ce.max_time_to_consistency_s)})"
            )
    elif rec.ok:
        failures.append("consistency: expected the checker to detect anomalies (naive components), found none")
    if ce.no_acknowledged_payment_lost and view.lost_acknowledged and ce.verdict == "consistent":
        failures.append(f"{len(view.lost_acknowledged)} acknowledged payments lost, e.g. {view.lost_acknowledged[:3]}")

    result = {
        "schema": "payswitch-chaos/result/v1",
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "backend": scenario.backend,
            "seed": scenario.seed,
            "source": scenario.source,
            # Naive-component scenarios pass when anomalies are caught: more of them is not a regression.
            "expects_anomalies": exp.consistency.verdict == "anomalies_detected",
        },
        "verdict": "pass" if not failures else "fail",
        "failures": failures,
        "availability": avail_summary,
        "bulkhead_success_ratio": bulkhead,
        "consistency": {
            "reconciliation": rec.summary(),
            "customer_view": view.summary(),
            "time_to_consistency_s": ttc,
        },
        "faults": faults,
        "environment": json.loads((run_dir / "environment.json").read_text())
        if (run_dir / "environment.json").exists()
        else {},
        "reproduce": (run_dir / "command.txt").read_text().strip()
        if (run_dir / "command.txt").exists()
        else reproduce_command(scenario),
        "run_dir": str(run_dir),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    try:
        # The report reads the result as saved (JSON types), exactly as `harness report` will later.
        write_report(run_dir, json.loads(json.dumps(result, default=str)), history, ledgers)
    except Exception as exc:  # the verdict stands without its page; say so loudly rather than lose the run
        print(
            f"harness: report.html could not be written ({exc!r}); result.json is complete."
            f" Retry with: harness report {run_dir}",
            file=sys.stderr,
        )
    outcome = RunOutcome(run_dir, result, failures)
    if progress is not None:
        progress(console_summary(outcome))
    return outcome


def _slo_failure(v: dict[str, Any], slo: dict[str, Any]) -> str:
    if v["name"] == "time_to_recover_s":
        if v["measured"] is None:
            return (
                "availability did not recover after the last heal before the run ended (recovery needs"
                f" {slo['recovery_window_s']} consecutive seconds at the baseline success ratio)"
            )
        return f"time to recover {fmt_duration(v['measured'])} > objective {fmt_duration(v['target'])}"
    return f"availability SLO {v['name']}: target {v['target']}, measured {v['measured']}"


def _slo(scenario: Scenario) -> Any:
    from harness.checkers.availability import SLO, PhaseTarget

    ae = scenario.expect.availability
    phases: dict[str, PhaseTarget] = {}
    if ae.baseline_success_ratio is None:
        phases["baseline"] = PhaseTarget(success_ratio=0.0)  # null in the scenario: no baseline verdict
    if ae.steady_success_ratio is None:
        phases["steady"] = PhaseTarget(success_ratio=0.0)  # no floor after the faults
    elif ae.steady_success_ratio != ae.baseline_success_ratio:
        phases["steady"] = PhaseTarget(success_ratio=ae.steady_success_ratio)
    return SLO(
        latency_slo_ms=ae.latency_slo_ms,
        success_ratio=min(ae.baseline_success_ratio or 0.99, 0.999999),
        max_recovery_s=ae.max_time_to_recover_s,
        phase_targets=phases,
    )


def _affected_banks(faults: list[dict[str, Any]]) -> set[str]:
    banks: set[str] = set()
    for f in faults:
        for target in f["targets"]:
            banks.update(p for p in target.split("->") if p not in ("customers", "switch"))
    return banks


def _bulkhead_ratio(
    history: Sequence[Mapping[str, Any]], faults: list[dict[str, Any]], scenario: Scenario
) -> float | None:
    """Success ratio of payments between banks no fault touched, made while a fault was active."""
    if any("switch" in t and "->" not in t for f in faults for t in f["targets"]):
        return None  # a switch-wide fault touches everyone: no bulkhead to measure
    windows = [(w.apply, w.end) for w in fault_windows(faults)]
    affected = _affected_banks(faults)
    ops = [
        op for op in history
        if is_payment(op) and op["payer"] not in affected and op["payee"] not in affected
        and any(a <= op["invoke"] <= b for a, b in windows)
    ]  # fmt: skip
    if not ops:
        return None
    slo_ms = scenario.expect.availability.latency_slo_ms
    good = sum(1 for op in ops if is_available(op, slo_ms))
    return good / len(ops)


def console_summary(outcome: RunOutcome) -> str:
    r = outcome.result
    a = r["availability"]
    c = r["consistency"]
    rec = c["reconciliation"]
    lines = [
        f"\n== {r['scenario']['name']}: {r['verdict'].upper()} ==",
        f"availability  {fmt_pct(a.get('overall', {}).get('success_ratio'), 3)} overall; phases: "
        + ", ".join(f"{k} {fmt_pct(v.get('success_ratio'))}" for k, v in a.get("phases", {}).items()),
        f"recovery      time to recover {fmt_duration(a.get('time_to_recover_s'))};"
        f" time to consistency {fmt_duration(c['time_to_consistency_s'])}",
        f"settlement    {rec['payments']:,} payments: {rec['clean_settled']:,} settled, {rec['clean_failed']:,} cleanly"
        f" failed, {rec['anomaly_count']:,} anomalies {dict((k, v) for k, v in rec['anomalies'].items() if v)}",
        f"customers     lost acknowledged payments: {c['customer_view']['lost_acknowledged']:,}",
    ]
    lines += [f"FAIL          {f}" for f in r["failures"]]
    lines.append(f"run directory {outcome.run_dir}")
    if (outcome.run_dir / "report.html").exists():
        lines.append(f"report        {outcome.run_dir / 'report.html'}")
    return "\n".join(lines)
