"""Docker backend: the switch, each bank and Toxiproxy as containers on a network of the run's own.

A run's containers live on a bridge network `payswitch-<run id>`:

- `toxiproxy` (its network alias) listens on one port per link (10000 and up, in link order); the
  switch (`switch`) and each bank (its code in lower case, `bnka`) listen on 8080, and their peer URLs
  point at their link's listener on `toxiproxy`, so every call between services crosses Toxiproxy,
  exactly as on the local backend;
- the containers and the network carry the label `payswitch-chaos.run=<run id>` (and the harness's
  pid): the run removes everything with its label when it ends, fails or is interrupted, and
  `harness down --all` removes whatever a killed harness left behind.

The load generator stays on the harness's side and reaches the system through published ports:
Locust and its locustfile are identical on both backends (no Locust image, no second way to run it),
and its history files are written straight into the run directory. The harness reaches Toxiproxy's
API and each service's own port (ledger snapshots bypass Toxiproxy) the same way. Which engine, and
the address its published ports are dialled at, come from harness/testbed/engine.py: with the local
socket, ports are published on 127.0.0.1 only and nothing of the system under test is exposed beyond
this machine; with a remote engine (DOCKER_HOST tcp:// or ssh://, or a Docker context) they are
published on the engine's host and dialled there. Host ports are chosen by the harness rather than
by Docker, so a container that is killed and started again keeps its address (free on this machine;
on a remote engine a port already taken there fails the start with Docker's "port is already
allocated").

Service faults act on containers (see harness/nemesis/injector.py): `crash` is `docker kill` (SIGKILL) then
`start`, `pause` is the cgroup freezer (`docker pause`/`unpause`), `stop` is a graceful stop
(SIGTERM, then SIGKILL after 5 s) then `start`, `restart` is `docker restart`, and `disconnect`
detaches the container from the run's network (and reattaches it with its alias when healed).

Ledgers are bind-mounted from the run directory (run_dir/data/<service>), and the containers run
as the host user, so the evidence stays on the host and belongs to whoever ran the harness. A remote
engine cannot see the run directory: there the configuration is copied into each container before it
starts, the ledgers live in the container's own filesystem (which survives kill, stop and restart),
and they are copied back into run_dir/data/<service> when the run ends, each container stopped first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import secrets
import signal
import socket
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from harness.links import Link, endpoints, link_names
from harness.nemesis import Nemesis
from harness.procs import free_port
from harness.rundir import RunDir
from harness.testbed.bed import Testbed
from harness.testbed.engine import DEFAULT_SOCKET, Engine, connect, resolve
from harness.testbed.engine import DockerUnavailable as DockerUnavailable
from harness.testbed.images import TOXIPROXY_REPO
from harness.testbed.local import TopologyError
from harness.testbed.proxies import SERVER_FLAGS, TOXIPROXY_VERSION, ToxiproxyError, ToxiproxyServer, server_env
from mock_switch.config import SystemConfig

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.networks import Network

    from harness.testbed.images import Images

RUN_LABEL = "payswitch-chaos.run"
PID_LABEL = "payswitch-chaos.pid"
HOST_LABEL = "payswitch-chaos.host"  # the machine the harness runs on (a remote engine may serve several)
SERVICE_LABEL = "payswitch-chaos.service"
SERVICE_PORT = 8080
TOXIPROXY_API_PORT = 8474
FIRST_LINK_PORT = 10000
TOXIPROXY_ALIAS = "toxiproxy"
STOP_GRACE_S = 5
# Every container's resolver retries an unanswered DNS query after 1 s instead of 5 s (resolv.conf
# `options timeout:1`; Go and glibc both read it). While a container is detached (the disconnect
# fault), Docker's embedded DNS leaves about one lookup of its alias in 35 unanswered: Go's net.Dial
# of the missing name then takes 5.005 s. Toxiproxy dials each upstream inside its proxy's one
# accept loop, so every such stall held all new connections to that proxy for 5 s, into the time
# after the heal: callers timed out in the queue, retried on new connections, and the proxy then
# dialled the abandoned ones first (docker-bank-disconnected failed 4 runs in 7, recovery took 6-8 s
# in the others). With 1 s the queue stays shorter than the callers' timeouts.
DNS_OPTIONS = ["timeout:1"]


def docker_client(timeout_s: int = 120, engine: Engine | None = None) -> DockerClient:
    """A client of the engine the environment names (harness/testbed/engine.py), checked with a ping."""
    return connect(engine or resolve(), timeout_s)


@functools.cache
def engine_problem() -> str | None:
    """Why docker runs cannot happen here, or None when an engine answers (asked once per process)."""
    try:
        docker_client(timeout_s=10).close()
    except DockerUnavailable as exc:
        return str(exc)
    return None


def engine_version(client: DockerClient) -> str:
    return str(client.version().get("Version", "unknown"))


def alias(service: str) -> str:
    """A service's name on the run's network: `switch`, or the bank code in lower case (DNS style)."""
    return service.lower()


def route_through_toxiproxy(system: SystemConfig) -> tuple[SystemConfig, dict[str, Link]]:
    """The docker twin of system.route_through: every service listens on 8080 in its container,
    every link is a listener of the Toxiproxy container, and each caller dials its link there."""
    links = {
        name: Link(name, f"0.0.0.0:{FIRST_LINK_PORT + i}", f"{alias(endpoints(name)[1])}:{SERVICE_PORT}")
        for i, name in enumerate(link_names(b.code for b in system.banks))
    }

    def via(name: str) -> str:
        return f"http://{TOXIPROXY_ALIAS}:{links[name].listen.rsplit(':', 1)[1]}"

    listen = f"0.0.0.0:{SERVICE_PORT}"
    routed = system.model_copy(
        update={
            "switch": system.switch.model_copy(
                update={"listen": listen, "bank_urls": {b.code: via(f"switch->{b.code}") for b in system.banks}}
            ),
            "banks": [
                b.model_copy(update={"listen": listen, "switch_url": via(f"{b.code}->switch")}) for b in system.banks
            ],
        }
    )
    return routed, links


def link_port(link: Link) -> int:
    return int(link.listen.rsplit(":", 1)[1])


# -- cleanup by label --------------------------------------------------------------------------------


def _owner_alive(labels: dict[str, str]) -> bool:
    """Is the harness that made this still running here? (A live run's containers are not leftovers.)
    One from another machine (a shared remote engine) is not ours to judge: kept."""
    if labels.get(HOST_LABEL, socket.gethostname()) != socket.gethostname():
        return True
    try:
        pid = int(labels.get(PID_LABEL, ""))
        if pid <= 0:  # kill(0) would signal our own process group
            return False
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_labelled(client: DockerClient, run_id: str | None = None) -> tuple[int, int]:
    """Remove the containers, then the networks, of one run; or (run_id None: `harness down --all`)
    the leftovers of every run whose harness is gone. Returns (containers, networks) removed."""
    from docker.errors import APIError, NotFound

    label = RUN_LABEL if run_id is None else f"{RUN_LABEL}={run_id}"
    containers = networks = 0
    for container in client.containers.list(all=True, filters={"label": label}):
        if run_id is None and _owner_alive(container.labels):
            continue
        with contextlib.suppress(NotFound):
            if container.status == "paused":  # older engines refuse to kill a frozen container
                with contextlib.suppress(APIError):
                    container.unpause()
            container.remove(force=True, v=True)
            containers += 1
    for network in client.networks.list(filters={"label": label}):
        if run_id is None and _owner_alive(network.attrs.get("Labels") or {}):
            continue
        with contextlib.suppress(NotFound):
            network.remove()
            networks += 1
    return containers, networks


# -- containers ----------------------------------------------------------------------------------------


def _save_logs(container: Container | None, path: Path) -> None:
    """The container's output into the run directory, before the container is removed."""
    if container is None:
        return
    from docker.errors import APIError

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(APIError):
        path.write_bytes(container.logs(stdout=True, stderr=True))


def _wait_http(url: str, timeout_s: float, alive: Callable[[], str | None]) -> None:
    """Until `url` answers 200; `alive()` returns why waiting is pointless (container exited), else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        problem = alive()
        if problem:
            raise TopologyError(problem)
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise TopologyError(f"{url} did not answer within {timeout_s:.0f}s")


def _config_archive(config: bytes) -> bytes:
    """A tar for put_archive at /: /config/system.json and an empty /data anyone may write (the
    engine creates what it extracts as root; the service runs as the harness's user)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("config", "data"):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o777 if name == "data" else 0o755, int(time.time())
            tar.addfile(info)
        info = tarfile.TarInfo("config/system.json")
        info.size, info.mode, info.mtime = len(config), 0o444, int(time.time())
        tar.addfile(info, io.BytesIO(config))
    return buf.getvalue()


def _copy_data_out(container: Container | None, dest: Path) -> None:
    """The ledgers in the container's /data into the run directory (remote engines: no bind mount).
    Only regular files directly under data/ are written: nothing from the archive escapes `dest`."""
    if container is None:
        return
    from docker.errors import APIError, NotFound

    try:
        stream, _ = container.get_archive("/data")
        raw = b"".join(stream)
    except (APIError, NotFound):
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 2 or parts[0] != "data" or parts[1] in ("", ".", ".."):
                continue
            source = tar.extractfile(member)
            if source is not None:
                (dest / parts[1]).write_bytes(source.read())


@dataclass
class ContainerService:
    """One service of the system under test, as a container."""

    name: str  # "switch" or a bank code
    command: list[str]
    host_port: int  # <engine's host>:<host_port> is published to the container's 8080
    log_path: Path
    data_dir: Path
    container: Container | None = None
    starts: int = 0
    address: str = "127.0.0.1"  # where the engine publishes ports (Engine.address)

    @property
    def url(self) -> str:
        """The service's own address from the harness (bypasses Toxiproxy)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.host_port}"

    def status(self) -> str:
        if self.container is None:
            return "absent"
        self.container.reload()
        return str(self.container.status)

    def _exited(self) -> str | None:
        if self.status() in ("exited", "dead"):
            assert self.container is not None
            tail = self.container.logs(tail=20).decode(errors="replace").strip()
            return f"{self.name} container exited during start-up:\n{tail}"
        return None

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        _wait_http(self.url + "/health", timeout_s, self._exited)


@dataclass
class DockerTopology:
    """The mock payment system as containers; implements what the nemesis needs to break services."""

    system: SystemConfig
    run_dir: Path
    client: DockerClient
    network_name: str
    labels: dict[str, str]
    image: str = ""  # set by the testbed once the images are resolved
    services: dict[str, ContainerService] = field(default_factory=dict)
    engine: Engine = field(default_factory=lambda: Engine(DEFAULT_SOCKET, "default socket"))

    def __post_init__(self) -> None:
        rundir = RunDir(self.run_dir)
        self.config_path = rundir.system
        common = ["--config", "/config/system.json", "--data-dir", "/data"]
        self.services["switch"] = ContainerService(
            "switch", ["switch", *common], free_port(), rundir.log("switch"),
            rundir.data / "switch",
        )  # fmt: skip
        for bank in self.system.banks:
            self.services[bank.code] = ContainerService(
                bank.code, ["bank", bank.code, *common], free_port(), rundir.log(bank.code),
                rundir.data / bank.code,
            )  # fmt: skip
        for svc in self.services.values():
            svc.address = self.engine.address

    @property
    def switch(self) -> ContainerService:
        return self.services["switch"]

    def bank(self, code: str) -> ContainerService:
        return self.services[code]

    @property
    def bank_codes(self) -> list[str]:
        return [b.code for b in self.system.banks]

    @property
    def service_names(self) -> list[str]:
        return list(self.services)

    def container(self, name: str) -> Container:
        svc = self.services[name]
        if svc.container is None:
            raise TopologyError(f"{name} has no container (the topology is not started)")
        return svc.container

    def _endpoint(self, name: str) -> Any:
        return self.client.api.create_endpoint_config(aliases=[alias(name)])

    def network(self) -> Network:
        return self.client.networks.get(self.network_name)

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.system.save(self.config_path)
        shared = self.engine.shares_files
        for svc in self.services.values():
            svc.data_dir.mkdir(parents=True, exist_ok=True)
            # An engine on this machine bind-mounts the run directory; a remote one cannot see it, so
            # the configuration is copied in and the ledgers live in the container (kept across kill,
            # start and restart) until stop() copies them back.
            volumes = {
                str(self.config_path.resolve()): {"bind": "/config/system.json", "mode": "ro"},
                str(svc.data_dir.resolve()): {"bind": "/data", "mode": "rw"},
            }
            svc.container = self.client.containers.create(
                self.image,
                svc.command,
                name=f"{self.network_name}-{alias(svc.name)}",
                labels={**self.labels, SERVICE_LABEL: svc.name},
                network=self.network_name,
                networking_config={self.network_name: self._endpoint(svc.name)},
                dns_opt=DNS_OPTIONS,
                ports={f"{SERVICE_PORT}/tcp": (self.engine.publish_ip, svc.host_port)},
                volumes=volumes if shared else None,
                user=f"{os.getuid()}:{os.getgid()}",  # ledgers on the host belong to whoever ran the harness
                stop_signal="SIGTERM",
            )
            if not shared:
                svc.container.put_archive("/", _config_archive(self.config_path.read_bytes()))
        for svc in self.services.values():
            self.container(svc.name).start()
            svc.starts += 1
        for svc in self.services.values():
            svc.wait_healthy()

    def stop(self) -> None:
        """Save every container's log, then remove the containers (the testbed removes the network)."""
        from docker.errors import APIError, NotFound

        for svc in self.services.values():
            if not self.engine.shares_files and svc.container is not None:
                # Stopped first, so the ledger files are copied at rest (SQLite's file and its WAL agree).
                with contextlib.suppress(NotFound, APIError):
                    if svc.status() == "paused":
                        svc.container.unpause()
                    svc.container.stop(timeout=STOP_GRACE_S)
                _copy_data_out(svc.container, svc.data_dir)
            _save_logs(svc.container, svc.log_path)
            if svc.container is not None:
                with contextlib.suppress(NotFound, APIError):
                    if svc.status() == "paused":
                        svc.container.unpause()
                    svc.container.remove(force=True, v=True)
                svc.container = None

    # -- what the nemesis calls (harness.nemesis.ServiceControl / NetworkControl) ---------------

    def kill(self, name: str) -> None:
        """`docker kill`: SIGKILL, as a crash would; the container stays (exited) until started again."""
        self.container(name).kill()
        self._wait_status(name, ("exited", "dead"))

    def restart(self, name: str) -> None:
        """Start a stopped or killed container, or `docker restart` a running one; then wait until healthy."""
        svc = self.services[name]
        if svc.status() == "running":
            self.container(name).restart(timeout=STOP_GRACE_S)
        else:
            self.container(name).start()
        svc.starts += 1
        svc.wait_healthy()

    def signal(self, name: str, sig: signal.Signals) -> None:
        """SIGSTOP/SIGCONT become the cgroup freezer (docker pause/unpause); other signals are sent as they are."""
        if sig == signal.SIGSTOP:
            self.container(name).pause()
        elif sig == signal.SIGCONT:
            if self.services[name].status() == "paused":
                self.container(name).unpause()
        else:
            self.container(name).kill(signal=int(sig))

    def stop_service(self, name: str) -> None:
        """`docker stop`: SIGTERM, then SIGKILL after the grace period."""
        self.container(name).stop(timeout=STOP_GRACE_S)

    def start_service(self, name: str) -> None:
        """Start it if it is not running (a no-op for a running one), then wait until healthy."""
        svc = self.services[name]
        if svc.status() != "running":
            self.container(name).start()
            svc.starts += 1
        svc.wait_healthy()

    def disconnect(self, name: str) -> None:
        """Detach the container from the run's network: nothing reaches it, it reaches nothing."""
        self.network().disconnect(self.container(name), force=True)

    def connect(self, name: str) -> None:
        """Reattach it under its alias, so Toxiproxy's upstream name resolves to it again."""
        self.network().connect(self.container(name), aliases=[alias(name)])

    def _wait_status(self, name: str, statuses: tuple[str, ...], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.services[name].status() not in statuses:
            if time.monotonic() > deadline:
                raise TopologyError(f"{name} did not reach {'/'.join(statuses)} within {timeout_s:.0f}s")
            time.sleep(0.05)


class ToxiproxyContainer(ToxiproxyServer):
    """Toxiproxy in a container on the run's network; its API and the customers' listeners published
    on 127.0.0.1. Everything else (toxics, links, reset) is the ToxiproxyServer client, unchanged."""

    def __init__(
        self,
        client: DockerClient,
        network_name: str,
        labels: dict[str, str],
        log_path: Path,
        published: list[int],
        engine: Engine | None = None,
    ) -> None:
        self.engine = engine or Engine(DEFAULT_SOCKET, "default socket")
        # The API is dialled where the engine publishes it (self.host is what ToxiproxyServer.url uses).
        super().__init__(log_path, binary=Path("/toxiproxy"), host=self.engine.address)
        self.client = client
        self.network_name = network_name
        self.labels = labels
        self.image = ""  # set by the testbed once the images are resolved
        self.container: Container | None = None
        # Container port -> host port, for the links whose callers are on the host (customers).
        self.published = {port: free_port() for port in published}

    def host_port(self, link: Link) -> int:
        return self.published[link_port(link)]

    def start(self, timeout_s: float = 30.0) -> None:
        self.port = free_port()
        bind = self.engine.publish_ip
        ports: dict[str, tuple[str, int]] = {f"{TOXIPROXY_API_PORT}/tcp": (bind, self.port)}
        ports.update({f"{p}/tcp": (bind, hp) for p, hp in self.published.items()})
        self.container = self.client.containers.create(
            self.image,
            ["-host=0.0.0.0", f"-port={TOXIPROXY_API_PORT}", *SERVER_FLAGS],
            environment=server_env(),
            name=f"{self.network_name}-{TOXIPROXY_ALIAS}",
            labels={**self.labels, SERVICE_LABEL: TOXIPROXY_ALIAS},
            network=self.network_name,
            networking_config={self.network_name: self.client.api.create_endpoint_config(aliases=[TOXIPROXY_ALIAS])},
            dns_opt=DNS_OPTIONS,
            ports=ports,
        )
        self.container.start()

        def exited() -> str | None:
            assert self.container is not None
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                return f"the Toxiproxy container exited: {self.container.logs(tail=20).decode(errors='replace')}"
            return None

        try:
            _wait_http(self.url + "/version", timeout_s, exited)
        except TopologyError as exc:
            raise ToxiproxyError(str(exc)) from None
        self.reset()

    def version(self) -> str:
        version = super().version()
        # Our image holds the binary `make tools` built (pinned, but it reports "git"): say which release.
        if version == "git" and self.image.startswith(TOXIPROXY_REPO + ":"):
            return f"{TOXIPROXY_VERSION} (built from source by make tools)"
        return version

    def stop(self) -> None:
        from docker.errors import APIError, NotFound

        _save_logs(self.container, self.log_path)
        if self.container is not None:
            with contextlib.suppress(NotFound, APIError):
                self.container.remove(force=True, v=True)
            self.container = None


class DockerTestbed(Testbed):
    """Toxiproxy, the links and the mock payment system as containers; same interface as Testbed."""

    guarded = False  # containers carry the run's label: `harness down --all` finds them

    def __init__(
        self, system: SystemConfig, run_dir: Path, client: DockerClient | None = None, engine: Engine | None = None
    ) -> None:
        # Not Testbed.__init__: it would prepare local processes.
        self.power_loss: list[str] = []  # containers have no power-loss layer (make_testbed refuses one)
        self.run_dir = run_dir
        self._guardian = None
        # The engine is resolved once (harness/testbed/engine.py); every published port is dialled at its address.
        self.engine = engine or resolve()
        self.client = client or docker_client(engine=self.engine)
        self.run_id = f"{run_dir.name[:40]}-{secrets.token_hex(3)}".lower()
        self.network_name = f"payswitch-{self.run_id}"
        self.labels = {RUN_LABEL: self.run_id, PID_LABEL: str(os.getpid()), HOST_LABEL: socket.gethostname()}
        self.system, self.links = route_through_toxiproxy(system)
        customer_ports = [link_port(link) for name, link in self.links.items() if name.startswith("customers->")]
        self.toxiproxy: ToxiproxyContainer = ToxiproxyContainer(
            self.client, self.network_name, self.labels, RunDir(run_dir).log("toxiproxy"), customer_ports, self.engine
        )
        self.topology: DockerTopology = DockerTopology(  # type: ignore[assignment]
            self.system, run_dir, self.client, self.network_name, self.labels, engine=self.engine
        )
        self.nemesis = Nemesis(
            self.toxiproxy, self.links, self.topology, RunDir(run_dir).faults, RunDir(run_dir).proxy_counters
        )
        self.images: Images | None = None
        self._previous_sigterm: Any = None

    def start(self) -> None:
        self._sigterm_cleans_up()
        super().start()

    def _reroute(self, fresh_ports: bool = False) -> bool:
        return False  # ports live inside the run's containers: no other process can hold them

    def prepare(self) -> None:
        """Images (built only when their inputs changed) and the run's own network."""
        from harness.testbed import images

        self.images = images.ensure(self.client)
        self.toxiproxy.image, self.topology.image = self.images.toxiproxy, self.images.app
        self.client.networks.create(self.network_name, driver="bridge", labels=self.labels)

    def stop(self) -> None:
        try:
            super().stop()  # heals every fault, saves logs, removes the containers
        finally:
            # The backstop: whatever carries this run's label goes, even what a failed start left.
            try:
                remove_labelled(self.client, self.run_id)
            finally:
                self._restore_sigterm()

    def __enter__(self) -> DockerTestbed:
        self.start()
        return self

    @property
    def customer_urls(self) -> dict[str, str]:
        """Where customers (Locust, on the host) reach each bank: the published `customers->BANK` listener."""
        return {
            code: self.engine.url_for_http(self.toxiproxy.host_port(self.links[f"customers->{code}"]))
            for code in self.topology.bank_codes
        }

    def versions(self) -> dict[str, str]:
        out = {**super().versions(), "backend": "docker"}
        out["docker_engine"] = engine_version(self.client)
        out["docker_endpoint"] = self.engine.describe()
        if self.images is not None:
            out["app_image"], out["toxiproxy_image"] = self.images.app, self.images.toxiproxy
        return out

    def _sigterm_cleans_up(self) -> None:
        # `kill <harness>` (a CI timeout) must not strand containers: SIGTERM unwinds like Ctrl-C,
        # through stop(). Only from the main thread, and only if nobody else handles SIGTERM.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
            signal.SIG_DFL,
            None,
        ):
            self._previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
