"""Run the Locust payment customers (harness/load/locustfile.py) headless, in a subprocess.

Locust monkey-patches the standard library with gevent on import, so it never runs inside the
harness process: this module only builds a command line, starts `python -m locust` in its own
process group, watches it and stops it (SIGTERM to the group, then SIGKILL). Nothing here imports
Locust or gevent.

    result = run_load(run_dir, users=8, run_time_s=30)             # closed model; blocks; bounded
    result = run_load(run_dir, open=OpenLoad(rate=150, duration_s=30))   # open model
    result.history                                                   # run_dir/history.jsonl

    load = start_load(scenario, customer_urls, run_dir)              # the runner's non-blocking form
    while not load.wait(1.0): print(load.operations())
    result = load.stop()

Files in the run directory: history.jsonl (one line per customer operation, merged from the
workers' history.<pid>.jsonl parts when several processes ran), load.json (the open model's
generator figures, merged from load.<pid>.json parts; harness/loadfile.py), logs/locust.log (Locust's
stdout and stderr), and Locust's own statistics: locust.json (final, per request name),
locust_stats.csv, locust_stats_history.csv (per second), locust_failures.csv, locust_exceptions.csv.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

import orjson

from harness import loadfile
from harness.errors import LoadError
from harness.load import collect
from harness.procs import end_stragglers, free_port, signal_group
from harness.rundir import PROJECT_ROOT, RunDir
from mock_switch.config import SystemConfig

if TYPE_CHECKING:
    from harness.scenario import Scenario

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
HISTORY = "history.jsonl"
CSV_PREFIX = "locust"
# Logged by the locustfile when its customers start (per worker with --processes).
READY_MARKER = b"payment customers started"

DEFAULT_MASTER_BIND = "127.0.0.1:5557"
WORKERS_WAIT_S = 120.0  # the master waits this long for `harness worker` processes to join

UnknownPolicy = Literal["status", "retry", "none"]
ShapeKind = Literal["constant", "ramp", "spike"]
Spacing = Literal["even", "poisson"]


@dataclass(frozen=True, slots=True)
class OpenLoad:
    """The open model (harness/load/arrivals.py): arrivals at `rate` per second for `duration_s`,
    whatever the system answers; one arrival generator per Locust process."""

    rate: float
    duration_s: float
    shape: ShapeKind = "constant"
    base_rate: float | None = None  # ramp start / spike base; None: rate/10 (ramp), rate/5 (spike)
    ramp_s: float | None = None  # None: half the duration
    spike_at_s: float | None = None  # None: a third of the duration
    spike_s: float | None = None  # None: a third of the duration
    arrivals: Spacing = "even"
    max_in_flight: int = 1000

    def args(self) -> list[str]:
        def opt(x: float | None) -> str:
            return "-1" if x is None else repr(float(x))

        return [
            "--load-model", "open",
            "--rate", repr(float(self.rate)),
            "--rate-shape", self.shape,
            "--base-rate", opt(self.base_rate),
            "--rate-duration", repr(float(self.duration_s)),
            "--rate-ramp-s", opt(self.ramp_s),
            "--rate-spike-at-s", opt(self.spike_at_s),
            "--rate-spike-s", opt(self.spike_s),
            "--arrivals", self.arrivals,
            "--max-in-flight", str(self.max_in_flight),
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ShapeSpec:
    """A load shape of harness/load/shapes.py, always bounded by `duration_s`."""

    kind: ShapeKind
    users: int = 10  # constant users; peak of a ramp; users during a spike
    duration_s: float = 60.0
    spawn_rate: float = 10.0
    base_users: int = 1  # ramp: users at the start; spike: users before and after
    ramp_s: float = 30.0
    spike_at_s: float = 10.0
    spike_s: float = 10.0

    def args(self) -> list[str]:
        return [
            "--shape", self.kind,
            "--shape-users", str(self.users),
            "--shape-base-users", str(self.base_users),
            "--shape-spawn-rate", repr(float(self.spawn_rate)),
            "--shape-duration", repr(float(self.duration_s)),
            "--shape-ramp-s", repr(float(self.ramp_s)),
            "--spike-at-s", repr(float(self.spike_at_s)),
            "--spike-s", repr(float(self.spike_s)),
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoadResult:
    run_dir: Path
    history: Path | None  # None when recording was off
    returncode: int | None
    elapsed_s: float
    log: Path
    csv_prefix: Path
    timed_out: bool = False

    def stats(self) -> dict[str, dict[str, float]]:
        """Locust's final statistics per request name ("POST /payments", "GET /parties/[id]", ...):
        requests, failures, requests_per_s, avg_ms, p50_ms, p99_ms. Empty if Locust wrote none."""
        path = self.csv_prefix.with_name(self.csv_prefix.name + ".json")
        try:
            entries = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        rows: dict[str, dict[str, float]] = {}
        for e in entries:
            n = int(e["num_requests"])
            span = max(1e-9, float(e["last_request_timestamp"] or 0) - float(e["start_time"] or 0))
            times = sorted((float(ms), int(count)) for ms, count in (e.get("response_times") or {}).items())
            rows[e["name"]] = {
                "requests": n,
                "failures": int(e["num_failures"]),
                "requests_per_s": n / span if n > 1 else 0.0,
                "avg_ms": float(e["total_response_time"]) / n if n else 0.0,
                "p50_ms": _percentile(times, n, 0.50),
                "p99_ms": _percentile(times, n, 0.99),
            }
        return rows


def _percentile(times: list[tuple[float, int]], n: int, q: float) -> float:
    seen = 0
    for ms, count in times:
        seen += count
        if seen >= q * n:
            return ms
    return float("nan")


@dataclass
class LoadRun:
    """A running Locust subprocess. `stop()` always ends it and merges the history."""

    run_dir: Path
    argv: list[str]
    env: dict[str, str]
    history: Path | None
    hard_timeout_s: float
    term_grace_s: float
    started_at: float = 0.0  # epoch seconds: when Locust was started, then (wait_started) when customers did
    proc: subprocess.Popen[bytes] | None = None
    result: LoadResult | None = None
    _started_mono: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)
    _log_offset: int = 0
    _counted: dict[Path, tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def log_path(self) -> Path:
        return RunDir(self.run_dir).log("locust")

    def start(self) -> LoadRun:
        if self.history is not None:  # count only this run's operations
            for path in [self.history, *history_parts(self.history.parent)]:
                with contextlib.suppress(OSError):
                    self._counted[path] = (path.stat().st_size, 0)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._log_offset = self._log.tell()
        self.started_at, self._started_mono = time.time(), time.monotonic()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.run_dir,  # no stray locust.conf / pyproject.toml of the caller's directory
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: the workers of --processes go with it
            )
        except OSError as exc:
            self._close_log()
            raise LoadError(f"could not start Locust ({self.argv[0]}): {exc}") from exc
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_started(self, timeout_s: float = 60.0) -> float:
        """Wait until the customers have started (Locust takes a second or more to import and spawn);
        sets and returns `started_at`. LoadError if Locust exits or does not start in time."""
        deadline = time.monotonic() + timeout_s
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            seen = b""
            while True:
                seen = seen[-len(READY_MARKER) :] + log.read()
                if READY_MARKER in seen:
                    self.started_at = time.time()
                    return self.started_at
                if self.proc is None or self.proc.poll() is not None:
                    code = self.proc.returncode if self.proc is not None else None
                    raise LoadError(f"Locust exited with code {code} before its customers started; see {self.log_path}")
                if time.monotonic() > deadline:
                    raise LoadError(f"Locust's customers did not start within {timeout_s:.0f}s; see {self.log_path}")
                time.sleep(0.05)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for Locust to finish; True when it has."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            return False
        return True

    def overdue(self) -> bool:
        return time.monotonic() - self._started_mono > self.hard_timeout_s

    def operations(self) -> int:
        """History lines this run has written so far (lines still buffered in Locust are not counted)."""
        if self.history is None:
            return 0
        total = 0
        for path in [self.history, *history_parts(self.history.parent)]:
            offset, lines = self._counted.get(path, (0, 0))
            with contextlib.suppress(OSError), path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
                lines += chunk.count(b"\n")
                offset += len(chunk)
            self._counted[path] = (offset, lines)
            total += lines
        return total

    def stop(self, timed_out: bool = False) -> LoadResult:
        """End Locust if it still runs (SIGTERM to its group, SIGKILL after the grace period),
        merge the workers' history and load.json parts, and say how it went. Safe to call more than once."""
        if self.result is not None:
            return self.result
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                signal_group(proc.pid, signal.SIGTERM)  # Locust flushes the history and exits
                try:
                    proc.wait(self.term_grace_s)
                except subprocess.TimeoutExpired:
                    signal_group(proc.pid, signal.SIGKILL)  # the master and its workers
                    proc.wait()
                except BaseException:  # a second Ctrl-C: stop now
                    signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise
            end_stragglers(proc.pid)
        self._close_log()
        reckoned = collect.reckon(self.run_dir)  # remote workers: what a lost one never reported
        history = merge_histories(self.run_dir) if self.history is not None else None
        loadfile.merge(RunDir(self.run_dir).load_figures)
        if reckoned is not None:
            record_workers(RunDir(self.run_dir).load_figures, reckoned)
        self.result = LoadResult(
            run_dir=self.run_dir,
            history=history,
            returncode=proc.returncode if proc is not None else None,
            elapsed_s=time.monotonic() - self._started_mono,
            log=self.log_path,
            csv_prefix=self.run_dir / CSV_PREFIX,
            timed_out=timed_out,
        )
        return self.result

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What Locust runs; see `run_load` for the meaning of each field."""

    system_json: Path | None = None
    bank_urls: Mapping[str, str] | None = None
    users: int = 10
    spawn_rate: float = 10.0
    run_time_s: float = 10.0
    shape: ShapeSpec | None = None
    open: OpenLoad | None = None  # the open model; None: closed (users, spawn_rate, run_time_s or shape)
    processes: int = 1
    workers: int = 0  # > 0: a master that waits for this many `harness worker` processes (any host)
    master_bind: str = DEFAULT_MASTER_BIND  # HOST:PORT the master listens on for them
    unknown_policy: UnknownPolicy = "status"
    max_attempts: int = 5
    resolve_s: float = 10.0
    request_timeout_s: float = 10.0
    think_time_s: float = 0.0
    payer_banks: Sequence[str] | None = None
    amount_range: tuple[int, int] | None = None
    record_history: bool = True
    run_id: str | None = None
    seed: int = 1
    stop_timeout_s: float | None = None
    hard_timeout_s: float | None = None
    extra_args: Sequence[str] = ()
    latency_slo_ms: float = 2000.0

    @property
    def drain_s(self) -> float:
        """Open model: after the last arrival, its customers may take a name enquiry and a payment,
        each up to the request timeout; the generator ends the test as soon as they are done."""
        return 2 * self.request_timeout_s + 3

    @property
    def duration_s(self) -> float:
        if self.open is not None:
            return math.ceil(self.open.duration_s + self.drain_s)
        return self.shape.duration_s if self.shape is not None else max(1, round(self.run_time_s))

    @property
    def stop_timeout(self) -> float:
        return self.request_timeout_s + 1.0 if self.stop_timeout_s is None else self.stop_timeout_s

    def argv(self, run_dir: Path, system_json: Path, history: Path | None) -> list[str]:
        argv = [
            sys.executable, "-m", "locust",
            "-f", str(LOCUSTFILE),
            "--headless", "--only-summary",
            "--csv", str(run_dir / CSV_PREFIX),
            "--json-file", str(run_dir / CSV_PREFIX),
            "--exit-code-on-error", "0",  # failed requests are what chaos runs are for, not a crash
            "--stop-timeout", f"{math.ceil(self.stop_timeout)}s",  # whole seconds only
            "--loglevel", "INFO",
            "--system-json", str(system_json),
            "--history", str(history) if history is not None else "off",
            "--unknown-policy", self.unknown_policy,
            "--max-attempts", str(self.max_attempts),
            "--resolve-s", repr(float(self.resolve_s)),
            "--request-timeout", repr(float(self.request_timeout_s)),
            "--think-time", repr(float(self.think_time_s)),
            "--run-id", self.run_id or f"r{int(time.time()):x}",
            "--seed", str(self.seed),
            "--parent-pid", str(os.getpid()),
            "--latency-slo-ms", repr(float(self.latency_slo_ms)),
        ]  # fmt: skip
        if self.bank_urls:
            argv += ["--bank-urls", ",".join(f"{code}={url}" for code, url in self.bank_urls.items())]
        if self.payer_banks:
            argv += ["--payer-banks", ",".join(self.payer_banks)]
        if self.amount_range is not None:
            argv += ["--amount-min", str(self.amount_range[0]), "--amount-max", str(self.amount_range[1])]
        if self.open is not None:
            # One generator per process; --run-time only bounds a run whose generators did not end it.
            argv += self.open.args()
            generators = self.workers or self.processes
            argv += ["--users", str(generators), "--spawn-rate", str(generators)]
            argv += ["--run-time", f"{self.duration_s:.0f}s"]
        elif self.shape is not None:
            argv += self.shape.args()
        else:
            argv += ["--users", str(self.users), "--spawn-rate", repr(float(self.spawn_rate))]
            argv += ["--run-time", f"{self.duration_s:.0f}s"]
        if self.workers > 0:
            host, bind_port = master_address(self.master_bind)
            argv += ["--master", "--expect-workers", str(self.workers)]
            argv += ["--expect-workers-max-wait", f"{WORKERS_WAIT_S:.0f}", "--remote-workers", str(self.workers)]
            argv += ["--master-bind-host", host, "--master-bind-port", str(bind_port)]
        elif self.processes > 1:
            # A master port of our own on loopback: with Locust's default (5557 on every interface)
            # the workers of two concurrent runs meet the other run's master and take its users.
            port = str(free_port())
            argv += ["--processes", str(self.processes), "--master-bind-host", "127.0.0.1"]
            argv += ["--master-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port]
        return argv + list(self.extra_args)


def _require_system_json(path: Path) -> Path:
    if not path.exists():
        raise LoadError(f"{path}: no such file", fix="start the topology first (it writes system.json)")
    return path


def start_locust(run_dir: Path, options: LoadOptions) -> LoadRun:
    """Start Locust headless (see `run_load`); returns at once with a handle to wait on and stop."""
    run_dir = run_dir.resolve()
    system_json = _require_system_json((options.system_json or RunDir(run_dir).system).resolve())
    if options.users < 1 or options.processes < 1:
        raise LoadError("users and processes must be at least 1")
    if options.workers > 0 and options.processes > 1:
        raise LoadError("load.processes and load.workers exclude each other", fix="give one of them")
    history = run_dir / HISTORY if options.record_history else None
    argv = options.argv(run_dir, system_json, history)
    # Locust's own LOCUST_* and our PAYSWITCH_* variables would silently change the run: only argv counts.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PAYSWITCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    stop_timeout = options.stop_timeout
    startup_s = 20.0 + 2.0 * options.processes + (WORKERS_WAIT_S if options.workers else 0.0)
    hard = options.hard_timeout_s
    if hard is None:
        hard = options.duration_s + stop_timeout + startup_s
    return LoadRun(run_dir, argv, env, history, hard, term_grace_s=stop_timeout + 5.0).start()


def run_load(
    run_dir: Path,
    *,
    system_json: Path | None = None,
    bank_urls: Mapping[str, str] | None = None,
    users: int = 10,
    spawn_rate: float = 10.0,
    run_time_s: float = 10.0,
    shape: ShapeSpec | None = None,
    open: OpenLoad | None = None,
    processes: int = 1,
    unknown_policy: UnknownPolicy = "status",
    max_attempts: int = 5,
    resolve_s: float = 10.0,
    request_timeout_s: float = 10.0,
    think_time_s: float = 0.0,
    payer_banks: Sequence[str] | None = None,
    amount_range: tuple[int, int] | None = None,
    record_history: bool = True,
    run_id: str | None = None,
    seed: int = 1,
    stop_timeout_s: float | None = None,
    hard_timeout_s: float | None = None,
    extra_args: Sequence[str] = (),
    latency_slo_ms: float = 2000.0,
) -> LoadResult:
    """Run the Locust customers headless in a subprocess until they are done; return the history.

    - `system_json`: the system's configuration (default run_dir/system.json, as LocalTopology writes).
    - `bank_urls`: where customers reach each bank: Toxiproxy's customers->BANK listeners in chaos
      runs; default (and for a bank not named) the bank's own address.
    - `open`: the open model, arrivals at a rate (users, spawn_rate, run_time_s and shape unused).
    - Closed model: without `shape`, `users` customers started at `spawn_rate`/s for `run_time_s`
      (whole seconds, at least 1); with a `ShapeSpec`, that shape, which ends after its `duration_s`.
    - `processes` > 1: a Locust master and that many worker processes, to use more cores.
    - `unknown_policy`: after a timeout, connection error, 5xx or PDNG, ask for the status ("status"),
      re-send the same payment ("retry") or do nothing ("none"); at most `max_attempts` times and
      none started later than `resolve_s` after the first answer. `request_timeout_s` per request.
    - `payer_banks`: customers only of these banks; `amount_range`: (min, max) amounts, minor units.
    - `record_history`: False records nothing (for an overhead benchmark).
    - `run_id`: first part of every payment id (default: from the clock); `seed` for the draws.
    - At the end, customers get `stop_timeout_s` (default request timeout + 1 s) to finish the payment
      in hand; one cut off is recorded as unknown with error "cancelled".
    - `hard_timeout_s` bounds the whole run (default duration + stop timeout + start-up allowance);
      past it Locust is stopped and LoadError raised. On Ctrl-C or any error Locust is stopped
      (SIGTERM to its process group, SIGKILL after a grace period) before the exception propagates.
    - `extra_args`: more Locust command-line arguments.
    """
    options = LoadOptions(
        system_json=system_json, bank_urls=bank_urls, users=users, spawn_rate=spawn_rate, run_time_s=run_time_s,
        shape=shape, open=open, processes=processes, unknown_policy=unknown_policy, max_attempts=max_attempts,
        resolve_s=resolve_s, request_timeout_s=request_timeout_s, think_time_s=think_time_s,
        payer_banks=payer_banks, amount_range=amount_range, record_history=record_history, run_id=run_id,
        seed=seed, stop_timeout_s=stop_timeout_s, hard_timeout_s=hard_timeout_s, extra_args=extra_args,
        latency_slo_ms=latency_slo_ms,
    )  # fmt: skip
    load = start_locust(run_dir, options)
    timed_out = False
    try:
        load.wait_started(load.hard_timeout_s)
        while not load.wait(0.5):
            if load.overdue():
                timed_out = True
                break
    finally:
        result = load.stop(timed_out)
    if timed_out:
        raise LoadError(f"Locust did not finish within {load.hard_timeout_s:.0f}s and was stopped; see {result.log}")
    if result.returncode not in (0, None):
        raise LoadError(f"Locust exited with code {result.returncode}; see {result.log}")
    return result


def start_load(scenario: Scenario, customer_urls: Mapping[str, str], run_dir: Path) -> LoadRun:
    """The runner's entry point: the scenario's load, sent to `customer_urls` (where customers reach
    each bank: the testbed's customers->BANK links), against the system of run_dir/system.json.

    Plain values rather than the testbed, so the load part does not depend on another part."""
    spec = scenario.load
    system_json = _require_system_json(RunDir(run_dir).system)
    shape: ShapeSpec | None = None
    open_load: OpenLoad | None = None
    if spec.model == "open":
        # Shapes as rates, timed like the closed shapes below: a ramp over the first half, a spike
        # in the middle third.
        open_load = OpenLoad(
            rate=spec.rate,
            duration_s=spec.duration,
            shape=spec.shape,
            base_rate=spec.effective_base_rate,
            ramp_s=spec.duration / 2,
            spike_at_s=spec.duration / 3,
            spike_s=spec.duration / 3,
            arrivals=spec.arrivals,
            max_in_flight=spec.max_in_flight,
        )
    else:
        shape = ShapeSpec(
            kind=spec.shape,
            users=spec.users,
            duration_s=spec.duration,
            spawn_rate=spec.spawn_rate,
            # ramp: from one user to `users` over the first half; spike: a fifth of the users, then all
            # of them for the middle third.
            base_users=1 if spec.shape == "ramp" else max(1, spec.users // 5),
            ramp_s=spec.duration / 2,
            spike_at_s=spec.duration / 3,
            spike_s=spec.duration / 3,
        )
    options = LoadOptions(
        system_json=system_json,
        bank_urls=customer_urls,
        shape=shape,
        open=open_load,
        processes=spec.processes,
        workers=spec.workers,
        master_bind=spec.master_bind,
        unknown_policy=spec.unknown_policy,
        # Banks answer PDNG after their customer timeout; the customer waits a little longer than that.
        request_timeout_s=max(b.customer_timeout_s for b in SystemConfig.load(system_json).banks) + 2.0,
        payer_banks=spec.payer_banks,
        amount_range=(spec.amount_min, spec.amount_max),
        seed=scenario.seed,
        latency_slo_ms=scenario.expect.availability.latency_slo_ms,
    )
    load = start_locust(run_dir, options)
    try:
        if options.workers:
            print(f"waiting for {options.workers} workers: harness worker --master {options.master_bind}", flush=True)
        # so `started_at` (the runner's t0 for faults) is when customers started
        load.wait_started(60.0 + (WORKERS_WAIT_S if options.workers else 0.0))
    except BaseException:
        load.stop()
        raise
    return load


# -- history files --------------------------------------------------------------------------------


def history_parts(run_dir: Path) -> list[Path]:
    """The per-worker files `history.<pid>.jsonl` (remote workers: `history.wN.jsonl`) not merged yet."""
    return sorted(p for p in run_dir.glob("history.*.jsonl") if _part_name(p.name.split(".")[1]))


def _part_name(part: str) -> bool:
    return part.isdigit() or collect.is_worker_name(part)


# -- workers on other hosts -----------------------------------------------------------------------


def master_address(raw: str, default_port: int = 5557) -> tuple[str, int]:
    """HOST[:PORT] -> (host, port); LoadError naming the value when it is not one."""
    host, sep, port = raw.strip().rpartition(":")
    if not sep:
        host, port = raw.strip(), str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LoadError(f"master address {raw!r}: expected HOST or HOST:PORT", fix="e.g. 10.0.0.5:5557")
    return host, int(port)


def worker_argv(master: str) -> tuple[list[str], dict[str, str]]:
    """`harness worker --master HOST[:PORT]`: Locust as a worker of that master with our locustfile,
    in the current directory; it gets the system and its options from the master and sends its
    history back over the same connection (harness/load/collect.py)."""
    host, port = master_address(master)
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker"]
    argv += ["--master-host", host, "--master-port", str(port), "--loglevel", "INFO"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "PAYSWITCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return argv, env


def record_workers(load_json: Path, reckoned: dict[str, object]) -> None:
    """Put the remote workers and what was lost with any of them into load.json (read into result.json)."""
    figures = loadfile.read(load_json) or {}
    lost = [{**x, "message": collect.describe_lost(x)} for x in reckoned["lost_workers"]]  # type: ignore[attr-defined]
    for x in lost:
        print(f"WARNING: {x['message']}", file=sys.stderr, flush=True)
    loadfile.write(load_json, {**figures, "workers": reckoned["workers"], "lost_workers": lost,
                               "unreported": reckoned["unreported"]})  # fmt: skip


def _lines_by_completion(path: Path) -> Iterator[tuple[float, bytes]]:
    with path.open("rb") as f:
        for line in f:
            try:
                complete = float(orjson.loads(line)["complete"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # blank, or the last line of a worker killed mid-write: nothing to keep
            yield complete, line if line.endswith(b"\n") else line + b"\n"


def merge_histories(run_dir: Path) -> Path:
    """Append the workers' history parts to run_dir/history.jsonl, in order of completion time
    (each part is already in that order), then delete the parts. Returns the history's path."""
    target = run_dir / HISTORY
    parts = history_parts(run_dir)
    if not parts:
        target.touch()
        return target
    streams = [_lines_by_completion(p) for p in parts]
    with target.open("ab") as out:
        for _complete, line in heapq.merge(*streams, key=lambda item: item[0]):
            out.write(line)
    for p in parts:
        p.unlink()
    return target
