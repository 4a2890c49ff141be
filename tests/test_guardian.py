"""No frozen orphans: whatever the harness dies of, what it started is resumed and ended.

A service under a `pause` fault is SIGSTOPped and cannot notice its parent died; before the guardian, a
`kill -9` of the harness left it stopped, holding its port, forever (3 kills of 3)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import eventually

from harness.cli import main as harness_main
from harness.procs import OWNER_ENV, owned_processes, process_start

pytestmark = pytest.mark.slow

HARNESS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from harness.faults import FaultSpec
    from harness.testbed import Testbed
    from harness.testbed.system import build_system

    bed = Testbed(build_system(banks=2, accounts=20), Path(sys.argv[1]))
    bed.start()
    bed.nemesis.apply(FaultSpec(name="frozen", kind="pause", targets=["switch"], start=0, duration=60))
    print("paused", flush=True)
    time.sleep(120)  # bounded: the test kills us long before
    """
)


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def test_a_kill_9_of_the_harness_leaves_no_frozen_service(tmp_path: Path) -> None:
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert harness.stdout is not None
        line = harness.stdout.readline()  # bounded by the testbed's own start-up timeouts
        assert line.strip() == "paused", harness.stderr.read() if harness.stderr else line
        token = f"{harness.pid}:{process_start(harness.pid)}"
        owned = [pid for pid, owner in owned_processes().items() if owner == token]
        assert len(owned) == 4, owned  # the switch, two banks, Toxiproxy
        # The paused switch (a signal is delivered asynchronously: wait for it to take hold).
        frozen = eventually(
            lambda: [pid for pid in owned if _state(pid) == "T"], timeout=10, what="the switch to be stopped"
        )
        harness.kill()  # kill -9: no finally, no handler runs in the harness
        harness.wait()
        eventually(
            lambda: not [pid for pid, owner in owned_processes().items() if owner == token],
            timeout=30,
            what="the guardian to end every process of the killed harness",
        )
    finally:
        if harness.poll() is None:
            harness.kill()
    log = (tmp_path / "run" / "logs" / "guardian.log").read_text()
    # Toxiproxy and the banks may end by themselves (they watch the harness); the frozen switch cannot.
    assert f"{frozen[0]}" in log.split("reaped", 1)[1], log


def test_harness_down_all_ends_stopped_processes_of_dead_harnesses_only(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    dead_owner = {**os.environ, OWNER_ENV: "999999999:1"}  # a harness that no longer exists
    live_owner = {**os.environ, OWNER_ENV: f"{os.getpid()}:{process_start(os.getpid())}"}
    orphan = subprocess.Popen(sleeper, env=dead_owner)
    kept = subprocess.Popen(sleeper, env=live_owner)
    try:
        os.kill(orphan.pid, signal.SIGSTOP)  # frozen, like a paused service
        eventually(lambda: orphan.pid in owned_processes(), timeout=10, what="the orphan to be visible")
        assert harness_main(["down", "--all", "--out", str(tmp_path)]) == 0
        assert orphan.wait(timeout=30) == -signal.SIGKILL
        assert kept.poll() is None  # its harness (this test) is alive: never touched
    finally:
        for proc in (orphan, kept):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
