"""Local topology: services start healthy, stop cleanly, and never outlive the harness."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import eventually

from mock_switch.config import ConfigError, SystemConfig

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[1].split()[0] != "Z"


def test_services_die_when_the_harness_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys, time
        from pathlib import Path
        from harness.testbed.local import LocalTopology
        from harness.testbed.system import build_system
        topo = LocalTopology(build_system(banks=2, accounts=10), Path({str(tmp_path)!r}))
        topo.start()
        print(json.dumps([s.pid for s in topo.services.values()]), flush=True)
        time.sleep(60)
        """
    )
    harness = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert harness.stdout is not None
    pids = json.loads(harness.stdout.readline())
    assert len(pids) == 3 and all(alive(p) for p in pids)
    harness.send_signal(signal.SIGKILL)  # no finally block, no atexit: only the kernel can help
    harness.wait()
    eventually(lambda: not any(alive(p) for p in pids), timeout=10, what="services to exit after the harness died")


def test_sigterm_is_a_graceful_shutdown(tmp_path: Path) -> None:
    from harness.testbed.local import LocalTopology
    from harness.testbed.system import build_system

    topo = LocalTopology(build_system(banks=2, accounts=10), tmp_path)
    topo.start()
    proc = topo.switch.proc
    assert proc is not None
    topo.stop()
    assert proc.returncode == 0  # exited by itself on SIGTERM, not killed
    assert "shutting down" in (tmp_path / "logs" / "switch.log").read_text()


def test_config_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "system.json"
    path.write_text(json.dumps({"banks": [{"code": "bnka"}]}))
    with pytest.raises(ConfigError, match=r"system\.json.*banks\.0\.code"):
        SystemConfig.load(path)
    path.write_text(json.dumps({"banks": [{"code": "BNKA", "switch_timeout_s": 1}], "switch": {"payee_timeout_s": 2}}))
    with pytest.raises(ConfigError, match=r"payee_timeout_s .* must be shorter than banks\[BNKA\]\.switch_timeout_s"):
        SystemConfig.load(path)
    with pytest.raises(ConfigError, match="no such file"):
        SystemConfig.load(tmp_path / "missing.json")


def test_mock_switch_cli_rejects_an_unknown_bank(tmp_path: Path) -> None:
    path = tmp_path / "system.json"
    path.write_text(json.dumps({"banks": [{"code": "BNKA"}]}))
    out = subprocess.run(
        [sys.executable, "-m", "mock_switch", "bank", "ZZZZ", "--config", str(path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no bank 'ZZZZ'" in out.stderr and "BNKA" in out.stderr


def test_a_service_restarted_from_a_short_lived_thread_keeps_running(tmp_path: Path) -> None:
    """Regression: PR_SET_PDEATHSIG fires when the forking *thread* exits; the nemesis restarts
    crashed services from its schedule thread, which ends soon after."""
    import threading
    import time

    from harness.testbed.local import LocalTopology
    from harness.testbed.system import build_system

    topo = LocalTopology(build_system(banks=2, accounts=10), tmp_path)
    topo.start()
    try:
        t = threading.Thread(target=topo.restart, args=("BNKA",))
        t.start()
        t.join()
        pid = topo.bank("BNKA").pid
        assert pid is not None
        time.sleep(1.5)  # longer than the parent watchdog's poll period
        assert alive(pid) and topo.bank("BNKA").running()
    finally:
        topo.stop()
