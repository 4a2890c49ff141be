"""Fault kinds as data (harness/faults.py): one table describes every kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from harness.faults import (
    FAULT_KINDS,
    KINDS,
    FaultKind,
    catalogue,
)

ROOT = Path(__file__).resolve().parents[1]


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
