"""Local-process topology: the switch and N banks as subprocesses on loopback.

Each service gets its own data directory and log file inside the run directory. Services are
given the harness's pid and exit when it disappears, so no orphan survives even a kill -9 of the
harness; `stop()` sends SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mock_switch.config import BankConfig, Resilience, SwitchConfig, SystemConfig

if TYPE_CHECKING:
    from harness.testbed.proxies import Link


def parent_death_preexec() -> None:
    """Runs in the child before exec: have the kernel SIGTERM it when the harness dies.

    Caution: the signal fires when the *thread* that started the child exits, so only use it for
    processes started from a thread that lives as long as the harness (the main thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG survives exec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_system(
    banks: int = 4,
    resilience: Resilience = "robust",
    switch_resilience: Resilience | None = None,
    payee_timeout_s: float = 2.0,
    **overrides: Any,
) -> SystemConfig:
    """A system on free loopback ports with every link direct (no proxy yet).

    System-wide settings (durability, status_query, currency) and any BankConfig field
    (accounts=200, credit_delay_ms=..., switch_timeout_s=...) can be overridden."""
    if not 1 <= banks <= 26:
        raise ValueError("banks must be between 1 and 26")
    codes = [f"BNK{chr(ord('A') + i)}" for i in range(banks)]
    system_kw = {k: overrides.pop(k) for k in ("durability", "status_query", "currency") if k in overrides}
    switch_port = free_port()
    bank_ports = {code: free_port() for code in codes}
    return SystemConfig(
        switch=SwitchConfig(
            listen=f"127.0.0.1:{switch_port}",
            bank_urls={code: f"http://127.0.0.1:{port}" for code, port in bank_ports.items()},
            resilience=switch_resilience or resilience,
            payee_timeout_s=payee_timeout_s,
        ),
        banks=[
            BankConfig(
                code=code,
                listen=f"127.0.0.1:{bank_ports[code]}",
                switch_url=f"http://127.0.0.1:{switch_port}",
                resilience=resilience,
                **overrides,
            )
            for code in codes
        ],
        **system_kw,
    )


class TopologyError(Exception):
    pass


def link_names(system: SystemConfig) -> list[str]:
    """Every link of the topology, in a stable order."""
    names = []
    for bank in system.banks:
        names += [f"customers->{bank.code}", f"{bank.code}->switch", f"switch->{bank.code}"]
    return names


def route_through(system: SystemConfig, host: str = "127.0.0.1") -> tuple[SystemConfig, dict[str, Link]]:
    """Give every link its own proxy listener and point each caller at it.

    Returns the system to start (banks dial the switch, and the switch dials each bank, through
    their link's listener) and the links to create on the Toxiproxy server."""
    from harness.testbed.proxies import Link

    switch_listen = system.switch.listen
    links: dict[str, Link] = {}
    for bank in system.banks:
        links[f"customers->{bank.code}"] = Link(f"customers->{bank.code}", f"{host}:{free_port(host)}", bank.listen)
        links[f"{bank.code}->switch"] = Link(f"{bank.code}->switch", f"{host}:{free_port(host)}", switch_listen)
        links[f"switch->{bank.code}"] = Link(f"switch->{bank.code}", f"{host}:{free_port(host)}", bank.listen)
    routed = system.model_copy(
        update={
            "switch": system.switch.model_copy(
                update={"bank_urls": {b.code: f"http://{links[f'switch->{b.code}'].listen}" for b in system.banks}}
            ),
            "banks": [
                b.model_copy(update={"switch_url": f"http://{links[f'{b.code}->switch'].listen}"}) for b in system.banks
            ],
        }
    )
    return routed, links


@dataclass
class ServiceProcess:
    name: str  # "switch" or a bank code
    argv: list[str]
    listen: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
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
        self.proc = subprocess.Popen(
            [*self.argv, "--parent-pid", str(os.getpid())],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our own process group: signals go to the service only
        )
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise TopologyError(
                    f"{self.name} exited with code {self.proc.returncode} during start-up; see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                    if resp.status == 200:
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

    def __init__(self, system: SystemConfig, run_dir: Path) -> None:
        self.system = system
        self.run_dir = run_dir
        self.config_path = run_dir / "system.json"
        py = [sys.executable, "-m", "mock_switch"]
        common = ["--config", str(self.config_path)]
        self.services: dict[str, ServiceProcess] = {
            "switch": ServiceProcess(
                "switch",
                [*py, "switch", *common, "--data-dir", str(run_dir / "data" / "switch")],
                system.switch.listen,
                run_dir / "logs" / "switch.log",
            )
        }
        for bank in system.banks:
            self.services[bank.code] = ServiceProcess(
                bank.code,
                [*py, "bank", bank.code, *common, "--data-dir", str(run_dir / "data" / bank.code)],
                bank.listen,
                run_dir / "logs" / f"{bank.code}.log",
            )

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
