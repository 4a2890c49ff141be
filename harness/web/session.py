"""One interactive chaos session on a running testbed: the domain behind the Chaos tab.

Faults on demand (validated completely before anything is applied; names never reused), scripted
schedules from scenario files, live availability and open anomalies, and at the end a checked run
directory through the same `runner.finish_run` and `runner.check` as a scripted run. Every fault,
from the panel or from a schedule, goes through the Nemesis, so the session's faults.jsonl is the
same fault timeline as a scripted run's. Refusals are `SessionError`s; harness/web/control.py maps
each kind to its HTTP status, once.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import FaultError, HarnessError
from harness.faults import FAULT_KINDS, FAULT_NAME, KINDS, TOXICS, FaultKind, FaultSpec, catalogue, expand_targets
from harness.nemesis import SchedulePlayer
from harness.observe.live import LiveAvailability
from harness.result import reconciliation_breaks
from harness.rundir import RunDir
from harness.runner import check, finish_run, sampler_for
from harness.scenario import AvailabilityExpectation, Expectations, LoadSpec, Scenario, ScenarioError, TopologySpec
from harness.scenario import as_data as as_scenario_data
from harness.scenario import dump as dump_scenario
from harness.scenario import load as load_scenario
from harness.testbed import Testbed
from harness.timeline import fault_windows, read_timeline
from mock_switch.config import SystemConfig

SESSION_NAME = "ui-session"
LOOPBACK = "127.0.0.1"
MAX_DURATION_S = 3600.0
LOG_LINES = 30


class SessionError(HarnessError):
    """A request the session refuses; the message names what to fix. web/control.py maps each kind to a status."""


class InvalidRequest(SessionError):
    """The request itself is wrong (a field, a target, a file name)."""


class NotFound(SessionError):
    """It names a fault, schedule or file that does not exist (yet)."""


class Conflict(SessionError):
    """Valid, but not now: a name already used, a service already under a fault, a check running."""


class NotApplied(SessionError):
    """Toxiproxy or a service did not do it; nothing of the fault is left behind."""


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
        # People drive the Locust web UI by its user count: the closed model, and the result says so.
        load=LoadSpec(model="closed", users=10, duration=600),
        # A person's session has no scripted baseline or steady phase to promise; consistency is judged as always.
        expect=Expectations(
            availability=AvailabilityExpectation(baseline_success_ratio=None, steady_success_ratio=None)
        ),
    )


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
        self.rundir = RunDir(run_dir)
        self.scenarios_dir = scenarios_dir
        self.command = command
        self.scenario = scenario or session_scenario(topology_of(bed.system))
        self.sampler = sampler_for(bed, self.rundir, self.scenario)
        self.live = LiveAvailability(self.rundir.history, self.scenario.expect.availability.latency_slo_ms)
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
        self.rundir.scenario.write_text(dump_scenario(self.scenario))
        self.rundir.command.write_text(self.command + "\n")
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
            raise InvalidRequest("the request body must be a JSON object with at least kind and targets")
        try:
            req = FaultRequest.model_validate(body)
        except ValidationError as exc:
            raise InvalidRequest(validation_message(exc)) from None
        with self._lock:
            if self._finish["state"] == "finishing":
                raise Conflict("the session is being checked; apply faults again when the check is done")
            try:  # validated under a stand-in name, so a refused request does not use up a number
                spec = FaultSpec(
                    name=req.name or req.kind, kind=req.kind, targets=req.targets, start=0,
                    duration=req.duration_s or math.inf, attributes=req.attributes,
                    stream=req.stream, toxicity=req.toxicity,
                )  # fmt: skip
                targets = expand_targets(spec, self.links, self.services)
            except ValidationError as exc:
                raise InvalidRequest(validation_message(exc)) from None
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
            name = req.name or self._fresh_name(req.kind)
            if name in self._used:
                raise Conflict(f"fault name {name!r} is already in this session's timeline; pick another")
            spec = spec.model_copy(update={"name": name})
            try:  # all or nothing: a failed apply leaves no part of the fault behind (the nemesis undoes it)
                self.nemesis.apply(spec)
            except FaultError as exc:  # Toxiproxy or a service did not do it
                raise NotApplied(f"could not apply {name}: {exc}") from None
            except ValueError as exc:  # e.g. a service already under another fault (faults.service_conflict)
                raise Conflict(str(exc)) from None
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
                raise NotFound(f"no active fault named {name!r}; active: {', '.join(self.nemesis.active) or 'none'}")
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

    # -- schedules --------------------------------------------------------------------------------

    def scenario_files(self) -> list[str]:
        return sorted(p.name for p in self.scenarios_dir.glob("*.yaml"))

    def start_schedule(self, body: Any) -> dict[str, Any]:
        file = body.get("scenario") if isinstance(body, dict) else None
        if not isinstance(file, str) or file not in self.scenario_files():
            choices = ", ".join(self.scenario_files())
            raise InvalidRequest(f"scenario {file!r} is not a scenario file of {self.scenarios_dir}: {choices}")
        try:
            scenario = load_scenario(self.scenarios_dir / file)
        except ScenarioError as exc:
            raise InvalidRequest(str(exc)) from None
        with self._lock:
            if self._schedule is not None and self._schedule.player.is_alive():
                raise Conflict(f"schedule {self._schedule.scenario} is still playing; stop it first")
            if self._finish["state"] == "finishing":
                raise Conflict("the session is being checked; start the schedule when the check is done")
            prefix = f"s{next(self._names)}-"
            faults = [f.model_copy(update={"name": prefix + f.name}) for f in scenario.named_faults()]
            if not faults:
                raise InvalidRequest(f"{file} has no faults to play")
            for f in faults:
                try:
                    expand_targets(f, self.links, self.services)
                except ValueError as exc:
                    raise InvalidRequest(f"{file}: fault {f.name.removeprefix(prefix)!r}: {exc}") from None
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
                raise NotFound("no schedule is playing")
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
            finish_run(self.bed, self.rundir, self.scenario, self.sampler)  # the same ending as a scripted run
            payments = self.live.poll()["session"]["ops"]
            self.rundir.scenario.write_text(dump_scenario(self.replayable_scenario()))
            outcome = check(self.run_dir, progress=None)  # writes result.json and report.html
            rec = (outcome.result.get("consistency") or {}).get("reconciliation")
            self._finish = {
                "state": "finished",
                "at": time.time(),
                "verdict": outcome.result["verdict"],
                "failures": outcome.failures,
                "payments": payments,
                # None when the reconciliation could not run (its check is "unknown" and says why).
                "anomalies": ((outcome.result.get("consistency") or {}).get("reconciliation") or {}).get(
                    "anomaly_count"
                ),
                # The report's one count: anomalous payments plus broken books invariants.
                "breaks": breaks.total if (breaks := reconciliation_breaks(rec)) is not None else None,
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
        faults: list[FaultSpec] = []
        for w in fault_windows(read_timeline(self.rundir.faults)):
            if w.heal is not None and w.fault in self._specs:
                start = max(0.0, round(w.apply - t0, 1))
                duration = max(0.1, round(w.heal - t0 - start, 1))
                faults.append(self._specs[w.fault].model_copy(update={"start": start, "duration": duration}))
        data = as_scenario_data(self.scenario)
        data["load"]["duration"] = max(load_s, *(math.ceil(f.end) for f in faults)) if faults else load_s
        data["faults"] = [json.loads(f.model_dump_json()) for f in faults]
        try:
            return Scenario.model_validate(data)
        except ValidationError:  # e.g. a session longer than a scenario may be: keep the faults in faults.jsonl only
            return self.scenario

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
                kind = KINDS[a["kind"]]
                if kind.targets == "services":
                    by_service[t] = kind.state or a["kind"]
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
                "report": self.rundir.report.exists(),
                "result": self.rundir.result.exists(),
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


def _for(duration_s: float | None) -> str:
    return f" for {duration_s:g} s" if duration_s is not None else " until healed"
