"""A real headless Chromium opens a generated report: no console error, no network request, the
charts and the fault windows are drawn. The screenshot is saved next to the report, to look at."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest

from harness.report import page as report
from harness.report.browser import BrowserUnavailable, chromium_path, open_report
from harness.runner import check

FIXTURE = Path(__file__).parent / "fixtures" / "naive-run.tar.gz"

pytestmark = pytest.mark.browser


def browser_or_skip() -> None:
    """Skip without a browser, unless HARNESS_REQUIRE_BROWSER is set (CI installs one, and must not skip)."""
    try:
        chromium_path()
        import playwright  # noqa: F401
    except (BrowserUnavailable, ImportError) as exc:
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            raise
        pytest.skip(f"needs a real browser: {exc}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser_or_skip()
    runs = tmp_path_factory.mktemp("runs")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(runs, filter="data")
    check(runs / "naive-run", progress=None)
    return runs / "naive-run"


def test_a_report_opens_offline_with_its_charts_and_fault_windows(run_dir: Path) -> None:
    seen = open_report(run_dir / "report.html", screenshot=run_dir / "report.png")
    assert seen.console_errors == []
    assert seen.requests == [], "a report must not fetch anything"
    assert seen.charts == 5
    assert seen.fault_windows == 1  # the fixture's one slow-payee fault, drawn on the time axis
    assert seen.screenshot is not None and seen.screenshot.stat().st_size > 50_000
    keep = Path("reports") / "screenshots"  # for people to look at after a test run
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(seen.screenshot, keep / "report-naive-fixture.png")


def test_the_suite_page_opens_offline_and_links_to_the_report(run_dir: Path) -> None:
    page = report.write_index(run_dir.parent, run_dir.parent)
    seen = open_report(page)
    assert seen.console_errors == [] and seen.requests == []
    assert 'href="naive-run/report.html"' in page.read_text()
