"""Brings the system under test up and down: Toxiproxy and its links, local processes or containers, images.

`make_testbed` is the way in for the runner and the front ends. The container backend is imported
only when asked for: it needs the Docker SDK, which a local run should not load.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.errors import TestbedError
from harness.testbed.bed import Testbed
from mock_switch.config import SystemConfig

BACKENDS = ("local", "docker")
__all__ = ["BACKENDS", "Testbed", "make_testbed"]


def make_testbed(
    system: SystemConfig, run_dir: Path, backend: str = "local", power_loss: Iterable[str] = ()
) -> Testbed:
    """The testbed of a backend: local processes (bed.py), or containers (containers.py).
    `power_loss`: services to start under the power-loss layer (local only)."""
    losing = sorted(set(power_loss))
    if losing and backend != "local":
        raise TestbedError(
            f"power_loss faults on {', '.join(losing)}: the {backend} backend has no power-loss layer",
            fix="run this scenario with --backend local",
        )
    if backend == "external":  # a system someone else started: harness/testbed/external.py, from a target file
        raise TestbedError(
            "the external backend needs a scenario naming a target file (`target:`); it has no services to start",
            fix="run the scenario with `harness run SCENARIO`",
        )
    if backend == "docker":
        from harness.testbed.containers import DockerTestbed

        return DockerTestbed(system, run_dir)
    if backend != "local":
        raise ValueError(f"unknown backend {backend!r}; backends are {', '.join(BACKENDS)}")
    return Testbed(system, run_dir, losing)
