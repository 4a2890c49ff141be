"""The Chaos panel inside Locust's web UI: the Locust side of `harness ui`.

Built only on Locust's extension points, no fork: a custom argument (`--chaos-url`), a Flask
blueprint on `environment.web_ui.app` (the panel's JSON routes and its static JS/CSS), a "Chaos"
entry in `template_args["extended_tabs"]`, an `after_request` hook that appends the panel's
markup (templates/chaos_panel.html.j2) to Locust's page, shown while the Chaos tab is selected,
a `before_request` hook that refuses, on every route of the web UI (Locust's too), a Host that is
not 127.0.0.1:PORT and an Origin that is not the page's own (harness/web/loopback.py says why),
and the `test_stop` event, which asks the harness to heal, settle and check the session.

The panel owns nothing: every route forwards to the harness's control API
(harness/web/control.py says why the topology stays out of this gevent process). The control
URL comes from `--chaos-url` (what `harness ui` passes) or, for a plain
`locust -f harness/web/locustfile.py`, from the up.json of a running `harness up`.

Imports Flask and Locust: import it only inside a Locust process (harness/web/locustfile.py calls
`register()`). It imports nothing of the harness but the run directory's data module and the
stdlib-only loopback rules: the session and the nemesis live in the harness process.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, urlsplit

import gevent
from flask import Blueprint, Response, render_template, request
from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from harness.rundir import running_session
from harness.web.loopback import host_refusal, origin_refusal

log = logging.getLogger("payswitch.chaos_panel")

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
TAB = {"title": "Chaos", "key": "chaos"}
View = TypeVar("View", bound=Callable[..., Any])
FORWARD_TIMEOUT_S = 40.0  # a crash heal restarts a service and waits for it to be healthy (up to 15 s)


def add_arguments(parser: LocustArgumentParser) -> None:
    parser.add_argument("--chaos-url", default="", env_var="PAYSWITCH_CHAOS_URL", include_in_web_ui=False,
                        help="the harness's chaos control API (default: that of a running `harness up`)")  # fmt: skip


def control_url(options: Any) -> str:
    url = str(getattr(options, "chaos_url", "") or "")
    if not url and (session := running_session()) is not None:
        url = str(session.get("control_url") or "")
    if url and urlsplit(url).hostname != LOOPBACK:
        log.error("--chaos-url %s: the chaos control API is only ever reached on %s; ignoring it", url, LOOPBACK)
        return ""
    return url.rstrip("/")


class ControlClient:
    """Forwards a request to the control API and hands its answer back as a Flask response."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str]:
        if not self.url:
            return _error(
                503,
                "no harness session: start one with `harness ui` (or `harness up`, then "
                "`locust -f harness/web/locustfile.py`) and open the URL it prints",
            )
        req = urllib.request.Request(
            self.url + path, data=body if method == "POST" else None, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=FORWARD_TIMEOUT_S) as resp:
                return resp.status, resp.read(), resp.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "application/json")
        except OSError as exc:
            return _error(
                502, f"the harness control API at {self.url} does not answer ({exc}); is `harness ui` running?"
            )

    def json(self, path: str) -> tuple[int, Any]:
        status, data, _ = self.call("GET", path)
        try:
            return status, json.loads(data)
        except ValueError:
            return status, {"error": data.decode(errors="replace")}


def _error(status: int, message: str) -> tuple[int, bytes, str]:
    return status, json.dumps({"error": message}).encode(), "application/json"


def _response(answer: tuple[int, bytes, str]) -> Response:
    status, data, ctype = answer
    return Response(data, status=status, content_type=ctype)


def install(environment: Environment) -> None:
    """Add the panel to this process's web UI (the master's or the only one; workers have none)."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    client = ControlClient(control_url(environment.parsed_options))
    app = web_ui.app
    assert app is not None

    def guard(view: View) -> View:
        """Honour --web-login like Locust's own pages do."""
        return cast(View, web_ui.auth_required_if_enabled(view))  # type: ignore[no-untyped-call]

    bp = Blueprint(
        "chaos", __name__, url_prefix="/chaos", template_folder=str(HERE / "templates"),
        static_folder=str(HERE / "static"), static_url_path="/static",
    )  # fmt: skip

    def fault_kinds() -> list[dict[str, Any]]:
        """The harness's fault catalogue, for the form (empty without a session: the panel says why)."""
        status, state = client.json("/state")
        return list(state.get("catalogue", [])) if status == 200 else []

    @bp.route("/")
    @guard
    def page() -> str:
        return render_template("chaos_page.html.j2", kinds=fault_kinds())

    @bp.route("/api/state")
    @guard
    def state() -> Response:
        status, data, ctype = client.call("GET", "/state")
        if status == 200:
            merged = json.loads(data)
            runner = environment.runner
            merged["locust"] = {
                "state": runner.state if runner is not None else "none",
                "users": runner.user_count if runner is not None else 0,
            }
            data = json.dumps(merged).encode()
        return _response((status, data, ctype))

    @bp.route("/api/faults", methods=["POST"])
    @guard
    def apply() -> Response:
        return _response(client.call("POST", "/faults", request.get_data()))

    @bp.route("/api/faults/heal-all", methods=["POST"])
    @guard
    def heal_all() -> Response:
        return _response(client.call("POST", "/faults/heal-all", b"{}"))

    @bp.route("/api/faults/<name>/heal", methods=["POST"])
    @guard
    def heal(name: str) -> Response:
        return _response(client.call("POST", f"/faults/{quote(name, safe='')}/heal", b"{}"))

    @bp.route("/api/schedule", methods=["POST"])
    @guard
    def schedule() -> Response:
        return _response(client.call("POST", "/schedule", request.get_data()))

    @bp.route("/api/schedule/stop", methods=["POST"])
    @guard
    def schedule_stop() -> Response:
        return _response(client.call("POST", "/schedule/stop", b"{}"))

    @bp.route("/api/finish", methods=["POST"])
    @guard
    def finish() -> Response:
        runner = environment.runner
        if runner is not None and runner.state in (STATE_RUNNING, STATE_SPAWNING):
            runner.stop()  # fires test_stop, which asks the harness to finish (below)
            return Response(json.dumps({"state": "finishing", "stopped_test": True}), 202, mimetype="application/json")
        return _response(client.call("POST", "/finish", b"{}"))

    @bp.route("/report")
    @guard
    def report() -> Response | str:
        status, data, ctype = client.call("GET", "/report")
        if status == 200:
            return Response(data, 200, content_type=ctype)
        # No report.html yet (or no session): say so, with the verdict of result.json when there is one.
        result_status, result = client.json("/result")
        return render_template(
            "chaos_report_missing.html.j2",
            reason=json.loads(data).get("error", "") if ctype.startswith("application/json") else "",
            result=result if result_status == 200 else None,
        )

    @bp.route("/result.json")
    @guard
    def result() -> Response:
        return _response(client.call("GET", "/result"))

    app.register_blueprint(bp)

    # On the whole app, not the blueprint: Locust's own /swarm, /stop, /stats/reset ... start and stop
    # load, and Locust answers every Origin with CORS headers. See harness/web/loopback.py.
    @app.before_request
    def loopback_and_same_origin_only() -> Response | None:
        refused = host_refusal(request.headers.get("Host"), web_ui.port) or origin_refusal(
            request.headers.get("Origin"), request.host
        )
        if refused is None and request.method not in ("GET", "HEAD", "OPTIONS"):
            # A browser that sends no Origin still says where a request comes from (Fetch Metadata).
            site = request.headers.get("Sec-Fetch-Site", "same-origin")
            if site not in ("same-origin", "none"):
                refused = f"a {site} request is refused: only pages of http://{request.host} may call it"
        if refused is not None:
            return Response(json.dumps({"error": refused}), 403, mimetype="application/json")
        return None

    web_ui.template_args["extended_tabs"] = [*web_ui.template_args.get("extended_tabs", []), TAB]

    @app.after_request
    def add_panel_to_locust_page(response: Response) -> Response:
        if request.endpoint != "locust.index" or response.status_code != 200 or response.mimetype != "text/html":
            return response
        panel = render_template("chaos_panel.html.j2", kinds=fault_kinds(), embedded=True)
        page = response.get_data(as_text=True)
        response.set_data(page.replace("</body>", panel + "\n</body>", 1))
        return response

    def on_test_stop(environment: Environment, **_kwargs: Any) -> None:
        # In a greenlet: the stop must not wait on the harness (settling takes seconds).
        gevent.spawn(client.call, "POST", "/finish", b"{}")

    hook: Any = environment.events.test_stop  # Locust's EventHook is untyped
    hook.add_listener(on_test_stop)
    log.info("chaos panel: %s", f"control API at {client.url}" if client.url else "no harness session found")


def on_init(environment: Environment, **_kwargs: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):
        install(environment)


def register() -> None:
    """Hook the panel into this Locust process: its `--chaos-url` argument and its install at init."""
    hooks: Any = events  # Locust's EventHook is untyped
    hooks.init_command_line_parser.add_listener(add_arguments)
    hooks.init.add_listener(on_init)
