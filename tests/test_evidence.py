"""Evidence per fault: Toxiproxy's counters sampled by the nemesis, and the checker that says what
each fault did, on synthetic histories, timelines and counters (the real thing: test_evidence_real.py)."""

from __future__ import annotations

import html
import json
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness.checkers.evidence import evidence, scope_of
from harness.counters import read_counters
from harness.errors import RunFileError
from harness.faults import FaultSpec
from harness.nemesis import Nemesis, SchedulePlayer
from harness.runner import check, console_summary
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


# -- the checker, on a synthetic run ----------------------------------------------------------------

T0 = 1_800_000_000.0
SLO_MS = 2000.0


def op(
    i: int, at: float, payer: str = "BNKA", payee: str = "BNKB", outcome: str = "ok", latency: float = 20.0, **kw: Any
) -> dict[str, Any]:
    """A payment completed `at` seconds into the run."""
    row: dict[str, Any] = {
        "op": "payment", "id": f"p{i}", "payer": payer, "payee": payee, "amount": 100,
        "invoke": T0 + at - latency / 1000, "complete": T0 + at, "outcome": outcome,
        "status": "ACSC" if outcome == "ok" else None, "reason": None, "http": 200, "error": None,
        "latency_ms": latency,
    }  # fmt: skip
    row.update(kw)
    return row


def steady_load(start: float, end: float, per_s: int = 10, **kw: Any) -> list[dict[str, Any]]:
    """Healthy payments from BNKA to BNKB and from BNKC to BNKD, `per_s` a second each."""
    ops = []
    n = int((end - start) * per_s)
    for k in range(n):
        at = start + k / per_s
        ops.append(op(2 * k + int(start * 1000) * 10, at, **kw))
        ops.append(op(2 * k + 1 + int(start * 1000) * 10, at, payer="BNKC", payee="BNKD"))
    return ops


def timeline(name: str, kind: str, targets: list[str], apply: float, heal: float) -> list[dict[str, Any]]:
    return [
        {"event": "apply", "fault": name, "kind": kind, "targets": targets, "at": T0 + apply},
        {"event": "heal", "fault": name, "kind": kind, "targets": targets, "at": T0 + heal},
    ]


def counters(event: str, fault: str | None, at: float, down_received: int, down_sent: int) -> dict[str, Any]:
    links = {
        "BNKA->switch": {
            "upstream": {"received": 1000, "sent": 1000},
            "downstream": {"received": down_received, "sent": down_sent},
        }
    }
    return {
        "event": event,
        "fault": fault,
        "event_at": None if fault is None else T0 + at,
        "at": T0 + at,
        "links": links,
    }


def test_scope_follows_the_payment_path() -> None:
    assert scope_of(["customers->BNKA"]).label == "payments from BNKA"
    assert scope_of(["BNKA->switch", "switch->BNKB"]).label == "payments from BNKA or to BNKB"
    assert scope_of(["BNKC"]).label == "payments from or to BNKC"
    assert scope_of(["switch"]).label == "all payments"
    s = scope_of(["switch->BNKB"])
    assert s(op(1, 0, payee="BNKB")) and not s(op(2, 0, payer="BNKB", payee="BNKC"))


def test_a_reset_fault_shows_its_outcomes_errors_follow_ups_and_bytes() -> None:
    # 10 s of baseline, 10 s of resets on customers->BNKA, 10 s after.
    history = steady_load(0, 10) + steady_load(20, 30)
    for k in range(100):  # inside the window: BNKA's customers see resets on 30 payments
        at = 10 + k / 10
        if k % 10 < 3:
            history.append(op(10_000 + k, at, outcome="unknown", error="connection", http=None))
            history.append(op(10_000 + k, at + 0.5, outcome="ok") | {"op": "status_query"})
        else:
            history.append(op(10_000 + k, at))
        history.append(op(20_000 + k, at, payer="BNKC", payee="BNKD"))  # out of scope, untouched
    history.append(op(30_000, 15.0, outcome="fail", reason="AB06", status="RJCT"))
    history.append(op(30_001, 15.0, outcome="fail", reason="AM04", status="RJCT"))
    history.append(op(30_002, 16.0, outcome="unknown", status="PDNG"))
    faults = timeline("resets", "reset_peer", ["customers->BNKA"], 10, 20)
    samples = [
        counters("start", None, 0, 0, 0),
        counters("apply", "resets", 10, 5000, 5000),
        counters("heal", "resets", 20, 9000, 6500),
    ]
    samples[1]["links"]["customers->BNKA"] = samples[1]["links"].pop("BNKA->switch")
    samples[2]["links"]["customers->BNKA"] = samples[2]["links"].pop("BNKA->switch")
    ev = evidence(history, faults, samples, SLO_MS)
    [w] = ev["windows"]
    assert (w["fault"], w["scope"], w["apply"], w["heal"]) == ("resets", "payments from BNKA", 10.0, 20.0)
    assert w["payments"] == {
        "completed": 104, "ok": 71, "business_reject": 1, "technical_reject": 1, "pending": 1, "no_answer": 30,
        "unavailable": 32,
    }  # fmt: skip
    assert (w["connection_errors"], w["timeouts"], w["technical_reasons"]) == (30, 0, {"AB06": 1})
    assert (w["status_queries"], w["resends"]) == (30, 0)
    assert w["baseline"]["payments"] == 100 and w["baseline"]["unavailable"] == 0
    link = w["proxies"]["links"]["customers->BNKA"]
    assert link["downstream"] == {"received": 4000, "sent": 1500, "undelivered": 2500}
    assert link["upstream"]["undelivered"] == 0 and w["proxies"]["undelivered_bytes"] == 2500
    assert w["proxies"]["baseline_undelivered_bytes_per_s"] == 0.0
    assert w["observable_effect"] is True and ev["no_effect"] == []
    assert any("32 of 104 payments not available" in s for s in w["signals"])
    assert any("30 status queries" in s for s in w["signals"])
    assert any("2,500 bytes undelivered on customers->BNKA" in s for s in w["signals"])


def test_a_fault_that_changed_nothing_is_flagged() -> None:
    # Latency on a link no payment crosses (nobody pays to BNKE), and resets that lost no byte.
    history = steady_load(0, 30)
    faults = timeline("idle-link", "latency", ["switch->BNKE"], 10, 20) + timeline(
        "harmless", "reset_peer", ["BNKA->switch"], 12, 18
    )
    samples = [
        counters("start", None, 0, 0, 0),
        counters("apply", "idle-link", 10, 800, 800),
        counters("apply", "harmless", 12, 900, 900),
        counters("heal", "harmless", 18, 1200, 1200),
        counters("heal", "idle-link", 20, 1300, 1300),
    ]
    ev = evidence(history, faults, samples, SLO_MS)
    by_name = {w["fault"]: w for w in ev["windows"]}
    assert ev["no_effect"] == ["harmless", "idle-link"]
    idle, harmless = by_name["idle-link"], by_name["harmless"]
    assert idle["observable_effect"] is False and idle["signals"] == []
    assert idle["payments"]["completed"] == 0 and "nothing crossed its targets" in idle["no_effect_reason"]
    assert harmless["payments"]["completed"] == 61 and harmless["proxies"]["undelivered_bytes"] == 0
    assert "its links lost no byte" in harmless["no_effect_reason"]
    assert harmless["overlaps"] == ["idle-link"] and idle["overlaps"] == ["harmless"]


def test_the_same_fault_with_an_effect_is_not_flagged() -> None:
    """The flag above is not a constant: latency that doubles BNKA's p50 is an effect."""
    history = steady_load(0, 10) + steady_load(20, 30)
    history += [op(50_000 + k, 10 + k / 10, latency=300.0) for k in range(100)]
    history += [op(51_000 + k, 10 + k / 10, payer="BNKC", payee="BNKD") for k in range(100)]  # untouched
    faults = timeline("slow", "latency", ["BNKA->switch"], 10, 20)
    [w] = evidence(history, faults, [], SLO_MS)["windows"]
    assert w["observable_effect"] is True
    assert w["signals"] == ["p50 latency 300 ms vs 20 ms expected from the baseline; untouched payments x1.00"]
    assert w["proxies"] == {"links": {}, "note": "counters not available: no sample at its apply"}


def test_a_frozen_service_shows_as_missing_completions() -> None:
    history = steady_load(0, 10) + steady_load(14, 30)  # nothing completes while the switch is paused
    faults = timeline("freeze", "pause", ["switch"], 10, 14)
    ev = evidence(history, faults, [], SLO_MS)
    [w] = ev["windows"]
    assert w["scope"] == "all payments" and w["payments"]["completed"] == 2  # the two at the heal instant
    assert w["proxies"]["note"].startswith("a service fault") and w["observable_effect"] is True
    assert w["signals"] == ["0.5 payments/s completed vs 20.0/s expected from the baseline"]


def test_baseline_noise_is_not_an_effect() -> None:
    """A failure rate the baseline already had is not the fault's doing (3 sigma above it is)."""
    history = steady_load(0, 30)
    for k in range(0, 300, 50):  # 1 in 50 of BNKA's payments times out, all run long
        history.append(op(60_000 + k, k / 10, outcome="unknown", error="timeout", http=None))
    faults = timeline("mild", "latency", ["BNKA->switch"], 10, 20)
    [w] = evidence(history, faults, [], SLO_MS)["windows"]
    assert w["timeouts"] == 3 and w["baseline"]["unavailable"] == 2  # 10 s and 20 s are both inside
    assert w["observable_effect"] is False


# -- the report and the console, on the real fixture run --------------------------------------------

FIXTURE = Path(__file__).parent / "fixtures" / "naive-run.tar.gz"


@pytest.fixture
def fixture_run(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "naive-run"


def section(page: str) -> str:
    """The evidence section's visible text (tags stripped, whitespace collapsed)."""
    body = page.split('<h3 id="evidence">')[1].split('<h2 id="slo">')[0]
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_the_report_shows_each_fault_s_evidence_from_result_json(fixture_run: Path) -> None:
    outcome = check(fixture_run, progress=None)
    [w] = outcome.result["evidence"]["windows"]
    assert w["fault"] == "slow-payee-bnkb" and w["scope"] == "payments to BNKB" and w["observable_effect"]
    text = section((fixture_run / "report.html").read_text())
    assert f"payments to BNKB: {w['payments']['completed']:,}" in text
    assert f"{w['payments']['unavailable']:,} not available" in text
    assert f"{w['status_queries']:,} / {w['resends']:,}" in text
    for signal in w["signals"]:
        assert signal in text
    # A run from before proxy_counters.jsonl: the report says why there are no bytes.
    assert "counters not available: no sample at its apply" in text and "no observable effect" not in text
    page = (fixture_run / "report.html").read_text()
    assert page.index('id="fault-schedule"') < page.index('id="evidence"') < page.index('id="slo"')


def test_a_fault_with_no_effect_is_flagged_in_result_report_and_console(fixture_run: Path) -> None:
    with (fixture_run / "faults.jsonl").open("a") as f:  # a fault on a bank nobody is a customer of
        for event, at in (("apply", 1795453167.0), ("heal", 1795453169.0)):
            f.write(
                json.dumps({"event": event, "fault": "idle", "kind": "down", "targets": ["customers->BNKD"], "at": at})
                + "\n"
            )
    outcome = check(fixture_run, progress=None)
    assert outcome.result["evidence"]["no_effect"] == ["idle"]
    assert outcome.result["checks"]["evidence"]["verdict"] == "valid"  # flagged, not failed
    text = section((fixture_run / "report.html").read_text())
    assert "no observable effect idle: changed nothing this run could measure" in text
    assert "no payment it could touch was made: nothing crossed its targets" in text
    console = console_summary(outcome)
    assert "NO EFFECT     fault idle at " in console and "evidence      slow-payee-bnkb (payments to BNKB): " in console


def test_a_machine_wide_slowdown_is_not_the_fault_s_doing() -> None:
    """Measured on this 2-core host: a reset_peer at toxicity 0 saw its scope's p50 go from 157 to
    280 ms, because everything slowed. The untouched payments slowed as much, so it is no effect;
    the same slowdown on the fault's scope alone is one."""
    history = steady_load(0, 10)
    for k in range(100):  # inside the window, every payment is twice as slow, touched or not
        history.append(op(70_000 + k, 10 + k / 10, latency=40.0 + k % 7))
        history.append(op(71_000 + k, 10 + k / 10, payer="BNKC", payee="BNKD", latency=40.0 + k % 5))
    faults = timeline("noop", "reset_peer", ["BNKA->switch"], 10, 20)
    [w] = evidence(history, faults, [], SLO_MS)["windows"]
    assert w["p50_ms"] >= 2 * w["baseline"]["p50_ms"] and w["untouched"]["p50_factor"] >= 2
    assert w["observable_effect"] is False and w["signals"] == []
    only_touched = [o for o in history if not (o["payer"] == "BNKC" and o["complete"] >= T0 + 10)]
    only_touched += [op(72_000 + k, 10 + k / 10, payer="BNKC", payee="BNKD") for k in range(100)]
    [w] = evidence(only_touched, faults, [], SLO_MS)["windows"]
    assert w["observable_effect"] is True and w["signals"][0].startswith("p50 latency")
