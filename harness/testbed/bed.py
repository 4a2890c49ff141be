"""A testbed: Toxiproxy, the links, and the mock payment system, started and stopped together.

Start order: Toxiproxy (reset), one proxy per link, then the services configured to dial each
other through those proxies. Stop order is the reverse, and always happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from harness.links import Link
from harness.nemesis import Nemesis
from harness.procs import OWNER_ENV, owner_token
from harness.rundir import RunDir
from harness.testbed import powerloss
from harness.testbed.local import LocalTopology, TopologyError
from harness.testbed.proxies import ToxiproxyError, ToxiproxyServer
from harness.testbed.system import route_through, with_fresh_ports
from mock_switch.config import SystemConfig

BIND_ATTEMPTS = 3  # ports chosen free can be taken before they are bound: choose again this often


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    # Local processes need the guardian; containers are found by their labels instead.
    guarded = True

    def __init__(self, system: SystemConfig, run_dir: Path, power_loss: list[str] | None = None) -> None:
        """`power_loss`: services to start under the power-loss layer (they can take a power_loss fault)."""
        self.run_dir = run_dir
        self.power_loss = list(power_loss or [])
        self._guardian: subprocess.Popen[bytes] | None = None
        self._unrouted = system
        self.toxiproxy = ToxiproxyServer(RunDir(run_dir).log("toxiproxy"))
        self.system, self.links = route_through(system)
        self.topology = LocalTopology(self.system, run_dir, self.power_loss)
        self.nemesis = Nemesis(
            self.toxiproxy, self.links, self.topology, RunDir(run_dir).faults, RunDir(run_dir).proxy_counters
        )

    def start(self) -> None:
        try:
            if self.power_loss:
                powerloss.library()  # refused before anything starts when it cannot be built here
            self._start_guardian()
            self.prepare()
            self.toxiproxy.start()
            for attempt in range(1, BIND_ATTEMPTS + 1):
                self._create_links()
                try:
                    self.topology.start()
                    return
                except TopologyError:
                    # A service's port, chosen free, was taken before the service bound it: choose
                    # again (the services are stopped; nothing has been recorded yet).
                    if attempt == BIND_ATTEMPTS or not self._port_was_taken() or not self._reroute(fresh_ports=True):
                        raise
        except BaseException:
            self.stop()
            raise

    def _port_was_taken(self) -> bool:
        logs = [svc.log_path for svc in self.topology.services.values() if svc.log_path.exists()]
        return any("address already in use" in log.read_text(errors="replace") for log in logs)

    def _create_links(self) -> None:
        """One proxy per link. A listen port is chosen free but bound only here, so another process
        can take it in between: then choose the links' ports again (nothing dials them yet)."""
        for proxy in list(self.toxiproxy.proxies()):  # a retried start begins from no proxy
            self.toxiproxy.delete_named(proxy)
        for attempt in range(1, BIND_ATTEMPTS + 1):
            created: list[Link] = []
            try:
                for link in self.links.values():
                    self.toxiproxy.create(link)
                    created.append(link)
                return
            except ToxiproxyError as exc:
                if "address already in use" not in str(exc) or attempt == BIND_ATTEMPTS or not self._reroute():
                    raise
                for link in created:
                    self.toxiproxy.delete(link)

    def _reroute(self, fresh_ports: bool = False) -> bool:
        """Fresh listen ports for every link, and with `fresh_ports` for every service (nothing runs
        yet); False where that is impossible."""
        if fresh_ports:
            self._unrouted = with_fresh_ports(self._unrouted)
        self.system, links = route_through(self._unrouted)
        self.links.clear()
        self.links.update(links)  # the nemesis holds this dict
        self.topology = LocalTopology(self.system, self.run_dir, self.power_loss)
        self.nemesis.services = self.topology
        return True

    def prepare(self) -> None:
        """What a backend needs before Toxiproxy and the services start (nothing, for processes)."""

    def stop(self) -> None:
        try:
            if self.nemesis.active:
                self.nemesis.heal_all()
        finally:
            self.nemesis.close()
            self.topology.stop()
            self.toxiproxy.stop()
            self._stop_guardian()

    def _start_guardian(self) -> None:
        """harness/testbed/guardian.py: resumes and ends this testbed's processes if the harness dies."""
        if not self.guarded or self._guardian is not None:
            return
        log = RunDir(self.run_dir).log("guardian")
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:  # the child keeps its own descriptor
            self._guardian = subprocess.Popen(
                [sys.executable, "-m", "harness.testbed.guardian", owner_token()],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C to the harness's group must not take it first
                env={k: v for k, v in os.environ.items() if k != OWNER_ENV},  # it must not reap itself
            )  # fmt: skip

    def _stop_guardian(self) -> None:
        if self._guardian is not None:
            self._guardian.terminate()
            self._guardian.wait(10)
            self._guardian = None

    @property
    def customer_urls(self) -> dict[str, str]:
        """Where customers reach each bank: through the `customers->BANK` link."""
        return {code: f"http://{self.links[f'customers->{code}'].listen}" for code in self.topology.bank_codes}

    def versions(self) -> dict[str, str]:
        """What environment.json records about the testbed."""
        return {"backend": "local", "toxiproxy": self.toxiproxy.version()}

    @property
    def direct_urls(self) -> dict[str, str]:
        """The services' own addresses, bypassing Toxiproxy (for ledger snapshots)."""
        urls = {code: self.topology.bank(code).url for code in self.topology.bank_codes}
        urls["switch"] = self.topology.switch.url
        return urls

    def __enter__(self) -> Testbed:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
