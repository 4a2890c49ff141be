"""Docker backend figures: image build time (cold and cached), topology start time (docker vs local)
and the baseline scenario's throughput on each backend (the same file, `backend` overridden as
`harness run --backend` does). Prints on its last line:
build_cold_s=<n|skipped> build_cached_s=<n> start_docker_s=<n> start_local_s=<n>
baseline_docker_ops_s=<n> baseline_local_ops_s=<n> (p99 of each in the JSON line above).

--cold removes the project's images first (the offline base too: debootstrap runs again, about two
minutes); the wheelhouse is kept, as it is a pip download rather than an image build.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.runner import run, system_for
from harness.scenario import load
from harness.testbed.bed import Testbed
from harness.testbed.containers import DockerTestbed, docker_client
from harness.testbed.images import APP_REPO, OFFLINE_BASE, TOXIPROXY_REPO, build_all

BASELINE = Path(__file__).resolve().parent.parent / "scenarios" / "baseline.yaml"


def remove_images(client: Any) -> None:
    for repo in (APP_REPO, TOXIPROXY_REPO):
        for image in client.images.list(name=repo):
            client.images.remove(image.id, force=True)
    if client.images.list(name=OFFLINE_BASE):
        client.images.remove(OFFLINE_BASE, force=True)


def timed_build(client: Any) -> float:
    started = time.monotonic()
    build_all(client, offline=True)
    return time.monotonic() - started


def start_time(make: Any, repeats: int) -> float:
    """Median seconds from nothing to every service healthy behind Toxiproxy (then torn down, untimed)."""
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
            bed = make(Path(tmp) / "run")
            started = time.monotonic()
            with bed:
                times.append(time.monotonic() - started)
    return statistics.median(times)


def baseline(backend: str, out: Path) -> dict[str, Any]:
    scenario = load(BASELINE).model_copy(update={"backend": backend})
    overall = run(scenario, out, progress=None).result["availability"]["overall"]
    return {"ops_s": overall["throughput"], "p99_ms": overall["p99_ms"], "operations": overall["operations"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true", help="remove the images first and time a build from nothing")
    parser.add_argument("--starts", type=int, default=3, help="topology starts to take the median of")
    parser.add_argument("--out", type=Path, default=Path("reports/runs"))
    args = parser.parse_args()
    client = docker_client()
    cold: float | None = None
    if args.cold:
        remove_images(client)
        cold = timed_build(client)
    cached = timed_build(client)
    system = system_for(load(BASELINE))
    start_docker = start_time(lambda d: DockerTestbed(system, d, client), args.starts)
    start_local = start_time(lambda d: Testbed(system, d), args.starts)
    docker_run = baseline("docker", args.out)
    local_run = baseline("local", args.out)
    print(json.dumps({"docker": docker_run, "local": local_run}))
    print(
        f"build_cold_s={'skipped' if cold is None else f'{cold:.1f}'} build_cached_s={cached:.2f}"
        f" start_docker_s={start_docker:.2f} start_local_s={start_local:.2f}"
        f" baseline_docker_ops_s={docker_run['ops_s']:.1f} baseline_local_ops_s={local_run['ops_s']:.1f}"
    )


if __name__ == "__main__":
    main()
