"""A testbed: Toxiproxy, the links, and the mock payment system, started and stopped together.

Start order: Toxiproxy (reset), one proxy per link, then the services configured to dial each
other through those proxies. Stop order is the reverse, and always happens.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from harness.nemesis import Nemesis
from harness.testbed.local import LocalTopology, route_through
from harness.testbed.proxies import ToxiproxyServer
from mock_switch.config import SystemConfig


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, system: SystemConfig, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.toxiproxy = ToxiproxyServer(run_dir / "logs" / "toxiproxy.log")
        self.system, self.links = route_through(system)
        self.topology = LocalTopology(self.system, run_dir)
        self.nemesis = Nemesis(self.toxiproxy, self.links, self.topology, run_dir / "faults.jsonl")

    def start(self) -> None:
        try:
            self.prepare()
            self.toxiproxy.start()
            for link in self.links.values():
                self.toxiproxy.create(link)
            self.topology.start()
        except BaseException:
            self.stop()
            raise

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


def make_testbed(system: SystemConfig, run_dir: Path, backend: str = "local") -> Testbed:
    """The testbed of a backend: local processes, or containers (harness/testbed/containers.py)."""
    if backend == "docker":
        from harness.testbed.containers import DockerTestbed

        return DockerTestbed(system, run_dir)
    if backend != "local":
        raise ValueError(f"unknown backend {backend!r}; backends are local and docker")
    return Testbed(system, run_dir)
