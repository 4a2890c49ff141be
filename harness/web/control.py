"""The chaos panel's control API: the harness side of `harness ui` (and of `harness up`).

Why two processes talk over loopback HTTP: Locust's web UI lives in a Locust process, which
gevent monkey-patches on import; the Testbed, the Nemesis, the SchedulePlayer and the
ConsistencySampler are plain threads and subprocesses that must stay out of gevent (harness/load/control.py
never imports Locust for the same reason). So the harness process owns the topology and serves
this small JSON API on 127.0.0.1 (a stdlib ThreadingHTTPServer on a random port), and the
Locust-side plugin (harness/web/panel.py) forwards the panel's requests to it. Because the API
belongs to the topology rather than to Locust, `harness up` serves it too, and a plain
`locust -f harness/load/locustfile.py` finds it through reports/runs/up.json.

    GET  /state                 topology, fault catalogue, active faults, live availability,
                                open anomalies, schedule, session (what the panel draws)
    POST /faults                apply {kind, targets, attributes?, duration_s?, stream?, toxicity?, name?}
    POST /faults/NAME/heal      heal one fault
    POST /faults/heal-all       stop the schedule and heal every fault
    POST /schedule              play a scenario file's faults from now {scenario: "switch-crash.yaml"}
    POST /schedule/stop         stop it (its faults are healed)
    POST /finish                heal, wait for in-doubt payments, settle, write the run directory and
                                run `harness.runner.check` on it (in the background; see /state)
    GET  /report, /result       the session's report.html and result.json

Safe by default: loopback only; a fault may name only this testbed's links and services; a
request is validated completely before anything is applied, and bad input gets a 4xx with a
message that says what to fix. Every fault, from the panel or from a schedule, goes through the
Nemesis, so the session's faults.jsonl is the same fault timeline as a scripted run's.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.checkers.consistency import ConsistencySampler
from harness.history import is_available, is_payment
from harness.nemesis.injector import (
    FAULT_KINDS,
    LINK_FAULTS,
    NODE_FAULTS,
    SERVICE_FAULTS,
    TOXICS,
    FaultKind,
    FaultSpec,
    SchedulePlayer,
)
from harness.nemesis.injector import expand_targets as nemesis_targets
from harness.observe import snapshot
from harness.scenario import AvailabilityExpectation, Expectations, LoadSpec, Scenario, ScenarioError, TopologySpec
from harness.scenario import dump as dump_scenario
from harness.scenario import load as load_scenario
from harness.testbed.bed import Testbed
from mock_switch.config import SystemConfig

SESSION_NAME = "ui-session"
LOOPBACK = "127.0.0.1"
RECENT_S = 10.0  # "availability, last 10 s"
BARS_S = 60  # per-second bars drawn in the panel
MAX_DURATION_S = 3600.0
LOG_LINES = 30
# What the panel pre-fills for each toxic (Toxiproxy units: ms, KB/s, bytes, µs).
ATTRIBUTE_DEFAULTS: dict[str, dict[str, int]] = {
    "latency": {"latency": 1500, "jitter": 0},
    "bandwidth": {"rate": 1},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slow_close": {"delay": 2000},
    "slicer": {"average_size": 16, "size_variation": 8, "delay": 1000},
    "limit_data": {"bytes": 200},
}
KIND_HELP = {
    "down": "link disabled: connections refused",
    "partition": "every target link disabled together",
    "crash": "kill -9; restarted when healed",
    "pause": "SIGSTOP; SIGCONT when healed",
    "stop": "graceful stop (SIGTERM); started again when healed",
    "restart": "stopped and started at once; healing checks it is back",
    "disconnect": "off the network (docker) or every Toxiproxy link down (local); back when healed",
}
# Faults aimed at a service rather than a link: one at a time per service, or healing could not undo them.
ON_SERVICES = (*SERVICE_FAULTS, *NODE_FAULTS)
SERVICE_STATE = {"crash": "crashed", "pause": "paused", "stop": "stopped", "restart": "restarted",
                 "disconnect": "disconnected"}  # fmt: skip
FAULT_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"  # also a Toxiproxy toxic name, so it goes into URLs


class ControlError(Exception):
    """A request the panel must refuse: HTTP status and a message naming what to fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FaultRequest(BaseModel):
    """A fault as the panel asks for it; becomes a FaultSpec once its name and targets are checked."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    targets: list[str] = Field(min_length=1)
    attributes: dict[str, int] = Field(default_factory=dict)
    duration_s: float | None = Field(None, gt=0, le=MAX_DURATION_S, allow_inf_nan=False)
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: float = Field(1.0, ge=0, le=1)
    name: str | None = Field(None, pattern=FAULT_NAME)


def validation_message(exc: ValidationError) -> str:
    """One line per problem, naming the field: 'duration_s: Input should be greater than 0'."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and where == "kind":
            msg = f"unknown fault kind {err['input']!r}; kinds are {', '.join(FAULT_KINDS)}"
        elif err["type"] == "string_pattern_mismatch":
            msg = "use 1 to 40 lower-case letters, digits or '-', starting with a letter or digit"
        out.append(f"{where}: {msg}" if where else msg)
    return "; ".join(out)


def topology_of(system: SystemConfig) -> TopologySpec:
    """The scenario topology that describes a running system (for the session's scenario.yaml)."""
    bank = system.banks[0]
    return TopologySpec(
        banks=len(system.banks),
        resilience=bank.resilience,
        switch_resilience=system.switch.resilience if system.switch.resilience != bank.resilience else None,
        accounts=bank.accounts,
        net_debit_cap=bank.net_debit_cap,
        payee_timeout_s=system.switch.payee_timeout_s,
        switch_timeout_s=bank.switch_timeout_s,
        customer_timeout_s=bank.customer_timeout_s,
        durability=system.durability,
    )


def session_scenario(topology: TopologySpec, description: str = "") -> Scenario:
    """The scenario.yaml of an interactive session: its faults are in faults.jsonl, not here."""
    return Scenario(
        name=SESSION_NAME,
        description=description
        or "Interactive session from the Locust web UI; faults were applied from the chaos panel (see faults.jsonl).",
        topology=topology,
        load=LoadSpec(users=10, duration=600),
        # A person's session has no scripted baseline or steady phase to promise; consistency is judged as always.
        expect=Expectations(
            availability=AvailabilityExpectation(baseline_success_ratio=None, steady_success_ratio=None)
        ),
    )


@dataclass
class LiveAvailability:
    """Availability of customer payments so far, read incrementally from the session's history.jsonl
    (the file Locust appends to every half second; the same lines `runner.check` will judge)."""

    path: Path
    slo_ms: float
    offset: int = 0
    total: int = 0
    good: int = 0
    seconds: dict[int, list[int]] = field(default_factory=dict)  # epoch second -> [ops, good]
    recent: deque[tuple[float, bool]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        with self._lock:
            self._read_new_lines(now)
            while self.recent and self.recent[0][0] < now - RECENT_S:
                self.recent.popleft()
            recent_good = sum(1 for _, good in self.recent if good)
            first = int(now) - BARS_S
            for second in [s for s in self.seconds if s < first]:
                del self.seconds[second]
            return {
                "slo_ms": self.slo_ms,
                "window_s": RECENT_S,
                "last_10s": _ratio(len(self.recent), recent_good),
                "session": _ratio(self.total, self.good),
                "per_second": [
                    {"t": s, "ops": self.seconds.get(s, [0, 0])[0], "good": self.seconds.get(s, [0, 0])[1]}
                    for s in range(first, int(now))
                ],
            }

    def _read_new_lines(self, now: float) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        for raw in chunk[:end].splitlines():
            try:
                op = json.loads(raw)
                if not is_payment(op):
                    continue  # status queries follow up an unknown payment; they are not payments
                good, complete = is_available(op, self.slo_ms), float(op["complete"])
            except (ValueError, KeyError, TypeError):
                continue
            self.total += 1
            self.good += good
            bucket = self.seconds.setdefault(int(complete), [0, 0])
            bucket[0] += 1
            bucket[1] += good
            if complete >= now - RECENT_S:
                self.recent.append((complete, good))


def _ratio(ops: int, good: int) -> dict[str, Any]:
    return {"ops": ops, "good": good, "ratio": good / ops if ops else None}


@dataclass
class _Schedule:
    scenario: str
    player: SchedulePlayer
    started_at: float
    ends_at: float
    faults: list[str]


class ChaosSession:
    """One interactive session on a running testbed: faults on demand, schedules, live figures,
    and at the end a checked run directory. Thread-safe; every method may be called from the
    control server's request threads."""

    def __init__(
        self, bed: Testbed, run_dir: Path, scenarios_dir: Path, command: str, scenario: Scenario | None = None
    ) -> None:
        self.bed = bed
        self.nemesis = bed.nemesis
        self.run_dir = run_dir
        self.scenarios_dir = scenarios_dir
        self.command = command
        self.scenario = scenario or session_scenario(topology_of(bed.system))
        direct = bed.direct_urls
        self.switch_url = direct.pop("switch")
        self.bank_urls = direct
        self.sampler = ConsistencySampler(
            self.switch_url,
            self.bank_urls,
            run_dir / "consistency.jsonl",
            grace_s=self.scenario.topology.customer_timeout_s + 1.0,
        )
        self.live = LiveAvailability(run_dir / "history.jsonl", self.scenario.expect.availability.latency_slo_ms)
        self.started_at = time.time()
        self._lock = threading.RLock()  # one change at a time: faults, schedule, finishing
        self._names = itertools.count(1)
        self._used: set[str] = set()  # names already in faults.jsonl: a name is never reused
        self._source: dict[str, str] = {}
        self._specs: dict[str, FaultSpec] = {}  # every fault applied, for the replayable scenario.yaml
        self._expires: dict[str, float] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._schedule: _Schedule | None = None
        self._last_schedule: dict[str, Any] | None = None
        self._finish: dict[str, Any] = {"state": "idle"}
        self._finisher: threading.Thread | None = None
        self._log: deque[dict[str, Any]] = deque(maxlen=LOG_LINES)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> ChaosSession:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "scenario.yaml").write_text(dump_scenario(self.scenario))
        (self.run_dir / "command.txt").write_text(self.command + "\n")
        self.live.path.touch()  # the checker reads it even when nobody started any load
        self.sampler.start()
        self.say(f"session started; run directory {self.run_dir}")
        return self

    def close(self) -> None:
        """Stop timers, the schedule and the sampler, and heal everything (the testbed resets Toxiproxy)."""
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._stop_schedule()
            if self.nemesis.active:
                self.nemesis.heal_all()
        self.sampler.stop()

    def say(self, message: str) -> None:
        self._log.append({"at": time.time(), "message": message})

    @property
    def links(self) -> list[str]:
        return list(self.bed.links)

    @property
    def services(self) -> list[str]:
        return self.bed.topology.service_names

    # -- faults -----------------------------------------------------------------------------------

    def apply(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ControlError(400, "the request body must be a JSON object with at least kind and targets")
        try:
            req = FaultRequest.model_validate(body)
        except ValidationError as exc:
            raise ControlError(400, validation_message(exc)) from None
        with self._lock:
            if self._finish["state"] == "finishing":
                raise ControlError(409, "the session is being checked; apply faults again when the check is done")
            try:  # validated under a stand-in name, so a refused request does not use up a number
                spec = FaultSpec(
                    name=req.name or req.kind, kind=req.kind, targets=req.targets, start=0,
                    duration=req.duration_s or math.inf, attributes=req.attributes,
                    stream=req.stream, toxicity=req.toxicity,
                )  # fmt: skip
                targets = nemesis_targets(spec, self.links, self.services)
            except ValidationError as exc:
                raise ControlError(400, validation_message(exc)) from None
            except ValueError as exc:
                raise ControlError(400, str(exc)) from None
            name = req.name or self._fresh_name(req.kind)
            if name in self._used:
                raise ControlError(409, f"fault name {name!r} is already in this session's timeline; pick another")
            spec = spec.model_copy(update={"name": name})
            self._refuse_conflicts(spec, targets)
            try:
                self.nemesis.apply(spec)
            except ValueError as exc:
                raise ControlError(409, str(exc)) from None
            except Exception as exc:  # Toxiproxy or a service did not do it: say so, leave nothing half-done
                self._undo_partial(spec, targets)
                raise ControlError(502, f"could not apply {name}: {exc}") from None
            self._used.add(name)
            self._source[name] = "panel"
            self._specs[name] = spec
            if req.duration_s is not None:
                self._expires[name] = time.time() + req.duration_s
                timer = threading.Timer(req.duration_s, self._expire, args=(name,))
                timer.daemon = True
                self._timers[name] = timer
                timer.start()
            self.say(f"applied {name}: {req.kind} on {', '.join(targets)}" + _for(req.duration_s))
            return {"applied": name, "targets": targets}

    def heal(self, name: str) -> dict[str, Any]:
        with self._lock:
            if name not in self.nemesis.active:
                raise ControlError(
                    404, f"no active fault named {name!r}; active: {', '.join(self.nemesis.active) or 'none'}"
                )
            self._heal(name)
            self.say(f"healed {name}")
            return {"healed": name}

    def heal_all(self) -> dict[str, Any]:
        with self._lock:
            self._stop_schedule()
            names = list(self.nemesis.active)
            for name in names:
                self._cancel_timer(name)
            self.nemesis.heal_all()
            self.say(f"healed all ({', '.join(names) or 'nothing was active'}); Toxiproxy reset")
            return {"healed": names}

    def _heal(self, name: str) -> None:
        self._cancel_timer(name)
        self.nemesis.heal(name)

    def _expire(self, name: str) -> None:
        with self._lock:
            self._timers.pop(name, None)
            if name in self.nemesis.active:
                try:
                    self.nemesis.heal(name)
                    self.say(f"healed {name}: its duration is over")
                except Exception as exc:  # the backstop is heal-all at finish and at exit
                    self.say(f"could not heal {name}: {exc}")

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _fresh_name(self, kind: str) -> str:
        while True:
            name = f"{kind.replace('_', '-')}-{next(self._names)}"
            if name not in self._used:
                return name

    def _refuse_conflicts(self, spec: FaultSpec, targets: list[str]) -> None:
        """A service crashed or paused twice at once could not be healed cleanly: refuse, naming the holder."""
        if spec.kind not in ON_SERVICES:
            return
        for other in self.nemesis.active.values():
            if other.fault.kind in ON_SERVICES and (shared := sorted(set(other.targets) & set(targets))):
                held = f"{other.fault.kind} fault {other.fault.name!r}"
                raise ControlError(409, f"{', '.join(shared)} is already under {held}; heal it first")

    def _undo_partial(self, spec: FaultSpec, targets: list[str]) -> None:
        """A toxic or a disabled link set on some targets before the failure must not stay behind."""
        with contextlib.suppress(Exception):
            if spec.kind in TOXICS:
                for t in targets:
                    self.bed.toxiproxy.remove_toxic(self.bed.links[t], spec.name)
            elif spec.kind in LINK_FAULTS:
                still_down = {t for a in self.nemesis.active.values() if a.fault.kind in LINK_FAULTS for t in a.targets}
                for t in targets:
                    if t not in still_down:
                        self.bed.toxiproxy.set_enabled(self.bed.links[t], True)

    # -- schedules --------------------------------------------------------------------------------

    def scenario_files(self) -> list[str]:
        return sorted(p.name for p in self.scenarios_dir.glob("*.yaml"))

    def start_schedule(self, body: Any) -> dict[str, Any]:
        file = body.get("scenario") if isinstance(body, dict) else None
        if not isinstance(file, str) or file not in self.scenario_files():
            choices = ", ".join(self.scenario_files())
            raise ControlError(400, f"scenario {file!r} is not a scenario file of {self.scenarios_dir}: {choices}")
        try:
            scenario = load_scenario(self.scenarios_dir / file)
        except ScenarioError as exc:
            raise ControlError(400, str(exc)) from None
        with self._lock:
            if self._schedule is not None and self._schedule.player.is_alive():
                raise ControlError(409, f"schedule {self._schedule.scenario} is still playing; stop it first")
            if self._finish["state"] == "finishing":
                raise ControlError(409, "the session is being checked; start the schedule when the check is done")
            prefix = f"s{next(self._names)}-"
            faults = [f.model_copy(update={"name": prefix + f.name}) for f in scenario.named_faults()]
            if not faults:
                raise ControlError(400, f"{file} has no faults to play")
            for f in faults:
                try:
                    nemesis_targets(f, self.links, self.services)
                except ValueError as exc:
                    raise ControlError(400, f"{file}: fault {f.name.removeprefix(prefix)!r}: {exc}") from None
            player = SchedulePlayer(self.nemesis, faults, t0=time.time(), heal_all=False)
            for f in faults:
                self._used.add(f.name)
                self._source[f.name] = f"schedule {file}"
                self._specs[f.name] = f
            now = time.time()
            self._schedule = _Schedule(file, player, now, now + max(f.end for f in faults), [f.name for f in faults])
            player.start()
            self.say(f"schedule {file} started: {len(faults)} faults over {max(f.end for f in faults):g} s")
            return {"started": file, "faults": [f.name for f in faults]}

    def stop_schedule(self) -> dict[str, Any]:
        with self._lock:
            if self._schedule is None or not self._schedule.player.is_alive():
                raise ControlError(404, "no schedule is playing")
            name = self._schedule.scenario
            self._stop_schedule()
            return {"stopped": name}

    def _stop_schedule(self) -> None:
        sched = self._schedule
        if sched is None:
            return
        was_playing = sched.player.is_alive()
        sched.player.stop()
        self._schedule = None
        self._last_schedule = {
            "scenario": sched.scenario,
            "error": str(sched.player.error) if sched.player.error else None,
            "stopped_early": was_playing,
        }
        if was_playing:
            self.say(f"schedule {sched.scenario} stopped; its faults are healed")

    def _schedule_state(self) -> dict[str, Any]:
        sched = self._schedule
        if sched is not None and not sched.player.is_alive():
            self._stop_schedule()  # it ended by itself: report how
            sched = None
        running = None
        if sched is not None:
            running = {"scenario": sched.scenario, "started_at": sched.started_at, "ends_at": sched.ends_at}
        return {"scenarios": self.scenario_files(), "running": running, "last": self._last_schedule}

    # -- finishing: the run directory and its check ----------------------------------------------

    def finish(self) -> dict[str, Any]:
        """Start the end-of-session work in the background (idempotent while it runs)."""
        with self._lock:
            if self._finish["state"] != "finishing":
                self._finish = {"state": "finishing", "since": time.time()}
                self.say("finishing: healing faults, waiting for in-doubt payments, settling, checking ...")
                self._finisher = threading.Thread(target=self._run_finish, name="session-finish", daemon=True)
                self._finisher.start()
            return dict(self._finish)

    def wait_finished(self, timeout_s: float) -> dict[str, Any]:
        finisher = self._finisher
        if finisher is not None:
            finisher.join(timeout_s)
        return dict(self._finish)

    def unchecked(self) -> bool:
        """Payments were made since the last check (or there was none)."""
        self.live.poll()
        return self.live.total > int(self._finish.get("payments", 0)) and self._finish["state"] != "finishing"

    def _run_finish(self) -> None:
        try:
            with self._lock:
                self._stop_schedule()
                for name in list(self._timers):
                    self._cancel_timer(name)
                self.nemesis.heal_all()
            self._wait_in_doubt()
            with contextlib.suppress(OSError):
                self.sampler.sample()
            from harness.runner import _environment, _settle_all, check

            _settle_all(self.switch_url)
            snapshot.save(snapshot.take_stable(self.switch_url, self.bank_urls), self.run_dir / "ledgers.json")
            env = _environment(self.bed.versions())  # backend, Toxiproxy (docker: engine and images)
            (self.run_dir / "environment.json").write_text(json.dumps(env, indent=2))
            payments = self.live.poll()["session"]["ops"]
            (self.run_dir / "scenario.yaml").write_text(dump_scenario(self.replayable_scenario()))
            outcome = check(self.run_dir, progress=None)  # writes result.json and report.html
            self._finish = {
                "state": "finished",
                "at": time.time(),
                "verdict": outcome.result["verdict"],
                "failures": outcome.failures,
                "payments": payments,
                "anomalies": outcome.result["consistency"]["reconciliation"]["anomaly_count"],
            }
            n = len(outcome.failures)
            self.say(f"checked: {outcome.result['verdict'].upper()} ({n} failure{'' if n == 1 else 's'})")
        except Exception as exc:  # shown in the panel; the session goes on
            self._finish = {"state": "failed", "at": time.time(), "message": f"{type(exc).__name__}: {exc}"}
            self.say(f"finishing failed: {exc}")

    def replayable_scenario(self) -> Scenario:
        """The session as a scenario: its faults as they were applied and healed, timed from the first
        payment, so `harness run RUN_DIR/scenario.yaml` plays them again (and the report lists them)."""
        history = [json.loads(line) for line in self.live.path.read_text().splitlines() if line.strip()]
        if not history:
            return self.scenario
        t0 = min(float(op["invoke"]) for op in history)
        load_s = math.ceil(max(float(op["complete"]) for op in history) - t0) + 1
        applied: dict[str, float] = {}
        faults: list[FaultSpec] = []
        for event in (json.loads(line) for line in self.nemesis.timeline_path.read_text().splitlines()):
            name = event["fault"]
            if event["event"] == "apply":
                applied[name] = float(event["at"])
            elif name in applied and name in self._specs:
                start = max(0.0, round(applied.pop(name) - t0, 1))
                duration = max(0.1, round(float(event["at"]) - t0 - start, 1))
                faults.append(self._specs[name].model_copy(update={"start": start, "duration": duration}))
        data = json.loads(self.scenario.model_dump_json())
        data["load"]["duration"] = max(load_s, *(math.ceil(f.end) for f in faults)) if faults else load_s
        data["faults"] = [json.loads(f.model_dump_json()) for f in faults]
        try:
            return Scenario.model_validate(data)
        except ValidationError:  # e.g. a session longer than a scenario may be: keep the faults in faults.jsonl only
            return self.scenario

    def _wait_in_doubt(self) -> None:
        """Until no payment is pending anywhere, or the grace the checker allows is over."""
        topo = self.scenario.topology
        deadline = (
            time.time() + topo.customer_timeout_s + (self.scenario.expect.consistency.max_time_to_consistency_s or 30)
        )
        from harness.runner import _pending

        while time.time() < deadline:
            try:
                if _pending(snapshot.take(self.switch_url, self.bank_urls)) == 0:
                    return
            except OSError:
                pass  # a service restarting after a crash: ask again
            time.sleep(0.5)

    # -- what the panel shows ---------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        now = time.time()
        with self._lock:
            active: list[dict[str, Any]] = [
                {
                    "name": name,
                    "kind": act.fault.kind,
                    "targets": act.targets,
                    "attributes": dict(act.fault.attributes),
                    "stream": act.fault.stream if act.fault.kind in TOXICS else None,
                    "toxicity": act.fault.toxicity if act.fault.kind in TOXICS else None,
                    "expires_at": self._expires.get(name),
                    "source": self._source.get(name, "panel"),
                }
                for name, act in self.nemesis.active.items()
            ]
            schedule = self._schedule_state()
            finish = dict(self._finish)
        by_link: dict[str, list[str]] = {}
        by_service: dict[str, str] = {}
        for a in active:
            for t in a["targets"]:
                if a["kind"] in ON_SERVICES:
                    by_service[t] = SERVICE_STATE.get(a["kind"], a["kind"])
                else:
                    by_link.setdefault(t, []).append(f"{a['name']} ({a['kind']})")
        samples = self.sampler.samples
        return {
            "now": now,
            "session": {
                "name": self.scenario.name,
                "run_dir": str(self.run_dir),
                "started_at": self.started_at,
                **finish,
                "report": (self.run_dir / "report.html").exists(),
                "result": (self.run_dir / "result.json").exists(),
            },
            "topology": {
                "banks": self.bed.topology.bank_codes,
                "services": [{"name": s, "state": by_service.get(s, "running")} for s in self.services],
                "links": [
                    {"name": n, "listen": link.listen, "upstream": link.upstream, "faults": by_link.get(n, [])}
                    for n, link in self.bed.links.items()
                ],
            },
            "catalogue": catalogue(),
            "active": active,
            "availability": self.live.poll(now),
            "consistency": samples[-1] if samples else None,
            "schedule": schedule,
            "log": list(self._log)[::-1],
        }


def catalogue() -> list[dict[str, Any]]:
    """Every fault kind of the nemesis, with its attributes, what it targets and the panel's defaults."""
    kinds: list[dict[str, Any]] = [
        {"kind": k, "targets": "links", "attributes": attrs, "defaults": ATTRIBUTE_DEFAULTS.get(k, {}), "toxic": True}
        for k, attrs in TOXICS.items()
    ]
    kinds += [
        {"kind": k, "targets": "links", "attributes": {}, "defaults": {}, "toxic": False, "help": KIND_HELP[k]}
        for k in LINK_FAULTS
    ]
    kinds += [
        {"kind": k, "targets": "services", "attributes": {}, "defaults": {}, "toxic": False, "help": KIND_HELP[k]}
        for k in ON_SERVICES
    ]
    return kinds


def _for(duration_s: float | None) -> str:
    return f" for {duration_s:g} s" if duration_s is not None else " until healed"


# -- the HTTP server ----------------------------------------------------------------------------------


class ControlServer:
    """The session's JSON API on 127.0.0.1 (random port unless given), in a daemon thread."""

    def __init__(self, session: ChaosSession, port: int = 0) -> None:
        self.session = session
        routes = _routes(session)

        class Handler(BaseHTTPRequestHandler):
            server_version = "payswitch-chaos-control"

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                # Only the Locust-side plugin calls this API. A browser sends Origin on a cross-site
                # request, and a JSON body cannot be posted cross-site without a preflight we never answer.
                if self.headers.get("Origin"):
                    self._send(403, {"error": "browsers reach the chaos panel through Locust's web UI, not here"})
                    return
                body: Any = None
                if method == "POST" and not (self.headers.get("Content-Type") or "").startswith("application/json"):
                    self._send(415, {"error": "send the request body as application/json"})
                    return
                if method == "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    raw = self.rfile.read(length) if length else b""
                    try:
                        body = json.loads(raw) if raw.strip() else {}
                    except ValueError:
                        self._send(400, {"error": "the request body is not valid JSON"})
                        return
                handler = _match(routes, method, path)
                if handler is None:
                    self._send(404, {"error": f"no such endpoint: {method} {path}"})
                    return
                try:
                    status, payload = handler(body)
                except ControlError as exc:
                    status, payload = exc.status, {"error": exc.message}
                except Exception as exc:  # a bug or a broken service: the panel shows it, the server lives on
                    status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
                self._send(status, payload)

            def _send(self, status: int, payload: Any) -> None:
                if isinstance(payload, bytes):  # report.html
                    data, ctype = payload, "text/html; charset=utf-8"
                else:
                    data, ctype = json.dumps(payload, default=str).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the panel polls every few seconds; the session log says what changed

        self.httpd = ThreadingHTTPServer((LOOPBACK, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="chaos-control", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.httpd.server_address[1]}"

    def start(self) -> ControlServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


Route = Callable[[Any], tuple[int, Any]]


def _routes(s: ChaosSession) -> dict[tuple[str, str], Route]:
    def file(name: str) -> Route:
        def serve(_: Any) -> tuple[int, Any]:
            path = s.run_dir / name
            if not path.exists():
                raise ControlError(404, f"{name} is not written yet: it appears when the session is checked")
            return 200, path.read_bytes() if name.endswith(".html") else json.loads(path.read_text())

        return serve

    return {
        ("GET", "/state"): lambda _: (200, s.state()),
        ("POST", "/faults"): lambda body: (201, s.apply(body)),
        ("POST", "/faults/heal-all"): lambda _: (200, s.heal_all()),
        ("POST", "/faults/*/heal"): lambda name: (200, s.heal(name)),
        ("POST", "/schedule"): lambda body: (202, s.start_schedule(body)),
        ("POST", "/schedule/stop"): lambda _: (200, s.stop_schedule()),
        ("POST", "/finish"): lambda _: (202, s.finish()),
        ("GET", "/report"): file("report.html"),
        ("GET", "/result"): file("result.json"),
    }


def _match(routes: dict[tuple[str, str], Route], method: str, path: str) -> Callable[[Any], tuple[int, Any]] | None:
    if (method, path) in routes:
        return routes[(method, path)]
    parts = path.split("/")
    if method == "POST" and len(parts) == 4 and parts[1] == "faults" and parts[3] == "heal":
        heal = routes[("POST", "/faults/*/heal")]
        name = unquote(parts[2])
        return lambda _body: heal(name)
    return None


def reproduce_command(argv: list[str]) -> str:
    return "harness " + " ".join(shlex.quote(a) for a in argv)
