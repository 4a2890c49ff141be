"""Docker Compose targets: container faults on a compose project the user brought up, by its labels.

The compose project of tests/fixtures/compose/ (the bundled mock switch and three banks ACME, BETA,
CRED from the app image, host networking) is brought up with `docker-compose` by the test, outside
the harness, configured to dial each other through the Toxiproxy listeners of its target file. A
scenario then crashes the switch's container and pauses a bank's (found by the labels
com.docker.compose.project / com.docker.compose.service), slows a link, and reconciles through the
read API. The project is taken down in a `finally`, and nothing labelled with it may remain.

The end-to-end test is marked `docker`: skipped with the reason when no engine answers or
`docker-compose` is missing, failed instead under HARNESS_REQUIRE_DOCKER=1 (CI). The load-time
refusals need neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
import yaml
from support import eventually, loopback_addresses, target_scenario_file

from harness import target as targets
from harness.conform import suite
from harness.errors import TestbedError
from harness.scenario import ScenarioError
from harness.scenario import load as load_scenario
from harness.target import ComposeSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "tests" / "fixtures" / "compose" / "docker-compose.yaml"
CODES = ("ACME", "BETA", "CRED")
SERVICES = {"switch": "switch", "ACME": "acme", "BETA": "beta", "CRED": "cred"}
ACCOUNTS = 100


def addresses() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    return loopback_addresses(CODES)


def target_file(tmp: Path, direct: dict[str, str], links: dict[str, Any], compose: dict[str, Any]) -> Path:
    return support.target_file(tmp, "own mock as a compose project", CODES, direct, links, compose=compose)


def scenario_file(tmp: Path, tfile: Path, faults: list[dict[str, Any]], name: str = "compose-faults") -> Path:
    return target_scenario_file(
        tmp,
        tfile,
        faults,
        name=name,
        description="a compose project's containers crashed and paused by their labels, and a slow link",
        rate=10,
        duration=22,
    )


# -- refused at load: no engine needed ---------------------------------------------------------------


def compose(**overrides: Any) -> dict[str, Any]:
    return {"project": "my-switch", "file": str(COMPOSE_FILE), "services": dict(SERVICES), **overrides}


def test_a_compose_service_that_does_not_exist_is_refused_at_load(tmp_path: Path) -> None:
    direct, links = addresses()
    wrong = target_file(tmp_path, direct, links, compose(services={"switch": "switch", "BETA": "bank-beta"}))
    with pytest.raises(targets.TargetError) as err:
        targets.load(wrong)
    msg = str(err.value)
    assert str(wrong) in msg and "compose.services.BETA" in msg and "'bank-beta' is not a service of" in msg
    assert "['acme', 'beta', 'cred', 'switch']" in msg and "name one of them" in msg
    # ... and a scenario naming that target is refused before anything starts, naming the target's field.
    with pytest.raises(ScenarioError, match=r"target: .*compose\.services\.BETA"):
        load_scenario(scenario_file(tmp_path, wrong, []))

    relative = target_file(tmp_path, direct, links, compose(file="no-such-compose.yaml"))
    with pytest.raises(targets.TargetError, match=r"compose\.file: cannot read .*no-such-compose\.yaml"):
        targets.load(relative)
    stranger = target_file(tmp_path, direct, links, compose(services={"ZED": "switch"}))
    with pytest.raises(targets.TargetError, match=r"compose\.services: \['ZED'\] are not services"):
        targets.load(stranger)
    data = yaml.safe_load(target_file(tmp_path, direct, links, compose()).read_text())
    data["processes"] = {"BETA": {"pid_file": "/run/beta.pid", "start_command": "true"}}
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(data))
    with pytest.raises(targets.TargetError, match=r"compose\.services: \['BETA'\] also in processes"):
        targets.load(both)


def fault(kind: str, target: str, duration: float = 2) -> dict[str, Any]:
    return {"kind": kind, "targets": target, "start": 4, "duration": duration}


def test_fault_kinds_a_compose_target_cannot_take_are_refused_at_load(tmp_path: Path) -> None:
    direct, links = addresses()
    only_switch = target_file(tmp_path, direct, links, compose(services={"switch": "switch"}))
    fine = [
        {"kind": kind, "targets": "switch", "start": 1 + 3 * i, "duration": 2}
        for i, kind in enumerate(("crash", "pause", "stop", "restart"))
    ]
    fine.append({"kind": "crash_loop", "targets": "switch", "start": 13, "duration": 9})
    assert load_scenario(scenario_file(tmp_path, only_switch, fine)).backend == "external"
    # A bank that is neither a compose service nor under `processes:`: no container, no pid to act on.
    with pytest.raises(ScenarioError) as err:
        load_scenario(scenario_file(tmp_path, only_switch, [fault("pause", "BETA")]))
    msg = str(err.value)
    assert "faults[0].kind" in msg and "compose.services.BETA" in msg and "processes.BETA.pid_file" in msg
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.kind: .*processes\.CRED\.start_command"):
        load_scenario(scenario_file(tmp_path, only_switch, [fault("crash_loop", "CRED", duration=9)]))
    # power_loss needs the local backend's layer, compose service or not.
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.kind: power_loss"):
        load_scenario(scenario_file(tmp_path, only_switch, [fault("power_loss", "switch")]))
    # disconnect takes the service's Toxiproxy links down: any service of any target can take it.
    cut = load_scenario(scenario_file(tmp_path, only_switch, [fault("disconnect", "CRED")]))
    assert cut.faults[0].kind == "disconnect"


# -- the project brought up with docker-compose, faults through its labels ---------------------------


def need_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        problem = "docker-compose is not installed (apt-get install docker-compose)"
        if os.environ.get("HARNESS_REQUIRE_DOCKER") == "1":
            pytest.fail(f"HARNESS_REQUIRE_DOCKER=1 and {problem}", pytrace=False)
        pytest.skip(f"{problem} (set HARNESS_REQUIRE_DOCKER=1 to fail instead)")
    return found


def compose_cli(
    binary: str, file: Path, project: str, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    # docker-compose is a program of the system's Python: none of this virtualenv's variables.
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    command = [binary, "--project-name", project, "--file", str(file), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, env={**clean, **env})


def labelled(project: str) -> list[Any]:
    from harness.testbed.compose import PROJECT_LABEL
    from harness.testbed.containers import docker_client

    return docker_client().containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={project}"})


@contextlib.contextmanager
def compose_project(tmp: Path) -> Iterator[tuple[str, Path]]:
    """The fixture's project up, as a user would have it; yields (project name, target file).
    Always taken down, and whatever carries its label removed, even when the test failed."""
    from harness.testbed.containers import docker_client
    from harness.testbed.images import ensure

    binary = need_compose()
    image = ensure(docker_client()).app  # built by `harness images build --offline` (CI), or now
    direct, links = addresses()
    config = {
        "currency": "KES",
        "switch": {
            "listen": direct["switch"], "payee_timeout_s": 1.0, "resilience": "robust",
            "bank_urls": {c: f"http://{links[f'switch->{c}']['listen']}" for c in CODES},
        },
        "banks": [
            {"code": c, "listen": direct[c], "switch_url": f"http://{links[f'{c}->switch']['listen']}",
             "accounts": ACCOUNTS, "switch_timeout_s": 2.5, "customer_timeout_s": 3.0, "resilience": "robust"}
            for c in CODES
        ],
        "status_query": {"initial_s": 0.05, "max_s": 0.5},
    }  # fmt: skip
    (tmp / "system.json").write_text(json.dumps(config))
    (tmp / "system.json").chmod(0o644)  # read by the containers' user
    project = f"payswitch-compose-{secrets.token_hex(4)}"
    file = tmp / "docker-compose.yaml"  # the user's compose file, beside their target file
    shutil.copyfile(COMPOSE_FILE, file)
    env = {"PAYSWITCH_APP_IMAGE": image, "PAYSWITCH_CONFIG": str((tmp / "system.json").resolve())}
    try:
        up = compose_cli(binary, file, project, env, "up", "--detach", "--no-build")
        assert up.returncode == 0, up.stdout + up.stderr
        for name, addr in direct.items():
            url = f"http://{addr}/health"
            eventually(lambda url=url: suite.call("GET", url, None, 1.0).http == 200, timeout=60, what=f"{name}")
        compose = {"project": project, "file": file.name, "services": SERVICES}  # relative: beside the target
        yield project, target_file(tmp, direct, links, compose)
    finally:
        down = compose_cli(binary, file, project, env, "down", "--volumes", "--remove-orphans", "--timeout", "2")
        for container in labelled(project):  # whatever `down` left (it failed, or was never reached)
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
        assert down.returncode == 0, down.stdout + down.stderr


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=400, env=env, cwd=cwd
    )


FAULTS = [
    {"name": "switch-crash", "kind": "crash", "targets": "switch", "start": 4, "duration": 3},
    {"name": "beta-pause", "kind": "pause", "targets": "BETA", "start": 10, "duration": 3},
    {"name": "slow-cred", "kind": "latency", "targets": "switch->CRED", "start": 15, "duration": 3,
     "attributes": {"latency": 1500}},
]  # fmt: skip


@pytest.mark.docker
def test_container_faults_on_a_compose_project_by_its_labels(tmp_path: Path) -> None:
    from harness.testbed.compose import SERVICE_LABEL

    with compose_project(tmp_path) as (project, tfile):
        before = {c.labels[SERVICE_LABEL]: c.attrs["State"]["StartedAt"] for c in labelled(project)}
        assert sorted(before) == sorted(SERVICES.values())
        scenario = scenario_file(tmp_path, tfile, FAULTS)
        done = harness("run", str(scenario), "--out", str(tmp_path / "runs"), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        after = {c.labels[SERVICE_LABEL]: (c.status, c.attrs["State"]["StartedAt"]) for c in labelled(project)}
    assert labelled(project) == []  # taken down: no orphan container

    # The switch's container was killed and started again (a new start time); the others ran on,
    # all running at the end (the paused bank let go).
    assert after["switch"][1] != before["switch"], (before, after)
    assert all(after[s] == ("running", before[s]) for s in ("acme", "beta", "cred")), (before, after)
    [run_dir] = list((tmp_path / "runs").iterdir())
    events = [json.loads(line) for line in (run_dir / "faults.jsonl").read_text().splitlines()]
    for fault in FAULTS:
        assert [e["event"] for e in events if e["fault"] == fault["name"]] == ["apply", "heal"], events
    result = json.loads((run_dir / "result.json").read_text())
    assert result["environment"]["compose_project"] == project
    # The container faults bit: payments stopped getting through the dead switch and the frozen bank (a
    # payment finishing in the instant before the freeze takes hold may still count inside the window).
    windows = {w["fault"]: w for w in result["evidence"]["windows"]}
    assert windows["switch-crash"]["observable_effect"], windows["switch-crash"]
    assert windows["beta-pause"]["observable_effect"], windows["beta-pause"]
    # The link fault: calls to CRED crossed the harness's listener, and were held there.
    crossed = windows["slow-cred"]["proxies"]["links"]["switch->CRED"]["upstream"]["received"]
    assert crossed > 0, windows["slow-cred"]
    t0 = next(e["at"] for e in events if e["fault"] == "slow-cred")
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    held = [op["latency_ms"] for op in history
            if op["op"] == "payment" and op["payee"] == "CRED" and t0 + 0.5 < op["invoke"] < t0 + 2]  # fmt: skip
    assert held and min(held) > 500, held
    assert result["availability"]["overall"]["operations"] > 100
    rec = result["consistency"]["reconciliation"]
    assert rec["payments"] > 100 and rec["anomaly_count"] == 0, rec["anomalies"]
    assert not any(rec["anomalies"].values()), rec["anomalies"]
    assert result["consistency"]["customer_view"]["lost_acknowledged"] == 0
    ledgers = json.loads((run_dir / "ledgers.json").read_text())
    assert sorted(ledgers["banks"]) == sorted(CODES)
    # The run directory keeps the target and the compose file it names: it is checked again from its files.
    assert (run_dir / "docker-compose.yaml").read_text() == COMPOSE_FILE.read_text()
    again = harness("check", str(run_dir), cwd=ROOT)
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.docker
def test_a_project_that_is_not_up_is_refused_when_the_testbed_starts() -> None:
    from harness.testbed.compose import ComposeServices

    services = ComposeServices(ComposeSettings(project=f"payswitch-absent-{secrets.token_hex(4)}", services=SERVICES))
    with pytest.raises(TestbedError, match=r"compose\.project: no container carries the label") as err:
        services.find()
    assert "docker-compose -p payswitch-absent-" in str(err.value)
