"""kill -9 of `harness run` at any point leaves nothing behind: no service alive or stopped, no Toxiproxy
(so no toxic), and the next run passes. The guardian (harness/testbed/guardian.py) ends what a dead
harness started; these kill it at start-up, under each kind of fault, and during the final checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import eventually

from harness.procs import owned_processes, process_start

pytestmark = pytest.mark.slow

SCENARIO = """name: killed
topology: {banks: 2, accounts: 50}
load: {rate: 30, duration: 12}
faults:
  - {name: slow-link, kind: latency, targets: switch->BNKA, start: 1, duration: 2, attributes: {latency: 300}}
  - {name: frozen, kind: pause, targets: switch, start: 3, duration: 2}
  - {name: crashed, kind: crash, targets: BNKA, start: 5, duration: 2}
  - {name: stopped, kind: stop, targets: BNKB, start: 7, duration: 2}
expect:
  availability: {baseline_success_ratio: null, steady_success_ratio: null}
"""

# Where to kill: a fault name (killed once it is applied), or a stage of the run.
POINTS = ["start-up", "slow-link", "frozen", "crashed", "stopped", "final-checks"]


def _applied(runs: Path, fault: str) -> bool:
    for timeline in runs.glob("*/faults.jsonl"):
        for line in timeline.read_text().splitlines():
            event = json.loads(line) if line.strip() else {}
            if event.get("event") == "apply" and event.get("fault") == fault:
                return True
    return False


def _reached(point: str, runs: Path, out: Path) -> bool:
    if point == "start-up":
        return any(runs.glob("*/system.json"))  # the testbed is being brought up
    if point == "final-checks":
        return "waiting for in-doubt payments" in out.read_text()
    return _applied(runs, point)


@pytest.mark.parametrize("attempt", [1, 2])
@pytest.mark.parametrize("point", POINTS)
def test_a_kill_9_anywhere_leaves_nothing_running(point: str, attempt: int, tmp_path: Path) -> None:
    scenario, runs, out = tmp_path / "killed.yaml", tmp_path / "runs", tmp_path / "harness.out"
    scenario.write_text(SCENARIO)
    with out.open("w") as sink:
        harness = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(runs)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        token = eventually(lambda: process_start(harness.pid), timeout=10, what="the harness to start")
        owner = f"{harness.pid}:{token}"
        deadline = time.monotonic() + 120
        while not _reached(point, runs, out):
            assert harness.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, f"never reached {point}"
            time.sleep(0.05)
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait()
        eventually(
            lambda: not [pid for pid, o in owned_processes().items() if o == owner],
            timeout=30,
            what=f"every process of the harness killed at {point} to end",
        )
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()


def test_the_next_run_passes(tmp_path: Path) -> None:
    """After the kills above, the machine is clean enough for a normal run to pass."""
    from harness import runner
    from harness.scenario import parse

    scenario = parse(
        {"name": "after-kills", "topology": {"banks": 2, "accounts": 50}, "load": {"rate": 30, "duration": 6}},
        "after-kills",
    )
    outcome = runner.run(scenario, tmp_path, progress=None)
    assert outcome.ok, outcome.failure_report()
