"""Evidence per fault: Toxiproxy's counters sampled by the nemesis, and the checker that says what
each fault did, on synthetic histories, timelines and counters (the real thing: test_evidence_real.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.counters import read_counters
from harness.errors import RunFileError
from harness.faults import FaultSpec
from harness.nemesis import Nemesis, SchedulePlayer
from harness.testbed.proxies import parse_metrics
from harness.timeline import read_timeline

LABELS = 'listener="127.0.0.1:1",proxy="BNKA__to__switch",upstream="127.0.0.1:2"'
METRICS = f"""\
# HELP toxiproxy_proxy_received_bytes_total
# TYPE toxiproxy_proxy_received_bytes_total counter
toxiproxy_proxy_received_bytes_total{{direction="downstream",{LABELS}}} 2302
toxiproxy_proxy_received_bytes_total{{direction="upstream",{LABELS}}} 474
toxiproxy_proxy_sent_bytes_total{{direction="downstream",{LABELS}}} 1494
toxiproxy_proxy_sent_bytes_total{{direction="upstream",{LABELS}}} 4.74e+02
go_threads 8
"""


def test_toxiproxy_metrics_are_read_per_proxy_and_direction() -> None:
    assert parse_metrics(METRICS) == {
        "BNKA__to__switch": {
            "downstream": {"received": 2302, "sent": 1494},
            "upstream": {"received": 474, "sent": 474},
        }
    }
    assert parse_metrics("go_threads 8\n") == {}


# -- the nemesis samples the counters ---------------------------------------------------------------


class Link:
    def __init__(self, name: str) -> None:
        self.name = name


class CountingProxy:
    """A Toxiproxy whose counters grow by 100 received / 60 sent bytes downstream per read."""

    def __init__(self) -> None:
        self.reads = 0
        self.broken = False

    def byte_counters(self, links: Any) -> dict[str, dict[str, dict[str, int]]]:
        if self.broken:
            raise OSError("connection refused")
        self.reads += 1
        grown = {
            "upstream": {"received": 0, "sent": 0},
            "downstream": {"received": 100 * self.reads, "sent": 60 * self.reads},
        }
        return {link.name: grown for link in links}

    def add_toxic(self, *args: Any) -> None: ...
    def remove_toxic(self, *args: Any) -> None: ...
    def set_enabled(self, *args: Any) -> None: ...
    def reset(self) -> None: ...


class NoServices:
    service_names: list[str] = []


def spec(name: str = "resets") -> FaultSpec:
    return FaultSpec(name=name, kind="reset_peer", targets=["BNKA->switch"], start=0, duration=1)


def test_the_nemesis_samples_every_link_at_start_apply_and_heal_paired_with_the_timeline(tmp_path: Path) -> None:
    proxy = CountingProxy()
    links = {n: Link(n) for n in ("BNKA->switch", "switch->BNKA")}
    nemesis = Nemesis(proxy, links, NoServices(), tmp_path / "faults.jsonl", tmp_path / "proxy_counters.jsonl")  # type: ignore[arg-type]
    player = SchedulePlayer(nemesis, [spec()], t0=0.0)  # long past: plays at once
    player.start()
    player.join(10)
    assert player.error is None
    samples = read_counters(tmp_path / "proxy_counters.jsonl")
    timeline = read_timeline(tmp_path / "faults.jsonl")
    assert [(s["event"], s["fault"]) for s in samples] == [("start", None), ("apply", "resets"), ("heal", "resets")]
    assert [s["event_at"] for s in samples[1:]] == [e["at"] for e in timeline]  # the exact pairing key
    assert samples[1]["at"] <= timeline[0]["at"] and samples[2]["at"] >= timeline[1]["at"]  # outside the window
    assert set(samples[0]["links"]) == set(links)


def test_a_counter_read_that_fails_is_recorded_and_the_fault_still_goes_ahead(tmp_path: Path) -> None:
    proxy = CountingProxy()
    proxy.broken = True
    nemesis = Nemesis(
        proxy, {"BNKA->switch": Link("BNKA->switch")}, NoServices(), tmp_path / "f.jsonl", tmp_path / "c.jsonl"
    )  # type: ignore[arg-type]
    nemesis.apply(spec())
    nemesis.heal("resets")
    samples = read_counters(tmp_path / "c.jsonl")
    assert [s["event"] for s in samples] == ["apply", "heal"]
    assert all("connection refused" in s["error"] and "links" not in s for s in samples)
    assert [e["event"] for e in read_timeline(tmp_path / "f.jsonl")] == ["apply", "heal"]


def test_a_nemesis_without_a_counters_path_or_source_samples_nothing(tmp_path: Path) -> None:
    nemesis = Nemesis(CountingProxy(), {"BNKA->switch": Link("BNKA->switch")}, NoServices(), tmp_path / "f.jsonl")  # type: ignore[arg-type]
    nemesis.apply(spec())
    nemesis.heal("resets")
    assert not (tmp_path / "c.jsonl").exists() and read_counters(tmp_path / "c.jsonl") == []


def test_a_bad_counters_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "proxy_counters.jsonl"
    path.write_text(json.dumps({"event": "apply", "at": 1.0, "links": {}}) + "\n")
    with pytest.raises(RunFileError, match=r"proxy_counters.jsonl:1: a apply sample needs the 'fault'"):
        read_counters(path)
