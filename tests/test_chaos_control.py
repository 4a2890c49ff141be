"""The chaos panel's control API refuses bad input with a 4xx that says what to fix, and then
nothing is applied: no toxic, no disabled link, no signal, no line in the fault timeline. Good input
does reach Toxiproxy and the timeline (so the refusals above are not just an API that does nothing).
Live availability counts a payment as good exactly when harness/checkers/availability.py does."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import call, eventually, get, post

from harness.faults import FAULT_KINDS, ON_SERVICES
from harness.links import Link
from harness.nemesis import Nemesis
from harness.observe.live import LiveAvailability
from harness.scenario import TopologySpec
from harness.web.control import ControlServer
from harness.web.session import ChaosSession, catalogue, session_scenario

BANKS = ["BNKA", "BNKB"]


class RecordingToxiproxy:
    """Stands in for the Toxiproxy server: records what the nemesis asked of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def add_toxic(self, link: Link, name: str, kind: str, attributes: dict[str, int], *rest: Any) -> None:
        self.calls.append(("add_toxic", link.name, name, kind, attributes))

    def remove_toxic(self, link: Link, name: str) -> None:
        self.calls.append(("remove_toxic", link.name, name))

    def set_enabled(self, link: Link, enabled: bool) -> None:
        self.calls.append(("set_enabled", link.name, enabled))

    def reset(self) -> None:
        self.calls.append(("reset",))


class RecordingServices:
    service_names = ["switch", *BANKS]

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def kill(self, name: str) -> None:
        self.calls.append(("kill", name))

    def restart(self, name: str) -> None:
        self.calls.append(("restart", name))

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.calls.append((sig.name, name))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SimpleNamespace]:
    links = {
        n: Link(n, f"127.0.0.1:{20000 + i}", "127.0.0.1:1")
        for i, n in enumerate(n for b in BANKS for n in (f"customers->{b}", f"{b}->switch", f"switch->{b}"))
    }
    toxiproxy, services = RecordingToxiproxy(), RecordingServices()
    nemesis = Nemesis(toxiproxy, links, services, tmp_path / "faults.jsonl")  # type: ignore[arg-type]
    bed = SimpleNamespace(
        links=links,
        nemesis=nemesis,
        toxiproxy=toxiproxy,
        topology=SimpleNamespace(service_names=services.service_names, bank_codes=BANKS),
        direct_urls={"switch": "http://127.0.0.1:9", **{b: "http://127.0.0.1:9" for b in BANKS}},
    )
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "other-bank.yaml").write_text(
        "name: other-bank\ntopology: {banks: 5}\nload: {duration: 10}\n"
        "faults:\n  - {kind: latency, targets: switch->BNKE, start: 1, duration: 2, attributes: {latency: 100}}\n"
    )
    session = ChaosSession(
        bed,  # type: ignore[arg-type]
        tmp_path,
        scenarios,
        "harness ui",
        session_scenario(TopologySpec(banks=2)),
    )
    server = ControlServer(session).start()
    yield SimpleNamespace(url=server.url, toxiproxy=toxiproxy, services=services, session=session, run_dir=tmp_path)
    session.heal_all()
    server.stop()


def timeline(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "faults.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


LATENCY = {"kind": "latency", "targets": ["switch->BNKB"], "attributes": {"latency": 1500}}


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({**LATENCY, "attributes": {"latency": -5}}, 400, "must not be negative"),
        ({**LATENCY, "targets": ["switch->ZBNK"]}, 400, "neither a link nor a service"),
        ({**LATENCY, "targets": ["customers"]}, 400, "neither a link nor a service"),
        ({**LATENCY, "targets": []}, 400, "targets"),
        ({**LATENCY, "kind": "earthquake"}, 400, "unknown fault kind 'earthquake'"),
        ({**LATENCY, "duration_s": -1}, 400, "duration_s"),
        ({**LATENCY, "duration_s": 0}, 400, "duration_s"),
        ({**LATENCY, "duration_s": "soon"}, 400, "duration_s"),
        ({**LATENCY, "duration_s": 1e9}, 400, "duration_s"),
        ({**LATENCY, "attributes": {"rate": 5}}, 400, "do not apply to a latency fault"),
        ({**LATENCY, "attributes": {"latency": "slow"}}, 400, "attributes.latency"),
        ({**LATENCY, "toxicity": 2}, 400, "toxicity"),
        ({**LATENCY, "name": "Bad Name!"}, 400, "name"),
        ({**LATENCY, "colour": "red"}, 400, "colour: unknown field"),
        ({"kind": "crash", "targets": ["switch->BNKA"]}, 400, "not services"),
        ({"kind": "pause", "targets": ["BNKZ"]}, 400, "not services"),
        ({"kind": "down", "targets": ["switch->BNKA"], "attributes": {"latency": 1}}, 400, "takes no attributes"),
        ([LATENCY], 400, "JSON object"),
    ],
)
def test_bad_fault_requests_are_refused_and_change_nothing(
    api: SimpleNamespace, body: Any, status: int, says: str
) -> None:
    code, answer = post(api.url + "/faults", body)
    assert code == status, answer
    assert says in answer["error"]
    assert api.toxiproxy.calls == [] and api.services.calls == []
    assert timeline(api.run_dir) == []
    assert get(api.url + "/state")[1]["active"] == []


def test_a_body_that_is_not_json_is_refused(api: SimpleNamespace) -> None:
    code, answer = call("POST", api.url + "/faults", raw=b"latency please")
    assert code == 400 and "not valid JSON" in answer["error"]
    assert api.toxiproxy.calls == [] and timeline(api.run_dir) == []


def test_a_browser_cannot_reach_the_control_api_directly(api: SimpleNamespace) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        api.url + "/faults", data=json.dumps(LATENCY).encode(), method="POST",
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 403
    assert api.toxiproxy.calls == [] and timeline(api.run_dir) == []


def test_the_control_api_refuses_a_host_that_is_not_its_own(api: SimpleNamespace) -> None:
    """DNS rebinding: a page whose name now points at 127.0.0.1 sends no Origin, only its own Host."""
    port = urlsplit(api.url).port
    assert port is not None
    json_ct = {"Content-Type": "application/json"}
    for host in (f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1"):
        code, answer = call("POST", api.url + "/faults", LATENCY, headers={**json_ct, "Host": host})
        assert code == 421 and "DNS rebinding" in answer["error"], (host, answer)
        assert call("GET", api.url + "/state", headers={"Host": host})[0] == 421
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:  # HTTP/1.0 allows no Host at all
        conn.sendall(b"GET /state HTTP/1.0\r\n\r\n")
        assert conn.makefile("rb").readline().split()[1] == b"421"
    assert api.toxiproxy.calls == [] and timeline(api.run_dir) == []
    # Its own address is served, by number or by name.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert call("GET", api.url + "/state", headers={"Host": host})[0] == 200


def test_a_good_fault_reaches_toxiproxy_and_the_timeline_and_heals(api: SimpleNamespace) -> None:
    code, answer = post(api.url + "/faults", {**LATENCY, "name": "slow-payee"})
    assert code == 201, answer
    assert api.toxiproxy.calls == [("add_toxic", "switch->BNKB", "slow-payee", "latency", {"latency": 1500})]
    state = get(api.url + "/state")[1]
    assert [f["name"] for f in state["active"]] == ["slow-payee"]
    assert next(link for link in state["topology"]["links"] if link["name"] == "switch->BNKB")["faults"]

    # A second fault with the same name would make the timeline ambiguous.
    assert post(api.url + "/faults", {**LATENCY, "name": "slow-payee"})[0] == 409
    assert post(api.url + "/faults/nope/heal")[0] == 404

    assert post(api.url + "/faults/slow-payee/heal")[0] == 200
    assert api.toxiproxy.calls[-1] == ("remove_toxic", "switch->BNKB", "slow-payee")
    events = [(e["event"], e["fault"], e["kind"], e["targets"]) for e in timeline(api.run_dir)]
    assert events == [
        ("apply", "slow-payee", "latency", ["switch->BNKB"]),
        ("heal", "slow-payee", "latency", ["switch->BNKB"]),
    ]
    # Healed names stay taken: faults.jsonl pairs applies and heals by name.
    assert post(api.url + "/faults", {**LATENCY, "name": "slow-payee"})[0] == 409


def test_a_fault_with_a_duration_heals_itself(api: SimpleNamespace) -> None:
    code, answer = post(api.url + "/faults", {"kind": "pause", "targets": ["BNKA"], "duration_s": 0.2})
    assert code == 201, answer
    # The timer sends SIGCONT before it records the heal: wait for the record, the later of the two.
    events = eventually(
        lambda: [e["event"] for e in timeline(api.run_dir)] if len(timeline(api.run_dir)) >= 2 else None,
        what="the timer's heal to reach the timeline",
    )
    assert events == ["apply", "heal"]
    assert ("SIGCONT", "BNKA") in api.services.calls


def test_a_service_cannot_be_crashed_while_paused(api: SimpleNamespace) -> None:
    assert post(api.url + "/faults", {"kind": "pause", "targets": ["BNKA"], "name": "frozen"})[0] == 201
    code, answer = post(api.url + "/faults", {"kind": "crash", "targets": ["BNKA"]})
    assert code == 409 and "frozen" in answer["error"]
    assert ("kill", "BNKA") not in api.services.calls


def test_schedules_come_only_from_the_scenario_folder_and_must_fit_the_topology(api: SimpleNamespace) -> None:
    code, answer = post(api.url + "/schedule", {"scenario": "../../etc/passwd"})
    assert code == 400 and "other-bank.yaml" in answer["error"]
    code, answer = post(api.url + "/schedule", {"scenario": "other-bank.yaml"})
    assert code == 400 and "switch->BNKE" in answer["error"]
    assert api.toxiproxy.calls == [] and timeline(api.run_dir) == []


def op(outcome: str, latency_ms: float, complete: float, reason: str | None = None, kind: str = "payment") -> bytes:
    line = {"op": kind, "id": "x", "outcome": outcome, "reason": reason, "latency_ms": latency_ms,
            "invoke": complete - latency_ms / 1000, "complete": complete}  # fmt: skip
    return json.dumps(line).encode() + b"\n"


def test_live_availability_counts_good_payments_as_the_checker_does(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    history = tmp_path / "history.jsonl"
    history.write_bytes(
        op("ok", 80, now - 30)  # good, but older than the last 10 s
        + op("ok", 90, now - 2)  # good
        + op("fail", 50, now - 2, "AM04")  # business reject: available
        + op("fail", 50, now - 1, "AB05")  # technical reject: not available
        + op("ok", 2500, now - 1)  # answered, but over the 2000 ms SLO
        + op("unknown", 10, now - 1, kind="status_query")  # not a payment
        + b'{"op": "payment", "outcome": "ok", "latency'  # still being written
    )
    live = LiveAvailability(history, slo_ms=2000)
    figures = live.poll(now)
    assert figures["last_10s"] == {"ops": 4, "good": 2, "ratio": 0.5}
    assert figures["session"] == {"ops": 5, "good": 3, "ratio": 0.6}
    with history.open("ab") as f:  # the rest of the line arrives
        f.write(b'_ms": 5, "invoke": 1, "complete": ' + str(now - 0.5).encode() + b"}\n")
    assert live.poll(now)["session"] == {"ops": 6, "good": 4, "ratio": 4 / 6}


def test_the_panel_offers_every_fault_kind_of_the_nemesis() -> None:
    offered = {k["kind"]: k for k in catalogue()}
    assert set(offered) == set(FAULT_KINDS)
    for kind in ON_SERVICES:
        assert offered[kind]["targets"] == "services" and offered[kind]["help"]
