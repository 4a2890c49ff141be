"""The external testbed: a system under test the harness did not start (a target file, harness/target.py).

The harness starts only Toxiproxy (reset at start) and creates one proxy per link at the addresses
the target file gives (`links.<name>.listen` -> `upstream`); the user's services must be configured to
dial those listeners (`harness target-links TARGET` prints which address each must use). Process
faults act through `processes.<service>` of the target file (a pid file and a start command), or,
for the services of `compose.services`, on their containers of the user's compose project through
the Docker SDK (harness/testbed/compose.py); a scenario asking for one the target cannot take is
refused when it is loaded (harness/scenario.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from harness.errors import TestbedError
from harness.links import Link
from harness.nemesis import Nemesis
from harness.rundir import RunDir
from harness.target import Target
from harness.testbed.proxies import ToxiproxyError, ToxiproxyServer

if TYPE_CHECKING:
    from harness.testbed.compose import ComposeServices


def _zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still takes signal 0: it is dead all the same."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc (or gone): signal 0 said enough
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def link_plan(target: Target) -> list[str]:
    """One line per link: what dials the listener, and what the user must configure for it."""
    lines = []
    for name, addr in target.links.items():
        caller, _, callee = name.partition("->")
        who = "the harness's load (customers)" if caller == "customers" else f"configure {caller} to dial"
        lines.append(f"{name:<22} {who} {addr.listen}  (Toxiproxy -> {callee} at {addr.upstream})")
    return lines


class ExternalServices:
    """Process control of a target's services, through `processes:` of its target file, or through
    the containers of `compose:` (the Docker SDK is loaded only for a target that has one)."""

    def __init__(self, target: Target, run_dir: Path, health_timeout_s: float = 30.0) -> None:
        self.target = target
        self.run_dir = run_dir
        self.health_timeout_s = health_timeout_s
        self.urls = {"switch": target.switch.url, **{p.code: p.url for p in target.participants}}
        self.compose: ComposeServices | None = None
        if target.compose is not None:
            from harness.testbed.compose import ComposeServices

            self.compose = ComposeServices(target.compose)

    def _container(self, name: str) -> ComposeServices | None:
        return self.compose if self.compose is not None and name in self.compose else None

    @property
    def service_names(self) -> list[str]:
        return self.target.services

    @property
    def bank_codes(self) -> list[str]:
        return self.target.codes

    def _pid(self, name: str) -> int:
        control = self.target.processes.get(name)
        if control is None or control.pid_file is None:
            raise TestbedError(f"{name}: the target file gives no processes.{name}.pid_file", fix="add it")
        try:
            return int(Path(control.pid_file).read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise TestbedError(f"{name}: cannot read a pid from {control.pid_file}: {exc}") from None

    def _alive(self, name: str) -> bool:
        try:
            pid = self._pid(name)
            os.kill(pid, 0)
        except (ProcessLookupError, TestbedError):
            return False
        except PermissionError:
            return True
        return not _zombie(pid)

    def kill(self, name: str) -> None:
        if compose := self._container(name):
            compose.kill(name)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid(name), signal.SIGKILL)

    def signal(self, name: str, sig: signal.Signals) -> None:
        if compose := self._container(name):
            compose.signal(name, sig)
            return
        os.kill(self._pid(name), sig)

    def stop_service(self, name: str, grace_s: float = 5.0) -> None:
        if compose := self._container(name):
            compose.stop_service(name)
            return
        pid = self._pid(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while self._alive(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def start_service(self, name: str) -> None:
        if compose := self._container(name):
            compose.start(name)
        elif not self._alive(name):
            control = self.target.processes.get(name)
            if control is None or control.start_command is None:
                raise TestbedError(f"{name}: the target file gives no processes.{name}.start_command", fix="add it")
            log = RunDir(self.run_dir).log(f"start-{name}")
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                subprocess.Popen(
                    ["sh", "-c", control.start_command], stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
        self.wait_answering(name)

    def restart(self, name: str) -> None:
        if compose := self._container(name):
            compose.restart(name)
            self.wait_answering(name)
            return
        self.stop_service(name)
        self.start_service(name)

    def wait_answering(self, name: str) -> None:
        """Until the service answers HTTP at all (its /health is optional in the contract)."""
        deadline = time.monotonic() + self.health_timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.urls[name] + "/health", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answered
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise TestbedError(f"{name} does not answer at {self.urls[name]} after {self.health_timeout_s:.0f} s")


class ExternalTestbed:
    """Toxiproxy and the target's links around a system someone else started. Same face as Testbed."""

    __test__ = False
    guarded = False  # no process of ours to guard but Toxiproxy, which dies with its parent

    def __init__(self, target: Target, run_dir: Path) -> None:
        self.target = target
        self.run_dir = run_dir
        self.toxiproxy = ToxiproxyServer(RunDir(run_dir).log("toxiproxy"))
        self.links: dict[str, Link] = {
            name: Link(name, addr.listen, addr.upstream) for name, addr in target.links.items()
        }
        self.topology = ExternalServices(target, run_dir)
        self.nemesis = Nemesis(
            self.toxiproxy, self.links, self.topology, RunDir(run_dir).faults, RunDir(run_dir).proxy_counters
        )

    def start(self) -> None:
        try:
            if self.topology.compose is not None:  # each compose service is one container of the project
                self.topology.compose.find()
            self.toxiproxy.start()  # a fresh server, reset: no proxy, no toxic
            for link in self.links.values():
                try:
                    self.toxiproxy.create(link)
                except ToxiproxyError as exc:
                    raise TestbedError(
                        f"link {link.name}: Toxiproxy cannot listen on {link.listen}: {exc}",
                        fix=f"choose a free address for links.{link.name}.listen in the target file",
                    ) from None
            for name in self.topology.service_names:  # the system is up, through its own addresses
                self.topology.wait_answering(name)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            if self.nemesis.active:
                self.nemesis.heal_all()
        finally:
            self.nemesis.close()
            self.toxiproxy.stop()

    @property
    def customer_urls(self) -> dict[str, str]:
        return {code: f"http://{self.links[f'customers->{code}'].listen}" for code in self.target.codes}

    @property
    def direct_urls(self) -> dict[str, str]:
        """The services' own addresses (the read API), bypassing Toxiproxy."""
        return {**{p.code: p.url for p in self.target.participants}, "switch": self.target.switch.url}

    def versions(self) -> dict[str, str]:
        found = {"backend": "external", "target": self.target.name, "toxiproxy": self.toxiproxy.version()}
        if self.topology.compose is not None:
            found.update(self.topology.compose.versions())
        return found

    def __enter__(self) -> ExternalTestbed:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
