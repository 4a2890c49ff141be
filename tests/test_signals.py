"""SIGTERM (a CI timeout, a service manager) stops `harness run` as cleanly as Ctrl-C: the paused switch is
resumed, the heal is in the fault timeline, nothing of the run is left running, and the exit code says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.procs import EXIT_TERMINATED

pytestmark = pytest.mark.slow

SCENARIO = """name: sigterm-during-pause
topology: {banks: 2, accounts: 50}
load: {rate: 30, duration: 30}
faults:
  - {name: frozen, kind: pause, targets: switch, start: 1, duration: 25}
expect:
  availability: {baseline_success_ratio: null, steady_success_ratio: null}
"""


def _events(run_root: Path) -> list[dict[str, object]]:
    files = list(run_root.glob("*/faults.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def _processes_of(run_root: Path) -> list[str]:
    """Every live process whose command line names this run's folder (services, Toxiproxy logs, Locust)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(run_root) in cmdline and int(pid) != os.getpid():
            found.append(f"{pid}: {cmdline[:200]}")
    return found


def test_sigterm_during_a_pause_heals_it_and_exits_143(tmp_path: Path) -> None:
    scenario = tmp_path / "sigterm.yaml"
    scenario.write_text(SCENARIO)
    runs = tmp_path / "runs"
    harness = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--out", str(runs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90  # start-up and the first answered payment, on a busy machine
        while not any(e["event"] == "apply" for e in _events(runs)):
            assert harness.poll() is None, harness.communicate()
            assert time.monotonic() < deadline, "the pause was never applied"
            time.sleep(0.2)
        harness.send_signal(signal.SIGTERM)
        _, err = harness.communicate(timeout=120)
    finally:
        if harness.poll() is None:
            harness.kill()
    assert harness.returncode == EXIT_TERMINATED, err[-2000:]
    assert "interrupted: faults healed" in err
    events = [(e["event"], e["fault"]) for e in _events(runs)]
    assert events[-1] == ("heal", "frozen"), events  # the switch was resumed, and the timeline says so
    assert _processes_of(runs) == []


def test_sigterm_to_pytest_during_a_pause_heals_it(tmp_path: Path) -> None:
    """`pytest scenarios/` under a CI timeout: SIGTERM unwinds the scenario like Ctrl-C (the plugin)."""
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "sigterm.yaml").write_text(SCENARIO)
    runs = tmp_path / "runs"
    pytest_run = subprocess.Popen(
        [sys.executable, "-m", "pytest", str(folder), "-p", "no:cacheprovider", "--harness-out", str(runs)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not any(e["event"] == "apply" for e in _events(runs)):
            assert pytest_run.poll() is None, pytest_run.communicate()
            assert time.monotonic() < deadline, "the pause was never applied"
            time.sleep(0.2)
        pytest_run.send_signal(signal.SIGTERM)
        out, _ = pytest_run.communicate(timeout=120)
    finally:
        if pytest_run.poll() is None:
            pytest_run.kill()
    assert pytest_run.returncode == pytest.ExitCode.INTERRUPTED, out[-2000:]
    events = [(e["event"], e["fault"]) for e in _events(runs)]
    assert events[-1] == ("heal", "frozen"), events
    assert _processes_of(runs) == []
