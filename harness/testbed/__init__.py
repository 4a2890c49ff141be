"""Brings the system under test up and down: Toxiproxy and its links, local processes or containers, images.

`make_testbed` is the way in for the runner and the front ends; the backends are imported when it is
called, not here. Containers need the Docker SDK, which a local run should not load; and importing
any harness.testbed module runs this file, while harness/nemesis (which every testbed uses) still
imports harness.testbed.proxies, so importing bed here would make `import harness.scenario` fail
half-way (tests/test_layers.py lists that cycle until the nemesis stops importing the testbed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mock_switch.config import SystemConfig

if TYPE_CHECKING:
    from harness.testbed.bed import Testbed

BACKENDS = ("local", "docker")


def make_testbed(system: SystemConfig, run_dir: Path, backend: str = "local") -> Testbed:
    """The testbed of a backend: local processes (bed.py), or containers (containers.py)."""
    if backend == "docker":
        from harness.testbed.containers import DockerTestbed

        return DockerTestbed(system, run_dir)
    if backend != "local":
        raise ValueError(f"unknown backend {backend!r}; backends are {', '.join(BACKENDS)}")
    from harness.testbed.bed import Testbed

    return Testbed(system, run_dir)
