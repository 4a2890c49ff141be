"""Locust customers of the mock payment system: name enquiry, then a payment, then (if the outcome is
unknown) a status query or a re-send, each payment and status query appended to the history.

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
                            Locust's own options (or of the web UI form) apply
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
op "payment" for each POST (with --unknown-policy retry, a re-sent payment has several lines with the
same id), op "status_query" for each GET /payments/{id}. A request cut off when Locust stops the
customer is recorded as outcome unknown, error "cancelled". Name enquiries are not recorded.

History with several processes: a plain (local) Locust process appends to the history path itself;
with `--processes N` (or master + workers) the master records nothing and each worker appends to its
own `history.<pid>.jsonl` beside it (nothing goes over the network); `harness.load.control.merge_histories`
merges those parts into history.jsonl afterwards. Lines are buffered in memory and written in batches
(every 0.5 s or 500 lines, from a greenlet) and when the test stops or Locust quits.

In Locust's statistics, business rejects (RJCT AM04/AM23/AC01/AC06) count as successes; technical
rejects (AB05/AB06/AB08), PDNG, 5xx, timeouts and connection errors count as failures.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import gevent
import orjson
from gevent import GreenletExit
from gevent.event import Event
from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.contrib.fasthttp import FastResponse, ResponseContextManager
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, Runner, WorkerRunner

from harness.history import BUSINESS_REASONS
from harness.load import shapes as load_shapes
from harness.load.customers import Customers
from harness.rundir import PROJECT_ROOT, RunDir, running_session
from mock_switch.config import ConfigError, RetryPolicy, SystemConfig, account_number

log = logging.getLogger("payswitch.load")

Policy = Literal["status", "retry", "none"]
POLICIES: tuple[Policy, ...] = ("status", "retry", "none")
# Definitive business answers: the service was available (DESIGN.md section 5).
FLUSH_EVERY_S = 0.5
FLUSH_LINES = 500
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,24}$")
# Shared by every process forked from this one (--processes), so one run has one default run id.
DEFAULT_RUN_ID = f"r{int(time.time()):x}"


# -- which load shape -------------------------------------------------------------------------


def requested_shape(argv: Sequence[str], environ: Mapping[str, str]) -> str:
    """The --shape asked for. Locust picks a shape class from the locustfile before it parses the
    command line, so this peeks at the raw arguments (and PAYSWITCH_SHAPE)."""
    for i, arg in enumerate(argv):
        if arg == "--shape" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--shape="):
            return arg.partition("=")[2]
    return environ.get("PAYSWITCH_SHAPE", "")


SHAPE_NAME = requested_shape(sys.argv, os.environ)
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
    load_shapes.add_arguments(parser, in_web_ui=bool(SHAPE_NAME) or CLASS_PICKER)


def listen(hook: Any, handler: Callable[..., None]) -> None:
    """Register an event listener (Locust's EventHook is untyped)."""
    hook.add_listener(handler)


listen(events.init_command_line_parser, add_arguments)


# -- settings -----------------------------------------------------------------------------------


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
        )
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


def failure_message(seen: Seen, op: str) -> str | None:
    """Why Locust should count this request as failed; None when it is a success."""
    if seen.outcome == "ok":
        return None
    if seen.outcome == "fail":
        if seen.reason in BUSINESS_REASONS or (op == "status_query" and seen.reason == "AG09"):
            return None
        return f"RJCT {seen.reason} (HTTP {seen.http})"
    if seen.http is None:
        return seen.error or "no answer"
    return f"{seen.status or 'no status'} (HTTP {seen.http})"


def response_seen(resp: FastResponse) -> Seen:
    http = int(resp.status_code or 0)
    exc: BaseException | None = getattr(resp, "error", None)
    content: bytes | None = None
    if http:
        try:
            content = resp.content
        except Exception as read_error:  # the body broke off mid-way
            return Seen("unknown", http=http, error=error_kind(read_error))
    return classify(http, content, exc)


# -- the customers ------------------------------------------------------------------------------


class _State:
    settings: LoadSettings | None = None
    recorder: HistoryRecorder | None = None
    process_tag: tuple[int, str] | None = None


state = _State()
user_numbers = itertools.count()


def process_tag() -> str:
    """pPID plus a random suffix, made in this process (after any fork)."""
    pid = os.getpid()
    if state.process_tag is None or state.process_tag[0] != pid:
        state.process_tag = (pid, f"p{pid}.{secrets.token_hex(2)}")
    return state.process_tag[1]


def user_slot(environment: Environment, local_index: int) -> int:
    """This user's place among all users of the run, so payer banks spread evenly over workers."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        workers = max(1, int(getattr(environment.parsed_options, "processes", 1) or 1))
        return local_index * workers + runner.worker_index
    return local_index


class PaymentCustomer(FastHttpUser):
    """A bank customer: name enquiry on the payee, then a payment, at the payer bank it belongs to."""

    host = "http://127.0.0.1"  # unused: each customer talks to its own bank (see --bank-urls)

    def __init__(self, environment: Environment) -> None:
        self.settings = state.settings
        self.index = next(user_numbers)
        self.seq = itertools.count(1)
        self.payer = ""
        if self.settings is not None:
            s = self.settings
            self.network_timeout = self.connection_timeout = s.request_timeout_s
            self.payer = s.payer_banks[user_slot(environment, self.index) % len(s.payer_banks)]
            self.host = s.bank_urls[self.payer]
            self.customers = Customers(s.system, seed=hash((s.seed, os.getpid(), self.index)) & 0xFFFFFFFF)
            self.bank_by_prefix = {account_number(i, 0)[:2]: b.code for i, b in enumerate(s.system.banks)}
            self.payer_prefix = account_number(s.system.bank_index(self.payer), 0)[:2]
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
        s = self.settings
        assert s is not None
        body = self.draw(f"{self.id_prefix}-{next(self.seq):06d}")
        payer = self.bank_by_prefix[body["debtor_account"][:2]]
        base = s.bank_urls[payer]
        self.name_enquiry(base, body["creditor_account"])
        data = orjson.dumps(body).decode()
        seen = self.exchange("payment", "POST", base + "/payments", "POST /payments", body, payer, data)
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
                url = f"{base}/payments/{body['payment_id']}"
                seen = self.exchange("status_query", "GET", url, "GET /payments/[id]", body, payer)
            else:  # retry: the SAME payment id and body
                seen = self.exchange("payment", "POST", base + "/payments", "POST /payments (retry)", body, payer, data)
            if seen.outcome != "unknown":
                break

    def draw(self, payment_id: str) -> dict[str, Any]:
        """A payment by a customer of this user's bank (the shared draw picks the payer bank at random)."""
        body = self.customers.draw(payment_id)
        for _ in range(64):
            if body["debtor_account"][:2] == self.payer_prefix:
                break
            body = self.customers.draw(payment_id)
        # After 64 misses (many banks, bad luck) another bank's customer pays: still a correct payment.
        assert self.settings is not None
        if self.settings.amount_range is not None:
            body["amount"] = self.customers.rng.randint(*self.settings.amount_range)
        return body

    def name_enquiry(self, base: str, account: str) -> None:
        with self.client.request(
            "GET", f"{base}/parties/{account}", name="GET /parties/[id]", catch_response=True
        ) as resp:
            failure = None
            if resp.status_code not in (200, 404):  # 404: unknown account, a definitive answer
                failure = failure_message(response_seen(resp), "name_enquiry") or f"HTTP {resp.status_code}"
            mark(resp, failure)

    def exchange(
        self, op: str, method: str, url: str, name: str, body: dict[str, Any], payer: str, data: str | None = None
    ) -> Seen:
        """One request; counted in Locust's statistics and appended to the history."""
        invoke = time.time()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            resp: ResponseContextManager
            with self.client.request(method, url, name=name, data=data, headers=headers, catch_response=True) as resp:
                seen = response_seen(resp)
                mark(resp, failure_message(seen, op))
        except GreenletExit:  # stopped mid-request (stop timeout): the request may have landed
            record(op, body, payer, invoke, time.time(), Seen("unknown", error="cancelled"))
            raise
        record(op, body, payer, invoke, time.time(), seen)
        return seen


def mark(resp: Any, failure: str | None) -> None:
    """Count the request as a success or a failure in Locust's statistics."""
    if failure is None:
        resp.success()
    else:
        resp.failure(failure)


def record(op: str, body: Mapping[str, Any], payer: str, invoke: float, complete: float, seen: Seen) -> None:
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
            "complete": complete,
            "outcome": seen.outcome,
            "status": seen.status,
            "reason": seen.reason,
            "http": seen.http,
            "error": seen.error,
            "latency_ms": round((complete - invoke) * 1000, 3),
        }
    )


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


def watch_parent(parent: int, runner: Runner) -> None:
    while os.getppid() == parent:
        gevent.sleep(1.0)
    log.error("parent process %d is gone: stopping the load", parent)
    runner.quit()
    if runner.environment.web_ui is not None:
        runner.environment.web_ui.stop()  # type: ignore[no-untyped-call]  # in web mode the server keeps Locust up


def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if isinstance(environment.runner, MasterRunner):
        return  # the master runs no customers
    try:
        settings = LoadSettings.from_options(environment.parsed_options)
    except ConfigError as exc:
        log.error("%s", exc)
        state.settings = None
        if environment.runner is not None:
            gevent.spawn(environment.runner.stop)
        return
    state.settings = settings
    path = history_path_for(settings.history, environment.runner) if settings.history else None
    if state.recorder is not None and state.recorder.path != path:
        state.recorder.close()
        state.recorder = None
    if path is not None and state.recorder is None:
        state.recorder = HistoryRecorder(path)
    log.info(
        # harness.load.control waits for this line ("payment customers started") to know the load is on.
        "payment customers started: run id %s, banks %s, unknown outcomes -> %s, history %s",
        settings.run_id,
        settings.bank_urls,
        settings.policy,
        path or "off",
    )


def on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if state.recorder is not None:
        state.recorder.flush()


def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    if state.recorder is not None:
        state.recorder.flush()


def on_quit(exit_code: int, **_kwargs: Any) -> None:
    close_recorder()


def close_recorder() -> None:
    if state.recorder is not None:
        state.recorder.close()


listen(events.init, on_init)
listen(events.test_start, on_test_start)
listen(events.test_stop, on_test_stop)
listen(events.quitting, on_quitting)
listen(events.quit, on_quit)
atexit.register(close_recorder)
