"""The docker backend: container faults really happen and heal, and no container or network outlives its run.

Marked `docker`: skipped with the reason when no Docker engine answers, failed instead with
HARNESS_REQUIRE_DOCKER=1 (CI). Images come from `harness images build --offline` (or are built on
first use). The parts that need no engine (mirror lookup, routing) run everywhere.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import eventually, get, payment, post

from harness.cli import main as harness_main
from harness.faults import FaultSpec
from harness.links import link_names
from harness.nemesis import Nemesis
from harness.testbed.bed import Testbed
from harness.testbed.containers import (
    PID_LABEL,
    RUN_LABEL,
    TOXIPROXY_ALIAS,
    DockerTestbed,
    docker_client,
    route_through_toxiproxy,
)
from harness.testbed.images import ImageError, apt_mirror, ensure
from harness.testbed.system import build_system

PAYMENT_IDS = itertools.count()


def small_system() -> Any:
    return build_system(banks=3, accounts=100, payee_timeout_s=0.5, switch_timeout_s=2.0, customer_timeout_s=3.0)


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerTestbed]:
    from harness.testbed.containers import engine_problem

    if engine_problem() is not None:
        pytest.skip("no Docker engine")  # the plugin's docker marker says why, or fails under HARNESS_REQUIRE_DOCKER
    with DockerTestbed(small_system(), tmp_path_factory.mktemp("docker-bed")) as tb:
        yield tb


def pay(bed: Testbed, pid: str, creditor_bank: str = "BNKB") -> dict[str, Any]:
    creditor = {"BNKB": "0200000003", "BNKC": "0300000003"}[creditor_bank]
    body = payment(pid, creditor_bank=creditor_bank, creditor=creditor)
    return post(bed.customer_urls["BNKA"] + "/payments", body)[1]  # type: ignore[no-any-return]


def status(bed: DockerTestbed, service: str) -> str:
    return bed.topology.services[service].status()


def on_network(bed: DockerTestbed, service: str) -> bool:
    container = bed.topology.container(service)
    container.reload()
    return bed.network_name in container.attrs["NetworkSettings"]["Networks"]


def timeline(bed: Testbed, fault: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (bed.run_dir / "faults.jsonl").read_text().splitlines()]
    return [e for e in lines if e["fault"] == fault]


def labelled(run_id: str) -> tuple[list[Any], list[Any]]:
    client = docker_client()
    label: dict[str, Any] = {"label": f"{RUN_LABEL}={run_id}"}
    return client.containers.list(all=True, filters=label), client.networks.list(filters=label)


# -- without an engine --------------------------------------------------------------------------------


def test_mirror_comes_from_apt_sources_in_either_format(tmp_path: Path) -> None:
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb [arch=amd64] http://other.invalid/debian bookworm main\n")
    assert apt_mirror([deb822]) == "http://mirror.invalid/debian"
    assert apt_mirror([tmp_path / "missing.list", one_line]) == "http://other.invalid/debian"
    with pytest.raises(ImageError, match="no apt source for Debian bookworm"):
        apt_mirror([tmp_path / "missing.list"])


def test_every_peer_url_points_at_the_toxiproxy_container() -> None:
    routed, links = route_through_toxiproxy(small_system())
    assert list(links) == link_names(b.code for b in routed.banks)
    assert all(url.startswith(f"http://{TOXIPROXY_ALIAS}:") for url in routed.switch.bank_urls.values())
    assert all(b.switch_url.startswith(f"http://{TOXIPROXY_ALIAS}:") for b in routed.banks)
    assert links["switch->BNKB"].upstream == "bnkb:8080" and links["BNKA->switch"].upstream == "switch:8080"
    ports = [link.listen for link in links.values()]
    assert len(set(ports)) == len(ports)  # one listener per link


# -- container faults -----------------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_payments_cross_the_containers(bed: DockerTestbed) -> None:
    assert pay(bed, "d-ok")["status"] == "ACSC"
    # Toxiproxy's container runs Go on one thread, as the local process does (proxies.server_env).
    assert "GOMAXPROCS=1" in bed.toxiproxy.container.attrs["Config"]["Env"]
    assert get(bed.direct_urls["switch"] + "/transfers/d-ok")[1]["status"] == "ACSC"


@pytest.mark.docker
@pytest.mark.slow
def test_pause_freezes_the_container_and_unpause_resumes_it(bed: DockerTestbed) -> None:
    bed.nemesis.apply(FaultSpec(name="d-freeze", kind="pause", targets=["BNKB"], start=0, duration=1))
    try:
        assert status(bed, "BNKB") == "paused"
        assert pay(bed, "d-during-pause")["status"] != "ACSC"  # the payee cannot answer in time
    finally:
        bed.nemesis.heal("d-freeze")
    assert status(bed, "BNKB") == "running"
    assert pay(bed, "d-after-pause")["status"] == "ACSC"
    assert [e["event"] for e in timeline(bed, "d-freeze")] == ["apply", "heal"]


@pytest.mark.docker
@pytest.mark.slow
def test_crash_kills_the_container_and_heal_starts_it_with_its_ledger(bed: DockerTestbed) -> None:
    assert pay(bed, "d-before-crash")["status"] == "ACSC"
    starts = bed.topology.switch.starts
    bed.nemesis.apply(FaultSpec(name="d-boom", kind="crash", targets=["switch"], start=0, duration=1))
    try:
        assert status(bed, "switch") == "exited"
        assert bed.topology.container("switch").attrs["State"]["ExitCode"] == 137  # SIGKILL
        assert pay(bed, "d-during-crash")["status"] != "ACSC"
    finally:
        bed.nemesis.heal("d-boom")
    assert status(bed, "switch") == "running" and bed.topology.switch.starts == starts + 1
    # Acknowledged before the crash, still there after: the ledger lives on the bind-mounted volume.
    assert get(bed.direct_urls["switch"] + "/transfers/d-before-crash")[1]["status"] == "ACSC"
    assert pay(bed, "d-after-crash")["status"] == "ACSC"


@pytest.mark.docker
@pytest.mark.slow
def test_stop_and_restart_bounce_the_container(bed: DockerTestbed) -> None:
    bed.nemesis.apply(FaultSpec(name="d-stop", kind="stop", targets=["BNKC"], start=0, duration=1))
    try:
        assert status(bed, "BNKC") == "exited"
        # SIGTERM was handled: the service shut down cleanly rather than being killed.
        assert bed.topology.container("BNKC").attrs["State"]["ExitCode"] == 0
    finally:
        bed.nemesis.heal("d-stop")
    assert status(bed, "BNKC") == "running"
    before = bed.topology.container("BNKC").attrs["State"]["StartedAt"]
    bed.nemesis.apply(FaultSpec(name="d-bounce", kind="restart", targets=["BNKC"], start=0, duration=1))
    bed.nemesis.heal("d-bounce")
    assert status(bed, "BNKC") == "running"
    assert bed.topology.container("BNKC").attrs["State"]["StartedAt"] != before
    assert pay(bed, "d-after-bounce", creditor_bank="BNKC")["status"] == "ACSC"
    assert [e["kind"] for e in timeline(bed, "d-stop") + timeline(bed, "d-bounce")] == ["stop"] * 2 + ["restart"] * 2


@pytest.mark.docker
@pytest.mark.slow
def test_disconnect_takes_the_container_off_the_network_and_heal_puts_it_back(bed: DockerTestbed) -> None:
    bed.nemesis.apply(FaultSpec(name="d-island", kind="disconnect", targets=["BNKB"], start=0, duration=1))
    try:
        assert not on_network(bed, "BNKB")
        assert status(bed, "BNKB") == "running"  # alive, just unreachable
        answer = pay(bed, "d-during-disconnect")
        assert answer["status"] != "ACSC"
        # Toxiproxy is untouched: the partition is below it, at the Docker network.
        assert all(p["enabled"] for p in bed.toxiproxy.proxies().values())
    finally:
        bed.nemesis.heal("d-island")
    assert on_network(bed, "BNKB")
    # Reattached under its alias, so `bnkb` resolves again for Toxiproxy's upstream.
    eventually(
        lambda: pay(bed, f"d-after-disconnect-{next(PAYMENT_IDS)}")["status"] == "ACSC", what="a payment to BNKB"
    )
    applied = timeline(bed, "d-island")[0]
    assert applied["event"] == "apply" and applied["via"] == "network" and applied["targets"] == ["BNKB"]


def held_by_the_proxy(url: str, timeout_s: float = 8.0) -> float:
    """Seconds from connecting to `url` (a Toxiproxy listener) until the proxy closes the connection."""
    split = urlsplit(url)
    started = time.monotonic()
    with socket.create_connection((split.hostname or "", split.port or 80), timeout=timeout_s) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            while sock.recv(4096):
                pass
    return time.monotonic() - started


@pytest.mark.docker
@pytest.mark.slow
def test_a_disconnected_upstream_does_not_hold_the_proxy_for_seconds(bed: DockerTestbed) -> None:
    # While BNKB is off the network its alias does not resolve, and Docker's embedded DNS leaves about
    # one lookup in 35 unanswered. Toxiproxy resolves inside its one accept loop per proxy: with the
    # resolver's default 5 s timeout, every new connection waited 5 s behind such a lookup (and the
    # queue outlived the heal). With DNS_OPTIONS (timeout:1) no connection is held for long.
    bed.nemesis.apply(FaultSpec(name="d-dns", kind="disconnect", targets=["BNKB"], start=0, duration=1))
    try:
        held: list[float] = []
        deadline = time.monotonic() + 15.0  # bounded: ~100 dials when each fails fast
        while len(held) < 100 and time.monotonic() < deadline:
            held.append(held_by_the_proxy(bed.customer_urls["BNKB"]))
    finally:
        bed.nemesis.heal("d-dns")
    assert len(held) >= 40, f"only {len(held)} connections in 15 s: the proxy held them {max(held):.1f} s at most"
    assert max(held) < 3.0, f"the proxy held a connection {max(held):.1f} s (5 s: the DNS stall is back)"


# -- nothing survives a run ----------------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("interruption", [RuntimeError("the scenario broke"), KeyboardInterrupt()])
def test_no_container_or_network_survives_a_run_that_fails_midway(tmp_path: Path, interruption: BaseException) -> None:
    system = build_system(banks=2, accounts=50, payee_timeout_s=0.5, switch_timeout_s=2.0, customer_timeout_s=3.0)
    run_id = ""
    # The interruption comes from inside the testbed: the path a failing or interrupted run takes.
    with pytest.raises(type(interruption)), DockerTestbed(system, tmp_path / "run") as tb:
        run_id = tb.run_id
        containers, networks = labelled(run_id)
        assert len(containers) == 4 and len(networks) == 1  # toxiproxy, switch, 2 banks; one network
        tb.nemesis.apply(FaultSpec(name="d-frozen", kind="pause", targets=["switch"], start=0, duration=1))
        raise interruption
    assert labelled(run_id) == ([], [])
    assert (tmp_path / "run" / "logs" / "switch.log").read_text()  # logs were saved before removal


@pytest.mark.docker
@pytest.mark.slow
def test_down_all_removes_leftovers_by_label_and_spares_live_runs(bed: DockerTestbed, tmp_path: Path) -> None:
    # A harness killed with SIGKILL leaves its containers behind; `harness down --all` finds them by label.
    client = docker_client()
    run_id = "leftover-test"
    gone = {RUN_LABEL: run_id, PID_LABEL: "0"}  # pid 0: no harness owns it any more
    network = client.networks.create(f"payswitch-{run_id}", labels=gone)
    image = ensure(client).toxiproxy
    client.containers.create(image, name=f"payswitch-{run_id}-x", labels=gone, network=network.name)
    assert labelled(run_id) != ([], [])
    assert harness_main(["down", "--all", "--out", str(tmp_path)]) == 0
    assert labelled(run_id) == ([], [])
    # The module's testbed belongs to this live process: not a leftover.
    assert len(labelled(bed.run_id)[0]) == 1 + len(bed.topology.services)


def test_disconnect_without_a_docker_network_takes_the_service_links_down(tmp_path: Path) -> None:
    """On local processes a disconnect is every Toxiproxy link of the service down (same isolation)."""

    class Links:
        def __init__(self) -> None:
            self.enabled: dict[str, bool] = {}

        def set_enabled(self, link: Any, enabled: bool) -> None:
            self.enabled[link.name] = enabled

        def reset(self) -> None:
            pass

    class Processes:
        service_names = ["switch", "BNKA", "BNKB"]

    _, links = route_through_toxiproxy(build_system(banks=2))
    proxies = Links()
    nemesis = Nemesis(proxies, links, Processes(), tmp_path / "faults.jsonl")  # type: ignore[arg-type]
    nemesis.apply(FaultSpec(name="cut", kind="disconnect", targets=["BNKB"], start=0, duration=1))
    assert proxies.enabled == {"customers->BNKB": False, "BNKB->switch": False, "switch->BNKB": False}
    nemesis.heal("cut")
    assert set(proxies.enabled.values()) == {True}
    applied = json.loads((tmp_path / "faults.jsonl").read_text().splitlines()[0])
    assert applied["via"] == "toxiproxy" and applied["links"] == ["customers->BNKB", "BNKB->switch", "switch->BNKB"]


@pytest.mark.slow
def test_stop_and_restart_mean_the_same_on_local_processes(tmp_path: Path) -> None:
    system = build_system(banks=2, accounts=50, payee_timeout_s=0.5, switch_timeout_s=2.0, customer_timeout_s=3.0)
    with Testbed(system, tmp_path / "run") as tb:
        bank = tb.topology.bank("BNKB")
        tb.nemesis.apply(FaultSpec(name="l-stop", kind="stop", targets=["BNKB"], start=0, duration=1))
        assert not bank.running() and bank.proc is not None and bank.proc.returncode == 0  # SIGTERM, handled
        tb.nemesis.heal("l-stop")
        assert bank.running()
        before = bank.pid
        tb.nemesis.apply(FaultSpec(name="l-bounce", kind="restart", targets=["BNKB"], start=0, duration=1))
        tb.nemesis.heal("l-bounce")
        assert bank.running() and bank.pid != before
        assert pay(tb, "l-after-bounce")["status"] == "ACSC"


def test_the_backend_override_is_in_the_reproduce_command(tmp_path: Path) -> None:
    from harness.runner import reproduce_command
    from harness.scenario import load

    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbackend: docker\nload: {rate: 5, duration: 5}\n")
    scenario = load(path)
    assert reproduce_command(scenario) == f"harness run {path}"
    assert reproduce_command(scenario.model_copy(update={"backend": "local"})) == f"harness run {path} --backend local"
