"""Inside a real `harness ui`, a browser page of another site (or one reached by DNS rebinding) can
neither start load from Locust's own routes, nor break links from the Chaos tab, nor read the stats;
the page's own origin is served. No browser needed: the headers a browser would send are sent as is."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_webui import HarnessUI

pytestmark = pytest.mark.slow

LATENCY = {"kind": "latency", "targets": ["switch->BNKB"], "attributes": {"latency": 1500}}


def send(method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_locust_and_the_chaos_tab_refuse_other_origins_and_hosts(tmp_path: Path) -> None:
    ui = HarnessUI(tmp_path / "runs")
    try:
        base = ui.url.rstrip("/")
        port = urlsplit(base).port
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        start_load = b"user_count=4&spawn_rate=4"  # what Locust's own start button posts
        foreign = [
            {"Origin": "http://evil.example"},  # a page of another site
            {"Origin": "null"},  # a sandboxed frame or a file
            {"Origin": f"http://127.0.0.1:{port}.evil.example"},
            {"Host": f"evil.example:{port}"},  # DNS rebinding: no Origin, the attacker's name as Host
            {"Host": f"127.0.0.1:{port}", "Sec-Fetch-Site": "cross-site"},  # no Origin, but the browser says
        ]
        for headers in foreign:
            code, body = send("POST", base + "/swarm", start_load, {**form, **headers})
            assert code == 403 and "refused" in json.loads(body)["error"], (headers, code, body)
            code, body = send("POST", base + "/chaos/api/faults", json.dumps(LATENCY).encode(),
                              {"Content-Type": "application/json", **headers})  # fmt: skip
            assert code == 403, (headers, code, body)
        for headers in foreign[:4]:  # reading the stats or the session from elsewhere, too
            assert send("GET", base + "/stats/requests", headers=headers)[0] == 403, headers
            assert send("GET", base + "/chaos/api/state", headers=headers)[0] == 403, headers

        # Nothing happened: no user started, no fault applied.
        code, body = send("GET", base + "/stats/requests")
        stats = json.loads(body)
        assert code == 200 and stats["state"] == "ready" and stats["user_count"] == 0, stats
        code, body = send("GET", base + "/chaos/api/state")
        assert code == 200 and json.loads(body)["active"] == []
        # The page's own origin is served (the refusals above are not an outage).
        assert send("POST", base + "/stats/reset", b"", {"Origin": base, "Sec-Fetch-Site": "same-origin"}) == (
            200,
            "ok",
        )
        # The harness's control API behind the tab refuses a foreign Host as well.
        control = urlsplit(ui.up["control_url"])
        assert send("GET", ui.up["control_url"] + "/state", headers={"Host": f"evil.example:{control.port}"})[0] == 421

        assert ui.interrupt() == 0, ui.log.read_text()
    finally:
        ui.kill()
