"""Malformed scenario files are refused before anything starts, cheaply, naming the file, the field and
the fix: a corpus of mistakes and attacks (YAML alias bombs, duplicate keys, non-UTF-8 bytes, huge files)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from harness.cli import main as harness_main
from harness.scenario import MAX_SCENARIO_BYTES, ScenarioError, load

GOOD = """name: ok
load: {duration: 20}
faults:
  - {name: slow, kind: latency, targets: switch->BNKB, start: 5, duration: 5, attributes: {latency: 100}}
"""

ALIAS_BOMB = """name: bomb
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

# (file content, what the error must say): each names the field or the line, and what to do.
CORPUS: dict[str, tuple[str | bytes, str]] = {
    "alias-bomb": (ALIAS_BOMB, r"line 3.*alias \(\*a\) is not allowed.*write the value out"),
    "one-alias": ("name: x\nload: &l {duration: 10}\nother: *l\n", r"alias \(\*l\) is not allowed"),
    "duplicate-top-key": ("name: a\nname: b\n", r"line 2.*duplicate key 'name' \(first at line 1\); keep one"),
    "duplicate-nested-key": ("name: a\nload: {duration: 10, duration: 20}\n", r"duplicate key 'duration'"),
    "not-utf8": (b"name: caf\xe9\n", r"line 1: not UTF-8 text \(byte 0xe9\); save it as UTF-8"),
    "not-utf8-later": (b"name: ok\n\n# \xff\xfe\n", r"line 3: not UTF-8"),
    "not-yaml": ("name: [unclosed\n", r"line 2, column 1: while parsing a flow sequence expected ',' or ']'"),
    "a-list": ("- name: x\n", r"a scenario must be a mapping with at least a 'name'"),
    "empty": ("", r"a scenario must be a mapping"),
    "no-name": ("load: {duration: 10}\n", r"name: Field required"),
    "bad-name": ("name: Has Spaces\n", r"name: String should match pattern"),
    "unknown-field": ("name: x\nlaod: {duration: 10}\n", r"laod: unknown field; fields here are"),
    "unknown-load-field": ("name: x\nload: {rate: 5, rampup: 3}\n", r"load.rampup: unknown field"),
    "users-under-open-model": (
        "name: x\nload: {users: 5, duration: 10}\n",
        r"load: users applies to the closed model only .*give `rate` \(arrivals per second\).*set `model: closed`",
    ),
    "rate-under-closed-model": (
        "name: x\nload: {model: closed, rate: 5, max_in_flight: 9}\n",
        r"load: rate and max_in_flight apply to the open model only; with `model: closed` give `users`",
    ),
    "unknown-load-model": ("name: x\nload: {model: half-open}\n", r"load.model: Input should be 'open' or 'closed'"),
    "unknown-kind": (
        "name: x\nfaults: [{kind: meteor, targets: switch, start: 1, duration: 1}]\n",
        r"faults\[0\].kind: Input should be",
    ),
    "unknown-target": (
        "name: x\nfaults: [{kind: latency, targets: switch->ZBNK, start: 1, duration: 1}]\n",
        r"faults\[0\].targets: .*'switch->ZBNK'.*links are",
    ),
    "fault-after-load": (
        "name: x\nload: {duration: 10}\nfaults: [{kind: down, targets: BNKA, start: 8, duration: 5}]\n",
        r"faults\[0\] ends at 13s, after the load stops at 10s; shorten it or lengthen load.duration",
    ),
    "negative-start": (
        "name: x\nfaults: [{kind: down, targets: BNKA, start: -1, duration: 5}]\n",
        r"faults\[0\].start: Input should be greater than or equal to 0",
    ),
    "attribute-of-another-toxic": (
        "name: x\nfaults: [{kind: latency, targets: BNKA, start: 1, duration: 1, attributes: {rate: 5}}]\n",
        r"attributes \['rate'\] do not apply to a latency fault",
    ),
    "fault-name-with-slash": (
        "name: x\nfaults: [{name: a/b, kind: down, targets: BNKA, start: 1, duration: 1}]\n",
        r"faults\[0\].*'a/b'",
    ),
    "overlapping-pauses": (
        "name: x\nfaults:\n  - {kind: pause, targets: switch, start: 2, duration: 5}\n"
        "  - {kind: pause, targets: switch, start: 4, duration: 2}\n",
        r"faults\[1\].*pause of switch.*overlaps faults\[0\].*one service fault at a time",
    ),
    "crash-and-pause-one-bank": (
        "name: x\nfaults:\n  - {kind: crash, targets: BNKA, start: 2, duration: 5}\n"
        "  - {kind: pause, targets: BNKA, start: 3, duration: 1}\n",
        r"overlaps faults\[0\]",
    ),
    "timeouts-out-of-order": (
        "name: x\ntopology: {payee_timeout_s: 3, switch_timeout_s: 2}\n",
        r"payee_timeout_s \(3.0\) must be shorter than topology.switch_timeout_s",
    ),
    "too-many-banks": ("name: x\ntopology: {banks: 27}\n", r"topology.banks: Input should be less than or equal to 26"),
    "unknown-payer-bank": ("name: x\nload: {payer_banks: [ZBNK]}\n", r"load.payer_banks: \['ZBNK'\] are not banks"),
}


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_a_malformed_file_is_refused_naming_file_field_and_fix(case: str, tmp_path: Path) -> None:
    content, expected = CORPUS[case]
    path = tmp_path / f"{case}.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    tracemalloc.start()
    try:
        with pytest.raises(ScenarioError, match=expected) as refused:
            load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(refused.value)
    assert message.startswith(f"{path}: "), message  # the file, first
    assert len(message) < 2000, f"a {len(message):,}-character message teaches nothing"
    assert peak < 20 * 2**20, f"refusing {case} took {peak / 2**20:.0f} MiB"


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD + "#" * MAX_SCENARIO_BYTES)
    with pytest.raises(ScenarioError, match=rf"huge.yaml: {path.stat().st_size:,} bytes; a scenario file may have"):
        load(path)


def test_the_corpus_differs_from_a_good_file_only_by_its_mistake(tmp_path: Path) -> None:
    """The refusals above are about the mistakes, not about a loader that refuses everything."""
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert load(path).faults[0].name == "slow"


def test_harness_list_reports_a_bad_file_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"name: caf\xe9\n")
    (tmp_path / "good.yaml").write_text(GOOD)
    assert harness_main(["list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "bad.yaml  INVALID:" in out and "not UTF-8" in out
    assert "good.yaml  [latency;" in out


@pytest.mark.parametrize("spec", [{"rate": 80, "max_in_flight": 50}, {"model": "closed", "users": 7}])
def test_a_dumped_scenario_loads_again_under_either_load_model(tmp_path: Path, spec: dict[str, object]) -> None:
    """Run directories and replayable sessions write every default out: the other model's fields must
    not come with them, or the file would be refused when it is checked or replayed."""
    from harness.scenario import Scenario, as_data, dump

    scenario = Scenario.model_validate({"name": "x", "load": spec})
    path = tmp_path / "scenario.yaml"
    path.write_text(dump(scenario))
    again = load(path)
    assert again.load == scenario.load and Scenario.model_validate(as_data(scenario)).load == scenario.load
