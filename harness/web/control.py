"""The chaos panel's control API: the harness side of `harness ui` (and of `harness up`).

Why two processes talk over loopback HTTP: Locust's web UI lives in a Locust process, which
gevent monkey-patches on import; the Testbed, the Nemesis, the SchedulePlayer and the
ConsistencySampler are plain threads and subprocesses that must stay out of gevent (harness/load/control.py
never imports Locust for the same reason). So the harness process owns the topology and serves
this small JSON API on 127.0.0.1 (a stdlib ThreadingHTTPServer on a random port), and the
Locust-side plugin (harness/web/panel.py) forwards the panel's requests to it. Because the API
belongs to the topology rather than to Locust, `harness up` serves it too, and a plain
`locust -f harness/load/locustfile.py` finds it through reports/runs/up.json.

    GET  /state                 topology, fault catalogue, active faults, live availability,
                                open anomalies, schedule, session (what the panel draws)
    POST /faults                apply {kind, targets, attributes?, duration_s?, stream?, toxicity?, name?}
    POST /faults/NAME/heal      heal one fault
    POST /faults/heal-all       stop the schedule and heal every fault
    POST /schedule              play a scenario file's faults from now {scenario: "switch-crash.yaml"}
    POST /schedule/stop         stop it (its faults are healed)
    POST /finish                heal, wait for in-doubt payments, settle, write the run directory and
                                check it (runner.finish_run + runner.check, in the background; see /state)
    GET  /report, /result       the session's report.html and result.json

Safe by default: loopback only, and only as 127.0.0.1:PORT (a foreign Host header, the shape of DNS
rebinding, gets 421; any Origin header gets 403: browsers come through Locust's UI); a fault may
name only this testbed's links and services; a request is validated completely before anything is
applied, and bad input gets a 4xx with a message that says what to fix. Every fault, from the
panel or from a schedule, goes through the Nemesis, so the session's faults.jsonl is the same fault
timeline as a scripted run's.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from harness.web.loopback import host_refusal
from harness.web.session import LOOPBACK, ChaosSession, Conflict, InvalidRequest, NotApplied, NotFound, SessionError

# Each refusal of the session, with its HTTP status: declared once, translated once (in _dispatch).
STATUS: dict[type[SessionError], int] = {InvalidRequest: 400, NotFound: 404, Conflict: 409, NotApplied: 502}


# -- the HTTP server ----------------------------------------------------------------------------------


class ControlServer:
    """The session's JSON API on 127.0.0.1 (random port unless given), in a daemon thread."""

    def __init__(self, session: ChaosSession, port: int = 0) -> None:
        self.session = session
        routes = _routes(session)
        control = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "payswitch-chaos-control"

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                # A page whose name was re-pointed at 127.0.0.1 (DNS rebinding) sends no Origin, but
                # its Host is still that name: 421, this server is not the one the browser meant.
                refused = host_refusal(self.headers.get("Host"), control.port)
                if refused:
                    self._send(421, {"error": refused})
                    return
                # Only the Locust-side plugin calls this API. A browser sends Origin on a cross-site
                # request, and a JSON body cannot be posted cross-site without a preflight we never answer.
                if self.headers.get("Origin"):
                    self._send(403, {"error": "browsers reach the chaos panel through Locust's web UI, not here"})
                    return
                body: Any = None
                if method == "POST" and not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    self._send(415, {"error": "send the request body as application/json"})
                    return
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    raw = self.rfile.read(length) if length else b""
                    try:
                        body = json.loads(raw) if raw.strip() else {}
                    except ValueError:
                        self._send(400, {"error": "the request body is not valid JSON"})
                        return
                handler = _match(routes, method, path)
                if handler is None:
                    self._send(404, {"error": f"no such endpoint: {method} {path}"})
                    return
                try:
                    status, payload = handler(body)
                except SessionError as exc:
                    status, payload = STATUS[type(exc)], {"error": str(exc)}
                except Exception as exc:  # a bug or a broken service: the panel shows it, the server lives on
                    status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
                self._send(status, payload)

            def _send(self, status: int, payload: Any) -> None:
                if isinstance(payload, bytes):  # report.html
                    data, ctype = payload, "text/html; charset=utf-8"
                else:
                    data, ctype = json.dumps(payload, default=str).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the panel polls every few seconds; the session log says what changed

        self.httpd = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="chaos-control", daemon=True
        )

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> ControlServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


Route = Callable[[Any], tuple[int, Any]]


def _routes(s: ChaosSession) -> dict[tuple[str, str], Route]:
    def file(path: Path) -> Route:
        name = path.name

        def serve(_: Any) -> tuple[int, Any]:
            if not path.exists():
                raise NotFound(f"{name} is not written yet: it appears when the session is checked")
            return 200, path.read_bytes() if name.endswith(".html") else json.loads(path.read_text())

        return serve

    return {
        ("GET", "/state"): lambda _: (200, s.state()),
        ("POST", "/faults"): lambda body: (201, s.apply(body)),
        ("POST", "/faults/heal-all"): lambda _: (200, s.heal_all()),
        ("POST", "/faults/*/heal"): lambda name: (200, s.heal(name)),
        ("POST", "/schedule"): lambda body: (202, s.start_schedule(body)),
        ("POST", "/schedule/stop"): lambda _: (200, s.stop_schedule()),
        ("POST", "/finish"): lambda _: (202, s.finish()),
        ("GET", "/report"): file(s.rundir.report),
        ("GET", "/result"): file(s.rundir.result),
    }


def _match(routes: dict[tuple[str, str], Route], method: str, path: str) -> Callable[[Any], tuple[int, Any]] | None:
    if (method, path) in routes:
        return routes[(method, path)]
    parts = path.split("/")
    if method == "POST" and len(parts) == 4 and parts[1] == "faults" and parts[3] == "heal":
        heal = routes[("POST", "/faults/*/heal")]
        name = unquote(parts[2])
        return lambda _body: heal(name)
    return None


def reproduce_command(argv: list[str]) -> str:
    return "harness " + " ".join(shlex.quote(a) for a in argv)
