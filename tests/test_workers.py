"""Locust workers on other hosts (harness/load/collect.py): a master (`harness run --workers 2`) and
two `harness worker` processes, each in its own empty working directory, reaching the master only
over TCP on 127.0.0.1 (they are never told the run directory). The history must equal what the
banks' ledgers saw, payment by payment; a worker killed with SIGKILL mid-run must be named, with
what of its payments is missing, in result.json and on the console."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from support import eventually

from harness.procs import free_port


def _start(
    tmp: Path, rate: int, duration: int, load: str = "", port: int = 0
) -> tuple[subprocess.Popen[bytes], list[subprocess.Popen[bytes]], Path]:
    port = port or free_port()
    scenario = tmp / "workers.yaml"
    load = load or f"rate: {rate}"
    scenario.write_text(
        f"name: workers\nload: {{{load}, duration: {duration}, workers: 2, master_bind: '127.0.0.1:{port}'}}\n"
        "expect:\n  availability: {baseline_success_ratio: 0.0, overall_success_ratio: 0.0}\n"
    )
    out = tmp / "runs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PAYSWITCH_"))}
    master = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(out)],
        cwd=tmp, env=env, stdout=(tmp / "run.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    workers = [_worker(tmp, name, port, env) for name in ("a", "b")]
    return master, workers, out


def _worker(tmp: Path, name: str, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`harness worker` in an empty directory of its own, its output in tmp/worker-NAME.log."""
    cwd = tmp / f"worker-{name}"
    cwd.mkdir()
    env = env or {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PAYSWITCH_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "worker", "--master", f"127.0.0.1:{port}"],
        cwd=cwd, env=env, stdout=(tmp / f"worker-{name}.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _finish(master: subprocess.Popen[bytes], workers: list[subprocess.Popen[bytes]], tmp: Path) -> Path:
    try:
        master.wait(timeout=150)
    finally:
        for p in [master, *workers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    log = (tmp / "run.log").read_text()
    assert master.returncode in (0, 1), log
    (run_dir,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return run_dir


def _history(run_dir: Path) -> dict[str, list[dict]]:
    ops: dict[str, list[dict]] = {}
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        op = json.loads(line)
        if op.get("op", "payment") in ("payment", "status_query"):
            ops.setdefault(op["id"], []).append(op)
    return ops


def _ledger_payments(run_dir: Path) -> dict[str, str]:
    """payment id -> the payer bank's final status (ACSC / RJCT / ...)."""
    banks = json.loads((run_dir / "ledgers.json").read_text())["banks"]
    return {p["payment_id"]: p["status"] for bank in banks.values() for p in bank["payments"]}


def test_two_remote_workers_history_equals_ledgers(tmp_path: Path) -> None:
    master, workers, _out = _start(tmp_path, rate=20, duration=5)
    run_dir = _finish(master, workers, tmp_path)
    history, ledger = _history(run_dir), _ledger_payments(run_dir)
    assert history, "no payment in the history"
    assert set(history) == set(ledger), set(history) ^ set(ledger)
    for pid, ops in history.items():
        final = [o["outcome"] for o in ops if o["outcome"] != "unknown"]
        if final:
            assert {"ok": "ACSC", "fail": "RJCT"}[final[-1]] == ledger[pid], (pid, ops, ledger[pid])
    # Both workers took part, under the master's names, and every batch arrived in order.
    assert {pid.split("-")[1] for pid in history} == {"w1", "w2"}
    figures = json.loads((run_dir / "workers.json").read_text())
    assert [w["final"] for w in figures] == [True, True] and all(w["seq_gaps"] == 0 for w in figures)
    # The workers never saw the run directory: nothing of the run in their working directories.
    for name in ("a", "b"):
        assert [p.name for p in (tmp_path / f"worker-{name}").iterdir()] == [
            next(iter((tmp_path / f"worker-{name}").glob("payswitch-system.w*.json"))).name
        ]


def test_a_worker_killed_mid_run_is_reported(tmp_path: Path) -> None:
    master, workers, out = _start(tmp_path, rate=20, duration=8)
    victim = workers[1]

    def victim_name() -> str | None:
        text = (tmp_path / "worker-b.log").read_text()
        marker = "worker w"
        return "w" + text.split(marker, 1)[1].split()[0] if marker in text else None

    name = eventually(victim_name, timeout=120, what="worker b to join")

    def victim_reported() -> bool:
        parts = list(out.glob(f"*/history.{name}.jsonl"))
        return bool(parts) and parts[0].read_bytes().count(b"\n") >= 20

    eventually(victim_reported, timeout=60, what=f"{name} to report some operations")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    run_dir = _finish(master, workers, tmp_path)
    result = json.loads((run_dir / "result.json").read_text())
    load = result["availability"]["load"]
    (lost,) = load["lost_workers"]
    assert lost["name"] == name and lost["lines_received"] >= 20
    assert any(f"worker {name}" in w for w in result["availability"]["warnings"]), result["availability"]["warnings"]
    assert f"Locust worker {name}" in (tmp_path / "run.log").read_text()
    # Nothing silent: every payment the ledgers saw is in the history (the lost ones as unknown).
    history, ledger = _history(run_dir), _ledger_payments(run_dir)
    assert set(ledger) <= set(history), set(ledger) - set(history)
    lost_ids = {pid for pid, ops in history.items() if any(o.get("error") == "worker-lost" for o in ops)}
    assert len(lost_ids) == lost["unreported"]


def test_reckon_records_a_lost_workers_unreported_payments(tmp_path: Path) -> None:
    """Pure: what a lost worker reserved and was due before it went silent, minus what it reported,
    becomes unknown `worker-lost` lines; what was due later is counted as never started; a worker that
    sent its final batch loses nothing."""
    from harness.load import collect

    spool = collect.Spool(tmp_path)
    row = {"payer": "BNKA", "payee": "BNKB", "amount": 100}
    reserve = b"".join(json.dumps({**row, "id": f"r-w1-a{i}", "invoke": 1000.0 + i}).encode() + b"\n" for i in range(4))
    reported = json.dumps({"op": "payment", "id": "r-w1-a0", "complete": 1000.1}).encode() + b"\n"
    spool.receive("host_a", {"seq": 1, "reserve": reserve, "r": 4, "lines": reported, "n": 1}, 0)
    spool.receive("host_b", {"seq": 1, "reserve": b"", "lines": b"", "final": True}, 1)
    # Last heard at 1000.5: a1 (1001) and a2 (1002) were due within HEARD_SLACK_S (2 s) after; a3 was not.
    spool.workers["w1"]["last_heard"] = 1002.5 - collect.HEARD_SLACK_S
    spool.save({"host_a"})
    spool.close()
    found = collect.reckon(tmp_path)
    assert found is not None
    (lost,) = found["lost_workers"]
    assert (lost["name"], lost["unreported"], lost["not_started"]) == ("w1", 2, 1)
    lines = [json.loads(x) for x in collect.history_part(tmp_path, "w1").read_text().splitlines()]
    assert [(x["id"], x.get("error")) for x in lines] == [
        ("r-w1-a0", None), ("r-w1-a1", "worker-lost"), ("r-w1-a2", "worker-lost")
    ]  # fmt: skip
    assert all(x["outcome"] == "unknown" for x in lines[1:])
    assert "w1" in collect.describe_lost(lost) and "2 payments" in collect.describe_lost(lost)


def test_a_worker_that_joins_late_takes_users_and_its_payments_reconcile(tmp_path: Path) -> None:
    """Closed model (load.model: closed) with two remote workers; a third `harness worker` joins once
    the load runs. Locust rebalances the customers onto it: the master names it w3, its payments reach
    the history (ids with w3) and equal the ledgers payment by payment, and its final batch arrives."""
    port = free_port()
    master, workers, out = _start(tmp_path, 0, duration=10, load="model: closed, users: 6, spawn_rate: 6", port=port)

    def running() -> bool:  # the first two workers' customers have reported payments
        parts = list(out.glob("*/history.w*.jsonl"))
        return sum(p.read_bytes().count(b"\n") for p in parts) >= 20

    eventually(running, timeout=120, what="the first two workers to report payments")
    workers.append(_worker(tmp_path, "late", port))
    run_dir = _finish(master, workers, tmp_path)
    figures = {w["name"]: w for w in json.loads((run_dir / "workers.json").read_text())}
    assert sorted(figures) == ["w1", "w2", "w3"] and all(w["final"] and w["seq_gaps"] == 0 for w in figures.values())
    assert figures["w3"]["joined_at"] > max(figures["w1"]["joined_at"], figures["w2"]["joined_at"])
    history, ledger = _history(run_dir), _ledger_payments(run_dir)
    late = {pid for pid in history if pid.split("-")[1] == "w3"}
    assert late, "the late worker made no payment"
    assert set(history) == set(ledger), set(history) ^ set(ledger)
    for pid, ops in history.items():
        final = [o["outcome"] for o in ops if o["outcome"] != "unknown"]
        if final:
            assert {"ok": "ACSC", "fail": "RJCT"}[final[-1]] == ledger[pid], (pid, ops, ledger[pid])
    result = json.loads((run_dir / "result.json").read_text())
    assert result["availability"]["load"]["workers"] == ["w1", "w2", "w3"]
    assert not result["availability"]["load"]["lost_workers"]


def test_spool_drops_a_repeated_batch_and_reckons_one_that_never_arrived(tmp_path: Path) -> None:
    """Pure: a batch delivered twice is written once; a worker whose final batch declares more lines
    and reservations than arrived is reckoned like a lost one (its missing payments recorded unknown,
    a payment whose name enquiry alone arrived included), though it said `final`; one whose every
    batch arrived loses nothing."""
    from harness.load import collect

    spool = collect.Spool(tmp_path)
    row = {"payer": "BNKA", "payee": "BNKB", "amount": 100}

    def reserve(worker: str, i: int) -> bytes:
        return json.dumps({**row, "id": f"r-{worker}-a{i}", "invoke": 1000.0 + i}).encode() + b"\n"

    def line(worker: str, i: int, op: str = "payment") -> bytes:
        return json.dumps({"op": op, "id": f"r-{worker}-a{i}", "complete": 1000.5 + i}).encode() + b"\n"

    for client, worker in (("host_a", "w1"), ("host_b", "w2")):
        # a1's name enquiry arrives, its payment line is in the batch that does not (for w1)
        lines = line(worker, 0) + line(worker, 1, "name_enquiry")
        first = {"seq": 1, "reserve": reserve(worker, 0) + reserve(worker, 1), "r": 2, "lines": lines, "n": 2}
        spool.receive(client, first, int(worker[1]) - 1)
        spool.receive(client, first, int(worker[1]) - 1)  # delivered again
        second = {"seq": 2, "reserve": reserve(worker, 2), "r": 1, "lines": line(worker, 1), "n": 1}
        if worker == "w2":
            spool.receive(client, second, 1)  # w1's second batch never arrives
        final = {"seq": 3, "lines": line(worker, 2), "n": 1, "final": True, "sent_lines": 4, "sent_reserved": 3}
        spool.receive(client, final, int(worker[1]) - 1)
    spool.workers["w1"]["last_heard"] = 1003.0
    spool.save()
    spool.close()
    assert spool.workers["w1"]["duplicates"] == spool.workers["w2"]["duplicates"] == 1
    assert collect.history_part(tmp_path, "w2").read_bytes().count(b"\n") == 4  # not 6: the repeat was dropped
    found = collect.reckon(tmp_path)
    assert found is not None
    (lost,) = found["lost_workers"]
    assert (lost["name"], lost["incomplete"], lost["unreported"]) == ("w1", True, 1)
    lines = [json.loads(x) for x in collect.history_part(tmp_path, "w1").read_text().splitlines()]
    assert [(x["id"], x.get("error")) for x in lines][-1] == ("r-w1-a1", "worker-lost")
    assert "w1" in collect.describe_lost(lost) and "lost batches" in collect.describe_lost(lost)


def test_a_failed_send_keeps_its_lines_for_the_next_batch(tmp_path: Path) -> None:
    """RemoteRecorder (the locustfile, imported in a child: Locust patches the standard library): when
    Locust cannot send a batch, its lines and reservations go with the next one instead of being
    dropped, and the final batch declares every line, so the master finds the worker complete."""
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from harness.load import collect\n"
        "from harness.load.locustfile import RemoteRecorder\n"
        "spool = collect.Spool(Path(sys.argv[1]))\n"
        "class Runner:\n"
        "    calls = 0\n"
        "    def send_message(self, kind, data):\n"
        "        Runner.calls += 1\n"
        "        if Runner.calls == 2:\n"
        "            raise OSError('socket gone for a moment')\n"
        "        spool.receive('host_a', data, 0)\n"
        "rec = RemoteRecorder(Runner(), every_s=3600)\n"
        "for i in range(6):\n"
        "    rec.reserve([{'id': f'p{i}', 'payer': 'BNKA', 'payee': 'BNKB', 'amount': 1, 'invoke': 1.0}])\n"
        "    rec.record({'op': 'payment', 'id': f'p{i}', 'complete': 2.0 + i})\n"
        "rec.close()\n"
        "spool.save(); spool.close()\n"
        "print(json.dumps(collect.reckon(Path(sys.argv[1]))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["lost_workers"] == []
    from harness.load import collect

    ids = [json.loads(x)["id"] for x in collect.history_part(tmp_path, "w1").read_text().splitlines()]
    assert ids == [f"p{i}" for i in range(6)]
    reserved = collect.reserved_part(tmp_path, "w1").read_text().splitlines()
    assert len(reserved) == 6


def test_reckon_when_the_master_died_before_the_stop(tmp_path: Path) -> None:
    """Pure: the master writes workers.json as each worker joins, so a master killed before the test
    stops still leaves who joined; reckon then takes when it last heard from a worker from the files it
    wrote (their modification times): what was due until then and never reported is recorded unknown."""
    import time

    from harness.load import collect

    spool = collect.Spool(tmp_path)
    t = time.time()
    row = {"payer": "BNKA", "payee": "BNKB", "amount": 100}
    reserve = b"".join(json.dumps({**row, "id": f"r-w1-a{i}", "invoke": t + i}).encode() + b"\n" for i in range(10))
    reported = json.dumps({"op": "payment", "id": "r-w1-a0", "complete": t + 0.1}).encode() + b"\n"
    spool.receive("host_a", {"seq": 1, "reserve": reserve, "r": 10, "lines": reported, "n": 1}, 0)
    spool.close()  # and no save(): the master was killed
    for part in (collect.history_part(tmp_path, "w1"), collect.reserved_part(tmp_path, "w1")):
        os.utime(part, (t + 5.5, t + 5.5))  # the last batch came 5.5 s after the first arrival was due
    found = collect.reckon(tmp_path)
    assert found is not None
    (lost,) = found["lost_workers"]
    # due up to 5.5 s + HEARD_SLACK_S (2 s) after t: a1..a7 recorded unknown; a8, a9 never started
    assert (lost["name"], lost["master_lost"], lost["unreported"], lost["not_started"]) == ("w1", True, 7, 2)
    assert "master ended" in collect.describe_lost(lost)


def test_a_late_workers_first_test_start_waits_for_its_runner(tmp_path: Path) -> None:
    """A worker joining a running master gets its first spawn message while Locust still constructs its
    WorkerRunner, so test_start fires with `environment.runner` unset; taken as is, the worker ran as a
    local process (pid-named ids, history written to the master's path) and never sent a batch.
    `runner_of` waits (bounded) for the runner in a worker; elsewhere it does not wait."""
    probe = (
        "import sys, time\n"
        "sys.argv = ['locust', '--worker']\n"
        "import gevent\n"
        "from harness.load.locustfile import runner_of\n"
        "class Env:\n"
        "    runner = None\n"
        "env, runner = Env(), object()\n"
        "def assign():\n"
        "    env.runner = runner\n"
        "gevent.spawn_later(0.2, assign)\n"
        "assert runner_of(env) is runner, 'test_start went on without the runner'\n"
        "sys.argv = ['locust']\n"
        "started = time.monotonic()\n"
        "assert runner_of(Env()) is None and time.monotonic() - started < 5\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
