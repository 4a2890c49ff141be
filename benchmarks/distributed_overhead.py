"""What distributing Locust costs (issue 14): the same open-model arrival rate, in one invocation and
against one testbed (Toxiproxy, the switch, 4 banks), played by

    local   one Locust process (load.processes 1)
    procs   a Locust master and 2 worker processes it forks (load.processes 2; histories to disk)
    tcp     a master and 2 `harness worker` processes, each in its own empty temporary directory,
            reaching the master only over TCP on 127.0.0.1 (histories as Locust messages)

    python benchmarks/distributed_overhead.py [--rate 60] [--seconds 20] [--modes local,procs,tcp]

CPU is read from /proc (benchbed.CpuMeter) in the steady middle of the arrivals (from --skip-s after
the customers started to --skip-s before the last arrival), so start-up imports and the drain are
left out; it is divided by the payments scheduled in that window (from the history). Locust side:
the master, its forked workers and the `harness worker` processes (master_cpu_ms: the master's or
the single process's own part); harness side: this process and
the testbed's guardian, plus (harness_stop_ms) this process's CPU in LoadRun.stop: reckoning lost
workers and merging the history parts. Latency p50/p99 are the payments' first attempts, from their
scheduled arrival to their answer (lateness included), as the availability checker sees them.

Prints one JSON line per mode, then a table with each figure's ratio to `local`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchbed import CpuMeter, children_of, harness_testbed, testbed_meter

from harness import loadfile
from harness.load.control import LoadOptions, OpenLoad, start_locust
from harness.procs import free_port
from harness.rundir import PROJECT_ROOT, RunDir
from harness.testbed.bed import Testbed

MODES = ("local", "procs", "tcp")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_remote_workers(n: int, master: str, tmp: Path) -> list[subprocess.Popen[bytes]]:
    """`harness worker` processes, each in an empty directory of its own (nothing shared with the run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PAYSWITCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    procs = []
    for i in range(n):
        cwd = Path(tempfile.mkdtemp(prefix=f"worker{i}-", dir=tmp))
        argv = [sys.executable, "-m", "harness.cli", "worker", "--master", master]
        log = (tmp / f"worker{i}.log").open("wb")
        procs.append(subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
    return procs


def history_figures(history: Path, window: tuple[float, float]) -> dict[str, Any]:
    """Payments (first attempt per id): scheduled, sent, answered ok/fail, p50/p99 latency; and how
    many were scheduled inside the CPU window."""
    first: dict[str, dict[str, Any]] = {}
    with history.open("rb") as f:
        for raw in f:
            op = json.loads(raw)
            if op.get("op") == "payment" and op["id"] not in first:
                first[op["id"]] = op
    ops = list(first.values())
    answered = [o for o in ops if o["outcome"] in ("ok", "fail")]
    latencies = [float(o["latency_ms"]) for o in answered]
    invokes = [float(o["invoke"]) for o in ops]
    span = max(invokes) - min(invokes) if len(invokes) > 1 else 0.0
    return {
        "payments": len(ops),
        "sent": sum(1 for o in ops if o.get("sent") is not None),
        "ok": sum(1 for o in ops if o["outcome"] == "ok"),
        "unknown": sum(1 for o in ops if o["outcome"] == "unknown"),
        # arrivals over the span of scheduled times (first to last), i.e. the rate really played
        "achieved_rate": round((len(ops) - 1) / span, 2) if span > 0 else 0.0,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else float("nan"),
        "in_window": sum(1 for t in invokes if window[0] <= t < window[1]),
    }


def run_mode(bed: Testbed, mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    run_dir = tmp / mode
    run_dir.mkdir()
    workers = 2 if mode == "tcp" else 0
    master = f"127.0.0.1:{free_port()}"
    options = LoadOptions(
        system_json=bed.topology.config_path,
        bank_urls=bed.customer_urls,
        open=OpenLoad(rate=args.rate, duration_s=args.seconds),
        processes=2 if mode == "procs" else 1,
        workers=workers,
        master_bind=master,
        request_timeout_s=5.0,
        run_id=f"b{mode}",
        hard_timeout_s=args.seconds + 120,
    )
    remote: list[subprocess.Popen[bytes]] = []
    load = start_locust(run_dir, options)
    try:
        if workers:
            remote = start_remote_workers(workers, master, tmp)
        base = testbed_meter(bed, lambda: load.proc.pid if load.proc is not None else None)

        def locust_pids() -> list[int]:
            master_pid = load.proc.pid if load.proc is not None else None
            pids = [] if master_pid is None else [master_pid, *children_of(master_pid)]
            return pids + [p.pid for p in remote]

        def harness_pids() -> list[int]:  # the `harness worker` processes are this one's children too
            return [p for p in base.pids["harness"]() if p not in {w.pid for w in remote}]

        def master_pid() -> list[int]:  # the one Locust process, or the master of the workers
            return [load.proc.pid] if load.proc is not None else []

        meter = CpuMeter({"locust": locust_pids, "master": master_pid, "harness": harness_pids})
        started = load.wait_started(60.0 + (60.0 if workers else 0.0))
        window = (started + args.skip_s, started + args.seconds - args.skip_s)
        time.sleep(max(0.0, window[0] - time.time()))
        before = meter.snapshot()
        time.sleep(max(0.0, window[1] - time.time()))
        after = meter.snapshot()
        used = CpuMeter.used_ms(before, after)
        load.wait(args.seconds + 60)
    finally:
        stopping = time.process_time()
        result = load.stop()
        stop_ms = (time.process_time() - stopping) * 1000
        for p in remote:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
            if p.poll() is None:
                p.kill()
                p.wait()
    if result.history is None:
        raise SystemExit(f"{mode}: no history; see {result.log}")
    figures = history_figures(result.history, window)
    n = max(1, figures["in_window"])
    load_json = loadfile.read(RunDir(run_dir).load_figures) or {}
    return {
        "mode": mode,
        "rate": args.rate,
        **{k: v for k, v in figures.items() if k != "in_window"},
        "window_s": round(window[1] - window[0], 1),
        "window_payments": figures["in_window"],
        "locust_cpu_ms": round(used["locust"] / n, 3),
        "master_cpu_ms": round(used["master"] / n, 3),  # part of locust_cpu_ms
        "harness_cpu_ms": round(used["harness"] / n, 3),
        "harness_stop_ms": round(stop_ms / max(1, figures["payments"]), 3),
        "late": load_json.get("late"),
        "not_sent": load_json.get("not_sent"),
        "max_late_ms": load_json.get("max_late_ms"),
        "lost_workers": len(load_json.get("lost_workers") or []),
        "locust_exit": result.returncode,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=60.0, help="arrivals per second (open model)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds of arrivals per mode (at most 300)")
    ap.add_argument("--skip-s", type=float, default=4.0, help="left out of the CPU window at each end")
    ap.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep it (logs, histories)")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        ap.error(f"--modes: no mode {bad}; modes are {', '.join(MODES)}")
    if not 0 < args.rate <= 500 or not 2 * args.skip_s + 2 <= args.seconds <= 300:
        ap.error("--rate must be in (0, 500] and --seconds in [2 * --skip-s + 2, 300]")
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dist-bench-")))
        tmp.mkdir(parents=True, exist_ok=True)
        with harness_testbed(tmp / "bed") as bed:
            for mode in modes:
                row = run_mode(bed, mode, args, tmp)
                print(json.dumps(row), flush=True)
                rows.append(row)
    base = next((r for r in rows if r["mode"] == "local"), rows[0])
    keys = ("achieved_rate", "p50_ms", "p99_ms", "locust_cpu_ms", "master_cpu_ms", "harness_cpu_ms", "harness_stop_ms")
    print(f"{'mode':6} " + " ".join(f"{k:>16}" for k in keys))
    for r in rows:
        cells = []
        for k in keys:
            ratio = f"x{r[k] / base[k]:.2f}" if base[k] else "x-"
            cells.append(f"{r[k]:>8g} {ratio:<6}")
        print(f"{r['mode']:6} " + " ".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
