"""`harness ui`: Toxiproxy, the switch and its banks, and Locust's web UI with the Chaos tab.

    harness ui [--banks 4] [--resilience robust|naive] [--port 8089] [--users 10] [--max-run-time 600]

One process tree, all on 127.0.0.1:
- this process: the Testbed (Toxiproxy + services), the ChaosSession and its control API
  (harness/web/control.py), the ConsistencySampler;
- a Locust subprocess (own process group, `--parent-pid` set): the web UI, the payment customers
  and the load shapes (`--class-picker`), the Chaos tab (harness/web/panel.py).

The session's run directory is reports/runs/ui-session-<time>/. Each time a test stops, the
session is healed, settled and checked there (result.json, report.html). Ctrl-C (or `harness
down`) stops Locust, checks the session if it has payments not checked yet (a second Ctrl-C skips
that), heals every fault, resets Toxiproxy and stops every process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from harness.procs import end_stragglers, free_port, process_start, signal_group, sigterm_unwinds
from harness.rundir import PROJECT_ROOT, RunDir, write_up_state
from harness.runner import system_for
from harness.scenario import Scenario, TopologySpec
from harness.testbed import Testbed, make_testbed, powerloss
from harness.web.control import ControlServer
from harness.web.session import LOOPBACK, SESSION_NAME, ChaosSession, session_scenario

CHECK_ON_EXIT_S = 120.0
# The payment customers plus the Chaos tab (harness/web/locustfile.py composes the two).
WEB_LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def add_parser(sub: Any) -> None:
    u = sub.add_parser("ui", help="Locust's web UI with a live chaos panel, on the topology, until Ctrl-C")
    u.add_argument("--banks", type=int, default=4, help="participant banks (2 to 26)")
    u.add_argument("--resilience", choices=["robust", "naive"], default="robust")
    u.add_argument("--backend", choices=["local", "docker"], default="local")
    u.add_argument("--port", type=int, default=0, help="web UI port on 127.0.0.1 (default: a free one)")
    u.add_argument("--users", type=int, default=10, help="users pre-filled in Locust's start form")
    u.add_argument("--max-run-time", type=int, default=600, help="run time pre-filled in the form, seconds")
    u.add_argument("--scenarios", type=Path, default=PROJECT_ROOT / "scenarios",
                   help="where the panel's scripted schedules come from")  # fmt: skip
    u.add_argument("--out", type=Path, default=Path("reports/runs"))


def serve_session(
    stack: contextlib.ExitStack, bed: Testbed, scenario: Scenario, scenarios_dir: Path, command: str, out: Path
) -> tuple[ChaosSession, ControlServer]:
    """Start the testbed, a chaos session on it and its control API, and write up.json; `stack`
    undoes each step in reverse, whatever happens. Shared by `harness up` and `harness ui`."""
    bed.start()
    stack.callback(bed.stop)
    session = ChaosSession(bed, bed.run_dir, scenarios_dir, command, scenario).start()
    stack.callback(session.close)
    control = ControlServer(session).start()
    stack.callback(control.stop)
    state_file = write_up_state(out, session_state(bed, bed.run_dir, control.url))
    stack.callback(state_file.unlink, missing_ok=True)
    return session, control


def up(args: argparse.Namespace) -> int:
    """`harness up`: the topology and the control API until Ctrl-C, for Locust or curl by hand."""
    scenario = session_scenario(TopologySpec(banks=args.banks))
    run_dir = (args.out / time.strftime("up-%Y%m%d-%H%M%S")).resolve()
    losing = powerloss.interactive(scenario.backend, scenario.topology.service_names)
    bed = make_testbed(system_for(scenario), run_dir, scenario.backend, power_loss=losing)
    sigterm_unwinds()  # `harness down` and service managers send SIGTERM: leave as cleanly as on Ctrl-C
    with contextlib.ExitStack() as stack:
        try:
            _, control = serve_session(
                stack, bed, scenario, PROJECT_ROOT / "scenarios", f"harness up --banks {args.banks}", args.out
            )
            print(json.dumps(session_state(bed, run_dir, control.url), indent=2))
            print(
                "\nrunning; Locust with the Chaos tab on this topology:\n"
                f"  locust -f {WEB_LOCUSTFILE} --chaos-url {control.url}"
                f" --system-json {bed.topology.config_path.resolve()}"
                f" --bank-urls {','.join(f'{c}={u}' for c, u in bed.customer_urls.items())}\n"
                "Ctrl-C (or `harness down`) checks nothing and stops everything",
                flush=True,
            )
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping ...")
            return 0


def ui(args: argparse.Namespace) -> int:
    if not 2 <= args.banks <= 26 or args.users < 1 or args.max_run_time < 1:
        print("harness ui: --banks must be 2 to 26; --users and --max-run-time at least 1", file=sys.stderr)
        return 2
    scenario = session_scenario(TopologySpec(banks=args.banks, resilience=args.resilience))
    scenario = scenario.model_copy(update={"backend": args.backend})  # the report names the backend used
    run_dir = (args.out / f"{SESSION_NAME}-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    try:
        losing = powerloss.interactive(args.backend, scenario.topology.service_names)
        bed = make_testbed(system_for(scenario), run_dir, args.backend, power_loss=losing)
    except Exception as exc:  # e.g. no Docker engine answers: say so, no traceback
        print(f"harness ui: {exc}", file=sys.stderr)
        return 2
    sigterm_unwinds()  # `harness down` and service managers send SIGTERM: leave as cleanly as on Ctrl-C
    with contextlib.ExitStack() as stack:  # unwinds in reverse, and every step runs even if one fails
        try:
            print(f"starting Toxiproxy, the switch and {args.banks} banks ({args.resilience}, {args.backend}) ...",
                  flush=True)  # fmt: skip
            command = f"harness ui --banks {args.banks} --resilience {args.resilience} --backend {args.backend}"
            session, control = serve_session(stack, bed, scenario, args.scenarios.resolve(), command, args.out)
            port = args.port or free_port()
            stack.callback(check_on_exit, session)  # unwinds after Locust has stopped, before anything else
            locust = start_web_locust(bed, run_dir, control.url, port, args.users, args.max_run_time)
            stack.callback(stop_locust, locust)
            wait_web_ready(f"http://{LOOPBACK}:{port}/", locust, run_dir)
            print(f"\nLocust web UI with the Chaos tab: http://{LOOPBACK}:{port}/")
            print(f"run directory: {run_dir}")
            print(
                "start load from the page, faults from its Chaos tab; Ctrl-C checks the session and stops", flush=True
            )
            while locust.poll() is None:
                time.sleep(0.5)
            print(
                f"Locust exited with code {locust.returncode}; see {run_dir / 'logs' / 'locust.log'}", file=sys.stderr
            )
            return 1
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
            return 0
        except Exception as exc:
            print(f"harness ui: {exc}", file=sys.stderr)
            return 1


def session_state(bed: Testbed, run_dir: Path, control_url: str) -> dict[str, Any]:
    """up.json: what `harness down` and a Locust started by hand read."""
    return {
        "run_dir": str(run_dir),
        "toxiproxy": bed.toxiproxy.url,
        "system_json": str(bed.topology.config_path.resolve()),
        "customer_urls": bed.customer_urls,
        "direct_urls": bed.direct_urls,
        "links": {name: link.listen for name, link in bed.links.items()},
        "control_url": control_url,
        "harness_pid": os.getpid(),
        "harness_started": process_start(os.getpid()),  # so `harness down` never signals a reused pid
    }


def start_web_locust(
    bed: Testbed, run_dir: Path, control_url: str, port: int, users: int, max_run_time_s: int
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable, "-m", "locust", "-f", str(WEB_LOCUSTFILE),
        "--web-host", LOOPBACK, "--web-port", str(port), "--class-picker",
        "--users", str(users), "--spawn-rate", str(max(1, users // 2)), "--run-time", f"{max_run_time_s}s",
        "--system-json", str(bed.topology.config_path.resolve()),
        "--bank-urls", ",".join(f"{code}={url}" for code, url in bed.customer_urls.items()),
        "--history", str(RunDir(run_dir).history),
        # Banks answer PDNG after their customer timeout; the customer waits a little longer than that.
        "--request-timeout", str(max(b.customer_timeout_s for b in bed.system.banks) + 2.0),
        "--chaos-url", control_url,
        "--parent-pid", str(os.getpid()),
        "--loglevel", "INFO",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PAYSWITCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    log_path = RunDir(run_dir).log("locust")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        log.write(f"--- {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            argv, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches the harness, which stops it
        )  # fmt: skip


def wait_web_ready(url: str, locust: subprocess.Popen[bytes], run_dir: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if locust.poll() is not None:
            raise RuntimeError(f"Locust exited with code {locust.returncode}; see {run_dir / 'logs' / 'locust.log'}")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"Locust's web UI did not answer at {url} within {timeout_s:.0f}s")


def stop_locust(locust: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM to Locust's group (it stops its users and flushes the history), SIGKILL after the grace."""
    if locust.poll() is None:
        signal_group(locust.pid, signal.SIGTERM)
        try:
            locust.wait(grace_s)
        except subprocess.TimeoutExpired:
            signal_group(locust.pid, signal.SIGKILL)
            locust.wait()
    end_stragglers(locust.pid)


def check_on_exit(session: ChaosSession, out: IO[str] = sys.stdout) -> None:
    """Payments not checked yet get their run directory checked before everything stops."""
    if not session.unchecked() and session.wait_finished(0)["state"] != "finishing":
        return
    print(
        "checking the session (heal, wait for in-doubt payments, settle, check); Ctrl-C skips ...", file=out, flush=True
    )
    try:
        if session.wait_finished(0)["state"] != "finishing":
            session.finish()
        done = session.wait_finished(CHECK_ON_EXIT_S)
    except KeyboardInterrupt:
        print("check skipped", file=out)
        return
    if done["state"] == "finished":
        report = session.rundir.report
        print(f"session {done['verdict'].upper()}: {report if report.exists() else session.run_dir / 'result.json'}",
              file=out)  # fmt: skip
    else:
        print(f"session not checked: {done.get('message', done['state'])}", file=out)
