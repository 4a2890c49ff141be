"""`harness ui` in a real headless Chromium, as a person would use it: start load from Locust's
page, refuse a bad fault, apply a latency fault from the Chaos tab and see availability fall,
heal it, stop the test, open the session's report; then Ctrl-C leaves no process behind.

Screenshots of the panel are saved in the session's run directory (screenshots/), to look at."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import eventually

from harness.report.browser import CHROMIUM_ARGS, BrowserUnavailable, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SLOW_LINKS = ["customers->BNKA", "customers->BNKB"]
LATENCY_MS = 3000  # above the 2000 ms latency SLO: no payment is good while it lasts


def browser_or_skip() -> str:
    """Skip without a browser, unless HARNESS_REQUIRE_BROWSER is set (CI installs one, and must not skip)."""
    try:
        path = chromium_path()
        import playwright.sync_api  # noqa: F401
    except (BrowserUnavailable, ImportError) as exc:
        if os.environ.get("HARNESS_REQUIRE_BROWSER"):
            raise
        pytest.skip(f"needs a real browser: {exc}")
    return path


class HarnessUI:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.log = out / "harness-ui.out"
        out.mkdir(parents=True)
        self.proc = subprocess.Popen(
            # 2 banks and 60 s of load at most keep the test light on a shared CPU.
            [sys.executable, "-m", "harness.cli", "ui", "--banks", "2", "--users", "10", "--max-run-time", "60",
             "--out", str(out)],
            cwd=PROJECT_ROOT, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            # A job started in the background by a non-interactive shell (a CI script, `cmd &`)
            # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: give the child
            # the default disposition, as a terminal would, so Ctrl-C below means what it says.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        found = eventually(self._printed_url, timeout=60, what=f"`harness ui` to print its URL (see {self.log})")
        self.url, self.run_dir = found
        self.up = json.loads((out / "up.json").read_text())

    def _printed_url(self) -> tuple[str, Path] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"harness ui exited with {self.proc.returncode}:\n{self.log.read_text()}")
        text = self.log.read_text()
        url = re.search(r"Chaos tab: (http://127\.0\.0\.1:\d+/)", text)
        run_dir = re.search(r"run directory: (\S+)", text)
        return (url.group(1), Path(run_dir.group(1))) if url and run_dir else None

    def interrupt(self) -> int:
        """Ctrl-C, as a person would press it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(90)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def harness_ui(tmp_path: Path) -> Iterator[HarnessUI]:
    browser_or_skip()
    ui = HarnessUI(tmp_path / "runs")
    try:
        yield ui
    finally:
        ui.kill()  # only if the test failed before its own Ctrl-C


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def test_chaos_panel_drives_faults_and_checks_the_session(harness_ui: HarnessUI) -> None:
    from playwright.sync_api import expect, sync_playwright

    shots = harness_ui.run_dir / "screenshots"
    shots.mkdir()
    page_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda e: page_errors.append(str(e)))
        page.goto(harness_ui.url)

        # Locust's own start form, pre-filled by `harness ui` (10 users, bounded run time).
        expect(page.locator("input[name=userCount]")).to_have_value("10")
        page.get_by_role("button", name="Start").click()
        page.get_by_role("tab", name="Chaos").click()
        panel = page.locator("#chaos-panel")
        expect(panel).to_be_visible()
        recent = panel.locator("[data-bind=avail-recent]")
        expect(recent).to_have_text(re.compile(r"\d+\.\d %"), timeout=20_000)  # payments are being answered

        # A bad fault: the harness refuses it with a message, and nothing is applied.
        for link in SLOW_LINKS:
            panel.locator(f'input[data-target="{link}"]').check()
        panel.locator('fieldset[data-kind="latency"] input[name=latency]').fill("-5")
        panel.locator("[data-action=apply]").click()
        notice = panel.locator("[data-bind=notice]")
        expect(notice).to_contain_text("400")
        expect(notice).to_contain_text("must not be negative")
        expect(panel.locator("[data-bind=active]")).to_have_text("none")
        page.screenshot(path=str(shots / "1-bad-input-refused.png"), full_page=True)

        # The real thing: 3 s of latency between every customer and their bank.
        panel.locator('fieldset[data-kind="latency"] input[name=latency]').fill(str(LATENCY_MS))
        panel.locator("[data-action=apply]").click()
        expect(notice).to_contain_text(f"applied latency-1 on {', '.join(SLOW_LINKS)}")
        expect(panel.locator("tr[data-fault=latency-1]")).to_be_visible()
        # Availability reacts: once the last 10 s hold only slow payments, it is far below the SLO.
        expect(recent).to_have_class(re.compile(r"\bbad\b"), timeout=25_000)
        page.screenshot(path=str(shots / "2-latency-fault-active.png"), full_page=True)

        panel.locator("tr[data-fault=latency-1] button[data-heal]").click()
        expect(notice).to_contain_text("healed latency-1")
        expect(panel.locator("[data-bind=active]")).to_have_text("none")

        # Stop the test from Locust's own button: test_stop makes the harness heal, settle and check.
        page.get_by_role("button", name="Stop").first.click()
        state = panel.locator("[data-bind=session-state]")
        expect(state).to_have_text(re.compile(r"checked: (PASS|FAIL)"), timeout=60_000)
        expect(panel.locator("[data-bind=verdict]")).to_contain_text("0 reconciliation breaks")
        page.screenshot(path=str(shots / "3-session-checked.png"), full_page=True)

        with page.context.expect_page() as opened:
            panel.locator("[data-bind=report-link]").click()
        report = opened.value
        report.wait_for_load_state()
        expect(report.locator("body")).to_contain_text("ui-session")
        report.screenshot(path=str(shots / "4-report.png"), full_page=True)
        browser.close()
    assert page_errors == []

    run_dir = harness_ui.run_dir
    for name in ("scenario.yaml", "system.json", "history.jsonl", "faults.jsonl", "consistency.jsonl",
                 "ledgers.json", "environment.json", "command.txt", "result.json", "report.html"):  # fmt: skip
        assert (run_dir / name).exists(), name
    faults: list[dict[str, Any]] = [json.loads(line) for line in (run_dir / "faults.jsonl").read_text().splitlines()]
    ours = [(f["event"], f["kind"], f["targets"]) for f in faults if f["fault"] == "latency-1"]
    assert ours == [("apply", "latency", SLOW_LINKS), ("heal", "latency", SLOW_LINKS)]
    assert faults[0]["attributes"] == {"latency": LATENCY_MS, "jitter": 0}
    # The session is saved as a scenario that replays its fault (`harness run RUN_DIR/scenario.yaml`).
    replay = yaml.safe_load((run_dir / "scenario.yaml").read_text())
    assert [(f["name"], f["kind"], f["targets"]) for f in replay["faults"]] == [("latency-1", "latency", SLOW_LINKS)]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["scenario"]["name"] == "ui-session"
    assert result["consistency"]["reconciliation"]["anomaly_count"] == 0, result["failures"]

    # Ctrl-C: a clean exit, and every process of the session is gone.
    assert harness_ui.interrupt() == 0, harness_ui.log.read_text()
    deadline = time.monotonic() + 10  # the kernel may take a moment to release the listening sockets
    services = [
        harness_ui.up["toxiproxy"] + "/version",
        *(u + "/health" for u in harness_ui.up["direct_urls"].values()),
    ]
    while any(answers(u) for u in services) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [u for u in services if answers(u)] == []
    assert not answers(harness_ui.url)
    assert not (harness_ui.out / "up.json").exists()
