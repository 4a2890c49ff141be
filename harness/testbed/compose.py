"""Container faults on a Docker Compose project the user brought up (a target's `compose:` section).

Each service named in `compose.services` is the one container labelled
`com.docker.compose.project=<project>` and `com.docker.compose.service=<service>`, found through
the Docker SDK when the testbed starts (not one container: refused then, naming the field). The
faults act as on the docker backend (harness/testbed/containers.py): `crash` is `docker kill`
(SIGKILL) then `start`, `pause` the cgroup freezer, `stop` a graceful stop (SIGTERM, SIGKILL after
5 s) then `start`, `restart` `docker restart`. The harness never creates or removes the project's
containers: bringing the project up and down is the user's (`docker-compose up -d` / `down`).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from harness.errors import TestbedError
from harness.target import ComposeSettings
from harness.testbed.containers import STOP_GRACE_S, docker_client

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


class ComposeServices:
    """The containers of a target's compose services; what ExternalServices delegates their faults to."""

    def __init__(self, compose: ComposeSettings, client: DockerClient | None = None) -> None:
        self.compose = compose
        self._client = client
        self.containers: dict[str, Container] = {}  # harness service -> its container

    def __contains__(self, name: object) -> bool:
        return name in self.compose.services

    @property
    def client(self) -> DockerClient:
        if self._client is None:
            try:
                self._client = docker_client()
            except TestbedError as exc:
                raise TestbedError(
                    f"compose: the target's services are containers, and {exc}",
                    fix="start the Docker engine, or drop compose: from the target file",
                ) from None
        return self._client

    def find(self) -> None:
        """Each service's container, by its compose labels; exactly one each, or a TestbedError."""
        project = self.compose.project
        labelled = self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})
        if not labelled:
            raise TestbedError(
                f"compose.project: no container carries the label {PROJECT_LABEL}={project}",
                fix=f"bring the project up first (docker-compose -p {project} up -d), or correct compose.project",
            )
        declared = sorted({str(c.labels.get(SERVICE_LABEL)) for c in labelled})
        for name, service in self.compose.services.items():
            found = [c for c in labelled if c.labels.get(SERVICE_LABEL) == service]
            if len(found) != 1:
                raise TestbedError(
                    f"compose.services.{name}: project {project} has {len(found)} containers of service"
                    f" {service!r} (its services: {declared})",
                    fix="name a service that runs exactly one container (no scale, no replicas)",
                )
            self.containers[name] = found[0]

    def status(self, name: str) -> str:
        container = self._container(name)
        container.reload()
        return str(container.status)

    def _container(self, name: str) -> Container:
        if name not in self.containers:
            self.find()
        return self.containers[name]

    def kill(self, name: str) -> None:
        if self.status(name) == "paused":
            self._container(name).unpause()
        if self.status(name) == "running":
            self._container(name).kill()
        self._wait_status(name, ("exited", "dead"))

    def signal(self, name: str, sig: signal.Signals) -> None:
        """SIGSTOP/SIGCONT become the cgroup freezer (docker pause/unpause); others are sent as they are."""
        if sig == signal.SIGSTOP:
            self._container(name).pause()
        elif sig == signal.SIGCONT:
            if self.status(name) == "paused":
                self._container(name).unpause()
        else:
            self._container(name).kill(signal=int(sig))

    def stop_service(self, name: str) -> None:
        if self.status(name) == "paused":
            self._container(name).unpause()
        self._container(name).stop(timeout=STOP_GRACE_S)

    def start(self, name: str) -> None:
        """Start it unless it runs (a paused one is let go); the caller waits until it answers."""
        status = self.status(name)
        if status == "paused":
            self._container(name).unpause()
        elif status != "running":
            self._container(name).start()

    def restart(self, name: str) -> None:
        if self.status(name) == "running":
            self._container(name).restart(timeout=STOP_GRACE_S)
        else:
            self.start(name)

    def _wait_status(self, name: str, statuses: tuple[str, ...], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.status(name) not in statuses:
            if time.monotonic() > deadline:
                raise TestbedError(f"{name}: its container did not reach {'/'.join(statuses)} in {timeout_s:.0f} s")
            time.sleep(0.05)

    def versions(self) -> dict[str, str]:
        return {"compose_project": self.compose.project}
