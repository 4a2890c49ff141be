"""Soak run: a real harness run for `--minutes`, then its checks and report, with what grows.

Writes a scenario (open model at `--rate` payments/s, robust components, a few faults on a
repeating one-minute schedule: a slow payee link, a payer bank's link down, a payee bank crashed;
a settlement window closed and settled every five minutes), runs it with `harness run` (the real
Toxiproxy, switch, 4 banks and Locust) and samples, every few seconds, the resident memory of the
harness process and of Locust. Then it re-checks the run directory with a separate
`harness check RUN_DIR` and measures that process's wall time and peak RSS (what the checkers and
the report cost, alone). Outside CI: a 30-minute soak is `make soak` (SOAK_MIN=30).

    .venv/bin/python benchmarks/soak.py --minutes 5 [--rate 40] [--out reports/soak]

Prints the harness's memory by minute of load, then on its last line exactly:

    payments=<n> harness_rss_mb=<x> checker_s=<y> report_kib=<z>

- payments: payments in the history (result.json availability.operations);
- harness_rss_mb: peak RSS of the `harness run` process while the load ran (its own, not its
  children's: the services, Toxiproxy and Locust are reported apart);
- checker_s: wall time of the separate `harness check RUN_DIR` (every checker and the report); its
  peak RSS is printed on the line before (`checker_rss_mb`);
- report_kib: size of report.html.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.history import iter_jsonl

FAULT_CYCLE = (  # (name, kind, targets, duration s, attributes), one a minute in turn, 20 s into it
    ("slow-payee", "latency", "switch->BNKB", 8, {"latency": 1500}),
    ("payer-link-down", "down", "BNKC->switch", 5, {}),
    ("payee-crash", "crash", "BNKD", 4, {}),
)
SETTLE_EVERY_S = 300
SAMPLE_EVERY_S = 5.0


def scenario_yaml(minutes: float, rate: float) -> str:
    """The soak scenario: faults every minute in turn (each ends well before the next), settlement
    every five minutes, all within the load."""
    duration = int(minutes * 60)
    faults, k = [], 0
    while True:
        name, kind, targets, length, attrs = FAULT_CYCLE[k % len(FAULT_CYCLE)]
        start = 60 * k + 20
        if start + length + 15 > duration:
            break
        faults.append(
            {"name": f"{name}-{k + 1}", "kind": kind, "targets": targets, "start": start, "duration": length}
            | ({"attributes": attrs} if attrs else {})
        )
        k += 1
    settlement = [
        {"at": at, "action": "close_and_settle"} for at in range(SETTLE_EVERY_S, duration - 10, SETTLE_EVERY_S)
    ]
    scenario = {
        "name": f"soak-{minutes:g}m",
        "description": f"Soak: {minutes:g} minutes at {rate:g} payments/s, a fault a minute (benchmarks/soak.py).",
        "load": {"rate": rate, "duration": duration},
        "faults": faults,
        "settlement": settlement,
        "expect": {
            "availability": {"baseline_success_ratio": 0.95, "steady_success_ratio": 0.9},
            "consistency": {"verdict": "consistent", "max_time_to_consistency_s": 60},
        },
    }
    return json.dumps(scenario, indent=1)  # JSON is YAML


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of a live process in MB, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M))
    if "VmRSS" not in kb:
        return None
    return int(kb["VmRSS"]) / 1024, int(kb.get("VmHWM", kb["VmRSS"])) / 1024


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def is_locust(pid: int) -> bool:
    try:
        return b"locust" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@dataclass
class Watch:
    """RSS samples of the harness process (and Locust) while `harness run` goes."""

    pid: int
    log: Path
    samples: list[tuple[float, str, float, float]] = field(default_factory=list)  # (t, phase, harness, locust)
    peak_hwm: float = 0.0
    load_started: float | None = None
    load_done: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def phase(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        if "load done" in text:
            if self.load_done is None:
                self.load_done = time.time()
            return "after"
        if re.search(r"\]\s+\d+\.\ds\s+ops", text):
            if self.load_started is None:
                self.load_started = time.time()
            return "load"
        return "start"

    def run(self) -> None:
        t0 = time.time()
        while not self.stop.wait(SAMPLE_EVERY_S):
            own = rss_mb(self.pid)
            if own is None:
                return
            locust = sum((rss_mb(p) or (0.0, 0.0))[0] for p in descendants(self.pid) if is_locust(p))
            self.peak_hwm = max(self.peak_hwm, own[1])
            self.samples.append((time.time() - t0, self.phase(), own[0], locust))


def sampler_gaps(run_dir: Path) -> tuple[str, str] | None:
    """Mean seconds between live consistency samples in the first and the last minute: what a sample
    costs shows here (a sampler that reads the whole ledgers every time falls further apart)."""
    path = run_dir / "consistency.jsonl"
    if not path.exists():
        return None
    ats = [float(row["at"]) for row in iter_jsonl(path)]
    if len(ats) < 4:
        return None

    def mean_gap(xs: list[float]) -> str:
        return f"{(xs[-1] - xs[0]) / (len(xs) - 1):.1f} s" if len(xs) > 1 else "n/a"

    return mean_gap([a for a in ats if a < ats[0] + 60]), mean_gap([a for a in ats if a > ats[-1] - 60])


def checked(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run a command; (wall seconds, peak RSS MB from the kernel's accounting, exit code)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):  # 1: the run failed a check; the figures still stand
        sys.stdout.write(out.decode(errors="replace"))
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5, help="minutes of load (default 5)")
    ap.add_argument("--rate", type=float, default=40, help="arrivals per second, open model (default 40)")
    ap.add_argument("--out", type=Path, default=Path("reports/soak"), help="where the run directory goes")
    args = ap.parse_args()
    if not 0 < args.minutes <= 240:
        ap.error("--minutes must be in (0, 240] (load.duration is at most 4 h)")
    if not 0 < args.rate <= 500:
        ap.error("--rate must be in (0, 500] payments/s (the machine is shared: keep it modest)")
    args.out.mkdir(parents=True, exist_ok=True)
    scenario = args.out / f"soak-{args.minutes:g}m.yaml"
    scenario.write_text(scenario_yaml(args.minutes, args.rate))
    harness = str(Path(sys.executable).parent / "harness")
    env = dict(os.environ)
    log = args.out / f"soak-{args.minutes:g}m.log"
    print(f"soak: {args.minutes:g} min at {args.rate:g} payments/s; progress in {log}", flush=True)
    with log.open("wb") as f:
        proc = subprocess.Popen([harness, "run", str(scenario), "--out", str(args.out)], env=env, stdout=f, stderr=f)
    watch = Watch(proc.pid, log)
    watcher = threading.Thread(target=watch.run, daemon=True)
    watcher.start()
    # A bound on the whole run: the load, Locust's boot, the grace for in-doubt payments and the check.
    limit_s = args.minutes * 60 * 1.5 + 600
    try:
        code = proc.wait(limit_s)
    except subprocess.TimeoutExpired:
        proc.terminate()  # harness heals, stops what it started and exits 143
        proc.wait(120)
        sys.exit(f"soak: harness run did not finish within {limit_s:.0f} s; see {log}")
    watch.stop.set()
    watcher.join(10)
    text = log.read_text(errors="replace")
    found = re.findall(r"^run directory (\S+)", text, re.M)
    if not found:
        sys.exit(f"soak: harness run exited {code} without a run directory; see {log}")
    run_dir = Path(found[-1])

    # The checkers and the report, alone, in a fresh process: wall time and peak RSS.
    checker_s, checker_rss, check_code = checked([harness, "check", str(run_dir)], env)
    result = json.loads((run_dir / "result.json").read_text())
    payments = int((result.get("availability") or {}).get("operations") or 0)
    report_kib = (run_dir / "report.html").stat().st_size / 1024
    history_mib = sum(p.stat().st_size for p in run_dir.glob("history*")) / 2**20

    load = [s for s in watch.samples if s[1] == "load"]
    after = [s for s in watch.samples if s[1] == "after"]
    if not load:
        sys.exit(f"soak: no memory sample while the load ran; see {log}")
    start = load[0][0]
    by_minute = {}
    for t, _, own, locust in load:
        by_minute.setdefault(int((t - start) // 60), (own, locust))
    print(f"run directory {run_dir} (harness run exited {code}; verdict {result.get('verdict')})")
    print("harness RSS (MB) at each minute of load:", " ".join(f"{m}:{v[0]:.0f}" for m, v in by_minute.items()))
    print("locust RSS (MB) at each minute of load: ", " ".join(f"{m}:{v[1]:.0f}" for m, v in by_minute.items()))
    half = load[len(load) // 2 :]
    print(
        f"harness RSS during load: first {load[0][2]:.0f} MB, peak {max(s[2] for s in load):.0f} MB,"
        f" second half {min(s[2] for s in half):.0f}..{max(s[2] for s in half):.0f} MB;"
        f" after the load (settle, snapshot, in-process check and report): peak"
        f" {max((s[2] for s in after), default=math.nan):.0f} MB (VmHWM of the whole run {watch.peak_hwm:.0f} MB)"
    )
    gaps = sampler_gaps(run_dir)
    if gaps:
        print(f"consistency samples: {gaps[0]} apart in the first minute of load, {gaps[1]} in the last")
    print(
        f"separate `harness check`: {checker_s:.1f} s, checker_rss_mb={checker_rss:.0f} (exit {check_code});"
        f" history {history_mib:.1f} MiB; report {report_kib:.0f} KiB"
    )
    figures = {"minutes": args.minutes, "rate": args.rate, "payments": payments, "checker_s": checker_s}
    figures |= {"checker_rss_mb": checker_rss, "report_kib": report_kib, "samples": watch.samples}
    (run_dir / "soak.json").write_text(json.dumps(figures))
    peak_load = max(s[2] for s in load)
    print(f"payments={payments} harness_rss_mb={peak_load:.1f} checker_s={checker_s:.1f} report_kib={report_kib:.0f}")


if __name__ == "__main__":
    main()
