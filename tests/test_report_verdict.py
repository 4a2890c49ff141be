"""A verdict a reader gets in ten seconds (issue 10, item 6): the banner is made of the same check
verdicts as the scorecard's judged rows, context rows are visibly not verdicts, a naive scenario
that caught its anomalies reads "anomalies caught as expected", reconciliation breaks are one count
everywhere, a null expectation is no target, and a check that crashed still gets a page saying so.

Every test runs the real checkers on a copy of the report fixture (tests/fixtures/naive-run.tar.gz,
see test_report.py) with its expectations changed, as if it had been run with them."""

from __future__ import annotations

import html
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.checkers import checks
from harness.checkers.checks import RunInputs
from harness.checkers.reconcile import Reconciliation
from harness.fmt import fmt_money
from harness.report import page as report
from harness.result import CheckVerdict, reconciliation_breaks
from harness.runner import check, console_summary

FIXTURE = Path(__file__).parent / "fixtures" / "naive-run.tar.gz"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("fixture")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(runs, filter="data")
    return runs / "naive-run"


@pytest.fixture
def run_dir(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / "naive-run"
    shutil.copytree(pristine, copy)
    return copy


def expect(run_dir: Path, section: str, **values: object) -> None:
    scenario = yaml.safe_load((run_dir / "scenario.yaml").read_text())
    scenario["expect"][section].update(values)
    (run_dir / "scenario.yaml").write_text(yaml.safe_dump(scenario))


def checked(run_dir: Path) -> tuple[dict[str, Any], str]:
    outcome = check(run_dir, progress=None)
    return outcome.result, (run_dir / "report.html").read_text()


def text_of(fragment: str) -> str:
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", fragment, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def section(page: str, start: str, end: str = "</table>") -> str:
    return page.split(start, 1)[1].split(end, 1)[0]


def banner_of(page: str) -> tuple[str, str]:
    """(the banner's verdict class, its text)."""
    banner = section(page, 'class="banner ', "</section>")
    return banner.split('"', 1)[0], text_of(banner.split(">", 1)[1])


def scorecard_rows(page: str) -> list[dict[str, str]]:
    """Each row of the scorecard: its kind (judged | context), status, check, and the text of its cells."""
    table = section(page, 'id="scorecard"')
    rows = []
    for tr in re.findall(r"<tr class=\"(judged|context)\"(.*?)</tr>", table, flags=re.S):
        kind, rest = tr
        attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', rest.split(">", 1)[0]))
        cells = [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", rest, flags=re.S)]
        rows.append({"kind": kind, **attrs, "name": cells[0], "measured": cells[2], "result": cells[3]})
    return rows


def agrees(result: dict[str, Any], page: str) -> str:
    """Assert the banner and the scorecard cannot disagree; return the banner's verdict."""
    shown, _ = banner_of(page)
    rows = scorecard_rows(page)
    judged = [r for r in rows if r["kind"] == "judged"]
    statuses = {r["status"] for r in judged}
    made_of_rows = "fail" if "missed" in statuses else "unknown" if "unknown" in statuses else "pass"
    assert {"expected": "pass"}.get(shown, shown) == made_of_rows == result["verdict"]
    for r in rows:  # a context row never looks like a verdict
        if r["kind"] == "context":
            assert r["result"] == "context" and r["status"] == "context", r
        else:
            assert r["result"] in ("met", "missed", "caught as expected", "unknown"), r
    for name, v in result["checks"].items():  # every check that did not hold has a row saying so
        mine = {r["status"] for r in judged if r["check"] == name}
        if v["verdict"] == "invalid":
            assert "missed" in mine, (name, rows)
        if v["verdict"] == "unknown":
            assert mine == {"unknown"}, (name, rows)
    return shown


# -- the banner is made of the scorecard's checks -------------------------------------------------


def test_a_pass_has_no_missed_row_beneath_it_and_tiers_are_context(run_dir: Path) -> None:
    expect(run_dir, "consistency", verdict="anomalies_detected")
    result, page = checked(run_dir)
    assert result["verdict"] == "pass"
    assert agrees(result, page) == "expected"
    rows = scorecard_rows(page)
    # 99.295 % misses every tier: said in words, as context, not as a red "missed" under the banner.
    tiers = [r for r in rows if r["name"].startswith("Availability tier")]
    assert len(tiers) == 3 and all(r["kind"] == "context" for r in tiers)
    assert "missed" not in {r["result"] for r in rows}
    assert "Context: figures no check judges (not part of the verdict)" in text_of(section(page, 'id="scorecard"'))


def test_a_failed_run_shows_its_failed_checks_as_missed_rows(run_dir: Path) -> None:
    result, page = checked(run_dir)
    assert agrees(result, page) == "fail"
    missed = {r["check"] for r in scorecard_rows(page) if r["status"] == "missed"}
    assert missed == {"consistency", "time_to_consistency"}


def test_an_overall_availability_target_is_a_judged_row(run_dir: Path) -> None:
    expect(run_dir, "availability", overall_success_ratio=0.999)  # measured 0.99295
    result, page = checked(run_dir)
    assert agrees(result, page) == "fail"
    row = next(r for r in scorecard_rows(page) if r["name"] == "Availability, whole run")
    assert (row["check"], row["status"], row["measured"]) == ("availability", "missed", "99.295 %")


# -- naive components that caught their anomalies -------------------------------------------------


def test_a_naive_scenario_that_caught_its_anomalies_reads_caught_as_expected(run_dir: Path) -> None:
    expect(run_dir, "consistency", verdict="anomalies_detected", max_time_to_consistency_s=None)
    _, page = checked(run_dir)
    shown, words = banner_of(page)
    assert shown == "expected" and words.startswith("Anomalies caught as expected")
    assert "Pass" not in words and 'class="banner pass"' not in page
    assert "<title>ANOMALIES CAUGHT AS EXPECTED" in page
    row = next(r for r in scorecard_rows(page) if r["check"] == "consistency")
    assert row["result"] == "caught as expected"
    assert ".banner.expected" in page  # styled apart from pass (blue), see base.html.j2
    assert "PASS (anomalies caught as expected)" in console_summary(check(run_dir, progress=None))
    index = report.write_index(run_dir.parent.parent, run_dir.parent).read_text()
    assert '<span class="tag expected">caught as expected</span>' in index


def test_a_naive_scenario_that_caught_nothing_fails(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expect(run_dir, "consistency", verdict="anomalies_detected")
    monkeypatch.setattr(RunInputs, "reconciliation", property(lambda self: Reconciliation()))
    result, page = checked(run_dir)
    assert agrees(result, page) == "fail"
    row = next(r for r in scorecard_rows(page) if r["check"] == "consistency")
    assert (row["status"], row["measured"]) == ("missed", "0")


# -- reconciliation breaks: one count ------------------------------------------------------------


def test_reconciliation_breaks_are_one_count_in_banner_scorecard_console_and_suite_page(run_dir: Path) -> None:
    result, page = checked(run_dir)
    rec = result["consistency"]["reconciliation"]
    breaks = reconciliation_breaks(rec)
    assert breaks is not None
    assert (breaks.payments, breaks.books, breaks.total) == (12, ("conservation",), 13)
    _, banner = banner_of(page)
    assert "13 reconciliation breaks (12 payments, books: conservation)" in banner
    row = next(r for r in scorecard_rows(page) if r["name"] == "Reconciliation breaks left open")
    assert row["measured"] == "13 (12 payments, books: conservation)"
    said = text_of(section(page, 'id="consistency"', "</p>"))
    assert "12 anomalous payments; with 1 books invariant broken, 13 reconciliation breaks" in said
    console = console_summary(check(run_dir, progress=None))
    assert "13 reconciliation breaks (12 payments, books: conservation)" in console
    index = report.write_index(run_dir.parent.parent, run_dir.parent)
    suite = text_of(section(index.read_text(), 'id="suite"'))
    assert "Reconciliation breaks" in suite
    assert report.index_model(run_dir.parent.parent, run_dir.parent)["rows"][0]["latest"]["breaks"] == 13


def test_the_suite_page_names_the_load_model_of_each_availability(run_dir: Path) -> None:
    result, _ = checked(run_dir)
    describe = result["availability"]["load"]["describe"]
    index = report.write_index(run_dir.parent.parent, run_dir.parent)
    suite = section(index.read_text(), 'id="suite"')
    assert f'<span class="small load-model">{describe}</span>' in suite, text_of(suite)
    # A result from before the open model: closed-loop customers, and the page says so.
    del result["availability"]["load"]
    assert report.run_summary(result)["load_model"] == "closed model"


def test_a_baseline_saved_before_breaks_were_counted_is_counted_the_same_way(tmp_path: Path) -> None:
    old = {"anomalies": 12, "books_failing": ["conservation"], "verdict": "fail"}
    (tmp_path / report.BASELINES_FILE).write_text(json.dumps({"x": old}))
    assert report.load_baselines(tmp_path)["x"]["breaks"] == 13


# -- a null expectation is no target --------------------------------------------------------------


def test_a_null_expectation_shows_no_target(run_dir: Path) -> None:
    expect(run_dir, "availability", baseline_success_ratio=None, steady_success_ratio=None)
    expect(run_dir, "consistency", max_time_to_consistency_s=None)
    result, page = checked(run_dir)
    phases = section(page, 'id="phases"')
    assert "≥" not in text_of(phases), text_of(phases)
    for name in ("baseline", "steady"):
        row = text_of(re.search(rf"<tr><td><b>{name}</b>.*?</tr>", phases, flags=re.S).group(0))  # type: ignore[union-attr]
        assert row.endswith("no target"), row
    assert "Success ratio (%), no target" in page
    data = json.loads(html.unescape(page.split('id="chart-data" type="application/json">')[1].split("</script>")[0]))
    assert data["slo_pct"] is None  # and so no target line is drawn
    rows = scorecard_rows(page)
    assert not [r for r in rows if r["name"].startswith("Availability, ")]  # nothing judged availability per phase
    ttc = next(r for r in rows if r["name"] == "Time to consistency")
    assert ttc["kind"] == "context" and "no objective set" in text_of(section(page, 'id="scorecard"'))
    agrees(result, page)


# -- a check that crashed -------------------------------------------------------------------------


def crashing(_: object) -> CheckVerdict:
    raise ZeroDivisionError("division by zero")


@pytest.mark.parametrize("name", list(checks.CHECKS))
def test_a_check_that_crashed_still_gets_a_page_whose_banner_says_unknown(
    run_dir: Path, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expect(run_dir, "consistency", verdict="anomalies_detected")  # every other check holds
    monkeypatch.setitem(checks.CHECKS, name, crashing)
    result, page = checked(run_dir)
    assert "report.html could not be written" not in capsys.readouterr().err
    assert result["verdict"] == "unknown"
    assert agrees(result, page) == "unknown"
    _, words = banner_of(page)
    assert words.startswith("Unknown: a check could not run") and f"({name})" in words
    assert "<title>UNKNOWN" in page
    row = next(r for r in scorecard_rows(page) if r["check"] == name)
    assert row["measured"] == "could not run: ZeroDivisionError: division by zero"


def test_when_the_reconciliation_itself_crashes_the_page_says_what_is_not_known(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: RunInputs) -> Reconciliation:
        raise KeyError("transfers")

    monkeypatch.setattr(RunInputs, "reconciliation", property(broken))
    result, page = checked(run_dir)
    assert {n for n, v in result["checks"].items() if v["verdict"] == "unknown"} == {
        "consistency", "time_to_consistency", "customer_view"
    }  # fmt: skip
    assert agrees(result, page) == "unknown"
    said = "Reconciliation was not measured: the consistency check could not run (KeyError: 'transfers')"
    assert said in text_of(page)


# -- money in one format --------------------------------------------------------------------------


def test_money_reads_one_way_in_the_report_and_the_console(run_dir: Path) -> None:
    result, page = checked(run_dir)
    text = text_of(page)
    system = json.loads((run_dir / "system.json").read_text())
    windows = json.loads((run_dir / "ledgers.json").read_text())["switch"]["windows"]
    rec = result["consistency"]["reconciliation"]
    cur = system["currency"]
    assert cur == "NGN"
    amounts = [
        system["banks"][0]["net_debit_cap"],
        *rec["totals"].values(),
        *(w["transfer_value"] for w in windows),
        *(v for w in windows for v in w["net_positions"].values()),
        *(e["amount"] for examples in rec["examples"].values() for e in examples),
    ]
    for minor in amounts:
        assert fmt_money(minor, cur) in text, minor
    # The books checks quote amounts in the same format: in the books table, the banner and the console.
    delta = rec["totals"]["conservation_delta"]
    line = f"customer money + held in flight - opening = {fmt_money(delta, cur, signed=True)} (must be 0)"
    assert line == "customer money + held in flight - opening = +NGN 1,022.40 (must be 0)"
    console = console_summary(check(run_dir, progress=None))
    assert line in text_of(section(page, 'id="books"')) and line in banner_of(page)[1] and line in console
    assert f"{delta:+,}" not in text and f"{delta:+,}" not in console  # raw minor units, as before
    # Tables that used to print an amount without its currency: example payments and net positions.
    examples = section(page, "<h3>Example payments</h3>", "<h3>Settlement")
    cells = re.findall(r'<td class="n">([^<]*\d\.\d\d)</td>', examples)
    assert cells and all(c.startswith(f"{cur} ") for c in cells), cells
    net = text_of(section(page, 'id="windows"'))
    for w in windows:
        for bank, v in w["net_positions"].items():
            assert f"{bank} {fmt_money(v, cur)}" in net


# -- the per-link table ---------------------------------------------------------------------------


def link_rows(page: str) -> dict[str, dict[str, Any]]:
    rows = {}
    for tr in re.findall(
        r"<tr class=\"(touched|)\"><td class=\"mono\">(.*?)</tr>", section(page, 'id="links"'), flags=re.S
    ):
        touched, rest = tr
        cells = [text_of(c) for c in re.findall(r"(?:^|<td[^>]*>)(.*?)</td>", rest, flags=re.S)]
        rows[cells[0]] = {"touched": touched == "touched", "ops": int(cells[1].replace(",", ""))}
    return rows


def test_each_link_counts_the_payments_that_crossed_it_and_only_held_links_are_marked(run_dir: Path) -> None:
    result, page = checked(run_dir)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    ledgers = json.loads((run_dir / "ledgers.json").read_text())
    links = link_rows(page)
    assert list(links) == [  # every link of the topology (harness.links), customers' first
        "customers->BNKA", "customers->BNKB", "customers->BNKC", "BNKA->switch", "BNKB->switch", "BNKC->switch",
        "switch->BNKA", "switch->BNKB", "switch->BNKC",
    ]  # fmt: skip
    # Payments their payer bank rejected alone (a blocked payer account) never reached the switch.
    switch_saw = {t["payment_id"] for t in ledgers["switch"]["transfers"]}
    credited = {c["payment_id"] for b in ledgers["banks"].values() for c in b["credits"]}
    for bank in ("BNKA", "BNKB", "BNKC"):
        as_payer = [op for op in history if op["payer"] == bank]
        alone = [op for op in as_payer if op["id"] not in switch_saw and op["reason"] == "AC06"]
        assert links[f"customers->{bank}"]["ops"] == len(as_payer)
        assert links[f"{bank}->switch"]["ops"] == len(as_payer) - len(alone)
        as_payee = [op for op in history if op["payee"] == bank]
        assert links[f"switch->{bank}"]["ops"] == sum(1 for op in as_payee if op["id"] in credited) + sum(
            1 for op in as_payee if op["id"] in switch_saw and op["id"] not in credited and op["reason"] == "AB05"
        )
    assert sum(links[f"{b}->switch"]["ops"] for b in ("BNKA", "BNKB", "BNKC")) < len(history)  # not a copy of the banks
    # The fixture's one fault held switch->BNKB: that link is marked, not BNKB's other two.
    assert result["faults"][0]["targets"] == ["switch->BNKB"]
    assert [name for name, row in links.items() if row["touched"]] == ["switch->BNKB"]


def test_the_fault_marker_follows_what_each_fault_held() -> None:
    faults = [
        {"event": "apply", "fault": "killed", "kind": "crash", "targets": ["switch"], "at": 1.0},
        {"event": "apply", "fault": "cut", "kind": "disconnect", "targets": ["BNKC"], "at": 2.0,
         "via": "toxiproxy", "links": ["customers->BNKC", "BNKC->switch", "switch->BNKC"]},
        {"event": "apply", "fault": "slow", "kind": "latency", "targets": ["BNKA->switch"], "at": 3.0},
    ]  # fmt: skip
    banks, links = report._touched(faults)
    assert links == {"customers->BNKC", "BNKC->switch", "switch->BNKC", "BNKA->switch"}
    assert "switch->BNKA" not in links and "customers->BNKA" not in links
    assert [f["name"] for f in report.service_faults(faults)] == ["killed"]  # named under the table instead
    rows = report.link_breakdown([], [], 2000.0, (banks, links), ["BNKA", "BNKB", "BNKC"])
    assert [r["name"] for r in rows if r["touched"]] == [
        "customers->BNKC",
        "BNKA->switch",
        "BNKC->switch",
        "switch->BNKC",
    ]
