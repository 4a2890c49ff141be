"""Locust customers of the mock payment system: name enquiry, then a payment, then (if the outcome is
unknown) a status query or a re-send, each name enquiry, payment and status query appended to the history.

Two load models (DESIGN.md section 5), chosen with --load-model when Locust starts:

- closed (the default here, for the web UI's user count): `PaymentCustomer` users, each paying again
  only once it has its answer, so a hung system slows the customers down (outages undercounted);
- open (what scenarios run): one `ArrivalGenerator` user per Locust process plays its slice of the
  arrival schedule of harness/load/arrivals.py: at each scheduled time (Locust's wait_time says
  how long until the next one) it starts a customer journey in a gevent pool bounded by
  --max-in-flight, whatever the system answers. A journey that cannot start within
  harness.loadfile.NOT_SENT_AFTER_S of its time, or finds the pool full, is recorded as an
  unavailable payment at its scheduled time (error `not-sent` / `in-flight-bound`); the generator's
  figures go to load.json (harness/loadfile.py).

Headless from the harness (`harness.load.control.run_load` starts it in a subprocess) or by hand:

    locust -f harness/load/locustfile.py                          # web UI; options editable in the form
    locust -f harness/load/locustfile.py --system-json RUN/system.json --headless -u 20 -r 10 -t 30s
    locust -f harness/load/locustfile.py --shape ramp --shape-users 50 --shape-duration 120 ...

Options (Locust custom arguments; each also read from the environment variable in brackets):

    --system-json PATH      the system's configuration [PAYSWITCH_SYSTEM_JSON]; default: the newest
                            reports/runs/*/system.json of this project (with a warning)
    --bank-urls MAP         BNKA=http://127.0.0.1:8001,BNKB=... where customers reach their bank (the
                            Toxiproxy listeners of the customers->BANK links in chaos runs)
                            [PAYSWITCH_BANK_URLS]; a bank not named is reached at its own address
    --payer-banks LIST      BNKA,BNKB: customers only of these banks [PAYSWITCH_PAYER_BANKS]
    --amount-min/--amount-max N
                            amounts drawn uniformly in [min, max], minor units (default: the usual
                            100..20,000 of harness.load.customers.Customers) [PAYSWITCH_AMOUNT_MIN/MAX]
    --history PATH|off      history file [PAYSWITCH_HISTORY]; default: history.jsonl next to
                            system.json when --system-json is given, else none; `off` records
                            nothing (overhead benchmark)
    --unknown-policy P      status | retry | none: what a customer does about an unknown outcome
                            (timeout, connection error, 5xx, PDNG) [PAYSWITCH_UNKNOWN_POLICY]
    --max-attempts N        status queries or re-sends per unknown payment [PAYSWITCH_MAX_ATTEMPTS]
    --resolve-s S           no new status query / re-send starts later than S seconds after the first
                            answer [PAYSWITCH_RESOLVE_S]
    --request-timeout S     the customer's HTTP timeout per request [PAYSWITCH_REQUEST_TIMEOUT]
    --think-time S          pause between a customer's payments [PAYSWITCH_THINK_TIME]
    --run-id ID             first part of every payment id [PAYSWITCH_RUN_ID]; default: from the clock
    --seed N                seed of the customers' random draws [PAYSWITCH_SEED]
    --shape NAME            constant | ramp | spike (see harness/load/shapes.py) [PAYSWITCH_SHAPE];
                            chosen when Locust starts; without it the users/spawn rate/run time of
                            Locust's own options (or of the web UI form) apply (closed model)
    --load-model M          closed | open [PAYSWITCH_LOAD_MODEL], chosen when Locust starts. Open:
                            run with -u equal to the number of processes (one generator each) and
                            --rate R (arrivals/s), --rate-shape constant|ramp|spike, --base-rate B,
                            --rate-duration S, --rate-ramp-s, --rate-spike-at-s, --rate-spike-s,
                            --arrivals even|poisson, --max-in-flight N
    --latency-slo-ms MS     an answer later than this counts as a failure in Locust's statistics,
                            as in the availability checker (harness.history.is_available)
    --parent-pid PID        stop when this process (the harness) is gone [PAYSWITCH_PARENT_PID]

Against `harness up` (or `harness ui`), a plain `locust -f harness/load/locustfile.py` needs no option:
without --system-json it takes the system, the customers' Toxiproxy links and the history file from
reports/runs/up.json (or the file PAYSWITCH_UP_STATE names), so faults hit the load. The Chaos tab
is not part of the load: harness/web/locustfile.py adds it (what `harness ui` runs). With
--class-picker, the web UI offers the three load shapes (and their parameters) next to "Default".

Each user is a customer of one payer bank (round robin over the banks, across workers too); every
task is a name enquiry on the payee (GET /parties/{account}) and a payment (POST /payments) at that
bank. Payment ids are `RUNID-pPID.<4 hex>-uUSER-SEQ`: unique across users, processes and runs.

The history has one line per request the customer made about a payment (docs/run-directory.md):
op "name_enquiry" for the GET /parties/{account} before it, op "payment" for each POST (with
--unknown-policy retry, a re-sent payment has several lines with the same id), op "status_query" for
each GET /payments/{id}. `invoke` is when the customer wanted to act (open model: the scheduled
arrival, for the name enquiry and the payment alike), `sent` when the request left. A request cut
off when Locust stops the customer is recorded as outcome unknown, error "cancelled".

History with several processes: a plain (local) Locust process appends to the history path itself;
with `--processes N` (or master + workers) the master records nothing and each worker appends to its
own `history.<pid>.jsonl` beside it (nothing goes over the network); `harness.load.control.merge_histories`
merges those parts into history.jsonl afterwards. Lines are buffered in memory and written in batches
(every 0.5 s or 500 lines, from a greenlet) and when the test stops or Locust quits.

Locust's statistics judge every request with the history's rule (harness.history.is_available):
business rejects (RJCT AM04/AM23/AC01/AC06/DUPL/FF01) are successes; technical rejects
(AB05/AB06/AB08), PDNG, 5xx, timeouts, connection errors and answers over --latency-slo-ms are
failures; arrivals never sent appear as failed requests named "arrival not sent".
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import math
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import gevent
import gevent.ssl
import orjson
from gevent import GreenletExit
from gevent.event import Event
from gevent.pool import Pool
from geventhttpclient import HTTPClient
from locust import User, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.exception import CatchResponseError, StopUser
from locust.runners import LocalRunner, MasterRunner, Runner, WorkerRunner

from harness import loadfile
from harness.history import IN_FLIGHT_BOUND, NAME_ENQUIRY, NOT_SENT, PAYMENT, STATUS_QUERY, is_available
from harness.load import arrivals as load_arrivals
from harness.load import collect
from harness.load import shapes as load_shapes
from harness.load.customers import Customers
from harness.rundir import PROJECT_ROOT, RunDir, running_session
from mock_switch.config import ConfigError, RetryPolicy, SystemConfig, account_number

log = logging.getLogger("payswitch.load")

Policy = Literal["status", "retry", "none"]
POLICIES: tuple[Policy, ...] = ("status", "retry", "none")
FLUSH_EVERY_S = 0.5
FLUSH_LINES = 500
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,24}$")
# Shared by every process forked from this one (--processes), so one run has one default run id.
DEFAULT_RUN_ID = f"r{int(time.time()):x}"


# -- which load shape -------------------------------------------------------------------------


def requested(
    argv: Sequence[str], environ: Mapping[str, str], flag: str = "--shape", env: str = "PAYSWITCH_SHAPE"
) -> str:
    """The value of `flag` asked for. Locust picks the shape and user classes from the locustfile
    before it parses the command line, so this peeks at the raw arguments (and the variable `env`)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.partition("=")[2]
    return environ.get(env, "")


def requested_shape(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    return requested(argv, environ)


SHAPE_NAME = requested_shape(sys.argv, os.environ)
LOAD_MODEL = requested(sys.argv, os.environ, "--load-model", "PAYSWITCH_LOAD_MODEL") or "closed"
if LOAD_MODEL not in ("closed", "open"):
    sys.exit(f"--load-model {LOAD_MODEL!r}: choose closed (users wait for answers) or open (arrivals at a rate)")
if LOAD_MODEL == "open" and SHAPE_NAME:
    sys.exit("--shape is a closed-model user shape; with --load-model open give --rate-shape instead")
# A worker of a remote master (`harness worker`) learns the model from the master's options when the
# test starts, so it keeps both customer classes and runs the one the master dispatches.
REMOTE_WORKER = "--worker" in sys.argv and not requested(sys.argv, os.environ, "--load-model", "PAYSWITCH_LOAD_MODEL")
# With --class-picker the web UI lets people choose a shape, so every shape must be visible here.
CLASS_PICKER = "--class-picker" in sys.argv
if CLASS_PICKER and not SHAPE_NAME:
    ConstantShape, RampShape, SpikeShape = load_shapes.ConstantShape, load_shapes.RampShape, load_shapes.SpikeShape
elif SHAPE_NAME:
    if SHAPE_NAME not in load_shapes.SHAPES:
        sys.exit(f"--shape {SHAPE_NAME!r}: no such load shape; shapes are {sorted(load_shapes.SHAPES)}")
    # The only LoadTestShape visible in this module, so the one Locust runs.
    SelectedShape = load_shapes.SHAPES[SHAPE_NAME]


def add_arguments(parser: LocustArgumentParser) -> None:
    parser.add_argument("--system-json", default="", env_var="PAYSWITCH_SYSTEM_JSON",
                        help="the system's system.json (default: newest reports/runs/*/system.json)")  # fmt: skip
    parser.add_argument("--bank-urls", default="", env_var="PAYSWITCH_BANK_URLS",
                        help="BNKA=http://HOST:PORT,BNKB=...: where customers reach their bank")  # fmt: skip
    parser.add_argument("--payer-banks", default="", env_var="PAYSWITCH_PAYER_BANKS",
                        help="BNKA,BNKB: customers only of these banks (default: all)")  # fmt: skip
    parser.add_argument("--amount-min", type=int, default=0, env_var="PAYSWITCH_AMOUNT_MIN",
                        help="smallest amount, minor units (0: the customers' usual amounts)")  # fmt: skip
    parser.add_argument("--amount-max", type=int, default=0, env_var="PAYSWITCH_AMOUNT_MAX",
                        help="largest amount, minor units (0: the customers' usual amounts)")  # fmt: skip
    parser.add_argument("--history", default="", env_var="PAYSWITCH_HISTORY",
                        help="history.jsonl path; 'off' records nothing (default: next to system.json)")  # fmt: skip
    parser.add_argument("--unknown-policy", default="status", choices=POLICIES, env_var="PAYSWITCH_UNKNOWN_POLICY",
                        help="on an unknown outcome: status query, re-send the same payment, or nothing")  # fmt: skip
    parser.add_argument("--max-attempts", type=int, default=5, env_var="PAYSWITCH_MAX_ATTEMPTS",
                        help="status queries or re-sends per unknown payment")  # fmt: skip
    parser.add_argument("--resolve-s", type=float, default=10.0, env_var="PAYSWITCH_RESOLVE_S",
                        help="seconds after which no new status query or re-send starts")  # fmt: skip
    parser.add_argument("--request-timeout", type=float, default=10.0, env_var="PAYSWITCH_REQUEST_TIMEOUT",
                        help="customer's HTTP timeout per request, seconds")  # fmt: skip
    parser.add_argument("--think-time", type=float, default=0.0, env_var="PAYSWITCH_THINK_TIME",
                        help="pause between a customer's payments, seconds")  # fmt: skip
    parser.add_argument("--run-id", default="", env_var="PAYSWITCH_RUN_ID",
                        help="first part of every payment id (default: from the clock)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, env_var="PAYSWITCH_SEED",
                        help="seed of the customers' random draws")  # fmt: skip
    parser.add_argument("--shape", default="", choices=["", *load_shapes.SHAPES], env_var="PAYSWITCH_SHAPE",
                        include_in_web_ui=False, help="constant, ramp or spike; chosen at start-up")  # fmt: skip
    parser.add_argument("--parent-pid", type=int, default=0, env_var="PAYSWITCH_PARENT_PID",
                        include_in_web_ui=False, help="stop when this process is gone")  # fmt: skip
    parser.add_argument("--latency-slo-ms", type=float, default=2000.0, env_var="PAYSWITCH_LATENCY_SLO_MS",
                        help="answers later than this count as failures (as in the availability checker)")  # fmt: skip
    open_ui: dict[str, Any] = {"include_in_web_ui": LOAD_MODEL == "open"}
    parser.add_argument("--load-model", default="closed", choices=["closed", "open"], env_var="PAYSWITCH_LOAD_MODEL",
                        include_in_web_ui=False, help="closed: users wait; open: arrivals at --rate")  # fmt: skip
    parser.add_argument("--rate", type=float, default=50.0, env_var="PAYSWITCH_RATE",
                        help="open model: arrivals/s (ramp peak, spike rate)", **open_ui)  # fmt: skip
    parser.add_argument("--base-rate", type=float, default=-1.0, env_var="PAYSWITCH_BASE_RATE",
                        help="open model: ramp start / spike base (-1: rate/10, rate/5)", **open_ui)  # fmt: skip
    parser.add_argument("--rate-shape", default="constant", choices=list(load_arrivals.SHAPE_KINDS),
                        env_var="PAYSWITCH_RATE_SHAPE", help="open model: rate shape", **open_ui)  # fmt: skip
    parser.add_argument("--rate-duration", type=float, default=60.0, env_var="PAYSWITCH_RATE_DURATION",
                        help="open model: seconds of arrivals", **open_ui)  # fmt: skip
    parser.add_argument("--rate-ramp-s", type=float, default=-1.0, env_var="PAYSWITCH_RATE_RAMP_S",
                        help="open model: ramp seconds (-1: half the duration)", **open_ui)  # fmt: skip
    parser.add_argument("--rate-spike-at-s", type=float, default=-1.0, env_var="PAYSWITCH_RATE_SPIKE_AT_S",
                        help="open model: spike start (-1: a third of the duration)", **open_ui)  # fmt: skip
    parser.add_argument("--rate-spike-s", type=float, default=-1.0, env_var="PAYSWITCH_RATE_SPIKE_S",
                        help="open model: spike length (-1: duration/3)", **open_ui)  # fmt: skip
    parser.add_argument("--arrivals", default="even", choices=list(load_arrivals.SPACINGS),
                        env_var="PAYSWITCH_ARRIVALS",
                        help="open model: arrival spacing, even or poisson (seeded)", **open_ui)  # fmt: skip
    parser.add_argument("--max-in-flight", type=int, default=1000, env_var="PAYSWITCH_MAX_IN_FLIGHT",
                        help="open model: customers in flight per process at most", **open_ui)  # fmt: skip
    parser.add_argument("--remote-workers", type=int, default=0, env_var="PAYSWITCH_REMOTE_WORKERS",
                        include_in_web_ui=False,
                        help="master: this many workers on other hosts send their history as messages")  # fmt: skip
    load_shapes.add_arguments(parser, in_web_ui=bool(SHAPE_NAME) or CLASS_PICKER)


def listen(hook: Any, handler: Callable[..., None]) -> None:
    """Register an event listener (Locust's EventHook is untyped)."""
    hook.add_listener(handler)


listen(events.init_command_line_parser, add_arguments)


# -- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenSettings:
    """The open model's arrival schedule and bounds (--load-model open)."""

    shape: load_arrivals.RateShape
    spacing: load_arrivals.Spacing
    max_in_flight: int

    @classmethod
    def from_options(cls, options: Any) -> OpenSettings:
        rate = float(getattr(options, "rate", 50.0))
        duration = float(getattr(options, "rate_duration", 60.0))
        kind = str(getattr(options, "rate_shape", "constant") or "constant")
        base = float(getattr(options, "base_rate", -1.0))

        def given(name: str, default: float) -> float:
            value = float(getattr(options, name, -1.0))
            return default if value < 0 else value

        try:
            shape = load_arrivals.RateShape(
                kind=load_arrivals.as_kind(kind),
                rate=rate,
                duration_s=duration,
                base_rate=base if base >= 0 else (rate / 10 if kind == "ramp" else rate / 5),
                ramp_s=given("rate_ramp_s", duration / 2),
                spike_at_s=given("rate_spike_at_s", duration / 3),
                spike_s=given("rate_spike_s", duration / 3),
            )
        except ValueError as exc:
            raise ConfigError(f"--rate/--rate-*: {exc}") from None
        try:
            spacing = load_arrivals.as_spacing(str(getattr(options, "arrivals", "even") or "even"))
        except ValueError as exc:
            raise ConfigError(f"--arrivals: {exc}") from None
        bound = int(getattr(options, "max_in_flight", 1000))
        if bound < 1:
            raise ConfigError(f"--max-in-flight {bound}: must be at least 1")
        return cls(shape, spacing, bound)


@dataclass(frozen=True, slots=True)
class LoadSettings:
    system: SystemConfig
    system_json: Path
    bank_urls: dict[str, str]
    payer_banks: list[str]
    amount_range: tuple[int, int] | None
    history: Path | None
    policy: Policy
    max_attempts: int
    resolve_s: float
    request_timeout_s: float
    think_time_s: float
    run_id: str
    seed: int
    latency_slo_ms: float = 2000.0
    open: OpenSettings | None = None  # the open model's schedule; None for the closed model

    @classmethod
    def from_options(cls, options: Any) -> LoadSettings:
        """Read and check the custom arguments; ConfigError names the option that is wrong."""
        raw_system = str(getattr(options, "system_json", "") or "")
        raw_bank_urls = str(getattr(options, "bank_urls", "") or "")
        if not raw_system and (session := running_session()) is not None:
            # A running `harness up` / `harness ui`: its system, through its customers->BANK links.
            raw_system = str(session["system_json"])
            raw_bank_urls = raw_bank_urls or ",".join(f"{c}={u}" for c, u in session["customer_urls"].items())
            log.info("using the running harness session in %s", session["run_dir"])
        system_json = find_system_json(raw_system)
        system = SystemConfig.load(system_json)
        bank_urls = parse_bank_urls(raw_bank_urls, system)
        raw_history = str(getattr(options, "history", "") or "")
        history: Path | None = Path(raw_history) if raw_history else RunDir(system_json.parent).history
        if raw_history.lower() == "off":
            history = None
        elif not raw_history and not raw_system:
            log.warning("not recording a history into a run directory found by guessing; pass --history PATH")
            history = None
        policy = as_policy(str(getattr(options, "unknown_policy", "status") or "status"))
        run_id = str(getattr(options, "run_id", "") or "") or DEFAULT_RUN_ID
        if not RUN_ID_PATTERN.match(run_id):
            raise ConfigError(f"--run-id {run_id!r}: use 1 to 24 letters, digits, '_', '.', ':' or '-'")
        codes = [b.code for b in system.banks]
        payer_banks = [c.strip() for c in str(getattr(options, "payer_banks", "") or "").split(",") if c.strip()]
        if unknown := [c for c in payer_banks if c not in codes]:
            raise ConfigError(f"--payer-banks: no bank {unknown} in the system; banks are {codes}")
        if len(codes) < 2:
            raise ConfigError(f"{system_json}: customers need at least two banks (on-us payments are not offered)")
        low, high = int(getattr(options, "amount_min", 0) or 0), int(getattr(options, "amount_max", 0) or 0)
        amount_range: tuple[int, int] | None = None
        if low or high:
            if not 0 < low <= high:
                raise ConfigError(f"--amount-min {low} / --amount-max {high}: need 0 < min <= max")
            amount_range = (low, high)
        settings = cls(
            system=system,
            system_json=system_json,
            bank_urls=bank_urls,
            payer_banks=payer_banks or codes,
            amount_range=amount_range,
            history=history,
            policy=policy,
            max_attempts=int(getattr(options, "max_attempts", 5)),
            resolve_s=float(getattr(options, "resolve_s", 10.0)),
            request_timeout_s=float(getattr(options, "request_timeout", 10.0)),
            think_time_s=float(getattr(options, "think_time", 0.0)),
            run_id=run_id,
            seed=int(getattr(options, "seed", 1)),
            latency_slo_ms=float(getattr(options, "latency_slo_ms", 2000.0) or 2000.0),
            open=OpenSettings.from_options(options) if model_of(options) == "open" else None,
        )
        if not settings.latency_slo_ms > 0:
            raise ConfigError(f"--latency-slo-ms {settings.latency_slo_ms}: must be positive")
        for name, value in (
            ("--max-attempts", settings.max_attempts),
            ("--resolve-s", settings.resolve_s),
            ("--think-time", settings.think_time_s),
        ):
            if value < 0:
                raise ConfigError(f"{name} {value}: must not be negative")
        if not settings.request_timeout_s > 0:
            raise ConfigError(f"--request-timeout {settings.request_timeout_s}: must be positive")
        return settings


def model_of(options: Any) -> str:
    """The load model: a remote worker's comes from the master's options, others' from the command line."""
    return str(getattr(options, "load_model", "") or LOAD_MODEL) if REMOTE_WORKER else LOAD_MODEL


def as_policy(raw: str) -> Policy:
    for policy in POLICIES:
        if raw == policy:
            return policy
    raise ConfigError(f"--unknown-policy {raw!r}: choose one of {', '.join(POLICIES)}")


def find_system_json(raw: str) -> Path:
    if raw:
        return Path(raw)
    candidates = sorted((PROJECT_ROOT / "reports" / "runs").glob("*/system.json"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(
            "no system configuration: pass --system-json RUN_DIR/system.json (or set PAYSWITCH_SYSTEM_JSON)"
        )
    log.warning("no --system-json given: using the newest run's %s", candidates[-1])
    return candidates[-1]


def parse_bank_urls(raw: str, system: SystemConfig) -> dict[str, str]:
    """`BNKA=http://h:p,BNKB=...` over the banks' own addresses."""
    urls = {b.code: f"http://{b.listen}" for b in system.banks}
    codes = [b.code for b in system.banks]
    for item in filter(None, (part.strip() for part in raw.split(","))):
        code, sep, url = item.partition("=")
        code, url = code.strip(), url.strip().rstrip("/")
        if not sep or not url.startswith(("http://", "https://")):
            raise ConfigError(f"--bank-urls: {item!r} must look like BNKA=http://HOST:PORT")
        if code not in urls:
            raise ConfigError(f"--bank-urls: no bank {code!r} in the system; banks are {codes}")
        urls[code] = url
    return urls


# -- history ------------------------------------------------------------------------------------


def history_path_for(path: Path, runner: Runner | None) -> Path | None:
    """Where this process records: nowhere on a master, its own part file on a worker."""
    if isinstance(runner, MasterRunner):
        return None
    if isinstance(runner, WorkerRunner):
        return path.with_name(f"{path.stem}.{os.getpid()}{path.suffix}")
    return path


class HistoryRecorder:
    """Buffers history lines in memory; a greenlet appends them to the file in batches."""

    def __init__(self, path: Path, every_s: float = FLUSH_EVERY_S, lines: int = FLUSH_LINES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.every_s = every_s
        self.lines = lines
        self.written = 0
        self._buffer: list[bytes] = []
        self._file: IO[bytes] | None = path.open("ab")
        self._wake = Event()
        self._flusher = gevent.spawn(self._run)

    def record(self, line: dict[str, Any]) -> None:
        self._buffer.append(orjson.dumps(line))
        if len(self._buffer) >= self.lines:
            self._wake.set()
        if self._file is None:  # closed: a straggler after quit, write it at once
            self.flush()

    def _run(self) -> None:
        while self._file is not None:
            self._wake.wait(self.every_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        data = b"\n".join(batch) + b"\n"
        if self._file is not None:
            self._file.write(data)
            self._file.flush()
        else:
            with self.path.open("ab") as f:
                f.write(data)
        self.written += len(batch)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        self._flusher.kill(block=False)


class RemoteRecorder:
    """A remote worker's history (harness/load/collect.py): lines buffered in memory and sent to the
    master in batches (every 0.5 s or 500 lines) as Locust messages; payments reserved before they are
    sent go at once, with whatever lines are waiting. The last batch says `final`."""

    path: Path | None = None

    def __init__(self, runner: Runner, every_s: float = FLUSH_EVERY_S, lines: int = FLUSH_LINES) -> None:
        self.runner = runner
        self.every_s = every_s
        self.lines = lines
        self.written = 0
        self.reserved = 0
        self.seq = 0
        self._buffer: list[bytes] = []
        self._reserve: list[bytes] = []
        self._open = True
        self.sent_final = False
        self._wake = Event()
        self._flusher = gevent.spawn(self._run)

    def record(self, line: dict[str, Any]) -> None:
        self._buffer.append(orjson.dumps(line))
        if len(self._buffer) >= self.lines:
            self._wake.set()

    def reserve(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Announce payments before any of them is sent, so a lost worker's are counted."""
        self._reserve.extend(orjson.dumps(r) for r in rows)
        self.flush()

    def _run(self) -> None:
        while self._open:
            self._wake.wait(self.every_s)
            self._wake.clear()
            self.flush()

    def flush(self, final: bool = False, done: bool = False, figures: Mapping[str, Any] | None = None) -> None:
        if not (self._buffer or self._reserve or final or done or figures is not None):
            return
        batch, self._buffer = self._buffer, []
        reserve, self._reserve = self._reserve, []
        self.seq += 1
        data = {
            "seq": self.seq,
            "lines": b"".join(x + b"\n" for x in batch),
            "n": len(batch),
            "reserve": b"".join(x + b"\n" for x in reserve),
            "r": len(reserve),
            "figures": dict(figures) if figures is not None else None,
            "done": done,
            "final": final,
        }
        if final:  # so the master can tell whether every batch arrived (collect.incomplete)
            data |= {"sent_lines": self.written + len(batch), "sent_reserved": self.reserved + len(reserve)}
        try:
            self.runner.send_message(collect.MSG_HISTORY, data)
        except Exception:  # not sent: keep the lines for the next batch (the master counts what it lacks)
            log.exception("could not send %d history lines to the master; kept for the next batch", len(batch))
            self._buffer[:0], self._reserve[:0] = batch, reserve
            self.seq -= 1
            return
        self.written += len(batch)
        self.reserved += len(reserve)
        self.sent_final = self.sent_final or final

    def close(self) -> None:
        if self._open and (not self.sent_final or self._buffer or self._reserve):
            self.flush(final=True, figures=state.figures)
        self._open = False
        self._flusher.kill(block=False)


# -- what the customer saw ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """One answer as the customer saw it."""

    outcome: str  # ok | fail | unknown
    status: str | None = None
    reason: str | None = None
    http: int | None = None
    error: str | None = None


def error_kind(exc: BaseException | None) -> str:
    """`timeout` or `connection`, looking through the HTTP client's wrappers."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (TimeoutError, gevent.Timeout)) or "timed out" in str(exc).lower():
            return "timeout"
        exc = getattr(exc, "original", None) or exc.__cause__ or exc.__context__
    return "connection"


def classify(http: int, content: bytes | None, exc: BaseException | None) -> Seen:
    """ok (ACSC), fail (definitive RJCT, whatever the HTTP code), or unknown (no answer, PDNG, 5xx)."""
    if http == 0:
        return Seen("unknown", error=error_kind(exc))
    status: str | None = None
    reason: str | None = None
    try:
        body = orjson.loads(content or b"")
        if isinstance(body, dict):
            status, reason = body.get("status"), body.get("reason")
    except orjson.JSONDecodeError:
        pass
    if status == "ACSC":
        return Seen("ok", status, reason, http)
    if status == "RJCT" and reason:
        return Seen("fail", status, reason, http)
    error = "http-5xx" if http >= 500 else None if status == "PDNG" else f"http-{http // 100}xx"
    return Seen("unknown", status, reason, http, error)


def failure_message(seen: Seen, op: str, latency_ms: float, slo_ms: float) -> str | None:
    """Why Locust should count this request as failed; None when it is a success. The history's
    rule (harness.history.is_available), so Locust's statistics and the report agree."""
    line = {"op": op, "outcome": seen.outcome, "reason": seen.reason, "latency_ms": latency_ms}
    if is_available(line, slo_ms):
        return None
    if seen.outcome == "ok" or (seen.outcome == "fail" and is_available({**line, "latency_ms": 0.0}, slo_ms)):
        return f"answered in {latency_ms:,.0f} ms, over the {slo_ms:,.0f} ms latency SLO"
    if seen.outcome == "fail":
        return f"RJCT {seen.reason} (HTTP {seen.http})"
    if seen.http is None:
        return seen.error or "no answer"
    return f"{seen.status or 'no status'} (HTTP {seen.http})"


def answer_seen(op: str, http: int, content: bytes | None, exc: BaseException | None) -> Seen:
    """One answer as the customer saw it (`http` 0: none; `exc`: why there was none, or why its body
    broke off mid-way). A name enquiry's 200 is the party (ok); its 404 RJCT AC01 a business reject;
    AB06 from the payer bank (the switch did not answer), 5xx, timeouts and connection errors are no
    definitive answer."""
    if op == NAME_ENQUIRY and http == 200:
        return Seen("ok", http=200)
    if http and exc is not None:  # the body broke off mid-way
        return Seen("unknown", http=http, error=error_kind(exc))
    return classify(http, content, exc)


JSON_HEADERS = {"Content-Type": "application/json"}
# What the HTTP client raises for a request that got no (whole) answer: gevent's Timeout is no Exception.
REQUEST_ERRORS = (Exception, gevent.Timeout)


# -- the customers ------------------------------------------------------------------------------


class _State:
    settings: LoadSettings | None = None
    recorder: HistoryRecorder | RemoteRecorder | None = None
    remote: dict[str, Any] | None = None  # a remote worker's name and slices (adopt_master_setup)
    spool: collect.Spool | None = None  # a remote master's sink of the workers' batches
    process_tag: tuple[int, str] | None = None
    figures: dict[str, Any] | None = None  # the open-model generator's, for load.json
    figures_path: Path | None = None
    stopping = False  # the test is stopping (not a rebalance moving users between workers)
    generators: list[ArrivalGenerator]  # a remote worker's, whose slices play in greenlets of their own

    def __init__(self) -> None:
        self.generators = []


state = _State()
user_numbers = itertools.count()
generator_numbers = itertools.count()


def process_tag() -> str:
    """pPID plus a random suffix, made in this process (after any fork); on a remote worker the
    name its master gave it (w1, w2, ...: pids of different hosts collide, the master's names do not)."""
    if state.remote is not None:
        return str(state.remote["name"])
    pid = os.getpid()
    if state.process_tag is None or state.process_tag[0] != pid:
        state.process_tag = (pid, f"p{pid}.{secrets.token_hex(2)}")
    return state.process_tag[1]


def user_slot(environment: Environment, local_index: int) -> int:
    """This user's place among all users of the run, so payer banks spread evenly over workers."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner) and state.remote is not None:
        return local_index * int(state.remote["workers"]) + runner.worker_index
    if isinstance(runner, WorkerRunner):
        workers = max(1, int(getattr(environment.parsed_options, "processes", 1) or 1))
        return local_index * workers + runner.worker_index
    return local_index


class Customer(User):
    """What every customer does: a name enquiry on the payee, then a payment, at the payer bank, then
    the unknown-outcome policy; each request judged and recorded. The two load models below differ
    only in when customers come.

    Requests go through geventhttpclient's HTTPClient (keep-alive connections per bank, what Locust's
    FastHttpUser uses underneath) and are reported to Locust's statistics through its request event,
    Locust's extension point for custom clients: the customer judges every answer itself (the
    history's rule), so FastHttpUser's layers above it (URL parsing, cookies, status-code
    exceptions, response wrappers) only cost CPU (about 0.1 ms per payment, cpu_per_payment.py)."""

    abstract = True
    host = "http://127.0.0.1"  # unused: each customer talks to its own bank (see --bank-urls)
    settings: LoadSettings | None
    concurrency = 10  # connections per bank at most
    network_timeout = 60.0
    connection_timeout = 60.0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.bank_clients: dict[str, tuple[HTTPClient, str]] = {}

    def bank_client(self, base: str) -> tuple[HTTPClient, str]:
        """The keep-alive client of the bank at `base` (made on first use) and the base's path."""
        if (known := self.bank_clients.get(base)) is not None:
            return known
        tls: dict[str, Any] = {}
        if base.startswith("https://"):  # as FastHttpUser's default (insecure): a test bank's own certificate
            tls = {"insecure": True, "ssl_context_factory": gevent.ssl._create_unverified_context}
        client = HTTPClient.from_url(
            base, concurrency=self.concurrency, connection_timeout=self.connection_timeout,
            network_timeout=self.network_timeout, **tls,
        )  # fmt: skip
        self.bank_clients[base] = entry = (client, urlsplit(base).path.rstrip("/"))
        return entry

    def call(self, method: str, base: str, path: str, data: bytes | None) -> tuple[int, bytes | None, Any, float]:
        """One HTTP request to a bank: (HTTP status or 0, body, the error if the answer or its body
        did not come, milliseconds taken)."""
        client, prefix = self.bank_client(base)
        http, content, error = 0, None, None
        start = time.perf_counter()
        try:
            resp = client.request(method, prefix + path, body=data, headers=JSON_HEADERS if data is not None else None)
            try:
                http = int(resp.status_code)
                content = resp.read()
            finally:
                resp.release()
        except REQUEST_ERRORS as exc:
            error = exc
        return http, content, error, (time.perf_counter() - start) * 1000

    def setup_customers(self, seed: tuple[int, int]) -> None:
        s = self.settings
        assert s is not None
        self.network_timeout = self.connection_timeout = s.request_timeout_s
        self.customers = Customers(s.system, seed=hash((s.seed, seed)) & 0xFFFFFFFF)
        self.bank_by_prefix = {account_number(i, 0)[:2]: b.code for i, b in enumerate(s.system.banks)}
        self.prefixes = {account_number(s.system.bank_index(code), 0)[:2] for code in s.payer_banks}

    def journey(self, body: dict[str, Any], invoke: float | None = None) -> None:
        """One customer's payment: name enquiry, payment, and the unknown-outcome policy. `invoke`:
        when the customer arrived (open model); None: now."""
        s = self.settings
        assert s is not None
        payer = self.bank_by_prefix[body["debtor_account"][:2]]
        base = s.bank_urls[payer]
        path = f"/parties/{body['creditor_account']}"
        self.exchange(NAME_ENQUIRY, "GET", base, path, "GET /parties/[id]", body, payer, invoke=invoke)
        data = orjson.dumps(body)
        seen = self.exchange(PAYMENT, "POST", base, "/payments", "POST /payments", body, payer, data, invoke)
        if seen.outcome != "unknown" or s.policy == "none":
            return
        deadline = time.monotonic() + s.resolve_s
        delays = RetryPolicy(initial_s=0.1, max_s=1.0).delays()
        for _attempt, delay in zip(range(s.max_attempts), delays, strict=False):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            gevent.sleep(min(delay, remaining))
            if s.policy == "status":
                path = f"/payments/{body['payment_id']}"
                seen = self.exchange(STATUS_QUERY, "GET", base, path, "GET /payments/[id]", body, payer)
            else:  # retry: the SAME payment id and body
                seen = self.exchange(PAYMENT, "POST", base, "/payments", "POST /payments (retry)", body, payer, data)
            if seen.outcome != "unknown":
                break

    def reservation(self, body: Mapping[str, Any], invoke: float) -> dict[str, Any]:
        """What the master keeps of a payment before it is sent (harness/load/collect.py)."""
        payer = self.bank_by_prefix[body["debtor_account"][:2]]
        return {"id": body["payment_id"], "payer": payer, "payee": body["creditor_bank"],
                "amount": body["amount"], "invoke": invoke}  # fmt: skip

    def draw(self, payment_id: str) -> dict[str, Any]:
        """A payment by a customer of one of this user's payer banks (the shared draw picks the payer
        bank at random among all banks)."""
        body = self.customers.draw(payment_id)
        for _ in range(64):
            if body["debtor_account"][:2] in self.prefixes:
                break
            body = self.customers.draw(payment_id)
        # After 64 misses (many banks, bad luck) another bank's customer pays: still a correct payment.
        assert self.settings is not None
        if self.settings.amount_range is not None:
            body["amount"] = self.customers.rng.randint(*self.settings.amount_range)
        return body

    def exchange(
        self, op: str, method: str, base: str, path: str, name: str, body: Mapping[str, Any], payer: str,
        data: bytes | None = None, invoke: float | None = None,
    ) -> Seen:  # fmt: skip
        """One request at the bank `base`: judged with the history's rule, counted in Locust's
        statistics under `name` and appended to the history. `invoke`: when the customer wanted it
        (the open model's scheduled arrival); None: now."""
        assert self.settings is not None
        sent = time.time()
        wanted = sent if invoke is None else invoke
        try:
            http, content, error, took_ms = self.call(method, base, path, data)
        except GreenletExit:  # stopped mid-request (stop timeout): the request may have landed
            record(op, body, payer, wanted, sent, time.time(), Seen("unknown", error="cancelled"))
            raise
        complete = time.time()
        seen = answer_seen(op, http, content, error)
        failure = failure_message(seen, op, (complete - wanted) * 1000, self.settings.latency_slo_ms)
        self.environment.events.request.fire(
            request_type=method, name=name, response_time=took_ms, response_length=len(content or b""),
            exception=None if failure is None else CatchResponseError(failure), context={}, url=base + path,
        )  # fmt: skip
        record(op, body, payer, wanted, sent, complete, seen)
        return seen


class PaymentCustomer(Customer):
    """Closed model: a bank customer who pays, waits for the answer (and its follow-ups), then pays
    again; at the payer bank it belongs to (round robin over the banks, across workers too)."""

    def __init__(self, environment: Environment) -> None:
        self.settings = state.settings
        self.index = next(user_numbers)
        self.seq = itertools.count(1)
        if self.settings is not None:
            s = self.settings
            payer = s.payer_banks[user_slot(environment, self.index) % len(s.payer_banks)]
            self.settings = s = _with_payers(s, [payer])
            self.host = s.bank_urls[payer]
            self.setup_customers((os.getpid(), self.index))
            self.id_prefix = f"{s.run_id}-{process_tag()}-u{self.index}"
        super().__init__(environment)

    def on_start(self) -> None:
        if self.settings is None:
            log.error("no load settings (see the error above): this customer stops")
            raise StopUser()

    def wait_time(self) -> float:
        return self.settings.think_time_s if self.settings is not None else 1.0

    @task
    def pay(self) -> None:
        body = self.draw(f"{self.id_prefix}-{next(self.seq):06d}")
        if isinstance(state.recorder, RemoteRecorder):
            state.recorder.reserve([self.reservation(body, time.time())])
        self.journey(body)


def _with_payers(s: LoadSettings, payers: list[str]) -> LoadSettings:
    return replace(s, payer_banks=payers)


class ArrivalGenerator(Customer):
    """Open model: plays this process's slice of the arrival schedule (harness/load/arrivals.py).

    Locust runs it as a user: `wait_time` is the time until the next scheduled arrival and the task
    starts every arrival that is due, each a customer journey in a gevent pool of --max-in-flight
    greenlets, so a hung system never delays the next arrival. An arrival that is already more than
    NOT_SENT_AFTER_S late (the process was starved) or finds the pool full is recorded as an
    unavailable payment at its scheduled time. When the schedule is played, the generator waits for
    its customers (a bounded drain), records what it did in load.json and ends the test.

    On a remote worker (`harness worker`) the slice plays in a greenlet of its own: when a worker joins
    late, Locust rebalances the users and may stop this generator on its worker to start one on the
    newcomer, which has no slice (slices are dealt to the workers the master waited for); the slice
    plays on where it started, and only the test's stop ends it (`halt_generators`)."""

    def __init__(self, environment: Environment) -> None:
        self.settings = state.settings
        self.open = self.settings.open if self.settings is not None else None
        if self.settings is not None and self.open is not None:
            # One HTTP connection per customer in flight: Locust's default (10) would queue them.
            self.concurrency = self.open.max_in_flight + 10
            self.network_timeout = self.connection_timeout = self.settings.request_timeout_s
        super().__init__(environment)
        self.slot = user_slot(environment, next(generator_numbers))
        slices = state.remote["slices"] if state.remote is not None else None
        self.slices = max(1, int(slices or getattr(environment.parsed_options, "num_users", 1) or 1))
        self.plan: list[tuple[int, float]] = []
        # Bodies drawn ahead in plan order (the same draws as one by one), reserved with a remote
        # master a chunk (about a second of arrivals) before they are due.
        self.bodies: dict[int, dict[str, Any]] = {}
        self.drawn_upto = 0
        self.chunk = 8
        self.next = 0
        self.t0 = 0.0
        self.pool = Pool(self.open.max_in_flight if self.open is not None else 1)
        self.drained = False
        self.player: gevent.Greenlet | None = None  # a remote worker's slice (see the class's doc)

    def on_start(self) -> None:
        s, o = self.settings, self.open
        if s is None or o is None:
            log.error("no open-model load settings (see the error above): the arrival generator stops")
            raise StopUser()
        if self.slot >= self.slices:
            if state.remote is not None:  # a late worker, or a generator moved here by a rebalance
                log.info("arrival generator %d: every slice of the schedule is already played elsewhere", self.slot)
                raise StopUser()
            log.error("arrival generator %d of %d: run -u with one generator per process", self.slot, self.slices)
            raise StopUser()
        # Integers only: a str's hash changes with every process (PYTHONHASHSEED), an int's does not,
        # so the same seed draws the same customers for the same arrivals in every run.
        self.setup_customers((-1, self.slot))
        self.id_prefix = f"{s.run_id}-{process_tag()}-a"
        self.plan = load_arrivals.for_slice(load_arrivals.schedule(o.shape, o.spacing, s.seed), self.slot, self.slices)
        self.chunk = max(8, math.ceil(o.shape.rate / self.slices))
        self.t0 = time.time()
        state.figures = {
            "model": "open",
            "rate": o.shape.rate,
            "shape": o.shape.kind,
            "base_rate": o.shape.base_rate,
            "duration_s": o.shape.duration_s,
            "arrivals": o.spacing,
            "max_in_flight_bound": o.max_in_flight,
            "late_after_s": loadfile.LATE_S,
            "not_sent_after_s": loadfile.NOT_SENT_AFTER_S,
            "planned": len(self.plan),
            "scheduled": 0,
            "sent": 0,
            "late": 0,
            "not_sent": 0,
            "in_flight_bound": 0,
            "max_in_flight": 0,
            "max_late_ms": 0.0,
            "started_at": self.t0,
        }
        log.info(
            "arrival generator %d of %d: %d arrivals over %.0f s",
            self.slot,
            self.slices,
            len(self.plan),
            o.shape.duration_s,
        )
        if state.remote is not None:
            state.generators.append(self)
            self.player = gevent.spawn(self.play)

    def until_next(self) -> float:
        if self.next < len(self.plan):
            return max(0.0, self.t0 + self.plan[self.next][1] - time.time())
        return 0.0

    def wait_time(self) -> float:
        return 0.0 if self.player is not None else self.until_next()

    @task
    def arrive(self) -> None:
        if self.player is not None:  # a remote worker: the slice plays in its own greenlet
            self.player.join()
            raise StopUser()
        self.play_due()

    def play(self) -> None:
        """A remote worker's slice, in a greenlet no rebalance stops."""
        with contextlib.suppress(StopUser):
            while not self.drained:
                gevent.sleep(self.until_next())
                self.play_due()

    def play_due(self) -> None:
        figures = state.figures
        assert figures is not None and self.settings is not None
        now = time.time()
        while self.next < len(self.plan) and self.t0 + self.plan[self.next][1] <= now:
            offset = self.plan[self.next][1]
            if self.next + self.chunk // 2 >= self.drawn_upto:
                self.draw_ahead()
            body = self.bodies.pop(self.next)
            self.next += 1
            scheduled = self.t0 + offset
            figures["scheduled"] += 1
            late = now - scheduled
            if late > loadfile.NOT_SENT_AFTER_S:
                figures["not_sent"] += 1
                self.not_sent(body, scheduled, NOT_SENT)
            elif self.pool.full():
                figures["in_flight_bound"] += 1
                self.not_sent(body, scheduled, IN_FLIGHT_BOUND)
            else:
                figures["sent"] += 1
                self.pool.spawn(self.set_off, body, scheduled)
                figures["max_in_flight"] = max(figures["max_in_flight"], len(self.pool))
            now = time.time()
        if self.next >= len(self.plan) and not self.drained:
            self.finish()

    def draw_ahead(self) -> None:
        """Draw the next chunk of the plan's payments; a remote worker reserves them with its master."""
        start, end = self.drawn_upto, min(len(self.plan), self.drawn_upto + self.chunk)
        rows = []
        for i in range(start, end):
            k, offset = self.plan[i]
            self.bodies[i] = self.draw(f"{self.id_prefix}{k:07d}")
            rows.append(self.reservation(self.bodies[i], self.t0 + offset))
        self.drawn_upto = end
        if rows and isinstance(state.recorder, RemoteRecorder):
            state.recorder.reserve(rows)

    def set_off(self, body: dict[str, Any], scheduled: float) -> None:
        """One customer's journey. Its lateness is taken here, when the greenlet really runs and its
        first request leaves (the history's `sent`), not when it was handed to the pool: a starved
        process delays the start, and that is the delay the customer sees."""
        figures = state.figures
        if figures is not None:
            late = time.time() - scheduled
            figures["late"] += late > loadfile.LATE_S
            figures["max_late_ms"] = max(figures["max_late_ms"], round(late * 1000, 3))
        self.journey(body, scheduled)

    def not_sent(self, body: dict[str, Any], scheduled: float, error: str) -> None:
        """An arrival that never left: unavailable, at its scheduled time, in the history and in Locust."""
        payer = self.bank_by_prefix[body["debtor_account"][:2]]
        record(PAYMENT, body, payer, scheduled, None, scheduled, Seen("unknown", error=error))
        self.environment.events.request.fire(
            request_type="ARRIVAL", name="arrival not sent", response_time=0, response_length=0,
            exception=RuntimeError(error), context={},
        )  # fmt: skip

    def finish(self) -> None:
        """The schedule is played: let the customers in flight finish (bounded), save the figures,
        and end the test of a single process (with workers, the master's --run-time ends it)."""
        assert self.settings is not None
        self.drained = True
        if not self.pool.join(timeout=2 * self.settings.request_timeout_s + 1):
            self.pool.kill(block=True, timeout=5)  # their journeys record themselves as cancelled
        save_figures()
        runner = self.environment.runner
        if isinstance(runner, LocalRunner) and not isinstance(runner, WorkerRunner):
            gevent.spawn(runner.quit)
        if isinstance(state.recorder, RemoteRecorder):  # the master ends the test when all are done
            state.recorder.flush(done=True, figures=state.figures)
        raise StopUser()

    def on_stop(self) -> None:
        if self.player is not None and not self.player.ready() and not state.stopping:
            log.info("arrival generator %d moved by a rebalance: its slice plays on in this worker", self.slot)
            return
        self.halt()

    def halt(self) -> None:
        """Stopped from outside: no new arrival; journeys in flight record "cancelled"."""
        if self.player is not None and self.player is not gevent.getcurrent():
            self.player.kill(block=True, timeout=5)
        if len(self.pool):
            self.pool.kill(block=True, timeout=5)
        save_figures()


def halt_generators() -> None:
    """A remote worker's test stops: end every slice it plays, the ones Locust moved away included."""
    while state.generators:
        state.generators.pop().halt()


def save_figures() -> None:
    if state.figures is not None and state.figures_path is not None:
        loadfile.write(state.figures_path, state.figures)


def record(
    op: str, body: Mapping[str, Any], payer: str, invoke: float, sent: float | None, complete: float, seen: Seen
) -> None:
    """Append one line in the format of docs/run-directory.md."""
    if state.recorder is None:
        return
    state.recorder.record(
        {
            "op": op,
            "id": body["payment_id"],
            "payer": payer,
            "payee": body["creditor_bank"],
            "amount": body["amount"],
            "invoke": invoke,
            "sent": sent,
            "complete": complete,
            "outcome": seen.outcome,
            "status": seen.status,
            "reason": seen.reason,
            "http": seen.http,
            "error": seen.error,
            "latency_ms": round((complete - invoke) * 1000, 3),
        }
    )


# Locust runs every visible, non-abstract User class: only the chosen model's (a remote worker keeps
# both: it runs what its master dispatches).
if REMOTE_WORKER:
    pass
elif LOAD_MODEL == "open":
    PaymentCustomer.abstract = True
else:
    ArrivalGenerator.abstract = True


# -- lifecycle ----------------------------------------------------------------------------------


def on_init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    runner = environment.runner
    parent = int(getattr(options, "parent_pid", 0) or 0)
    if parent and not isinstance(runner, WorkerRunner) and runner is not None:
        if os.getppid() != parent:
            sys.exit(f"parent process {parent} is gone: not starting")
        gevent.spawn(watch_parent, parent, runner)
    if getattr(options, "headless", False):
        try:  # fail fast with a readable message instead of a test of failing users
            LoadSettings.from_options(options)
        except ConfigError as exc:
            log.error("%s", exc)
            sys.exit(2)
    if isinstance(runner, MasterRunner) and int(getattr(options, "remote_workers", 0) or 0) > 0:
        init_remote_master(environment, runner)
    elif isinstance(runner, WorkerRunner) and REMOTE_WORKER:
        runner.register_message(collect.MSG_STOP, on_stop_message)


# -- workers on other hosts (harness/load/collect.py) ---------------------------------------------


def init_remote_master(environment: Environment, runner: MasterRunner) -> None:
    """The master of `harness run --workers N`: gives the workers the system (as an option: Locust sends
    the master's custom options with every spawn, and a worker connects before its locustfile's init
    could take a message), names each by its Locust index, spools their batches."""
    options = environment.parsed_options
    try:
        settings = LoadSettings.from_options(options)
    except ConfigError as exc:
        log.error("%s", exc)
        sys.exit(2)
    run_dir = settings.history.parent if settings.history is not None else settings.system_json.parent
    spool = state.spool = collect.Spool(run_dir)
    system_text = settings.system_json.read_text()
    workers = int(getattr(options, "remote_workers", 0) or 0)
    slices = int(getattr(options, "num_users", 0) or workers)

    def on_batch(environment: Environment, msg: Any, **_kw: Any) -> None:
        spool.receive(msg.node_id, msg.data, runner.get_worker_index(msg.node_id))  # type: ignore[no-untyped-call]

    vars(options)[collect.OPT_SYSTEM] = system_text
    vars(options)[collect.OPT_SLICES] = slices

    def on_connect(client_id: str, **_kw: Any) -> None:
        name = spool.name_for(client_id, runner.get_worker_index(client_id))  # type: ignore[no-untyped-call]
        log.info("worker %s joined as %s (%d of %d expected)", client_id, name, len(spool.names), workers)

    def on_heartbeat(client_id: str, **_kw: Any) -> None:
        spool.heard(client_id)

    runner.register_message(collect.MSG_HISTORY, on_batch)
    listen(environment.events.worker_connect, on_connect)
    listen(environment.events.heartbeat_sent, on_heartbeat)


def missing_workers(runner: MasterRunner) -> set[str]:
    return {c.id for c in runner.clients.all if c.state == "missing"}


def remote_settled(runner: MasterRunner, spool: collect.Spool, key: str, among: int | None = None) -> bool:
    """Every worker that joined (or the first `among` of them, w1..wN) has sent its `key` batch
    (final / done), or went silent or away."""
    present = {c.id for c in runner.clients.all}
    missing = missing_workers(runner)
    names = {cid: name for cid, name in spool.names.items() if among is None or int(name[1:]) <= among}
    return all(
        spool.workers[name][key] or cid in missing or (cid not in present and spool.workers[name]["final"])
        for cid, name in names.items()
    ) and bool(names)


def end_when_generators_done(runner: MasterRunner, spool: collect.Spool, expected: int) -> None:
    """Open model: end the test once every slice of the schedule is played (or its worker is lost).
    The slices are dealt to the workers the master waited for (w1..wN, by Locust's worker index); a
    worker that joins later plays none of them, so it is not waited for."""
    while True:
        gevent.sleep(0.5)
        if len(spool.names) >= expected and remote_settled(runner, spool, "generator_done", among=expected):
            log.info("every worker's arrival generator is done (or its worker lost): ending the test")
            runner.quit()
            return


def remote_master_stopping(runner: MasterRunner, spool: collect.Spool) -> None:
    """Before the master stops: ask every worker to stop its customers and send its final batch, and
    wait (bounded) until each has, or went silent: Locust's own quit waits only half a second."""
    for client in runner.clients.all:
        with contextlib.suppress(Exception):
            runner.send_message(collect.MSG_STOP, {}, client_id=client.id)
    stop_timeout = float(runner.environment.stop_timeout or 0.0)
    deadline = time.monotonic() + stop_timeout + 15.0
    while not remote_settled(runner, spool, "final") and time.monotonic() < deadline:
        gevent.sleep(0.2)
    spool.save(missing_workers(runner))
    lacking = [n for n, w in spool.workers.items() if not w["final"]]
    log.info("workers' final batches: %s", f"all {len(spool.workers)} in" if not lacking else f"missing from {lacking}")


def adopt_master_setup(environment: Environment, runner: WorkerRunner) -> None:
    """A remote worker at the start of a test: its name (from its Locust index, which the master gave
    it) and the system the master sent with its options (saved in the working directory)."""
    options = vars(environment.parsed_options)
    name = f"w{runner.worker_index + 1}"
    path = Path.cwd() / f"payswitch-system.{name}.json"
    path.write_text(str(options[collect.OPT_SYSTEM]))
    workers = int(options.get("remote_workers") or 1)
    state.remote = {"name": name, "workers": workers, "slices": int(options.get(collect.OPT_SLICES) or workers)}
    options["system_json"] = str(path)  # the master's path is not ours
    log.info("worker %s of a remote master (system saved to %s)", name, path)


def on_stop_message(environment: Environment, msg: Any, **_kw: Any) -> None:
    runner = environment.runner
    if runner is not None:
        gevent.spawn(runner.stop)  # test_stop sends the final batch


def watch_parent(parent: int, runner: Runner) -> None:
    while os.getppid() == parent:
        gevent.sleep(1.0)
    log.error("parent process %d is gone: stopping the load", parent)
    runner.quit()
    if runner.environment.web_ui is not None:
        runner.environment.web_ui.stop()  # type: ignore[no-untyped-call]  # in web mode the server keeps Locust up


def runner_of(environment: Environment, wait_s: float = 10.0) -> Runner | None:
    """The environment's runner. A worker that joins a running master gets its first spawn message
    while Locust is still constructing its WorkerRunner (the constructor waits for the master's ack,
    and the spawn follows at once), so test_start can fire before `environment.runner` is assigned:
    wait for it (bounded) rather than take the worker for a local process."""
    deadline = time.monotonic() + wait_s
    while environment.runner is None and "--worker" in sys.argv and time.monotonic() < deadline:
        gevent.sleep(0.01)
    return environment.runner


def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    state.stopping = False
    runner = runner_of(environment)
    if isinstance(runner, MasterRunner):
        if state.spool is not None:
            expected = int(getattr(environment.parsed_options, "remote_workers", 0) or 0)
            if getattr(environment.parsed_options, "load_model", "") == "open":
                gevent.spawn(end_when_generators_done, runner, state.spool, expected)
        return  # the master runs no customers
    if isinstance(runner, WorkerRunner) and REMOTE_WORKER and vars(environment.parsed_options).get(collect.OPT_SYSTEM):
        adopt_master_setup(environment, runner)
    try:
        settings = LoadSettings.from_options(environment.parsed_options)
    except ConfigError as exc:
        log.error("%s", exc)
        state.settings = None
        if environment.runner is not None:
            gevent.spawn(environment.runner.stop)
        return
    state.settings = settings
    if isinstance(runner, WorkerRunner) and state.remote is not None:
        if not isinstance(state.recorder, RemoteRecorder):
            state.recorder = RemoteRecorder(runner)
        state.recorder.sent_final = False  # a new test of the same worker
        path = None
    else:
        path = history_path_for(settings.history, environment.runner) if settings.history else None
        if state.recorder is not None and state.recorder.path != path:
            state.recorder.close()
            state.recorder = None
        if path is not None and state.recorder is None:
            state.recorder = HistoryRecorder(path)
    if state.remote is not None:
        state.figures_path = None  # the figures travel with the final batch
    elif settings.open is not None:
        figures = RunDir(settings.history.parent if settings.history else settings.system_json.parent).load_figures
        worker = isinstance(environment.runner, WorkerRunner)
        state.figures_path = loadfile.part_path(figures, os.getpid()) if worker else figures
    log.info(
        # harness.load.control waits for this line ("payment customers started") to know the load is on.
        "payment customers started: run id %s, banks %s, unknown outcomes -> %s, history %s, %s",
        settings.run_id,
        settings.bank_urls,
        settings.policy,
        path or ("to the master" if state.remote is not None else "off"),
        "closed model" if settings.open is None else f"open model, {settings.open.shape.rate:g} arrivals/s",
    )


def on_test_stopping(environment: Environment, **_kwargs: Any) -> None:
    state.stopping = True
    halt_generators()
    if isinstance(environment.runner, MasterRunner) and state.spool is not None:
        remote_master_stopping(environment.runner, state.spool)


def on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    save_figures()
    if isinstance(state.recorder, RemoteRecorder):
        state.recorder.flush(final=True, figures=state.figures)
    elif state.recorder is not None:
        state.recorder.flush()
    if isinstance(environment.runner, MasterRunner) and state.spool is not None:
        state.spool.save(missing_workers(environment.runner))


def on_spawning_complete(user_count: int, **_kwargs: Any) -> None:
    if state.spool is not None:  # harness.load.control waits for this line: the remote workers' customers are on
        log.info("payment customers started on %d remote workers (%d users)", len(state.spool.names), user_count)


def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(state.recorder, RemoteRecorder):
        state.recorder.flush(final=True, figures=state.figures)
    elif state.recorder is not None:
        state.recorder.flush()
    if state.spool is not None and isinstance(environment.runner, MasterRunner):
        state.spool.save(missing_workers(environment.runner))
        state.spool.close()


def on_quit(exit_code: int, **_kwargs: Any) -> None:
    close_recorder()


def close_recorder() -> None:
    if state.recorder is not None:
        state.recorder.close()


listen(events.init, on_init)
listen(events.test_start, on_test_start)
listen(events.test_stopping, on_test_stopping)
listen(events.test_stop, on_test_stop)
listen(events.spawning_complete, on_spawning_complete)
listen(events.quitting, on_quitting)
listen(events.quit, on_quit)
atexit.register(close_recorder)
