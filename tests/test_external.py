"""Bring your own switch: a scenario runs against a system the harness did not start (a target file).

The bundled switch and three banks with non-default bank codes run outside the harness, in a process
group of their own, configured (as a user would configure theirs) to reach each other through the
Toxiproxy listener addresses the target file gives. `harness run` starts only Toxiproxy, creates the
links, drives the load through them, injects a link fault, and reconciles from the read API.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
import yaml
from support import loopback_addresses, own_services, target_scenario_file

from harness import target as targets
from harness.scenario import ScenarioError
from harness.scenario import load as load_scenario

ROOT = Path(__file__).resolve().parent.parent
CODES = ("ACME", "BETA", "CRED")  # not the mock's default BNKA, BNKB ...
ACCOUNTS = 100


def target_file(tmp: Path, direct: dict[str, str], links: dict[str, dict[str, str]], **extra: Any) -> Path:
    return support.target_file(tmp, "own mock behind Toxiproxy", CODES, direct, links, **extra)


@pytest.fixture(scope="module")
def own_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    with started(tmp_path_factory.mktemp("external"), "robust") as system:
        yield system


@contextlib.contextmanager
def started(tmp: Path, resilience: str) -> Iterator[tuple[Path, Path]]:
    """Switch + 3 banks started like a user's own system, dialling each other through the listener
    addresses of its target file (which the harness's Toxiproxy will open). Yields (tmp, target file)."""
    direct, links = loopback_addresses(CODES)
    config = {
        "currency": "KES",
        "switch": {
            "listen": direct["switch"], "payee_timeout_s": 1.0, "resilience": resilience,
            "bank_urls": {c: f"http://{links[f'switch->{c}']['listen']}" for c in CODES},
        },
        "banks": [
            {"code": c, "listen": direct[c], "switch_url": f"http://{links[f'{c}->switch']['listen']}",
             "accounts": ACCOUNTS, "switch_timeout_s": 2.5, "customer_timeout_s": 3.0, "resilience": resilience}
            for c in CODES
        ],
        "status_query": {"initial_s": 0.05, "max_s": 0.5},
    }  # fmt: skip
    with own_services(tmp, config, CODES) as procs:
        for name, proc in zip(("switch", *CODES), procs, strict=True):
            (tmp / f"{name}.pid").write_text(f"{proc.pid}\n")  # as a service manager would
        try:
            yield tmp, target_file(tmp, direct, links)
        finally:
            restarted = [int((tmp / f"{c}.pid").read_text()) for c in CODES if (tmp / f"{c}.pid").exists()]
            for pid in set(restarted) - {p.pid for p in procs}:  # started again by a start_command
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)


def scenario_file(
    tmp: Path, tfile: Path, faults: list[dict[str, Any]], name: str = "external-latency", duration: float = 16
) -> Path:
    """`duration` leaves the checker a few seconds after the last heal: a run that never recovers fails
    by design, and a restarted bank on a busy machine needs some of that tail to come back."""
    return target_scenario_file(
        tmp,
        tfile,
        faults,
        name=name,
        description="the user's own system (here: the bundled mock started by hand), a latency fault",
        rate=12,
        duration=duration,
    )


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=400, env=env, cwd=cwd
    )


LATENCY = {"name": "slow-beta", "kind": "latency", "targets": "switch->BETA", "start": 5, "duration": 5,
           "attributes": {"latency": 1500}}  # fmt: skip


def test_a_scenario_runs_against_an_external_target(own_system: tuple[Path, Path]) -> None:
    tmp, tfile = own_system
    links = harness("target-links", str(tfile), cwd=tmp)
    assert links.returncode == 0, links.stdout + links.stderr
    assert "configure the switch" not in links.stdout  # callers are named: switch, ACME ...
    assert any(
        line.startswith("switch->BETA") and "configure switch to dial" in line for line in links.stdout.splitlines()
    )

    done = harness("run", str(scenario_file(tmp, tfile, [LATENCY])), "--out", str(tmp / "runs"), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    [run_dir] = list((tmp / "runs").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    assert result["scenario"]["backend"] == "external"
    assert result["environment"]["backend"] == "external"
    # The load went through the harness's listeners, so it is measured ...
    overall = result["availability"]["overall"]
    assert overall["operations"] > 100 and overall["success_ratio"] is not None
    # ... and the fault bit: payments to BETA slowed past the switch's payee timeout inside its window.
    [window] = result["evidence"]["windows"]
    assert window["fault"] == "slow-beta" and window["observable_effect"], window
    # Three-way reconciliation, from the target's read API: consistent, nothing acknowledged lost.
    rec = result["consistency"]["reconciliation"]
    assert rec["payments"] > 100
    assert not any(rec["anomalies"].values()), rec["anomalies"]
    assert result["consistency"]["customer_view"]["lost_acknowledged"] == 0
    assert all(c["ok"] for c in result["ledger_replay"]["checks"]), result["ledger_replay"]
    books = {b["name"]: b["ok"] for b in rec["books"]}
    assert books.get("conservation") is True, rec["books"]
    # Bank codes of the target, not the mock's defaults; reads through its read API.
    ledgers = json.loads((run_dir / "ledgers.json").read_text())
    assert sorted(ledgers["banks"]) == sorted(CODES)
    assert "KES" in (run_dir / "system.json").read_text()
    # The run directory keeps the target it ran against: it is checked again from its files alone.
    assert yaml.safe_load((run_dir / "scenario.yaml").read_text())["target"] == "target.yaml"
    assert (run_dir / "target.yaml").read_text() == tfile.read_text()
    again = harness("check", str(run_dir), cwd=ROOT)
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_reconciliation_from_the_read_api_catches_a_target_that_creates_money(tmp_path: Path) -> None:
    """The same run against naive components (the switch aborts on its payee timeout, the payee has
    credited): the checkers, reading the target's read API, find the anomalies and the run fails."""
    with started(tmp_path, "naive") as (tmp, tfile):
        path = scenario_file(tmp, tfile, [LATENCY], name="external-naive")
        done = harness("run", str(path), "--out", str(tmp / "runs"), cwd=tmp)
    assert done.returncode == 1, done.stdout + done.stderr
    [run_dir] = list((tmp / "runs").iterdir())
    rec = json.loads((run_dir / "result.json").read_text())["consistency"]["reconciliation"]
    assert rec["anomaly_count"] > 0 and not rec["ok"], rec
    assert "anomalies" in done.stdout


def test_a_process_fault_without_process_control_is_refused_at_load(own_system: tuple[Path, Path]) -> None:
    tmp, tfile = own_system
    crash = {"kind": "crash", "targets": "BETA", "start": 5, "duration": 3}
    path = scenario_file(tmp, tfile, [crash], name="external-crash")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert "faults[0].kind" in msg and "processes.BETA.pid_file" in msg and "processes.BETA.start_command" in msg
    # Through the CLI: refused before anything starts (no run directory), exit status 2.
    done = harness("run", str(path), "--out", str(tmp / "refused"), cwd=tmp)
    assert done.returncode == 2 and "processes.BETA" in done.stderr, done.stderr
    assert not (tmp / "refused").exists()


def test_process_control_in_the_target_allows_the_fault(own_system: tuple[Path, Path]) -> None:
    tmp, tfile = own_system
    data = yaml.safe_load(tfile.read_text())
    data["processes"] = {"BETA": {"pid_file": str(tmp / "beta.pid"), "start_command": "true"}}
    allowed = tmp / "target-with-processes.yaml"
    allowed.write_text(yaml.safe_dump(data))
    pause = {"kind": "pause", "targets": "BETA", "start": 5, "duration": 3}
    crash = {"kind": "crash", "targets": "BETA", "start": 9, "duration": 3}
    scenario = load_scenario(scenario_file(tmp, allowed, [pause, crash], name="external-allowed"))
    assert scenario.backend == "external" and scenario.bank_codes == list(CODES)
    power = {"kind": "power_loss", "targets": "BETA", "start": 5, "duration": 3}
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.kind: power_loss"):
        load_scenario(scenario_file(tmp, allowed, [power], name="external-power"))


def test_a_target_without_links_is_refused_naming_the_field(tmp_path: Path) -> None:
    direct = {name: f"127.0.0.1:{9000 + i}" for i, name in enumerate(("switch", *CODES))}
    links = {"customers->ACME": {"listen": "127.0.0.1:9300", "upstream": direct["ACME"]}}
    tfile = target_file(tmp_path, direct, links)
    with pytest.raises(ScenarioError, match=r"target: .*links\.ACME->switch") as err:
        load_scenario(scenario_file(tmp_path, tfile, []))
    assert "listen" in str(err.value) and "upstream" in str(err.value)
    bad = target_file(tmp_path, direct, {"switch->ZZZZ": {"listen": "127.0.0.1:1", "upstream": "127.0.0.1:2"}})
    with pytest.raises(targets.TargetError, match=r"links: \['switch->ZZZZ'\] are not links"):
        targets.load(bad)


# -- checks that need a capability the target lacks: not applicable, not failed -----------------------


def _books(broken: bool) -> dict[str, Any]:
    """One committed payment ACME -> BETA; `broken`: ACME debited twice (a duplicate effect, money lost)."""
    common = {"payment_id": "p1", "fingerprint": "f1", "debtor_account": "0100000001", "creditor_account": "0200000001",
              "amount": 100, "reason": None}  # fmt: skip
    debits = [{"entry_id": 1, "payment_id": "p1", "account": "0100000001", "kind": "DEBIT", "amount": 100, "at": 1.0}]
    if broken:
        debits.append({**debits[0], "entry_id": 2})
    return {
        "taken_at": 9.0,
        "switch": {
            "transfers": [{**common, "debtor_bank": "ACME", "creditor_bank": "BETA", "status": "ACSC", "window_id": 1,
                           "received_at": 1.0, "decided_at": 1.1}],
            "participants": [
                {"bank": "ACME", "net_debit_cap": 10_000, "position": 100, "reserved": 0, "peak_exposure": 100,
                 "settlement_balance": 0, "closed_credit": 0},
                {"bank": "BETA", "net_debit_cap": 10_000, "position": -100, "reserved": 0, "peak_exposure": 0,
                 "settlement_balance": 0, "closed_credit": 0},
            ],
            "windows": [{"window_id": 1, "state": "OPEN", "opened_at": 0.0, "closed_at": None, "settled_at": None,
                         "net_positions": {}}],
            "movements": [],
        },
        "banks": {
            "ACME": {"payments": [{**common, "creditor_bank": "BETA", "status": "ACSC", "created_at": 1.0,
                                   "decided_at": 1.2}], "credits": [],
                     "accounts": [{"account": "0100000001", "balance": 800 if broken else 900}], "entries": debits},
            "BETA": {"payments": [],
                     "credits": [{**common, "debtor_bank": "ACME", "status": "ACCP", "received_at": 1.1}],
                     "accounts": [{"account": "0200000001", "balance": 1100}],
                     "entries": [{"entry_id": 1, "payment_id": "p1", "account": "0200000001", "kind": "CREDIT",
                                  "amount": 100, "at": 1.1}]},
        },
    }  # fmt: skip


def _without(snap: dict[str, Any], capability: str) -> dict[str, Any]:
    from harness.observe.snapshot import BANK_READS, SWITCH_READS

    out = json.loads(json.dumps(snap))
    for key, (cap, _) in SWITCH_READS.items():
        if cap == capability:
            del out["switch"][key]
    for books in out["banks"].values():
        for key, (cap, _) in BANK_READS.items():
            if cap == capability:
                del books[key]
    out["not_offered"] = [capability]
    return out


def test_checks_needing_a_capability_the_target_lacks_are_not_applicable() -> None:
    from harness.checkers.reconcile import reconcile

    clean = reconcile(_books(broken=False), 2000, 0)
    assert clean.ok and not clean.not_applicable
    # The broken books are caught when the target offers bank_books ...
    caught = reconcile(_books(broken=True), 2000, 0)
    assert caught.counts()["duplicate_effect"] == 1
    assert {b.name: b.ok for b in caught.books}["conservation"] is False
    # ... and without it those checks are not applicable (with the reason), not failed; the others still run.
    blind = reconcile(_without(_books(broken=True), "bank_books"), 2000, 0)
    assert blind.ok and blind.anomaly_count == 0
    assert "conservation" not in {b.name for b in blind.books}
    assert blind.not_applicable["conservation"] == "not applicable: the target does not offer bank_books"
    assert "duplicate_effects" in blind.not_applicable
    assert {b.name for b in blind.books} >= {"positions_match_transfers", "settlement_windows"}
    no_settlement = reconcile(_without(_books(broken=False), "settlement"), 2000, 0)
    assert no_settlement.ok
    assert {"settlement_windows", "committed_in_a_window", "positions_match_transfers"} <= set(
        no_settlement.not_applicable
    )
    assert {b.name for b in no_settlement.books} >= {"conservation", "net_debit_cap_respected"}


def test_a_target_without_the_optional_reads_is_judged_on_the_rest(own_system: tuple[Path, Path]) -> None:
    """`capabilities: []`: the harness never asks for /accounts, /entries, /participants or settlement;
    those checks are not applicable, and the three-way reconciliation still runs."""
    tmp, tfile = own_system
    data = yaml.safe_load(tfile.read_text())
    data["capabilities"] = []
    bare = tmp / "target-bare.yaml"
    bare.write_text(yaml.safe_dump(data))
    path = scenario_file(tmp, bare, [], name="external-bare")
    text = yaml.safe_load(path.read_text())
    text["load"]["duration"] = 8
    path.write_text(yaml.safe_dump(text))
    done = harness("run", str(path), "--out", str(tmp / "bare-runs"), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "N/A" in done.stdout and "the target does not offer bank_books" in done.stdout, done.stdout
    [run_dir] = list((tmp / "bare-runs").iterdir())
    ledgers = json.loads((run_dir / "ledgers.json").read_text())
    assert ledgers["not_offered"] == ["bank_books", "positions", "settlement"]
    assert set(ledgers["switch"]) == {"transfers"} and set(ledgers["banks"]["ACME"]) == {"payments", "credits"}
    rec = json.loads((run_dir / "result.json").read_text())["consistency"]["reconciliation"]
    assert rec["payments"] > 30 and rec["anomaly_count"] == 0
    assert {"conservation", "settlement_windows", "net_debit_cap_respected"} <= set(rec["not_applicable"])
    assert rec["books"] == []
    result = json.loads((run_dir / "result.json").read_text())
    assert result["ledger_replay"]["not_applicable"].endswith("does not offer positions, settlement")
    assert result["checks"]["ledger_replay"]["verdict"] == "valid" and result["stress"] == {}


def test_the_example_chaos_target_matches_its_mock_configuration() -> None:
    """targets/mock-chaos.json dials through exactly the listeners targets/mock-chaos.yaml opens, and the
    example scenario beside them loads (its `target:` is found beside it)."""
    from mock_switch.config import SystemConfig

    t = targets.load(ROOT / "targets" / "mock-chaos.yaml")
    system = SystemConfig.load(ROOT / "targets" / "mock-chaos.json")
    assert t.missing_links() == [] and t.codes == [b.code for b in system.banks]
    listens = {"switch": system.switch.listen, **{b.code: b.listen for b in system.banks}}
    for name, addr in t.links.items():
        caller, _, callee = name.partition("->")
        assert addr.upstream == listens[callee], name
        if caller == "switch":
            assert system.switch.bank_urls[callee] == f"http://{addr.listen}", name
        elif caller != "customers":
            assert system.bank(caller).switch_url == f"http://{addr.listen}", name
    assert t.load.accounts == system.banks[0].accounts
    scenario = load_scenario(ROOT / "targets" / "mock-chaos-latency.yaml")
    assert scenario.backend == "external" and scenario.external == t


def test_process_faults_act_through_the_target_pid_file_and_start_command(own_system: tuple[Path, Path]) -> None:
    """pause (SIGSTOP/SIGCONT to the pid in the pid file) and crash (kill -9, then the start command)
    of BETA, a service the harness did not start; the books stay consistent."""
    tmp, tfile = own_system
    data = yaml.safe_load(tfile.read_text())
    pid_file = tmp / "BETA.pid"
    before = int(pid_file.read_text())
    command = [sys.executable, "-m", "mock_switch", "bank", "BETA", "--config", str(tmp / "system.json"),
               "--data-dir", str(tmp / "BETA")]  # fmt: skip
    log = shlex.quote(str(tmp / "beta.log"))
    start = f"echo $$ > {shlex.quote(str(pid_file))}; exec {shlex.join(command)} >> {log} 2>&1"
    data["processes"] = {"BETA": {"pid_file": str(pid_file), "start_command": start}}
    controlled = tmp / "target-controlled.yaml"
    controlled.write_text(yaml.safe_dump(data))
    faults = [
        {"name": "pause-beta", "kind": "pause", "targets": "BETA", "start": 4, "duration": 3},
        {"name": "crash-beta", "kind": "crash", "targets": "BETA", "start": 9, "duration": 3},
    ]
    path = scenario_file(tmp, controlled, faults, name="external-process", duration=20)
    done = harness("run", str(path), "--out", str(tmp / "process-runs"), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    after = int(pid_file.read_text())
    assert after != before  # the crash killed the first BETA; the start command started another
    os.kill(after, 0)  # and it runs
    [run_dir] = list((tmp / "process-runs").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    windows = {w["fault"]: w for w in result["evidence"]["windows"]}
    assert windows["pause-beta"]["observable_effect"] and windows["crash-beta"]["observable_effect"], windows
    rec = result["consistency"]["reconciliation"]
    assert not any(rec["anomalies"].values()) and rec["ok"], rec
    assert result["consistency"]["customer_view"]["lost_acknowledged"] == 0


# -- the proof of issue 13: one scenario file on both backends; three fault kinds; export files -----

PARTITION = {"name": "switch-island", "kind": "partition", "targets": "switch", "start": 5, "duration": 4}


def _measured(result: dict[str, Any]) -> dict[str, Any]:
    """What a run measured, in the terms both backends share."""
    rec = result["consistency"]["reconciliation"]
    return {
        "verdict": result["verdict"],
        "anomalies": rec["anomaly_count"],
        "lost_acknowledged": result["consistency"]["customer_view"]["lost_acknowledged"],
        "windows": {w["fault"]: w["observable_effect"] for w in result["evidence"]["windows"]},
        "books": {b["name"]: b["ok"] for b in rec["books"]},
    }


def test_the_same_scenario_file_runs_on_the_embedded_mock_and_on_the_target(own_system: tuple[Path, Path]) -> None:
    """One scenario file (the switch partitioned from every bank), run as it is on the bundled mock
    the harness starts, and with `--target` against the system started outside it: both pass, both
    measure availability, the partition bites on both, both reconcile to 0 anomalies."""
    tmp, tfile = own_system
    data = yaml.safe_load(scenario_file(tmp, tfile, [PARTITION], name="switch-partition-short").read_text())
    del data["target"]
    data["topology"] = {"banks": 3, "accounts": ACCOUNTS}
    data["load"]["duration"] = 14
    path = tmp / "switch-partition-short.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    results = {}
    for backend, extra in (("local", []), ("external", ["--target", str(tfile)])):
        done = harness("run", str(path), *extra, "--out", str(tmp / f"same-{backend}"), cwd=tmp)
        assert done.returncode == 0, done.stdout + done.stderr
        [run_dir] = list((tmp / f"same-{backend}").iterdir())
        results[backend] = json.loads((run_dir / "result.json").read_text())
    local, external = results["local"], results["external"]
    assert local["scenario"]["backend"] == "local" and external["scenario"]["backend"] == "external"
    assert local["scenario"]["name"] == external["scenario"]["name"] == "switch-partition-short"
    # The same kind of result: verdict, evidence, reconciliation, books.
    assert _measured(local) == _measured(external) == {
        "verdict": "pass", "anomalies": 0, "lost_acknowledged": 0, "windows": {"switch-island": True},
        "books": _measured(local)["books"],
    }  # fmt: skip
    assert all(_measured(local)["books"].values()) and "conservation" in _measured(local)["books"]
    for result in (local, external):
        overall = result["availability"]["overall"]
        assert overall["operations"] > 80 and 0 < overall["success_ratio"] < 1, overall  # the cut is measured
    [ext_dir] = list((tmp / "same-external").iterdir())
    ledgers = json.loads((ext_dir / "ledgers.json").read_text())
    assert sorted(ledgers["banks"]) == sorted(CODES)


EXPORTER = """
import sys
from pathlib import Path
from harness import ledger_export, target
from harness.observe.snapshot import HttpLedgerSource

t = target.load(Path(sys.argv[1]))
books = HttpLedgerSource(t.switch.url, {p.code: p.url for p in t.participants}, t.offers).take()
ledger_export.write(books, Path(sys.argv[2]))
"""


def test_three_fault_kinds_reconciled_from_export_files(own_system: tuple[Path, Path]) -> None:
    """A link fault, a partition and a crash through the target's start command, in one run whose
    reconciliation reads ledger export files (as a user's exporter writes them, here from the read
    API after the load): 0 anomalies, 0 lost, and the same books the read API shows."""
    from harness.checkers.reconcile import reconcile
    from harness.observe.snapshot import HttpLedgerSource

    tmp, tfile = own_system
    data = yaml.safe_load(tfile.read_text())
    pid_file = tmp / "BETA.pid"
    command = [sys.executable, "-m", "mock_switch", "bank", "BETA", "--config", str(tmp / "system.json"),
               "--data-dir", str(tmp / "BETA")]  # fmt: skip
    log = shlex.quote(str(tmp / "beta.log"))
    start = f"echo $$ > {shlex.quote(str(pid_file))}; exec {shlex.join(command)} >> {log} 2>&1"
    data["processes"] = {"BETA": {"pid_file": str(pid_file), "start_command": start}}
    (tmp / "exporter.py").write_text(EXPORTER)
    export = tmp / "export"
    data["ledgers"] = {
        "from": "export", "dir": str(export),
        "command": shlex.join([sys.executable, str(tmp / "exporter.py"), str(tfile), str(export)]),
    }  # fmt: skip
    exported = tmp / "target-export.yaml"
    exported.write_text(yaml.safe_dump(data, sort_keys=False))
    before = int(pid_file.read_text())
    faults = [
        {**LATENCY, "start": 2, "duration": 5},  # a payment to BETA takes 1.5 s: long enough to see some end
        {"name": "cred-cut-off", "kind": "partition", "targets": "CRED", "start": 8, "duration": 3},
        {"name": "crash-beta", "kind": "crash", "targets": "BETA", "start": 12, "duration": 3},
    ]
    path = scenario_file(tmp, exported, faults, name="external-export", duration=21)
    done = harness("run", str(path), "--out", str(tmp / "export-runs"), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(pid_file.read_text()) != before  # crashed, and started again by the start command
    [run_dir] = list((tmp / "export-runs").iterdir())
    result = json.loads((run_dir / "result.json").read_text())
    windows = {w["fault"]: w["observable_effect"] for w in result["evidence"]["windows"]}
    assert windows == {"slow-beta": True, "cred-cut-off": True, "crash-beta": True}, windows
    rec = result["consistency"]["reconciliation"]
    assert rec["payments"] > 100 and rec["anomaly_count"] == 0 and rec["ok"], rec
    assert result["consistency"]["customer_view"]["lost_acknowledged"] == 0
    assert {b["name"]: b["ok"] for b in rec["books"]}.get("conservation") is True, rec["books"]
    # The checkers judged the export files: what they hold is what ledgers.json holds ...
    assert (export / "banks" / "CRED" / "credits.jsonl").exists()
    ledgers = json.loads((run_dir / "ledgers.json").read_text())
    from harness import ledger_export

    t = targets.load(exported)
    assert ledger_export.read(export, list(CODES), t.offers)["banks"] == ledgers["banks"]
    # ... and the read API, read now, shows the same books and gets the same verdict.
    api = HttpLedgerSource(t.switch.url, {p.code: p.url for p in t.participants}, t.offers).take()
    assert api["switch"] == ledgers["switch"] and api["banks"] == ledgers["banks"]
    assert reconcile(api, 2000, 0).counts() == reconcile(ledgers, 2000, 0).counts()
    # An export that lost a payee's credit of a committed payment is caught from the files alone.
    credits = export / "banks" / "BETA" / "credits.jsonl"
    rows = credits.read_text().splitlines()
    committed = {t["payment_id"] for t in ledgers["switch"]["transfers"] if t["status"] == "ACSC"}
    lost = next(i for i, line in enumerate(rows) if json.loads(line)["payment_id"] in committed)
    credits.write_text("".join(line + "\n" for i, line in enumerate(rows) if i != lost))
    broken = reconcile(ledger_export.read(export, list(CODES), t.offers), 2000, 0)
    assert not broken.ok and broken.anomaly_count >= 1, broken.counts()


def test_a_malformed_export_is_refused_naming_file_line_and_field(tmp_path: Path) -> None:
    from harness import ledger_export
    from harness.ledger_export import ExportError

    ledger_export.write(_books(broken=False), tmp_path)
    good = ledger_export.read(tmp_path, ["ACME", "BETA"], lambda cap: True)
    assert good["banks"] == _books(broken=False)["banks"]
    credits = tmp_path / "banks" / "BETA" / "credits.jsonl"
    row = json.loads(credits.read_text())
    del row["amount"]
    credits.write_text("\n" + json.dumps(row) + "\n")
    with pytest.raises(ExportError, match=r"credits\.jsonl: line 2: field amount: Field required") as err:
        ledger_export.read(tmp_path, ["ACME", "BETA"], lambda cap: True)
    assert "CreditRow" in str(err.value) and "docs/contract.md" in str(err.value)
    credits.write_text('{"payment_id": "p1",\n')
    with pytest.raises(ExportError, match=r"credits\.jsonl: line 1: not JSON"):
        ledger_export.read(tmp_path, ["ACME", "BETA"], lambda cap: True)
    (tmp_path / "switch" / "windows.jsonl").unlink()
    with pytest.raises(ExportError, match=r"windows\.jsonl: no such export file.*drop settlement"):
        ledger_export.read(tmp_path, ["ACME", "BETA"], lambda cap: True)
    # Without the settlement capability the file is not read at all.
    credits.write_text(json.dumps({**row, "amount": 100}) + "\n")
    bare = ledger_export.read(tmp_path, ["ACME", "BETA"], lambda cap: cap != "settlement")
    assert bare["not_offered"] == ["settlement"] and "windows" not in bare["switch"]
    with pytest.raises(ExportError, match="no such export directory"):
        ledger_export.read(tmp_path / "nowhere", ["ACME"], lambda cap: True)


def test_export_settings_are_validated_with_the_target_file(tmp_path: Path) -> None:
    direct = {name: f"127.0.0.1:{9000 + i}" for i, name in enumerate(("switch", *CODES))}
    with pytest.raises(targets.TargetError, match=r"ledgers\.dir: `from: export` needs the directory"):
        targets.load(target_file(tmp_path, direct, {}, ledgers={"from": "export"}))
    with pytest.raises(targets.TargetError, match=r"ledgers\.from"):
        targets.load(target_file(tmp_path, direct, {}, ledgers={"from": "csv", "dir": "x"}))
    ok = targets.load(target_file(tmp_path, direct, {}, ledgers={"from": "export", "dir": "x", "command": "true"}))
    assert ok.ledgers.source == "export" and ok.ledgers.dir == "x"


def test_a_scenario_file_of_the_mock_runs_against_a_target_with_the_target_option() -> None:
    """`harness run FILE --target TARGET`: a scenario written for the bundled mock (faults on `switch`)
    loads against the example target; one naming the mock's bank codes is refused naming them."""
    example = ROOT / "targets" / "mock-chaos.yaml"
    scenario = load_scenario(ROOT / "scenarios" / "switch-partitioned.yaml", example)
    assert scenario.backend == "external" and scenario.bank_codes == ["ACME", "BETA", "CRED"]
    assert scenario.target_path == example.resolve()
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.targets: partition targets 'BNKC'"):
        load_scenario(ROOT / "scenarios" / "bank-links-down.yaml", example)
