"""What the harness-path benchmarks share: the testbed they load, a count of the payments it has
decided, and CPU time per process kind from the processes' own accounting (/proc/<pid>/stat).

Imported by the scripts beside it (`python benchmarks/x.py` puts this folder on sys.path).

CPU time is utime + stime of each process (all its threads). A process's children are counted
where they belong: Locust's workers (children of the Locust master, found while they run) count as
Locust, and the services' and Toxiproxy's CPU is read from their own pids. The harness is this
process (its own time only: its children are the services, already counted) plus the guardian.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.load.control import LoadOptions, start_locust
from harness.rundir import RunDir
from harness.testbed.bed import Testbed
from harness.testbed.local import LocalTopology
from harness.testbed.system import build_system
from mock_switch.config import Durability

TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("switch", "banks", "toxiproxy", "locust", "harness")
Snapshot = dict[str, dict[int, tuple[int, int]]]  # kind -> pid -> (utime, stime) in clock ticks


@contextlib.contextmanager
def harness_testbed(run_dir: Path, durability: Durability = "fsync", accounts: int = 1000) -> Iterator[Testbed]:
    """Toxiproxy, one proxy per link, the switch and 4 banks dialling each other through it."""
    with Testbed(build_system(banks=4, accounts=accounts, durability=durability), run_dir) as bed:
        yield bed


# -- CPU accounting -------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(utime, stime) of `pid` (every thread of it), in clock ticks; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)


def children_of(pid: int) -> list[int]:
    kids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


@dataclass
class CpuMeter:
    """Which pids belong to which kind; `snapshot()` reads them all at once."""

    pids: dict[str, Callable[[], list[int]]]

    def snapshot(self) -> Snapshot:
        snap: Snapshot = {}
        for kind, find in self.pids.items():
            snap[kind] = {}
            for pid in find():
                ticks = cpu_ticks(pid)
                if ticks is not None:
                    snap[kind][pid] = ticks
        return snap

    @staticmethod
    def used_ms(before: Snapshot, after: Snapshot, part: int = -1) -> dict[str, float]:
        """CPU milliseconds per kind between two snapshots (a process born in between counts from 0):
        user + system time, or only user (`part` 0) or system (`part` 1) time."""
        used: dict[str, float] = {}
        for kind, pids in after.items():
            ticks = 0
            for pid, now in pids.items():
                was = before.get(kind, {}).get(pid, (0, 0))
                ticks += sum(now[i] - was[i] for i in ((0, 1) if part < 0 else (part,)))
            used[kind] = ticks * 1000.0 / TICKS
        return used


def testbed_meter(bed: Testbed | LocalTopology, load_pid: Callable[[], int | None] | None = None) -> CpuMeter:
    """Switch, banks, Toxiproxy (if any), Locust (master and workers, if any), harness (this process
    and the guardian)."""
    topo = bed.topology if isinstance(bed, Testbed) else bed

    def pid_list(*pids: int | None) -> list[int]:
        return [p for p in pids if p is not None]

    def locust() -> list[int]:
        master = load_pid() if load_pid is not None else None
        return [] if master is None else [master, *children_of(master)]

    def toxiproxy() -> list[int]:
        if not isinstance(bed, Testbed) or bed.toxiproxy.proc is None:
            return []
        return [bed.toxiproxy.proc.pid]

    def switch() -> list[int]:
        return pid_list(topo.switch.pid)

    def banks() -> list[int]:
        return pid_list(*(topo.bank(c).pid for c in topo.bank_codes))

    def harness() -> list[int]:
        # This process, and its children that are none of the above (the testbed's guardian).
        others = {*switch(), *banks(), *toxiproxy(), *(p for p in [load_pid() if load_pid else None] if p)}
        return [os.getpid(), *(c for c in children_of(os.getpid()) if c not in others)]

    return CpuMeter({"switch": switch, "banks": banks, "toxiproxy": toxiproxy, "locust": locust, "harness": harness})


# -- how many payments are decided ------------------------------------------------------------------


class DecidedPayments:
    """Payments the payer banks have decided (finalised or rejected), read from their ledgers with
    read-only SQLite connections (WAL: readers never block the services' writers)."""

    def __init__(self, run_dir: Path, bank_codes: list[str]) -> None:
        data = RunDir(run_dir).data
        self.paths = [data / code / f"{code.lower()}.db" for code in bank_codes]
        self._conns: list[sqlite3.Connection] = []

    def count(self) -> int:
        if not self._conns:
            self._conns = [sqlite3.connect(f"file:{p}?mode=ro", uri=True) for p in self.paths]
        query = "SELECT count(*) FROM payments WHERE status != 'PDNG'"
        return sum(int(c.execute(query).fetchone()[0]) for c in self._conns)

    def wait_for(self, target: int, deadline: float, poll_s: float = 0.05) -> int:
        """Wait until at least `target` payments are decided or the monotonic `deadline` passes."""
        while True:
            n = self.count()
            if n >= target or time.monotonic() >= deadline:
                return n
            time.sleep(poll_s)

    def close(self) -> None:
        for c in self._conns:
            c.close()
        self._conns = []


def cpu_line(used: dict[str, float], payments: int, seconds: float) -> tuple[str, dict[str, float]]:
    """The figures line (total includes the harness) and the per-kind figures it was made from."""
    per = {kind: used.get(kind, 0.0) / max(1, payments) for kind in KINDS}
    per["total"] = sum(per[k] for k in KINDS)
    rate = payments / seconds if seconds > 0 else 0.0
    line = (
        f"switch_cpu_ms={per['switch']:.3f} banks_cpu_ms={per['banks']:.3f} toxiproxy_cpu_ms={per['toxiproxy']:.3f}"
        f" locust_cpu_ms={per['locust']:.3f} total_cpu_ms={per['total']:.3f} payments_per_s={rate:.0f}"
    )
    return line, per


@dataclass(frozen=True)
class Measured:
    used: dict[str, float]  # CPU ms per kind, and per '<kind>_sys' the part spent in the kernel
    payments: int
    seconds: float
    stop_cpu_ms: float = 0.0  # this process's CPU while stopping Locust (with a history: merging its parts)
    history_lines: int = 0


def used_and_sys(before: Snapshot, after: Snapshot) -> dict[str, float]:
    used = CpuMeter.used_ms(before, after)
    used.update({f"{k}_sys": v for k, v in CpuMeter.used_ms(before, after, part=1).items()})
    return used


def measure_locust(
    bed: Testbed, run_dir: Path, *, payments: int, warmup: int, users: int, processes: int,
    record_history: bool = True, max_s: float = 120.0,
) -> Measured:  # fmt: skip
    """Locust customers through the testbed's customers->BANK links: after `warmup` more payments
    are decided, CPU is read from every process, then again once `payments` more are decided (or
    `max_s` has passed); then Locust is stopped. `run_dir` holds this load's files (history ...)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    decided = DecidedPayments(bed.run_dir, bed.topology.bank_codes)
    options = LoadOptions(
        system_json=bed.topology.config_path, bank_urls=bed.customer_urls, users=users, spawn_rate=users,
        run_time_s=max_s, processes=processes, record_history=record_history, hard_timeout_s=max_s + 60,
    )  # fmt: skip
    start = decided.count()
    load = start_locust(run_dir, options)
    try:
        meter = testbed_meter(bed, lambda: load.proc.pid if load.proc is not None else None)
        load.wait_started()
        deadline = time.monotonic() + max_s
        c0 = decided.wait_for(start + warmup, deadline)
        before, t0 = meter.snapshot(), time.monotonic()
        c1 = decided.wait_for(c0 + payments, deadline)
        after, t1 = meter.snapshot(), time.monotonic()
        if c1 - c0 < payments:  # say where it stalled, so a short run can be looked into
            print(
                f"measure_locust: {c0 - start} warm-up and {c1 - c0} measured payments decided within {max_s:.0f}s;"
                f" Locust's log: {load.log_path}, services' logs: {RunDir(bed.run_dir).logs}",
                file=sys.stderr,
            )
    finally:
        stopping = time.process_time()
        result = load.stop()
        stop_cpu_ms = (time.process_time() - stopping) * 1000
        decided.close()
    lines = sum(1 for _ in result.history.open("rb")) if result.history is not None else 0
    return Measured(used_and_sys(before, after), c1 - c0, t1 - t0, stop_cpu_ms, lines)


# -- issue 12's targets, printed by the benchmarks that measure them -------------------------------

DIRECT_TARGET_PER_S = 1000  # end to end, no proxy (switch_throughput.py)
HARNESS_TARGET_PER_S = 600  # through Toxiproxy + Locust + history (harness_throughput.py)
P99_TARGET_MS = 250.0


def target_words(rate: float, p99_ms: float, target_per_s: int) -> str:
    """`target_per_s=<t> p99_target_ms=<p> target_met=yes|no` for a benchmark's last line."""
    met = rate >= target_per_s and p99_ms < P99_TARGET_MS
    return f"target_per_s={target_per_s} p99_target_ms={P99_TARGET_MS:.0f} target_met={'yes' if met else 'no'}"


def direct_run(seconds: float, concurrency: int, durability: Durability = "fsync") -> dict[str, Any]:
    """The system alone, no proxy: a closed loop of `concurrency` customers in this process straight
    at the banks for `seconds` (after a 1 s warm-up); harness.load.customers.summarise's figures."""
    import asyncio
    import tempfile

    from harness.load.customers import drive, summarise
    from harness.testbed.local import local_system

    with (
        tempfile.TemporaryDirectory(prefix="switch-bench-") as tmp,
        local_system(Path(tmp), accounts=1000, durability=durability) as topo,
    ):
        urls = {code: topo.bank(code).url for code in topo.bank_codes}
        asyncio.run(drive(topo.system, urls, 1.0, concurrency, prefix="warm"))  # connections, caches
        started = time.monotonic()
        results = asyncio.run(drive(topo.system, urls, seconds, concurrency, prefix="bench"))
        elapsed = time.monotonic() - started
    return {**summarise(results, elapsed), "seconds": round(elapsed, 2)}
