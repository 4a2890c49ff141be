"""Open a report in a real headless Chromium: what a reader's browser would do, checked.

Used by `harness report --screenshot` and by the browser tests. Needs the `playwright` Python
package and a Chromium binary (Debian's `chromium`, or $CHROMIUM); Playwright's own browser
download is never used, so this works offline.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# Keep the browser from calling home: a report must make no network request of its own, and the
# test counts every request the page makes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]


class BrowserUnavailable(RuntimeError):
    pass


def chromium_path() -> str:
    """The Chromium to drive, or a message saying how to get one."""
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrowserUnavailable(
        "no Chromium found: install Debian's `chromium` (apt-get install -y chromium) or set CHROMIUM=/path/to/chrome"
    )


@dataclass
class PageCheck:
    """What happened when the page was opened."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL except the page itself
    charts: int = 0
    fault_windows: int = 0
    screenshot: Path | None = None


def open_report(report: Path, screenshot: Path | None = None, width: int = 1280) -> PageCheck:
    """Load a report from disk, let its scripts run, record console errors and requests, and
    optionally save a full-page screenshot."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BrowserUnavailable("the `playwright` package is not installed (pip install playwright)") from exc
    url = report.resolve().as_uri()
    check = PageCheck(url=url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: check.console_errors.append(f"uncaught: {e}"))
            page.on("request", lambda r: check.requests.append(r.url) if r.url != url else None)
            page.goto(url, wait_until="load")
            page.wait_for_function("document.body.dataset.charts !== undefined", timeout=10_000)
            check.charts = int(page.evaluate("document.body.dataset.charts"))
            check.fault_windows = int(page.evaluate("document.body.dataset.faultWindows || '0'"))
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
                check.screenshot = screenshot
        finally:
            browser.close()
    return check
