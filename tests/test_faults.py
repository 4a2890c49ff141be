"""Fault kinds as data (harness/faults.py) and the nemesis that acts on them.

One table describes every kind; the scenario parser refuses schedules the nemesis could not heal
cleanly; `Nemesis.apply` is all-or-nothing. The nemesis runs here against fakes that keep state
(toxics per link, enabled links, each service's state) and fail on demand, so a rollback can be
checked target by target, without Toxiproxy, processes or timing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import pytest

from harness.errors import FaultError
from harness.faults import (
    FAULT_KINDS,
    FAULT_NAME,
    KINDS,
    FaultKind,
    FaultSpec,
    catalogue,
    service_conflict,
)
from harness.nemesis import Nemesis, SchedulePlayer
from harness.nemesis.injector import _MECHANISMS
from harness.scenario import ScenarioError, TopologySpec, parse
from harness.timeline import fault_windows, read_timeline

ROOT = Path(__file__).resolve().parents[1]
BANKS = ["BNKA", "BNKB", "BNKC"]
LINKS = TopologySpec(banks=len(BANKS)).link_names
SERVICES = ["switch", *BANKS]


# -- the table ------------------------------------------------------------------------------------


def test_the_table_has_one_entry_per_fault_kind() -> None:
    assert set(KINDS) == set(get_args(FaultKind)), "a FaultKind without a KINDS entry (or the reverse)"
    assert all(info.name == name for name, info in KINDS.items())
    assert tuple(KINDS) == FAULT_KINDS


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_says_what_its_readers_need(kind: str) -> None:
    info = KINDS[kind]
    assert info.mechanism in _MECHANISMS, f"{kind}: the nemesis has no apply/heal for {info.mechanism!r}"
    assert info.help and "\n" not in info.help
    if info.toxic or info.mechanism == "crash_loop":
        assert info.targets == ("links" if info.toxic else "services") and info.attributes
        assert set(info.defaults) == set(info.attributes), f"{kind}: the panel needs a default per attribute"
    else:
        assert not info.attributes and not info.defaults
    # The panel draws a service under a fault with this word; a link fault has none.
    assert (info.state is not None) == (info.targets == "services")


def test_the_catalogue_is_what_the_panel_draws() -> None:
    kinds = catalogue()
    assert [k["kind"] for k in kinds] == list(KINDS)
    assert all(set(k) == {"kind", "targets", "attributes", "defaults", "toxic", "help"} for k in kinds)
    by_kind = {k["kind"]: k for k in kinds}
    assert by_kind["latency"] == {
        "kind": "latency",
        "targets": "links",
        "attributes": {"latency": "added delay, ms", "jitter": "random +/- ms"},
        "defaults": {"latency": 1500, "jitter": 0},
        "toxic": True,
        "help": KINDS["latency"].help,
    }
    assert by_kind["crash"] == {
        "kind": "crash",
        "targets": "services",
        "attributes": {},
        "defaults": {},
        "toxic": False,
        "help": "kill -9; restarted when healed",
    }
    assert {k["kind"] for k in kinds if k["targets"] == "links" and not k["toxic"]} == {"down", "partition"}
    json.dumps(kinds)  # the control API sends it as it is


def test_the_run_directory_docs_list_the_kinds_of_the_table() -> None:
    docs = (ROOT / "docs" / "run-directory.md").read_text()
    faults_section = docs.split("## `faults.jsonl`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (links|services) \|", faults_section, flags=re.MULTILINE)
    assert rows == [(k.name, k.targets) for k in KINDS.values()]
    assert "`heal-failed`" in faults_section and "`error`" in faults_section


def test_the_data_layer_loads_no_nemesis_testbed_or_clients() -> None:
    code = (
        "import sys, harness.scenario, harness.faults; a = set(sys.modules); import harness.nemesis;"
        " b = set(sys.modules); print(repr((sorted(a), sorted(b))))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    parsing, nemesis = eval(out.stdout)  # a repr of two lists of module names

    def heavy(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
        return [m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes)]

    assert heavy(parsing, ("harness.nemesis", "harness.testbed", "toxiproxy", "docker")) == []
    assert heavy(nemesis, ("harness.testbed", "toxiproxy", "docker")) == []


# -- scenario files -------------------------------------------------------------------------------


def scenario(*faults: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "topology": {"banks": len(BANKS)}, "load": {"duration": 20}, "faults": list(faults)}


def test_overlapping_service_faults_are_refused_naming_both_and_the_fix() -> None:
    data = scenario(
        {"name": "frozen", "kind": "pause", "targets": "switch", "start": 2, "duration": 5},
        {"name": "frozen-again", "kind": "pause", "targets": "switch", "start": 4, "duration": 2},
    )
    with pytest.raises(ScenarioError) as refused:
        parse(data, "scenarios/x.yaml")
    assert str(refused.value) == (
        "scenarios/x.yaml: faults[1] 'frozen-again': pause of switch from 4 s to 6 s overlaps faults[0] 'frozen'"
        " (pause of switch, 2-7 s); one service fault at a time per service: move or shorten one so they do"
        " not overlap"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"kind": "crash", "targets": "BNKB"}, {"kind": "pause", "targets": "BNKB"}),
        ({"kind": "stop", "targets": ["BNKA", "BNKB"]}, {"kind": "disconnect", "targets": "BNKB"}),
    ],
)
def test_any_two_service_faults_on_one_service_may_not_overlap(first: dict[str, Any], second: dict[str, Any]) -> None:
    data = scenario({**first, "start": 2, "duration": 5}, {**second, "start": 6, "duration": 5})
    with pytest.raises(ScenarioError, match=r"faults\[1\]: .* of BNKB from 6 s to 11 s overlaps faults\[0\]"):
        parse(data, "x.yaml")


@pytest.mark.parametrize(
    "faults",
    [
        # Toxiproxy stacks toxics: two on one link at once are fine.
        [
            {"kind": "latency", "targets": "switch->BNKB", "start": 2, "duration": 8, "attributes": {"latency": 100}},
            {"kind": "bandwidth", "targets": "switch->BNKB", "start": 4, "duration": 8, "attributes": {"rate": 1}},
        ],
        # A link held down twice stays down until the last heal.
        [
            {"kind": "partition", "targets": "BNKB", "start": 2, "duration": 8},
            {"kind": "down", "targets": "switch->BNKB", "start": 4, "duration": 2},
        ],
        # Different services, and one window ending where the next starts (healed before applied).
        [
            {"kind": "pause", "targets": "BNKA", "start": 2, "duration": 8},
            {"kind": "crash", "targets": "BNKB", "start": 4, "duration": 2},
            {"kind": "crash", "targets": "BNKA", "start": 10, "duration": 2},
        ],
    ],
)
def test_faults_that_can_be_healed_cleanly_may_overlap(faults: list[dict[str, Any]]) -> None:
    assert len(parse(scenario(*faults), "x.yaml").faults) == len(faults)


@pytest.mark.parametrize("name", ["slow payee", "a/b", "Slow", "-x", "reset_peer", "x" * 41])
def test_fault_names_that_cannot_go_into_a_toxiproxy_url_are_refused(name: str) -> None:
    data = scenario({"name": name, "kind": "down", "targets": "switch->BNKA", "start": 1, "duration": 1})
    with pytest.raises(ScenarioError) as refused:
        parse(data, "x.yaml")
    message = str(refused.value)
    assert message.startswith("x.yaml: faults[0].name: ") and FAULT_NAME in message


def test_unnamed_faults_get_usable_names() -> None:
    data = scenario({"kind": "reset_peer", "targets": "switch->BNKA", "start": 1, "duration": 1})
    assert [f.name for f in parse(data, "x.yaml").named_faults()] == ["reset-peer-1"]
    assert re.fullmatch(FAULT_NAME, "x" * 40)


def test_service_conflict_names_the_holder_and_ignores_links() -> None:
    paused = FaultSpec(name="frozen", kind="pause", targets=["switch"], start=0, duration=1)
    crash = FaultSpec(name="boom", kind="crash", targets=["switch", "BNKA"], start=0, duration=1)
    assert service_conflict(crash, ["switch", "BNKA"], [(paused, ["switch"])]) == (
        "switch is already under pause fault 'frozen'; heal it first"
    )
    assert service_conflict(crash, ["BNKA"], [(paused, ["switch"])]) is None
    cut = FaultSpec(name="cut", kind="partition", targets=["BNKA"], start=0, duration=1)
    assert service_conflict(cut, ["switch->BNKA"], [(cut, ["switch->BNKA"])]) is None


# -- the nemesis ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeLink:
    name: str


class FakeProxy:
    """Toxiproxy's state as the nemesis leaves it; `fail` maps (operation, link) to an error."""

    def __init__(self) -> None:
        self.toxics: dict[str, set[str]] = {}
        self.disabled: set[str] = set()
        self.fail: dict[tuple[str, str], str] = {}
        self.resets = 0

    def _check(self, operation: str, link: FakeLink) -> None:
        if (operation, link.name) in self.fail:
            raise RuntimeError(self.fail[operation, link.name])

    def add_toxic(
        self, link: FakeLink, name: str, kind: str, attributes: dict[str, int], stream: str, toxicity: float
    ) -> None:
        self._check("add_toxic", link)
        self.toxics.setdefault(link.name, set()).add(name)

    def remove_toxic(self, link: FakeLink, name: str) -> None:
        self._check("remove_toxic", link)
        self.toxics.get(link.name, set()).discard(name)

    def set_enabled(self, link: FakeLink, enabled: bool) -> None:
        self._check("enable" if enabled else "disable", link)
        (self.disabled.discard if enabled else self.disabled.add)(link.name)

    def reset(self) -> None:
        self.resets += 1
        self.toxics.clear()
        self.disabled.clear()

    def state(self) -> tuple[dict[str, set[str]], set[str]]:
        return {k: v for k, v in self.toxics.items() if v}, set(self.disabled)


class FakeServices:
    """Each service's state; `fail` maps (operation, service) to an error."""

    service_names = SERVICES

    def __init__(self) -> None:
        self.states = dict.fromkeys(SERVICES, "running")
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], str] = {}

    def _do(self, operation: str, name: str, state: str) -> None:
        self.calls.append((operation, name))
        if (operation, name) in self.fail:
            raise RuntimeError(self.fail[operation, name])
        self.states[name] = state

    def kill(self, name: str) -> None:
        self._do("kill", name, "crashed")

    def restart(self, name: str) -> None:
        self._do("restart", name, "running")

    def signal(self, name: str, sig: signal.Signals) -> None:
        self._do(sig.name, name, "paused" if sig == signal.SIGSTOP else "running")

    def stop_service(self, name: str) -> None:
        self._do("stop", name, "stopped")

    def start_service(self, name: str) -> None:
        self._do("start", name, "running")

    def power_loss(self, name: str) -> dict[str, object]:
        self._do("power_loss", name, "powered off")
        return {"changes": 2, "bytes": 8192, "files": {"x.db-wal": 2}}


@pytest.fixture
def rig(tmp_path: Path) -> tuple[Nemesis, FakeProxy, FakeServices]:
    proxy, services = FakeProxy(), FakeServices()
    nemesis = Nemesis(proxy, {n: FakeLink(n) for n in LINKS}, services, tmp_path / "faults.jsonl")
    return nemesis, proxy, services


def events(nemesis: Nemesis) -> list[tuple[str, str]]:
    return [(e["event"], e["fault"]) for e in read_timeline(nemesis.timeline_path)]


def fault(kind: str, targets: list[str], name: str = "f") -> FaultSpec:
    # A crash loop's window must hold its kills (harness/faults.py crash_loop_slot_s).
    return FaultSpec(name=name, kind=kind, targets=targets, start=0, duration=1 if kind != "crash_loop" else 9,
                     attributes=dict(KINDS[kind].defaults))  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_applies_and_heals_back_to_where_it_started(
    rig: tuple[Nemesis, FakeProxy, FakeServices], kind: str
) -> None:
    nemesis, proxy, services = rig
    before = (proxy.state(), dict(services.states))
    nemesis.apply(fault(kind, ["BNKB"] if KINDS[kind].targets == "services" else ["switch->BNKB"]))
    if kind == "crash_loop":  # its loop kills from its own thread: wait for the first kill (bounded)
        by = time.monotonic() + 30
        while not services.calls and time.monotonic() < by:
            time.sleep(0.01)
    # A restart is over once applied (the service runs again); it still must have been done.
    assert (proxy.state(), services.states) != before or services.calls, f"{kind} did nothing"
    nemesis.heal("f")
    assert (proxy.state(), services.states) == before
    assert nemesis.active == {} and events(nemesis) == [("apply", "f"), ("heal", "f")]


def test_a_power_loss_says_what_it_took(rig: tuple[Nemesis, FakeProxy, FakeServices]) -> None:
    nemesis, _, services = rig
    nemesis.apply(fault("power_loss", ["BNKA", "BNKB"]))
    assert services.states["BNKA"] == services.states["BNKB"] == "powered off"
    applied = read_timeline(nemesis.timeline_path)[0]
    assert applied["lost"] == {s: {"changes": 2, "bytes": 8192, "files": {"x.db-wal": 2}} for s in ("BNKA", "BNKB")}
    nemesis.heal("f")
    assert services.calls[-2:] == [("restart", "BNKA"), ("restart", "BNKB")]


def test_a_toxic_that_fails_on_the_second_target_is_removed_from_the_first(
    rig: tuple[Nemesis, FakeProxy, FakeServices],
) -> None:
    nemesis, proxy, _ = rig
    proxy.fail["add_toxic", "switch->BNKB"] = "HTTP 500"
    with pytest.raises(FaultError) as failed:
        nemesis.apply(fault("latency", ["switch->BNKA", "switch->BNKB", "switch->BNKC"], name="slow"))
    assert "'slow'" in str(failed.value) and "on switch->BNKB: HTTP 500" in str(failed.value)
    assert proxy.state() == ({}, set())  # switch->BNKA's toxic is gone; switch->BNKC's never came
    assert nemesis.active == {}
    assert events(nemesis) == [] and fault_windows(read_timeline(nemesis.timeline_path)) == []
    # Nothing is left half-done, so the same fault applies cleanly once Toxiproxy works.
    del proxy.fail["add_toxic", "switch->BNKB"]
    nemesis.apply(fault("latency", ["switch->BNKA", "switch->BNKB"], name="slow"))
    assert proxy.state() == ({"switch->BNKA": {"slow"}, "switch->BNKB": {"slow"}}, set())
    assert events(nemesis) == [("apply", "slow")]


def test_a_failed_partition_leaves_down_only_what_another_fault_holds_down(
    rig: tuple[Nemesis, FakeProxy, FakeServices],
) -> None:
    nemesis, proxy, _ = rig
    nemesis.apply(fault("down", ["BNKA->switch"], name="cut"))
    proxy.fail["disable", "switch->BNKA"] = "proxy gone"
    with pytest.raises(FaultError, match="on switch->BNKA: proxy gone"):
        nemesis.apply(fault("partition", ["BNKA"], name="island"))  # customers->BNKA, BNKA->switch, switch->BNKA
    assert proxy.state() == ({}, {"BNKA->switch"})
    assert list(nemesis.active) == ["cut"] and events(nemesis) == [("apply", "cut")]


def test_a_failed_service_fault_resumes_the_services_it_had_reached(
    rig: tuple[Nemesis, FakeProxy, FakeServices],
) -> None:
    nemesis, _, services = rig
    services.fail["SIGSTOP", "BNKB"] = "no such process"
    with pytest.raises(FaultError, match="'freeze' \\(pause\\) on BNKB: no such process"):
        nemesis.apply(fault("pause", ["BNKA", "BNKB", "BNKC"], name="freeze"))
    assert services.calls == [("SIGSTOP", "BNKA"), ("SIGSTOP", "BNKB"), ("SIGCONT", "BNKA")]
    assert set(services.states.values()) == {"running"}
    assert nemesis.active == {} and events(nemesis) == []


def test_a_failed_local_disconnect_leaves_none_of_the_service_links_down(
    rig: tuple[Nemesis, FakeProxy, FakeServices],
) -> None:
    nemesis, proxy, _ = rig
    proxy.fail["disable", "switch->BNKB"] = "proxy gone"
    with pytest.raises(FaultError, match="on BNKB: proxy gone"):
        nemesis.apply(fault("disconnect", ["BNKA", "BNKB"]))
    assert proxy.state() == ({}, set())
    assert nemesis.active == {} and events(nemesis) == []


def test_a_second_fault_on_a_paused_service_is_refused_before_anything_is_done(
    rig: tuple[Nemesis, FakeProxy, FakeServices],
) -> None:
    nemesis, _, services = rig
    nemesis.apply(fault("pause", ["switch"], name="frozen"))
    with pytest.raises(ValueError, match="switch is already under pause fault 'frozen'"):
        nemesis.apply(fault("crash", ["BNKA", "switch"], name="boom"))
    assert services.calls == [("SIGSTOP", "switch")]
    assert list(nemesis.active) == ["frozen"] and events(nemesis) == [("apply", "frozen")]


def test_a_heal_that_fails_on_one_target_heals_the_others_and_says_so_in_the_timeline(
    rig: tuple[Nemesis, FakeProxy, FakeServices],
) -> None:
    nemesis, proxy, services = rig
    nemesis.apply(fault("pause", ["BNKA", "BNKB"], name="freeze"))
    nemesis.apply(fault("latency", ["switch->BNKC"], name="slow"))
    services.fail["SIGCONT", "BNKA"] = "container gone"
    with pytest.raises(FaultError, match="could not heal fault 'freeze' \\(pause\\) on BNKA: container gone"):
        nemesis.heal("freeze")
    assert services.states["BNKB"] == "running" and "freeze" not in nemesis.active
    [window] = [w for w in fault_windows(read_timeline(nemesis.timeline_path)) if w.fault == "freeze"]
    assert window.heal is not None and window.heal_failed == "BNKA: container gone"
    # heal_all goes on past a failing heal and resets Toxiproxy as the backstop.
    nemesis.apply(fault("pause", ["BNKA"], name="freeze-2"))
    nemesis.heal_all()
    assert nemesis.active == {} and proxy.resets == 1 and proxy.state() == ({}, set())
    assert events(nemesis)[-2:] == [("heal-failed", "freeze-2"), ("heal", "slow")]
    assert all(w.heal is not None for w in fault_windows(read_timeline(nemesis.timeline_path)))


def test_a_schedule_of_zero_length_plays_through_the_nemesis(rig: tuple[Nemesis, FakeProxy, FakeServices]) -> None:
    """The schedule player is exported with the nemesis; it heals what it applied when it stops."""
    nemesis, proxy, _ = rig
    player = SchedulePlayer(nemesis, [fault("down", ["switch->BNKA"], name="cut")], t0=0.0)  # long past: no waiting
    player.start()
    player.join(10)
    assert not player.is_alive() and player.error is None
    assert events(nemesis) == [("apply", "cut"), ("heal", "cut")] and proxy.state() == ({}, set())
