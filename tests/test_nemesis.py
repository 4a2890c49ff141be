"""The nemesis against a real Toxiproxy server and real service processes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import eventually, get, payment, post

from harness.faults import FaultSpec, expand_targets
from harness.links import link_names
from harness.testbed.bed import Testbed
from harness.testbed.system import build_system

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    system = build_system(banks=3, accounts=100, payee_timeout_s=0.5, switch_timeout_s=2.0, customer_timeout_s=3.0)
    with Testbed(system, tmp_path_factory.mktemp("nemesis")) as tb:
        yield tb


def pay(bed: Testbed, pid: str, **kw: object) -> tuple[int, dict[str, object]]:
    return post(bed.customer_urls["BNKA"] + "/payments", payment(pid, **kw))  # type: ignore[arg-type]


def state(pid: int | None) -> str:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]


def faults_logged(bed: Testbed) -> list[dict[str, object]]:
    return [json.loads(line) for line in (bed.run_dir / "faults.jsonl").read_text().splitlines()]


def test_every_link_goes_through_toxiproxy(bed: Testbed) -> None:
    proxies = bed.toxiproxy.proxies()
    assert sorted(p["name"] for p in proxies.values()) == sorted(link.proxy for link in bed.links.values())
    assert len(bed.links) == len(link_names(bed.topology.bank_codes)) == 9
    assert bed.system.switch.bank_urls["BNKB"].endswith(bed.links["switch->BNKB"].listen)
    assert pay(bed, "n-ok")[1]["status"] == "ACSC"


def test_latency_on_the_payee_link_delays_payments_and_heals(bed: Testbed) -> None:
    fault = FaultSpec(name="slow-payee", kind="latency", targets=["switch->BNKB"], start=0, duration=1,
                      attributes={"latency": 300})  # fmt: skip
    bed.nemesis.apply(fault)
    try:
        t = time.monotonic()
        assert pay(bed, "n-lat")[1]["status"] == "ACSC"
        assert time.monotonic() - t >= 0.3
        assert [tx["type"] for tx in bed.toxiproxy.proxies()[bed.links["switch->BNKB"].proxy]["toxics"]] == ["latency"]
    finally:
        bed.nemesis.heal("slow-payee")
    assert bed.toxiproxy.proxies()[bed.links["switch->BNKB"].proxy]["toxics"] == []
    events = [(e["event"], e["fault"], e["targets"]) for e in faults_logged(bed) if e["fault"] == "slow-payee"]
    assert events == [("apply", "slow-payee", ["switch->BNKB"]), ("heal", "slow-payee", ["switch->BNKB"])]


def test_link_down_refuses_connections_and_comes_back(bed: Testbed) -> None:
    fault = FaultSpec(name="cut", kind="down", targets=["BNKA->switch"], start=0, duration=1)
    bed.nemesis.apply(fault)
    try:
        status, body = pay(bed, "n-down")
        assert (status, body["status"], body["reason"]) == (504, "RJCT", "AB06")  # refused: certainly not sent
    finally:
        bed.nemesis.heal("cut")
    assert pay(bed, "n-up")[1]["status"] == "ACSC"


def test_partition_of_a_bank_expands_to_all_its_links(bed: Testbed) -> None:
    fault = FaultSpec(name="island", kind="partition", targets=["BNKC"], start=0, duration=1)
    assert expand_targets(fault, list(bed.links), bed.topology.service_names) == [
        "customers->BNKC", "BNKC->switch", "switch->BNKC",
    ]  # fmt: skip
    bed.nemesis.apply(fault)
    try:
        assert not any(p["enabled"] for n, p in bed.toxiproxy.proxies().items() if "BNKC" in n)
        # Bulkhead: BNKA paying BNKB is unaffected.
        assert pay(bed, "n-bulkhead")[1]["status"] == "ACSC"
        status, body = pay(bed, "n-to-island", creditor_bank="BNKC", creditor="0300000003")
        assert (status, body["status"], body["reason"]) == (503, "RJCT", "AB08")
    finally:
        bed.nemesis.heal("island")
    assert all(p["enabled"] for p in bed.toxiproxy.proxies().values())


def test_pause_stops_the_process_and_resume_continues_it(bed: Testbed) -> None:
    pid = bed.topology.bank("BNKB").pid
    bed.nemesis.apply(FaultSpec(name="freeze", kind="pause", targets=["BNKB"], start=0, duration=1))
    try:
        eventually(lambda: state(pid) == "T", timeout=5, what="BNKB to be stopped")
    finally:
        bed.nemesis.heal("freeze")
    eventually(lambda: state(pid) in {"S", "R"}, timeout=5, what="BNKB to run again")
    assert pay(bed, "n-after-pause")[1]["status"] == "ACSC"


def test_crash_kills_and_heal_restarts_with_the_books_intact(bed: Testbed) -> None:
    switch = bed.topology.switch
    assert pay(bed, "n-before-crash")[1]["status"] == "ACSC"
    before = switch.pid
    bed.nemesis.apply(FaultSpec(name="boom", kind="crash", targets=["switch"], start=0, duration=1))
    assert not switch.running()
    bed.nemesis.heal("boom")
    assert switch.running() and switch.pid != before
    assert get(switch.url + "/transfers/n-before-crash")[1]["status"] == "ACSC"


def test_heal_all_removes_every_toxic_even_after_an_error(bed: Testbed) -> None:
    bed.nemesis.apply(FaultSpec(name="a", kind="bandwidth", targets=["switch"], start=0, duration=1,
                                attributes={"rate": 1}))  # fmt: skip
    bed.nemesis.apply(FaultSpec(name="b", kind="down", targets=["customers->BNKB"], start=0, duration=1))
    with pytest.raises(ValueError, match="already active"):
        bed.nemesis.apply(FaultSpec(name="a", kind="down", targets=["BNKA->switch"], start=0, duration=1))
    bed.nemesis.heal_all()
    proxies = bed.toxiproxy.proxies().values()
    assert all(p["enabled"] and not p["toxics"] for p in proxies)
    eventually(lambda: pay(bed, "n-after-heal-all")[1]["status"] == "ACSC", what="healthy after heal_all")


def test_fault_spec_errors_teach() -> None:
    with pytest.raises(ValueError, match=r"\['delay'\] do not apply to a latency fault; it takes latency"):
        FaultSpec(kind="latency", targets=["switch->BNKA"], start=0, duration=1, attributes={"delay": 5})
    with pytest.raises(ValueError, match="must not be negative"):
        FaultSpec(kind="latency", targets=["switch->BNKA"], start=0, duration=1, attributes={"latency": -5})
    fault = FaultSpec(kind="down", targets=["switch->ZBNK"], start=0, duration=1)
    with pytest.raises(ValueError, match=r"'switch->ZBNK', which is neither a link nor a service; links are"):
        expand_targets(fault, ["switch->BNKA", "BNKA->switch"], ["switch", "BNKA"])
    with pytest.raises(ValueError, match="not services"):
        expand_targets(FaultSpec(kind="crash", targets=["BNKZ"], start=0, duration=1), [], ["switch"])
