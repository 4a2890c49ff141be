"""`harness`: the command line of the chaos harness."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from harness import snapshot
from harness.direct_load import drive, summarise
from harness.reconcile import reconcile
from harness.topology import LocalTopology, TopologyError, build_system


def demo(args: argparse.Namespace) -> int:
    """Start the mock payment system, pay for a few seconds, settle, reconcile, print a summary."""
    run_dir = args.out / time.strftime("demo-%Y%m%d-%H%M%S")
    system = build_system(banks=args.banks, accounts=1000)
    print(f"run directory: {run_dir}")
    print(f"starting the switch and {args.banks} banks as local processes ...")
    topo = LocalTopology(system, run_dir)
    try:
        topo.start()
        urls = {code: topo.bank(code).url for code in topo.bank_codes}
        print(f"paying for {args.seconds:g}s with {args.customers} customers ...")
        started = time.monotonic()
        results = asyncio.run(
            drive(system, urls, args.seconds, args.customers, prefix="demo", progress=True, seed=args.seed)
        )
        elapsed = time.monotonic() - started
        switch = topo.switch.url
        closed = json.loads(_post(switch + "/settlement/windows/close"))
        _post(switch + f"/settlement/windows/{closed['window_id']}/settle")
        snap = snapshot.take(switch, urls)
        snapshot.save(snap, run_dir / "ledgers.json")
    except TopologyError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the services", file=sys.stderr)
        return 130
    finally:
        topo.stop()
    load = summarise(results, elapsed)
    result = reconcile(snap, system.total_customer_money(), system.total_settlement_money())
    summary = {"load": load, "settlement_window": closed, "reconciliation": result.summary()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print()
    print(f"payments      {load['payments']:,} in {elapsed:.1f}s ({load['payments_per_s']:.0f}/s)")
    print(f"latency       p50 {load['p50_ms']:.0f} ms, p99 {load['p99_ms']:.0f} ms")
    print(f"outcomes      {load['outcomes']}  rejections {load['reasons']}")
    print(f"window {closed['window_id']}      closed and settled: {closed['transfer_count']:,} transfers")
    print(f"  net positions {closed['net_positions']}")
    print(
        f"reconcile     {result.payments:,} payments: {result.clean_settled:,} settled, "
        f"{result.clean_failed:,} cleanly failed, {result.anomaly_count} anomalies"
    )
    for check in result.books:
        print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    print(f"\nverdict: {'CONSISTENT' if result.ok else 'INCONSISTENT'}; details in {run_dir / 'summary.json'}")
    return 0 if result.ok else 1


def run_cmd(args: argparse.Namespace) -> int:
    from harness.runner import run
    from harness.scenario import ScenarioError, load

    try:
        scenarios = [load(Path(p)) for p in args.scenarios]
    except ScenarioError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for scenario in scenarios:
        try:
            outcome = run(scenario, args.out)
        except KeyboardInterrupt:
            print("\ninterrupted: faults healed, services and Locust stopped", file=sys.stderr)
            return 130
        failed += not outcome.ok
    return 1 if failed else 0


def check_cmd(args: argparse.Namespace) -> int:
    from harness.runner import check

    outcome = check(args.run_dir)
    return 0 if outcome.ok else 1


def doctor(args: argparse.Namespace) -> int:
    """What is installed, and how to fix what is missing."""
    import importlib.metadata as md
    import platform
    import shutil
    import subprocess

    from harness.toxiproxy import INSTALL_HINT, find_server

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
    docker = shutil.which("docker")
    print(f"docker        {'client at ' + docker if docker else 'not installed (only needed for --backend docker)'}")
    print("verdict       " + ("ready" if ok else "something is missing (see above)"))
    return 0 if ok else 1


def list_cmd(args: argparse.Namespace) -> int:
    from harness.nemesis import LINK_FAULTS, SERVICE_FAULTS, TOXICS
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
    print("fault types:")
    for kind, attrs in TOXICS.items():
        print(f"  {kind:<11} toxic; attributes: " + ", ".join(f"{k} ({v})" for k, v in attrs.items()))
    for kind in LINK_FAULTS:
        print(f"  {kind:<11} link(s) disabled; targets: links, a bank code (all its links) or 'switch'")
    for kind in SERVICE_FAULTS:
        print(f"  {kind:<11} {'kill -9, restart when healed' if kind == 'crash' else 'SIGSTOP, SIGCONT when healed'}")
    return 0


def up(args: argparse.Namespace) -> int:
    """Keep a topology running behind Toxiproxy for manual exploration, until Ctrl-C."""
    import os

    from harness.testbed import Testbed

    run_dir = args.out / time.strftime("up-%Y%m%d-%H%M%S")
    bed = Testbed(build_system(banks=args.banks, accounts=1000), run_dir)
    try:
        bed.start()
        state = {
            "run_dir": str(run_dir),
            "toxiproxy": bed.toxiproxy.url,
            "system_json": str(bed.topology.config_path),
            "customer_urls": bed.customer_urls,
            "direct_urls": bed.direct_urls,
            "links": {name: link.listen for name, link in bed.links.items()},
            "harness_pid": os.getpid(),
        }
        (args.out / "up.json").write_text(json.dumps(state, indent=2))
        print(json.dumps(state, indent=2))
        print("\nrunning; point Locust at the customer URLs; Ctrl-C (or `harness down`) stops everything")
        import signal

        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        bed.stop()
        (args.out / "up.json").unlink(missing_ok=True)


def down(args: argparse.Namespace) -> int:
    """Stop a topology started by `harness up` (it owns its processes; this asks it to stop)."""
    import os
    import signal

    state_file = args.out / "up.json"
    if not state_file.exists():
        print("no topology is up (no reports/runs/up.json)")
        return 0
    pid = json.loads(state_file.read_text()).get("harness_pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
        print(f"asked harness up (pid {pid}) to stop")
    return 0


def _post(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness", description="Chaos-testing harness for payment switches.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="start the mock system, pay for a while, settle and reconcile")
    d.add_argument("--seconds", type=float, default=5.0)
    d.add_argument("--customers", type=int, default=32, help="customers paying concurrently")
    d.add_argument("--banks", type=int, default=4)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--out", type=Path, default=Path("reports/runs"))
    r = sub.add_parser("run", help="run scenario files (progress shown); writes a run directory each")
    r.add_argument("scenarios", nargs="+", help="scenario YAML files, e.g. scenarios/baseline.yaml")
    r.add_argument("--out", type=Path, default=Path("reports/runs"))
    c = sub.add_parser("check", help="re-run the checkers on a saved run directory")
    c.add_argument("run_dir", type=Path)
    sub.add_parser("doctor", help="what is installed and how to fix what is missing")
    ls = sub.add_parser("list", help="scenarios, links and fault types")
    ls.add_argument("--dir", default="scenarios")
    ls.add_argument("--banks", type=int, default=4)
    u = sub.add_parser("up", help="keep the switch, banks and Toxiproxy running until Ctrl-C")
    u.add_argument("--banks", type=int, default=4)
    u.add_argument("--out", type=Path, default=Path("reports/runs"))
    dn = sub.add_parser("down", help="stop what `harness up` started")
    dn.add_argument("--out", type=Path, default=Path("reports/runs"))
    args = parser.parse_args(argv)
    commands = {
        "demo": demo, "run": run_cmd, "check": check_cmd, "doctor": doctor, "list": list_cmd, "up": up, "down": down,
    }  # fmt: skip
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
