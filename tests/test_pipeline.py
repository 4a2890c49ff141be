"""One run pipeline: scripted runs, interactive sessions, `harness up` and `harness ui` end the same way.

These pin the bugs the copies had: two different in-doubt deadlines, `harness up` built with another
status-query policy than `harness ui`, and up.json written to `--out` but looked for elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import cli, runner
from harness.procs import process_start
from harness.rundir import RunDir, running_session, up_state_file, write_up_state
from harness.scenario import ConsistencyExpectation, Expectations, Scenario, TopologySpec
from harness.web import session as web_session
from harness.web import ui as web_ui


def test_the_in_doubt_grace_is_the_customer_timeout_plus_the_consistency_objective() -> None:
    scenario = Scenario(
        name="grace",
        topology=TopologySpec(customer_timeout_s=4.0),
        expect=Expectations(consistency=ConsistencyExpectation(max_time_to_consistency_s=12)),
    )
    assert runner.in_doubt_grace_s(scenario) == 16.0
    no_objective = scenario.model_copy(
        update={"expect": Expectations(consistency=ConsistencyExpectation(max_time_to_consistency_s=None))}
    )
    assert runner.in_doubt_grace_s(no_objective) == 34.0


class _Nemesis:
    def __init__(self) -> None:
        self.active: dict[str, Any] = {"slow": object()}
        self.healed = 0

    def heal_all(self) -> None:
        self.healed += 1
        self.active.clear()


class _Bed:
    def __init__(self) -> None:
        self.nemesis = _Nemesis()

    def versions(self) -> dict[str, str]:
        return {"backend": "test", "toxiproxy": "v0"}


class _Sampler:
    switch_url, bank_urls = "http://127.0.0.1:1", {"BNKA": "http://127.0.0.1:2"}

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @contextlib.contextmanager
    def held(self) -> Iterator[_Sampler]:
        self.log.append("hold")
        yield self
        self.log.append("release")

    def sample_now(self) -> dict[str, Any]:
        self.log.append("sample")
        return {}


def test_finish_run_heals_waits_samples_settles_then_snapshots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log: list[str] = []
    monkeypatch.setattr(runner, "wait_in_doubt", lambda s, b, grace: log.append(f"wait {grace:g}") or 0)
    monkeypatch.setattr(runner, "settle_all", lambda url: log.append("settle"))
    monkeypatch.setattr(runner.snapshot, "take_stable", lambda s, b: log.append("snapshot") or {"switch": {}})
    monkeypatch.setattr(runner.ledgers, "save", lambda snap, path: path.write_text(json.dumps(snap)))
    bed, rundir = _Bed(), RunDir(tmp_path)
    scenario = Scenario(name="ending", topology=TopologySpec(customer_timeout_s=3.0))

    left = runner.finish_run(bed, rundir, scenario, _Sampler(log))  # type: ignore[arg-type]

    assert left == 0 and bed.nemesis.healed == 1
    # The settlement happens while the sampler is held: no sample can read a half-settled ledger.
    assert log == ["wait 33", "hold", "sample", "settle", "snapshot", "release"]
    assert rundir.ledgers.exists()
    env = json.loads(rundir.environment.read_text())
    assert env["backend"] == "test" and env["harness"] and env["python"]


def test_harness_up_builds_the_same_system_as_a_scripted_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_testbed(system: Any, run_dir: Path, backend: str, power_loss: Any = ()) -> Any:
        seen["system"] = system
        raise Stop

    monkeypatch.setattr(web_ui, "make_testbed", fake_testbed)
    monkeypatch.setattr(web_ui, "sigterm_unwinds", lambda: None)
    with pytest.raises(Stop):
        web_ui.up(argparse.Namespace(banks=3, out=tmp_path))
    expected = runner.system_for(web_session.session_scenario(TopologySpec(banks=3)))
    assert seen["system"].status_query == expected.status_query
    assert seen["system"].status_query.initial_s == 0.05  # the fast policy: robust components converge quickly
    assert len(seen["system"].banks) == 3


def test_harness_down_stops_the_process_named_in_the_up_json_of_its_out(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "elsewhere"
        path = write_up_state(
            out, {"harness_pid": child.pid, "harness_started": process_start(child.pid), "run_dir": str(out)}
        )
        assert path == up_state_file(out)
        assert running_session(path) is not None
        assert cli.main(["down", "--out", str(out)]) == 0
        assert child.wait(timeout=30) == -signal.SIGTERM
        assert running_session(path) is None  # its process is gone: no session
    finally:
        if child.poll() is None:
            child.kill()


def test_a_hand_started_locust_finds_the_session_named_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    me = {"harness_pid": os.getpid(), "harness_started": process_start(os.getpid())}
    path = write_up_state(tmp_path, {**me, "control_url": "http://127.0.0.1:9"})
    monkeypatch.setenv("PAYSWITCH_UP_STATE", str(path))
    session = running_session()
    assert session is not None and session["control_url"] == "http://127.0.0.1:9"


def test_harness_down_never_signals_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    """A stale up.json names a pid that another process has since been given: nothing is signalled."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = {"harness_pid": bystander.pid, "harness_started": "1", "run_dir": str(tmp_path)}
        path = write_up_state(tmp_path, stale)
        assert running_session(path) is None
        assert cli.main(["down", "--out", str(tmp_path)]) == 0
        assert bystander.poll() is None  # still alive: not signalled
        assert not path.exists()  # the stale file is gone
    finally:
        bystander.kill()
        bystander.wait()
