"""Fault kinds as data (harness/faults.py): one table describes every kind; the scenario parser
refuses schedules the nemesis could not heal cleanly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest

from harness.faults import (
    FAULT_KINDS,
    FAULT_NAME,
    KINDS,
    FaultKind,
    FaultSpec,
    catalogue,
    service_conflict,
)
from harness.scenario import ScenarioError, parse

ROOT = Path(__file__).resolve().parents[1]
BANKS = ["BNKA", "BNKB", "BNKC"]


# -- the table ------------------------------------------------------------------------------------


def test_the_table_has_one_entry_per_fault_kind() -> None:
    assert set(KINDS) == set(get_args(FaultKind)), "a FaultKind without a KINDS entry (or the reverse)"
    assert all(info.name == name for name, info in KINDS.items())
    assert tuple(KINDS) == FAULT_KINDS


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_says_what_its_readers_need(kind: str) -> None:
    info = KINDS[kind]
    assert info.help and "\n" not in info.help
    if info.toxic:
        assert info.targets == "links" and info.attributes
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


def test_the_data_layer_loads_no_nemesis_testbed_or_clients() -> None:
    code = "import sys, harness.scenario, harness.faults; print(repr(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    parsing = eval(out.stdout)  # a repr of a list of module names

    def heavy(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
        return [m for m in modules if m.split(".")[0] in prefixes or m.startswith(prefixes)]

    assert heavy(parsing, ("harness.nemesis", "harness.testbed", "toxiproxy", "docker")) == []


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
