"""Run a scenario: collect a run directory (live), then check it (pure, re-runnable later).

collect: testbed up -> consistency sampler -> Locust load + fault schedule + settlement actions ->
         heal everything -> wait for in-doubt payments to resolve -> settle -> ledger snapshot.
check:   the composed checks of harness.checkers.run (availability, bulkhead, consistency, time to
         consistency, customer view, evidence per fault) -> result.json, report.html. `harness check
         RUN_DIR` runs only this half.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, ledgers
from harness.checkers.run import check_inputs, load_inputs
from harness.faults import losing_power
from harness.fmt import fmt_measured, fmt_time_to_consistency, shown_verdict
from harness.load.control import LoadRun, start_load
from harness.nemesis import SchedulePlayer
from harness.observe import snapshot
from harness.observe.quiesce import SettlementPlayer, settle_all, wait_in_doubt
from harness.observe.sampler import ConsistencySampler
from harness.report.page import fmt_bytes, fmt_pct, write_report
from harness.result import reconciliation_breaks, write_result
from harness.rundir import RunDir
from harness.scenario import Scenario, dump
from harness.scenario import load as load_scenario
from harness.target import Target, keep_copy
from harness.testbed import Testbed, make_testbed
from harness.testbed.external import ExternalTestbed, link_plan
from harness.testbed.system import build_system
from mock_switch.config import BankConfig, SwitchConfig, SystemConfig

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
        if RunDir(self.run_dir).report.exists():
            lines.append(f"report: {RunDir(self.run_dir).report}")
        return "\n".join(lines)


def system_for(scenario: Scenario) -> SystemConfig:
    if scenario.external is not None:
        return external_system(scenario, scenario.external)
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
        bug=t.bug,
        # Robust components resolve quickly once a fault heals: that is what time to consistency shows.
        status_query={"initial_s": 0.05, "max_s": 0.5},
    )


def external_system(scenario: Scenario, target: Target) -> SystemConfig:
    """system.json of an external run: what the load and the report need (bank codes, accounts the
    customers pay between, timeouts, currency). Nothing is started from it."""
    t = scenario.topology

    def hostport(url: str) -> str:
        return url.split("://", 1)[1].split("/", 1)[0]

    return SystemConfig(
        currency=target.currency,
        switch=SwitchConfig(listen=hostport(target.switch.url), payee_timeout_s=t.payee_timeout_s),
        banks=[
            BankConfig(
                code=p.code,
                listen=hostport(p.url),
                switch_url=target.switch.url,
                accounts=target.load.accounts,
                switch_timeout_s=t.switch_timeout_s,
                customer_timeout_s=t.customer_timeout_s,
            )
            for p in target.participants
        ],
    )


def in_doubt_grace_s(scenario: Scenario) -> float:
    """How long a run waits after the last heal for pending payments to be decided.

    A payment in flight at the heal can take a customer timeout to come back before the status
    queries that resolve it even start; then robust components have the time-to-consistency
    objective (30 s when the scenario sets none). The one definition, for scripted runs and
    interactive sessions alike."""
    return scenario.topology.customer_timeout_s + (scenario.expect.consistency.max_time_to_consistency_s or 30.0)


def run(scenario: Scenario, out_root: Path, progress: Progress = print) -> RunOutcome:
    rundir = RunDir.new(out_root, scenario.name)
    if scenario.target_path is not None:  # the run directory keeps the target it ran against
        keep_copy(scenario.target_path, rundir.path, rundir.target.name)  # with a compose file it names
        rundir.scenario.write_text(dump(scenario, target=rundir.target.name))
    else:
        rundir.scenario.write_text(dump(scenario))
    rundir.command.write_text(reproduce_command(scenario) + "\n")
    collect(scenario, rundir.path, progress)
    return check(rundir.path, progress)


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


def sampler_for(bed: Testbed | ExternalTestbed, rundir: RunDir, scenario: Scenario) -> ConsistencySampler:
    """The live consistency sampler of a testbed (payments younger than a customer timeout are in flight)."""
    direct = bed.direct_urls
    switch_url = direct.pop("switch")
    offers = scenario.external.offers if scenario.external is not None else snapshot.everything
    return ConsistencySampler(
        switch_url, direct, rundir.consistency, grace_s=scenario.topology.customer_timeout_s + 1.0, offers=offers
    )


def collect(scenario: Scenario, run_dir: Path, progress: Progress = print) -> None:
    """The live half: every resource is set up here and torn down in reverse, whatever happens
    (Jepsen's run! shape): testbed, sampler, load, fault schedule, settlement actions; then finish_run."""
    rundir = RunDir(run_dir)
    system = system_for(scenario)
    name = scenario.name
    if scenario.external is None:
        _say(
            progress, f"[{name}] starting Toxiproxy, the switch and {len(system.banks)} banks ({scenario.backend}) ..."
        )
    with contextlib.ExitStack() as stack:
        bed: Testbed | ExternalTestbed
        if scenario.external is not None:
            system.save(rundir.system)  # for the load and the checkers; the system is already running
            _say(progress, f"[{name}] starting Toxiproxy for target {scenario.external.name!r}; its listeners:")
            for line in link_plan(scenario.external):
                _say(progress, f"[{name}]   {line}")
            bed = stack.enter_context(ExternalTestbed(scenario.external, run_dir))
            record_opening(bed, rundir, scenario.external)
        else:
            bed = stack.enter_context(make_testbed(system, run_dir, scenario.backend, losing_power(scenario.faults)))
        sampler = sampler_for(bed, rundir, scenario)
        sampler.start()
        stack.callback(sampler.stop)
        # Locust needs a few seconds to boot; give it that on top, so `load.duration` seconds of
        # load follow the first answered payment.
        booted = scenario.load.model_copy(update={"duration": scenario.load.duration + LOCUST_BOOT_S})
        load = start_load(scenario.model_copy(update={"load": booted}), bed.customer_urls, run_dir)
        stack.callback(load.stop)
        t0 = _first_answer(load, rundir)  # offsets in the scenario count from here
        player = SchedulePlayer(bed.nemesis, scenario.named_faults(), t0)
        settlement = SettlementPlayer(sampler.switch_url, list(scenario.settlement), t0, rundir.settlement)
        player.start()
        stack.callback(player.stop)  # heals every fault, resets Toxiproxy
        settlement.start()
        stack.callback(settlement.stop)
        deadline = t0 + scenario.load.duration + 60
        while not load.wait(1.0 if progress is None else 2.0):
            if time.time() > deadline:
                raise TimeoutError(f"load did not finish within {scenario.load.duration + 60:.0f}s")
            active = ", ".join(bed.nemesis.active) or "none"
            _say(progress, f"[{name}] {time.time() - t0:5.1f}s  ops {load.operations():,}  faults: {active}")
        load.stop()
        settlement.stop()
        player.stop()
        if player.error is not None:
            raise RuntimeError(f"fault schedule failed: {player.error}") from player.error
        _say(progress, f"[{name}] load done; waiting for in-doubt payments to resolve ...")
        finish_run(bed, rundir, scenario, sampler)
        sampler.stop()


def record_opening(bed: ExternalTestbed, rundir: RunDir, target: Target) -> None:
    """opening.json: the target's money before the load (its books may hold earlier runs'), which
    the conservation checks compare the end against. Read through the contract's read API."""
    urls = bed.direct_urls
    before = snapshot.take_stable(urls["switch"], {c: urls[c] for c in target.codes}, offers=target.offers)
    opening = snapshot.opening_money(before)
    rundir.opening.write_text(json.dumps(opening))


def _first_answer(load: LoadRun, rundir: RunDir, timeout_s: float = 30.0) -> float:
    by = time.time() + timeout_s
    while load.operations() == 0 and load.running() and time.time() < by:
        time.sleep(0.05)
    if load.operations() == 0:
        raise RuntimeError(f"Locust produced no operation within {timeout_s:.0f} s; see {rundir.log('locust')}")
    return time.time()


def finish_run(bed: Testbed | ExternalTestbed, rundir: RunDir, scenario: Scenario, sampler: ConsistencySampler) -> int:
    """Bring a run to rest and write what the checkers read: heal every fault, wait for in-doubt
    payments (in_doubt_grace_s), take the last consistency sample, settle every window, snapshot
    the ledgers (ledgers.json) and record the environment (environment.json).

    The one ending of scripted runs (`collect`), interactive sessions (web) and `harness up`.
    Returns the number of payments still pending when the grace ran out (0 when all resolved)."""
    if bed.nemesis.active:
        bed.nemesis.heal_all()
    switch_url, bank_urls = sampler.switch_url, sampler.bank_urls
    left = wait_in_doubt(switch_url, bank_urls, in_doubt_grace_s(scenario))
    # No sample may read the ledgers half-way through settlement: that would be a phantom anomaly.
    with sampler.held():
        with contextlib.suppress(OSError):
            sampler.sample_now()
        target = scenario.external
        if target is None or target.offers("settlement"):
            settle_all(switch_url)
        # A target's books: the reads it offers, through the contract's read API or its export files.
        taken = snapshot.take_stable(switch_url, bank_urls) if target is None else snapshot.source_for(target).take()
        ledgers.save(taken, rundir.ledgers)
    rundir.environment.write_text(json.dumps(environment(bed.versions()), indent=2))
    return left


def environment(testbed: dict[str, str]) -> dict[str, str]:
    """environment.json: versions of the harness, Python, Locust, and what the testbed reports."""
    env = {"harness": __version__, "python": platform.python_version(), "platform": platform.platform(), **testbed}
    try:
        env["locust"] = md.version("locust")
    except md.PackageNotFoundError:
        env["locust"] = "unknown"
    return env


def check(run_dir: Path, progress: Progress = print) -> RunOutcome:
    """Every checker, from the files of a run directory alone (harness.checkers.run): result.json,
    report.html, and the console summary."""
    inputs = load_inputs(run_dir)
    result = check_inputs(inputs, run_dir)
    write_result(run_dir, result)
    saved = result.as_json()  # what result.json holds, as `harness report` will read it later
    try:
        write_report(run_dir, saved, inputs.history, inputs.ledgers)
    except Exception as exc:  # the verdict stands without its page; say so loudly rather than lose the run
        print(
            f"harness: report.html could not be written ({exc!r}); result.json is complete."
            f" Retry with: harness report {run_dir}",
            file=sys.stderr,
        )
    outcome = RunOutcome(run_dir, saved, result.failures)
    if progress is not None:
        progress(console_summary(outcome))
    return outcome


def _breaks_line(rec: dict[str, Any]) -> str:
    """'91 reconciliation breaks (90 payments, books: conservation) {classes}': the report's count."""
    breaks = reconciliation_breaks(rec)
    assert breaks is not None
    if not breaks.total:
        return "0 reconciliation breaks"
    classes = {k: v for k, v in rec["anomalies"].items() if v}
    return f"{breaks.total:,} reconciliation breaks ({breaks.detail()})" + (f" {classes}" if classes else "")


EVIDENCE_LINES = 4  # fault windows on the console; the report has them all


def evidence_lines(ev: dict[str, Any] | None) -> list[str]:
    """What each fault window did, one line each, and a NO EFFECT line per window that did nothing."""
    if not ev or not ev.get("windows"):
        return []
    lines: list[str] = []
    windows = ev["windows"]
    for w in windows[:EVIDENCE_LINES]:
        p = w["payments"]
        wire = (w.get("proxies") or {}).get("undelivered_bytes")
        lines.append(
            f"evidence      {w['fault']} ({w['scope']}): {p['completed']:,} completed inside it,"
            f" {p['unavailable']:,} not available, {w['timeouts']:,} timeouts,"
            f" {w['connection_errors']:,} connection errors,"
            f" {w['status_queries']:,} status queries, {w['resends']:,} re-sends"
            + ("" if wire is None else f", {fmt_bytes(wire)} undelivered")
        )
    if len(windows) > EVIDENCE_LINES:
        lines.append(f"evidence      ... and {len(windows) - EVIDENCE_LINES} more fault windows (see the report)")
    for w in windows:
        if not w["observable_effect"]:
            lines.append(f"{'NO EFFECT':<13} fault {w['fault']} at {w['apply']:.1f} s: {w.get('no_effect_reason', '')}")
    return lines


def by_demand_label(a: dict[str, Any]) -> str:
    """Which load model produced the availability figure, as the console and the report say it."""
    load = a.get("load")
    if not load:  # a result from before the open model: closed-loop users
        return ""
    if load.get("model") == "open":
        return f" by demand (open model, {load.get('rate', 0):g} arrivals/s)"
    return f" (closed model, {load.get('users')} customers: outages undercounted)"


def demand_lines(a: dict[str, Any]) -> list[str]:
    """The generator's warnings, and the name enquiries' own line."""
    lines = []
    load = a.get("load") or {}
    if load.get("not_sent") or load.get("in_flight_bound"):
        lines.append(
            f"WARNING       {load.get('not_sent') or 0:,} arrivals not sent on time,"
            f" {load.get('in_flight_bound') or 0:,} over the in-flight bound (counted unavailable)"
        )
    ne = a.get("name_enquiries")
    if ne:
        lines.append(
            f"name enquiry  {fmt_pct(ne.get('success_ratio'), 3)} of {ne['operations']:,} (GET /parties, reported apart"
            " from payments); phases: "
            + ", ".join(
                f"{k} {fmt_pct(v.get('success_ratio'))}" for k, v in ne.get("phases", {}).items() if v["operations"]
            )
        )
    return lines


def console_summary(outcome: RunOutcome) -> str:
    r = outcome.result
    # A figure is null when the check measuring it could not run; its UNKNOWN line says why.
    a = r.get("availability") or {}
    c = r.get("consistency") or {}
    rec = c.get("reconciliation")
    view = c.get("customer_view")
    resolution = a.get("resolution_s") or {}  # absent in results written before it was added
    ttr = fmt_measured(a.get("time_to_recover_s"), resolution.get("time_to_recover_s"))
    ttc = fmt_time_to_consistency(
        c.get("time_to_consistency_s"), c.get("anomaly_opened"), c.get("time_to_consistency_resolution_s")
    )
    expected = shown_verdict(r["verdict"], bool(r["scenario"].get("expects_anomalies"))) == "expected"
    verdict = r["verdict"].upper() + (" (anomalies caught as expected)" if expected else "")
    lines = [
        f"\n== {r['scenario']['name']}: {verdict} ==",
        "availability  not known"
        if not a
        else f"availability  {fmt_pct(a.get('overall', {}).get('success_ratio'), 3)} overall{by_demand_label(a)};"
        " phases (each payment where it was asked): "
        + ", ".join(
            f"{k} {fmt_pct(v.get('success_ratio'))} of {v.get('operations', 0):,}"
            for k, v in a.get("phases", {}).items()
            if v.get("operations")
        ),
        *demand_lines(a),
        f"recovery      time to recover {ttr}; time to consistency {ttc}",
        "settlement    not known"
        if rec is None
        else f"settlement    {rec['payments']:,} payments: {rec['clean_settled']:,} settled,"
        f" {rec['clean_failed']:,} cleanly failed; {_breaks_line(rec)}",
        "customers     lost acknowledged payments: "
        + ("not known" if view is None else f"{view['lost_acknowledged']:,}"),
    ]
    lines += evidence_lines(r.get("evidence"))
    by_reason: dict[str, list[str]] = {}
    for check_name, why in ((rec or {}).get("not_applicable") or {}).items():
        by_reason.setdefault(why, []).append(check_name)
    lines += [f"{'N/A':<13} {', '.join(names)}: {why}" for why, names in by_reason.items()]
    checks = r.get("checks")
    if checks:
        for v in checks.values():
            label = "UNKNOWN" if v["verdict"] == "unknown" else "FAIL"
            lines += [f"{label:<13} {f}" for f in v["failures"]]
    else:  # a result from before per-check verdicts
        lines += [f"FAIL          {f}" for f in r["failures"]]
    lines.append(f"run directory {outcome.run_dir}")
    if RunDir(outcome.run_dir).report.exists():
        lines.append(f"report        {RunDir(outcome.run_dir).report}")
    return "\n".join(lines)
