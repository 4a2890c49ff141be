"""`harness`: the command line of the chaos harness."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from harness.procs import interrupted_exit, sigterm_unwinds
from mock_switch.bugs import BUGS

DEMO_SCENARIOS = (
    "scenarios/baseline.yaml",
    "scenarios/payee-latency-robust.yaml",
    "scenarios/payee-latency-naive.yaml",
    "scenarios/switch-crash.yaml",
)


def demo(args: argparse.Namespace) -> int:
    """The default scenario set: normal operation, a slow payee link (robust, then naive), a switch crash."""
    from harness.runner import run
    from harness.scenario import load

    outcomes = []
    try:
        for path in args.scenarios or DEMO_SCENARIOS:
            outcomes.append(run(load(Path(path)), args.out))
    except KeyboardInterrupt as exc:
        print("\ninterrupted: faults healed, services and Locust stopped", file=sys.stderr)
        return interrupted_exit(exc)
    print("\n== demo summary ==")
    from harness.report.page import fmt_num, fmt_pct, write_index
    from harness.result import reconciliation_breaks

    for o in outcomes:
        breaks = reconciliation_breaks(o.result["consistency"]["reconciliation"])
        ratio = (o.result["availability"] or {}).get("overall", {}).get("success_ratio")
        print(
            f"{o.result['verdict'].upper():4}  {o.result['scenario']['name']:<24} availability {fmt_pct(ratio, 3):>9}"
            f"  reconciliation breaks {fmt_num(breaks.total if breaks else None):>4}  ->  {o.run_dir / 'report.html'}"
        )
    if any(o.result["scenario"]["name"].endswith("naive") for o in outcomes):
        print("\nA naive scenario passes when the checker catches its anomalies: that is what it expects.")
    index = write_index(args.out.parent, args.out)
    print(f"\nSuite page: {index}  (open it in a browser; every report opens offline)")
    return 0 if all(o.ok for o in outcomes) else 1


def run_cmd(args: argparse.Namespace) -> int:
    from harness.runner import run
    from harness.scenario import ScenarioError, load

    try:
        scenarios = [load(Path(p), args.target) for p in args.scenarios]
    except ScenarioError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    if args.backend:  # the same file runs on either backend; the run records the one really used
        scenarios = [s if s.external else s.model_copy(update={"backend": args.backend}) for s in scenarios]
    if args.workers is not None or args.master_bind:  # Locust workers on other hosts (harness worker)
        update = {"workers": args.workers} if args.workers is not None else {}
        update |= {"master_bind": args.master_bind} if args.master_bind else {}
        scenarios = [s.model_copy(update={"load": s.load.model_copy(update=update)}) for s in scenarios]
    if args.bug and any(s.external for s in scenarios):
        print("harness: --bug breaks the bundled mock; a scenario with a target runs your own system", file=sys.stderr)
        return 2
    if args.bug:  # a deliberately broken mock (mock_switch/bugs.py), as `harness teeth` runs it
        scenarios = [
            s.model_copy(update={"topology": s.topology.model_copy(update={"bug": args.bug})}) for s in scenarios
        ]
    failed = 0
    for scenario in scenarios:
        try:
            outcome = run(scenario, args.out)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: every finally has healed and stopped
            print("\ninterrupted: faults healed, services and Locust stopped", file=sys.stderr)
            return interrupted_exit(exc)
        failed += not outcome.ok
    from harness.report.page import write_index

    print(f"suite page    {write_index(args.out.parent, args.out)}")
    return 1 if failed else 0


def report_cmd(args: argparse.Namespace) -> int:
    """Rebuild report pages from saved files: nothing is run and no checker is re-run."""
    from harness.report.page import write_index, write_report

    status = 0
    for run_dir in args.run_dirs:
        try:
            page = write_report(run_dir)
        except FileNotFoundError as exc:
            print(f"harness report: {exc}", file=sys.stderr)
            status = 2
            continue
        print(page)
        if args.screenshot:
            from harness.report.browser import BrowserUnavailable, open_report

            try:
                seen = open_report(page, screenshot=page.with_suffix(".png"))
            except BrowserUnavailable as exc:
                print(f"harness report: no screenshot: {exc}", file=sys.stderr)
                return 2
            print(
                f"{seen.screenshot}  ({seen.charts} charts, {len(seen.console_errors)} console errors,"
                f" {len(seen.requests)} network requests)"
            )
    if args.index or not args.run_dirs:
        print(write_index(args.reports, args.reports / "runs"))
    return status


def baseline_cmd(args: argparse.Namespace) -> int:
    """Name a run as its scenario's baseline on the suite page."""
    from harness.report.page import set_baseline, write_index

    try:
        summary = set_baseline(args.run_dir, args.reports)
    except FileNotFoundError as exc:
        print(f"harness baseline: {exc}", file=sys.stderr)
        return 2
    print(f"baseline for {summary['scenario']}: {args.run_dir} (recorded in {args.reports / 'baselines.json'})")
    print(write_index(args.reports, args.reports / "runs"))
    return 0


def teeth_cmd(args: argparse.Namespace) -> int:
    """Run the teeth scenario against each broken variant of the mock (and the robust system): exit 0
    when every variant is caught and the robust system passes."""
    from harness.runner import run
    from harness.teeth import run_teeth, table

    try:
        rows = run_teeth(args.variant, args.out, lambda s, out: run(s, out, progress=None).result)
    except KeyboardInterrupt as exc:
        print("\ninterrupted: faults healed, services and Locust stopped", file=sys.stderr)
        return interrupted_exit(exc)
    print(table(rows))
    for r in rows:
        print(f"{r.variant}: {r.run_dir}")
    return 0 if all(r.as_expected for r in rows) else 1


def check_cmd(args: argparse.Namespace) -> int:
    """Exit 0 on pass; 1 on fail, and on unknown (a check could not run); 2 when the run directory
    cannot be checked at all (e.g. a killed run without ledgers.json)."""
    from harness.errors import HarnessError
    from harness.runner import check

    try:
        outcome = check(args.run_dir)
    except HarnessError as exc:
        print(f"harness check: {exc}", file=sys.stderr)
        return 2
    return 0 if outcome.ok else 1


def doctor(args: argparse.Namespace) -> int:
    """What is installed, and how to fix what is missing."""
    import importlib.metadata as md
    import platform
    import subprocess

    from harness.testbed.proxies import INSTALL_HINT, find_server

    ok = True
    print(f"python        {platform.python_version()} ({sys.executable})")
    for pkg in ("aiohttp", "locust", "toxiproxy-python", "hypothesis", "pydantic", "docker"):
        try:
            print(f"{pkg:<13} {md.version(pkg)}")
        except md.PackageNotFoundError:
            if pkg == "docker":
                print(f"{pkg:<13} not installed (the Docker SDK is only needed for --backend docker)")
                continue
            print(f"{pkg:<13} MISSING: run `make setup` (pip install -e '.[dev]')")
            ok = False
    server = find_server()
    if server is None:
        ok = False
        print(f"toxiproxy     MISSING: {INSTALL_HINT}")
    else:
        out = subprocess.run([str(server), "-version"], capture_output=True, text=True, timeout=10)
        print(f"toxiproxy     {(out.stdout or out.stderr).strip().splitlines()[-1]} ({server})")
    from harness.testbed.containers import engine_problem

    problem = engine_problem()  # the backend talks to the engine through the SDK, not the docker CLI
    if problem is None:
        from harness.testbed.engine import resolve

        print(f"docker engine reachable at {resolve().describe()}")
    else:
        print(f"docker engine {problem} (only needed for --backend docker)")
    from harness.testbed import powerloss

    why = powerloss.problem()  # a C compiler builds the recorder on first use
    print(f"power loss    {'can be built' if why is None else why + ' (only needed for power_loss faults)'}")
    print("verdict       " + ("ready" if ok else "something is missing (see above)"))
    return 0 if ok else 1


def list_cmd(args: argparse.Namespace) -> int:
    from harness.faults import KINDS, TARGET_HELP
    from harness.scenario import ScenarioError, TopologySpec, load

    print("scenarios:")
    for path in sorted(Path(args.dir).glob("*.yaml")):
        try:
            sc = load(path)
            kinds = ", ".join(sorted({f.kind for f in sc.faults})) or "no faults"
            print(f"  {path}  [{kinds}; {sc.load.duration:g}s; {sc.topology.resilience}]")
        except ScenarioError as exc:
            print(f"  {path}  INVALID: {exc}")
    print(f"links (with {args.banks} banks):")
    for name in TopologySpec(banks=args.banks).link_names:
        print(f"  {name}")
    for targets, meaning in TARGET_HELP.items():
        print(f"fault types on {targets} (targets: {meaning}):")
        for info in (k for k in KINDS.values() if k.targets == targets):
            line = f"  {info.name:<11} {'toxic: ' if info.toxic else ''}{info.help}"
            if info.attributes:
                line += "; attributes: " + ", ".join(f"{k} ({v})" for k, v in info.attributes.items())
            print(line)
    return 0


def up(args: argparse.Namespace) -> int:
    """Keep a topology and its chaos control API running for manual exploration, until Ctrl-C."""
    from harness.web.ui import up as serve_up

    return serve_up(args)


def ui_cmd(args: argparse.Namespace) -> int:
    """Locust's web UI with the chaos panel, on a topology of its own, until Ctrl-C (see harness/web/ui.py)."""
    from harness.web.ui import ui

    return ui(args)


def images_cmd(args: argparse.Namespace) -> int:
    """Build the docker backend's images (harness/testbed/images.py); each is skipped when its inputs are unchanged."""
    from harness.testbed.containers import DockerUnavailable, docker_client
    from harness.testbed.images import ImageError, build_all

    try:
        built = build_all(docker_client(), offline=args.offline, base_image=args.base_image, log=print)
    except (DockerUnavailable, ImageError) as exc:
        print(f"harness images: {exc}", file=sys.stderr)
        return 2
    for b in built:
        print(f"{b.role:<10} {b.tag:<40} {'built' if b.built else 'up to date'} in {b.seconds:.1f}s")
    return 0


def down(args: argparse.Namespace) -> int:
    """Stop a topology started by `harness up` (it owns its processes; this asks it to stop)."""
    import os
    import signal

    from harness.rundir import running_session, up_state_file

    if args.all:
        from harness.procs import reap_orphans
        from harness.testbed.containers import DockerUnavailable, docker_client, remove_labelled

        reaped = reap_orphans()  # local processes whose harness is gone, found by their owner token
        print(f"ended {len(reaped)} local processes left by dead runs" + (f": {reaped}" if reaped else ""))

        try:
            containers, networks = remove_labelled(docker_client())
            print(f"removed {containers} containers and {networks} networks left by docker runs")
        except DockerUnavailable as exc:
            print(f"docker runs: nothing to remove ({exc})")
    state_file = up_state_file(args.out)
    if not state_file.exists():
        print(f"no topology is up (no {state_file})")
        return 0
    session = running_session(state_file)
    if session is None:  # its process is gone, or its pid now belongs to another process: signal nothing
        state_file.unlink(missing_ok=True)
        print(f"no topology is up: {state_file} was stale (its harness process is gone); removed it")
        return 0
    os.kill(int(session["harness_pid"]), signal.SIGTERM)
    print(f"asked harness up (pid {session['harness_pid']}) to stop")
    return 0


def conform_cmd(args: argparse.Namespace) -> int:
    from harness import target
    from harness.conform import suite

    tgt = target.load(args.target)
    checks = suite.run(tgt)
    print(suite.table(checks, tgt))
    return 1 if suite.failed(checks) else 0


def target_links_cmd(args: argparse.Namespace) -> int:
    from harness import target
    from harness.testbed.external import link_plan

    tgt = target.load(args.target)
    missing = tgt.missing_links()
    print(f"{tgt.name}: the harness's Toxiproxy listens on these addresses during a chaos run")
    print("\n".join(link_plan(tgt)))
    if missing:
        print(f"missing from links: {', '.join(missing)} (every link needs listen and upstream; see docs/contract.md)")
        return 1
    return 0


def worker_cmd(args: argparse.Namespace) -> NoReturn:
    """Become a Locust worker of a remote master (exec: signals reach Locust itself)."""
    from harness.load.control import worker_argv

    argv, env = worker_argv(args.master)
    os.execve(argv[0], argv, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness", description="Chaos-testing harness for payment switches.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the default scenario set and say where the results are")
    d.add_argument("scenarios", nargs="*", help=f"scenario files (default: {', '.join(DEMO_SCENARIOS)})")
    d.add_argument("--out", type=Path, default=Path("reports/runs"))
    r = sub.add_parser("run", help="run scenario files (progress shown); writes a run directory each")
    r.add_argument("scenarios", nargs="+", help="scenario YAML files, e.g. scenarios/baseline.yaml")
    r.add_argument("--out", type=Path, default=Path("reports/runs"))
    r.add_argument("--backend", choices=["local", "docker"], help="overrides the scenario's `backend:`")
    r.add_argument("--bug", choices=list(BUGS), help="run a deliberately broken mock variant (harness teeth)")
    r.add_argument("--target", type=Path, help="run the scenarios against this target file (your own switch)")
    r.add_argument("--workers", type=int, help="wait for this many `harness worker` Locust workers (any host)")
    r.add_argument("--master-bind", help="HOST:PORT the Locust master listens on for them (default 127.0.0.1:5557)")
    w = sub.add_parser("worker", help="a Locust worker of a `harness run --workers N` master, on any host")
    w.add_argument("--master", required=True, help="HOST[:PORT] of the master (default port 5557)")
    tt = sub.add_parser("teeth", help="run broken variants of the mock and show which check catches each")
    tt.add_argument("--variant", action="append", help="one variant (repeatable; default: all, then robust)")
    # Not reports/runs: broken variants are meant to fail, and the suite page is the real system's.
    tt.add_argument("--out", type=Path, default=Path("reports/teeth"))
    im = sub.add_parser("images", help="docker backend: build the images (skipped when their inputs are unchanged)")
    im.add_argument("action", choices=["build"])
    im.add_argument("--offline", action="store_true", help="no registry: Debian base by debootstrap, no pulls")
    im.add_argument("--base-image", help="app base (default: the offline base if built, else python:3.11-slim)")
    c = sub.add_parser("check", help="re-run the checkers on a saved run directory")
    c.add_argument("run_dir", type=Path)
    rp = sub.add_parser("report", help="rebuild report.html of saved runs, and the suite page reports/index.html")
    rp.add_argument("run_dirs", nargs="*", type=Path, help="run directories (none: only the suite page)")
    rp.add_argument("--index", action="store_true", help="also rebuild the suite page")
    rp.add_argument("--screenshot", action="store_true", help="open each report in headless Chromium, save report.png")
    rp.add_argument("--reports", type=Path, default=Path("reports"), help="folder of the suite page (default: reports)")
    bl = sub.add_parser("baseline", help="name a run as its scenario's baseline for regression flags on the suite page")
    bl.add_argument("run_dir", type=Path)
    bl.add_argument("--reports", type=Path, default=Path("reports"))
    sub.add_parser("doctor", help="what is installed and how to fix what is missing")
    ls = sub.add_parser("list", help="scenarios, links and fault types")
    ls.add_argument("--dir", default="scenarios")
    ls.add_argument("--banks", type=int, default=4)
    u = sub.add_parser("up", help="keep the switch, banks and Toxiproxy running until Ctrl-C")
    u.add_argument("--banks", type=int, default=4)
    u.add_argument("--out", type=Path, default=Path("reports/runs"))
    dn = sub.add_parser("down", help="stop what `harness up` started")
    dn.add_argument("--out", type=Path, default=Path("reports/runs"))
    dn.add_argument("--all", action="store_true", help="also remove what dead docker runs left behind")
    cf = sub.add_parser("conform", help="check a running switch and banks against the participant contract")
    cf.add_argument("target", type=Path, help="target file naming the switch and each bank (see docs/contract.md)")
    tl = sub.add_parser("target-links", help="the addresses a target's services must dial during a chaos run")
    tl.add_argument("target", type=Path, help="target file with a `links:` section")
    from harness.web.ui import add_parser as add_ui_parser

    add_ui_parser(sub)
    args = parser.parse_args(argv)
    commands = {
        "demo": demo, "run": run_cmd, "check": check_cmd, "report": report_cmd, "baseline": baseline_cmd,
        "doctor": doctor, "list": list_cmd, "up": up, "down": down, "ui": ui_cmd, "images": images_cmd,
        "teeth": teeth_cmd, "conform": conform_cmd, "target-links": target_links_cmd, "worker": worker_cmd,
    }  # fmt: skip
    from harness.errors import HarnessError

    sigterm_unwinds()  # a CI timeout or a service manager stops a run as cleanly as Ctrl-C does
    try:
        return commands[args.command](args)
    except HarnessError as exc:  # a failure the harness can explain: its message, not a traceback
        print(f"harness {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
