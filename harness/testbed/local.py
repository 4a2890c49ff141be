"""Local-process topology: the switch and N banks as subprocesses on loopback.

Each service gets its own data directory and log file inside the run directory. Services are
given the harness's pid and exit when it disappears, so no orphan survives even a kill -9 of the
harness; `stop()` sends SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.errors import TestbedError
from harness.procs import free_port as free_port
from harness.procs import owned_env

# Also re-exported from here, their old home, for importers edited elsewhere (harness/runner.py and
# harness/cli.py import build_system, harness/web/ui.py free_port); new code imports them from
# harness.testbed.system and harness.procs.
from harness.rundir import RunDir
from harness.testbed.powerloss import Dropped, PowerLossLayer
from harness.testbed.system import build_system as build_system
from mock_switch.config import SystemConfig


class TopologyError(TestbedError):
    """A service would not start, or died, or did not answer its health check in time."""


@dataclass
class ServiceProcess:
    name: str  # "switch" or a bank code
    argv: list[str]
    listen: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    layer: PowerLossLayer | None = None  # its data directory can lose power (a power_loss fault)
    _log: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start #{self.starts + 1} at {time.time():.3f}\n".encode())
        self._log.flush()
        env = owned_env()  # findable by the guardian and `harness down --all` if the harness dies
        if self.layer is not None:
            env.update(self.layer.env())
        self.proc = subprocess.Popen(
            [*self.argv, "--parent-pid", str(os.getpid())],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our own process group: signals go to the service only
            env=env,
        )
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _answered_by_us(self, body: bytes) -> bool:
        try:
            answer = json.loads(body)
        except ValueError:
            return False
        return isinstance(answer, dict) and answer.get("pid") == self.pid

    def wait_healthy(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TopologyError(
                    f"{self.name} exited with code {self.proc.returncode} during start-up; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    # Only our own process counts: another listener on this port (a proxy given the
                    # same port) would answer 200 for a service that never bound it.
                    if resp.status == 200 and self._answered_by_us(resp.read()):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TopologyError(f"{self.name} not healthy at {self.url} after {timeout_s:.0f}s; see {self.log_path}")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def power_loss(self) -> Dropped:
        """kill -9, and what it wrote but never fsynced is gone (the power-loss layer's undo)."""
        if self.layer is None:
            raise TopologyError(
                f"{self.name} was not started under the power-loss layer, so it cannot lose power;"
                " a scripted run starts under it the services its power_loss faults target, `harness ui`"
                " and `up` every service when the layer can be built here"
            )
        self.kill()
        dropped = self.layer.drop_unsynced()
        with self.log_path.open("a") as log:
            log.write(f"--- power loss at {time.time():.3f}: {dropped.summary()}\n")
        return dropped

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the grace period."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class LocalTopology:
    """The mock payment system as local processes. Use as a context manager."""

    def __init__(self, system: SystemConfig, run_dir: Path, power_loss: Iterable[str] = ()) -> None:
        """`power_loss`: the services to start under the power-loss layer (harness/testbed/powerloss.py)."""
        self.system = system
        self.run_dir = run_dir
        rundir = RunDir(run_dir)
        self.config_path = rundir.system
        py = [sys.executable, "-m", "mock_switch"]
        common = ["--config", str(self.config_path)]
        self.services: dict[str, ServiceProcess] = {
            "switch": ServiceProcess(
                "switch",
                [*py, "switch", *common, "--data-dir", str(rundir.data / "switch")],
                system.switch.listen,
                rundir.log("switch"),
            )
        }
        for bank in system.banks:
            self.services[bank.code] = ServiceProcess(
                bank.code,
                [*py, "bank", bank.code, *common, "--data-dir", str(rundir.data / bank.code)],
                bank.listen,
                rundir.log(bank.code),
            )
        self.power_loss_services = sorted(set(power_loss))
        unknown = [name for name in self.power_loss_services if name not in self.services]
        if unknown:
            raise TopologyError(f"power-loss layer asked for {unknown}; the services are {list(self.services)}")
        for name in self.power_loss_services:
            self.services[name].layer = PowerLossLayer(rundir.data / name, rundir.undo_log(name))
        self.dropped: dict[str, list[dict[str, object]]] = {}  # per service, what each power loss undid

    @property
    def switch(self) -> ServiceProcess:
        return self.services["switch"]

    def bank(self, code: str) -> ServiceProcess:
        return self.services[code]

    @property
    def bank_codes(self) -> list[str]:
        return [b.code for b in self.system.banks]

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.system.save(self.config_path)
        try:
            for svc in self.services.values():
                svc.start()
            for svc in self.services.values():
                svc.wait_healthy()
        except BaseException:
            self.stop()
            raise

    @property
    def service_names(self) -> list[str]:
        return list(self.services)

    def kill(self, name: str) -> None:
        self.services[name].kill()

    def power_loss(self, name: str) -> dict[str, object]:
        """kill -9 and lose the unsynced writes; what was undone (for the fault timeline)."""
        dropped = self.services[name].power_loss().as_dict()
        self.dropped.setdefault(name, []).append(dropped)
        return dropped

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.services[name].signal(sig)

    def restart(self, name: str) -> None:
        svc = self.services[name]
        svc.stop()
        svc.start()
        svc.wait_healthy()

    def stop_service(self, name: str) -> None:
        """A graceful stop: SIGTERM, then SIGKILL after the grace period."""
        self.services[name].stop()

    def start_service(self, name: str) -> None:
        """Start it if it is not running (a no-op for a running one), then wait until healthy."""
        svc = self.services[name]
        if not svc.running():
            svc.start()
        svc.wait_healthy()

    def stop(self) -> None:
        for svc in self.services.values():
            if svc.running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(svc.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
                svc.proc.terminate()  # type: ignore[union-attr]
        for svc in self.services.values():
            svc.stop()

    def __enter__(self) -> LocalTopology:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def local_system(run_dir: Path, **kwargs: Any) -> Iterator[LocalTopology]:
    """Start a local topology built by `build_system(**kwargs)`; always stop it."""
    topo = LocalTopology(build_system(**kwargs), run_dir)
    with topo:
        yield topo
