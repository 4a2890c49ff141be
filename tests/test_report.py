"""The HTML report tells the story of a run from its files alone, and its numbers are result.json's.

The fixture (tests/fixtures/naive-run.tar.gz, made by make_naive_run.py) is a real run of naive components
under a slow payee link: it failed, with credit-without-debit anomalies, so every section has
something to show."""

from __future__ import annotations

import html
import json
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from harness.report import page as report
from harness.result import SCHEMA, reconciliation_breaks
from harness.runner import RunOutcome, check, console_summary

FIXTURE = Path(__file__).parent / "fixtures" / "naive-run.tar.gz"
SECTIONS = (
    "verdict", "scorecard", "timeline", "charts", "fault-windows", "scenario", "fault-schedule", "slo", "phases",
    "consistency", "anomaly-classes", "customer-view", "books", "conservation", "windows", "breakdown", "banks",
    "links", "environment", "reproduce", "versions",
)  # fmt: skip


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    runs = tmp_path_factory.mktemp("runs")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(runs, filter="data")
    run_dir = runs / "naive-run"
    outcome = check(run_dir, progress=None)
    page = (run_dir / "report.html").read_text()
    return run_dir, outcome.result, page


def text_of(page: str) -> str:
    """Visible text, tags stripped and entities decoded, whitespace collapsed."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def test_the_fixture_is_a_failed_run_with_anomalies(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, result, _ = checked
    assert result["verdict"] == "fail"
    assert result["consistency"]["reconciliation"]["anomaly_count"] > 0


def test_every_section_is_present(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, _, page = checked
    missing = [s for s in SECTIONS if f'id="{s}"' not in page]
    assert not missing, f"sections missing from the report: {missing}"


def test_banner_numbers_are_result_json_numbers(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, result, page = checked
    banner = text_of(page.split('id="verdict"')[1].split("</section>")[0])
    overall = result["availability"]["overall"]
    rec = result["consistency"]["reconciliation"]
    assert "Fail" in banner
    assert report.fmt_pct(overall["success_ratio"], 3) in banner
    breaks = reconciliation_breaks(rec)
    assert breaks is not None and breaks.total == rec["anomaly_count"] + 1  # the conservation invariant is broken too
    assert f"{breaks.total:,} reconciliation breaks ({rec['anomaly_count']:,} payments, books: conservation)" in banner
    assert f"{overall['operations']:,} payments" in banner
    assert f"{result['consistency']['customer_view']['lost_acknowledged']:,} acknowledged payments lost" in banner
    for failure in result["failures"]:
        assert failure in banner


def test_anomaly_counts_and_phase_figures_match(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, result, page = checked
    classes = text_of(page.split('id="anomaly-classes"')[1].split("</table>")[0])
    for cls, n in result["consistency"]["reconciliation"]["anomalies"].items():
        assert f"{cls.replace('_', ' ')} {n:,}" in classes
    phases = text_of(page.split('id="phases"')[1].split("</table>")[0])
    for name, stats in result["availability"]["phases"].items():
        if stats["operations"]:
            assert f"{name} " in phases
            assert f"{stats['operations']:,}" in phases
            assert report.fmt_ms(stats["p99_ms"]) in phases


def test_a_failed_invariant_shows_its_example_payment_ids(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, result, page = checked
    examples = result["consistency"]["reconciliation"]["examples"]
    assert examples, "the fixture must have anomaly examples"
    text = text_of(page)
    for cls, views in examples.items():
        assert cls.replace("_", " ") in text
        for v in views:
            assert v["payment_id"] in text
            # the three-way states of the payment are shown beside it
            row = text.split(v["payment_id"], 1)[1][:200]
            assert v["switch"] in row and v["payer"] in row and v["payee"] in row


def test_faults_are_named_as_the_scenario_names_them(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, result, page = checked
    schedule = text_of(page.split('id="fault-schedule"')[1].split("</table>")[0])
    for f in result["availability"]["faults"]:
        assert f["fault"] in schedule
        assert f["fault"] in text_of(page.split('id="fault-windows"')[1].split("</p>")[0])
    data = json.loads(html.unescape(page.split('id="chart-data" type="application/json">')[1].split("</script>")[0]))
    assert [f["name"] for f in data["faults"]] == [f["fault"] for f in result["availability"]["faults"]]


def test_the_page_is_self_contained_and_small(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, _, page = checked
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the report must not load anything"
    assert "<link" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert len(page.encode()) < 1_000_000


def test_reproduce_command_and_environment_are_shown(checked: tuple[Path, dict[str, Any], str]) -> None:
    _, result, page = checked
    text = text_of(page.split('id="environment"')[1])
    assert result["reproduce"] in text
    for key, value in result["environment"].items():
        assert key in text and str(value) in text


def test_harness_report_rebuilds_the_page_from_saved_files(checked: tuple[Path, dict[str, Any], str]) -> None:
    run_dir, _, page = checked
    (run_dir / "report.html").unlink()
    assert cli.main(["report", str(run_dir), "--reports", str(run_dir.parent)]) == 0
    again = (run_dir / "report.html").read_text()
    stamp = re.compile(r"Generated [^<]*UTC")
    assert stamp.sub("", again) == stamp.sub("", page)


def test_harness_report_names_a_directory_without_a_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", str(tmp_path), "--reports", str(tmp_path)]) == 2
    assert "harness check" in capsys.readouterr().err


# -- formatting and charts, without a run ---------------------------------------------------------


def test_a_miss_is_never_rounded_up_to_a_hundred_percent() -> None:
    assert report.fmt_pct(0.99999, 2) == "99.99 %"
    assert report.fmt_pct(1.0, 2) == "100.00 %"
    assert report.fmt_pct(0.5) == "50.00 %"
    assert report.fmt_pct(None) == report.NA


def test_money_and_durations_read_like_people_write_them() -> None:
    assert report.fmt_money(123456789, "NGN") == "NGN 1,234,567.89"
    assert report.fmt_money(-5) == "-0.05"
    assert report.fmt_duration(0.25) == "250 ms"
    assert report.fmt_duration(12.34) == "12.3 s"
    assert report.fmt_duration(7200) == "2.0 h"


def second(t: int, count: int = 10, good: int = 10, p99: float = 50.0) -> dict[str, Any]:
    return {"t": t, "count": count, "good": good, "p50_ms": p99 / 2, "p95_ms": p99, "p99_ms": p99, "errors": {}}


def avail_with(per_second: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "start": 1000.0,
        "end": 1000.0 + len(per_second),
        "per_second": per_second,
        "faults": [],
        "recoveries": [],
        "slo": {"success_ratio": 0.99, "latency_slo_ms": 2000},
    }


def test_long_runs_are_downsampled_without_hiding_a_latency_spike() -> None:
    seconds = [second(t) for t in range(3000)]
    seconds[1234] = second(1234, count=10, good=0, p99=1900.0)
    data = report.chart_data(avail_with(seconds), [], 1000.0)
    assert len(data["t"]) <= report.MAX_POINTS
    assert max(p for p in data["p99"] if p is not None) == 1900.0
    assert min(p for p in data["success_pct"] if p is not None) < 100


def test_a_short_run_keeps_one_point_per_second() -> None:
    data = report.chart_data(avail_with([second(t) for t in range(300)]), [], 1000.0)
    assert data["step_s"] == 1 and len(data["t"]) == 300


# -- the suite page -------------------------------------------------------------------------------


def fake_run(runs: Path, name: str, started: float, **figures: Any) -> Path:
    """A run directory holding only a result.json with the figures the suite page reads."""
    run_dir = runs / f"{name}-{int(started)}"
    run_dir.mkdir(parents=True)
    result = {
        "schema": SCHEMA,
        "scenario": {"name": name, "backend": "local"},
        "verdict": figures.get("verdict", "pass"),
        "failures": [],
        "availability": {
            "start": started,
            "overall": {"success_ratio": figures.get("availability", 1.0), "operations": 1000},
            "phases": {"fault": {"p99_ms": figures.get("p99", 100.0)}},
            "time_to_recover_s": figures.get("ttr", 1.0),
        },
        "consistency": {
            "reconciliation": {"anomaly_count": figures.get("anomalies", 0), "books": []},
            "customer_view": {"lost_acknowledged": 0},
            "time_to_consistency_s": 2.0,
        },
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def test_the_suite_page_flags_a_regression_against_the_previous_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "bank-cut", 100.0)
    fake_run(runs, "bank-cut", 200.0, availability=0.95, anomalies=3, ttr=9.0, verdict="fail")
    fake_run(runs, "steady", 100.0)
    fake_run(runs, "steady", 200.0)
    page = report.write_index(tmp_path, runs).read_text()
    text = text_of(page)
    assert "availability down" in text and "reconciliation breaks up" in text and "recovery slower" in text
    rows = {r["scenario"]: r for r in report.index_model(tmp_path, runs)["rows"]}
    assert rows["steady"]["flags"] == []
    assert rows["bank-cut"]["kind"] == "previous"
    assert 'href="runs/bank-cut-200/report.html"' in page


def test_a_named_baseline_is_what_the_latest_run_is_compared_with(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = fake_run(runs, "bank-cut", 100.0, ttr=1.0)
    fake_run(runs, "bank-cut", 200.0, ttr=8.0)
    fake_run(runs, "bank-cut", 300.0, ttr=8.5)  # no worse than the previous run, much worse than the baseline
    assert report.index_model(tmp_path, runs)["rows"][0]["flags"] == []
    assert cli.main(["baseline", str(good), "--reports", str(tmp_path)]) == 0
    shutil.rmtree(good)  # the baseline's figures were copied: cleaning runs away keeps the comparison
    row = report.index_model(tmp_path, runs)["rows"][0]
    assert row["kind"] == "baseline"
    assert any("recovery slower" in f for f in row["flags"])


def test_an_unreadable_run_does_not_hide_the_others(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    fake_run(runs, "steady", 100.0)
    (runs / "broken").mkdir()
    (runs / "broken" / "result.json").write_text("{ half written")
    page = report.write_index(tmp_path, runs).read_text()
    assert "steady" in page and "broken" in page


def test_runs_of_a_changed_scenario_are_not_compared(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = fake_run(runs, "random-chaos", 100.0, ttr=1.0)
    new = fake_run(runs, "random-chaos", 200.0, ttr=9.0, availability=0.5)
    (old / "scenario.yaml").write_text("faults: [{kind: latency, start: 2}]\n")
    (new / "scenario.yaml").write_text("faults: [{kind: crash, start: 5}]\n")
    row = report.index_model(tmp_path, runs)["rows"][0]
    assert not row["comparable"] and row["flags"] == []
    assert "not compared" in text_of(report.write_index(tmp_path, runs).read_text())
    (new / "scenario.yaml").write_text((old / "scenario.yaml").read_text())
    assert report.index_model(tmp_path, runs)["rows"][0]["flags"], "same scenario again: the regression shows"


def test_times_read_with_their_resolution_and_no_anomaly_opened_reads_so(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = fake_run(runs, "bank-cut", 100.0, ttr=0.305)
    result = json.loads((run / "result.json").read_text())
    result["availability"]["resolution_s"] = {"time_to_detect_s": 0.0, "time_to_recover_s": 0.01, "buckets_s": 1.0}
    result["consistency"].update(time_to_consistency_s=0.0, anomaly_opened=False)
    (run / "result.json").write_text(json.dumps(result))
    old = fake_run(runs, "steady", 100.0, ttr=1.5)  # written before resolutions and anomaly_opened
    text = text_of(report.write_index(tmp_path, runs).read_text())
    assert "305 ms (resolution 10 ms)" in text and "no anomaly opened" in text
    assert "1.5 s" in text and "2.0 s" in text  # an older result reads as it always did

    def console(result: dict[str, Any]) -> str:  # the fake results have no reconciliation to print
        consistency = {**result["consistency"], "reconciliation": None}
        return console_summary(RunOutcome(run, {**result, "consistency": consistency}))

    line = "recovery      time to recover 305 ms (resolution 10 ms); time to consistency no anomaly opened"
    assert line in console(result).splitlines()
    assert "time to recover 1.5 s; time to consistency 2.0 s" in console(json.loads((old / "result.json").read_text()))
