"""Scenarios: topology + load profile + fault schedule + expectations, from YAML or Python.

A malformed scenario file is rejected before anything starts, with an error naming the file, the
field and the fix, e.g. "scenarios/x.yaml: faults[1].targets: 'switch->ZBNK' is neither a link
nor a service; links are [...]".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness import links
from harness.errors import ScenarioError as ScenarioError  # its home; importable from here as before
from harness.faults import FAULT_KINDS, KINDS, FaultSpec, expand_targets, name_problem, schedule_conflict
from harness.target import Target, TargetError
from harness.target import load as load_target
from mock_switch.bugs import Bug
from mock_switch.config import Resilience


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopologySpec(_Strict):
    banks: int = Field(4, ge=2, le=26)
    resilience: Resilience = "robust"
    switch_resilience: Resilience | None = None  # default: same as the banks
    accounts: int = Field(1000, ge=10)
    net_debit_cap: int = Field(100_000_000, gt=0)
    payee_timeout_s: float = Field(1.0, gt=0)
    switch_timeout_s: float = Field(2.5, gt=0)
    customer_timeout_s: float = Field(3.0, gt=0)
    durability: Literal["fsync", "os"] = "fsync"
    # A deliberately broken variant of the mock (mock_switch/bugs.py), for `harness teeth`.
    bug: Bug | None = None

    @property
    def bank_codes(self) -> list[str]:
        return links.bank_codes(self.banks)

    @property
    def link_names(self) -> list[str]:
        return links.link_names(self.bank_codes)

    @property
    def service_names(self) -> list[str]:
        return ["switch", *self.bank_codes]


# The longest load a scenario may ask for: what benchmarks/soak.py has shown the harness's memory
# (flat during the run) and the checkers' (linear in the payments) to stay bounded over; README
# "Long runs (soak)" has the figures.
MAX_LOAD_DURATION_S = 4 * 3600.0

# Fields that mean something under one load model only (see LoadSpec).
CLOSED_ONLY = ("users", "spawn_rate")
OPEN_ONLY = ("rate", "base_rate", "max_in_flight", "arrivals")


class LoadSpec(_Strict):
    """The customers' load. `model: open` (the default): customers arrive at `rate` per second
    whatever the system answers (harness/load/arrivals.py), so a hung switch meets the demand it
    would meet in life; `model: closed`: `users` customers, each waiting for its answer before
    paying again (a hung switch throttles them, so outages are undercounted)."""

    model: Literal["open", "closed"] = "open"
    shape: Literal["constant", "ramp", "spike"] = "constant"
    # open model: arrivals per second (peak of a ramp, rate during a spike) ...
    rate: float = Field(50, gt=0, le=5000, description="arrivals per second")
    # ... at the start of a ramp / before and after a spike (default: rate/10 for a ramp, rate/5 for a spike)
    base_rate: float | None = Field(None, ge=0, le=5000)
    # open model: customers in flight at once; an arrival finding them all busy is recorded as
    # unavailable (error `in-flight-bound`) and counted in load.json.
    max_in_flight: int = Field(1000, ge=1, le=20_000)
    arrivals: Literal["even", "poisson"] = "even"  # spacing of the arrival times (harness/load/arrivals.py)
    # closed model only
    users: int = Field(20, ge=1, le=2000)
    spawn_rate: float = Field(50, gt=0)
    duration: float = Field(30, gt=0, description="seconds of load (at most MAX_LOAD_DURATION_S)")
    # What a customer does after an unknown outcome: ask for the status, re-send, or nothing.
    unknown_policy: Literal["status", "retry", "none"] = "status"
    processes: int = Field(1, ge=1, le=8)
    # Locust workers on other hosts (`harness worker --master HOST:PORT`); the master listens on master_bind.
    workers: int = Field(0, ge=0, le=64)
    master_bind: str = "127.0.0.1:5557"
    # For payer-concentrated scenarios (e.g. pushing one bank against its net debit cap).
    payer_banks: list[str] | None = None
    amount_min: int = Field(100, gt=0)
    amount_max: int = Field(20_000, gt=0)

    @field_validator("duration")
    @classmethod
    def _bounded(cls, v: float) -> float:
        if v > MAX_LOAD_DURATION_S:
            raise ValueError(
                f"{v:g} s is over the {MAX_LOAD_DURATION_S:g} s ({MAX_LOAD_DURATION_S / 3600:g} h) a run is proven"
                " to stay bounded for (README 'Long runs (soak)'); split the run into several of at most that,"
                " or measure a longer one with benchmarks/soak.py first"
            )
        return v

    @model_validator(mode="after")
    def _one_model(self) -> LoadSpec:
        given = self.model_fields_set

        def names(fields: list[str]) -> str:
            return f"{' and '.join(fields)} appl{'ies' if len(fields) == 1 else 'y'}"

        if self.model == "open" and (wrong := [f for f in CLOSED_ONLY if f in given]):
            raise ValueError(
                f"{names(wrong)} to the closed model only (each of `users` customers waits for its answer),"
                " and this load is open (the default): give `rate` (arrivals per second) instead, or set"
                " `model: closed` to keep users"
            )
        if self.model == "closed" and (wrong := [f for f in OPEN_ONLY if f in given]):
            raise ValueError(
                f"{names(wrong)} to the open model only; with `model: closed` give `users` and `spawn_rate`,"
                " or remove `model: closed` to drive arrivals at `rate` per second"
            )
        return self

    @property
    def effective_base_rate(self) -> float:
        """The rate a ramp starts from / a spike stands on (rate/10 and rate/5 unless given)."""
        if self.base_rate is not None:
            return self.base_rate
        return self.rate / 10 if self.shape == "ramp" else self.rate / 5

    def describe(self) -> str:
        """ "open model, 150 arrivals/s" or "closed model, 20 customers": which load produced a figure."""
        if self.model == "closed":
            return f"closed model, {self.users} customers"
        return f"open model, {self.rate:g} arrivals/s"


class SettlementAction(_Strict):
    at: float = Field(ge=0, description="seconds after load starts")
    action: Literal["close", "settle", "close_and_settle"] = "close"


class AvailabilityExpectation(_Strict):
    latency_slo_ms: float = Field(2000, gt=0)
    baseline_success_ratio: float | None = Field(0.99, ge=0, le=1)
    steady_success_ratio: float | None = Field(0.95, ge=0, le=1)
    overall_success_ratio: float | None = Field(None, ge=0, le=1)
    max_time_to_recover_s: float | None = Field(None, gt=0)
    # Bulkhead: payments between banks not touched by any fault stay available during faults.
    unaffected_banks_success_ratio: float | None = Field(None, ge=0, le=1)


class ConsistencyExpectation(_Strict):
    # consistent: zero anomalies at the end. anomalies_detected: the checker must find some (naive mode).
    verdict: Literal["consistent", "anomalies_detected"] = "consistent"
    max_time_to_consistency_s: float | None = Field(30, gt=0)
    no_acknowledged_payment_lost: bool = True


# What a scenario may declare it puts under stress (harness/checkers/stress.py says what each takes).
StressKind = Literal["net_debit_cap", "settlement_window", "in_doubt", "late_credit", "crash_in_flight"]


class Expectations(_Strict):
    availability: AvailabilityExpectation = AvailabilityExpectation()
    consistency: ConsistencyExpectation = ConsistencyExpectation()
    # A consistent scenario whose declared stress the run did not exercise fails with the reason.
    stress: list[StressKind] = Field(default_factory=list)


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    backend: Literal["local", "docker", "external"] = "local"
    # A target file (harness/target.py): run against a system the harness did not start (backend external).
    target: str | None = None
    seed: int = 1
    topology: TopologySpec = TopologySpec()
    load: LoadSpec = LoadSpec()
    faults: list[FaultSpec] = Field(default_factory=list)
    settlement: list[SettlementAction] = Field(default_factory=list)
    expect: Expectations = Expectations()
    source: str | None = Field(None, exclude=True)
    _target: Target | None = PrivateAttr(None)
    _target_path: Path | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _external_backend(cls, data: Any) -> Any:
        # A scenario naming a target runs on the external testbed; `backend:` need not say so.
        if isinstance(data, dict) and data.get("target") and "backend" not in data:
            return {**data, "backend": "external"}
        return data

    @property
    def external(self) -> Target | None:
        """The target file's contents when the scenario names one (backend external)."""
        return self._target

    @property
    def target_path(self) -> Path | None:
        """Where the target file was found (absolute)."""
        return self._target_path

    @property
    def bank_codes(self) -> list[str]:
        return self._target.codes if self._target is not None else self.topology.bank_codes

    @property
    def link_names(self) -> list[str]:
        return links.link_names(self.bank_codes)

    @property
    def service_names(self) -> list[str]:
        return ["switch", *self.bank_codes]

    def _check_target(self) -> None:
        if self.target is None:
            if self.backend == "external":
                raise ValueError("backend: external needs `target:`, the path of a target file (targets/*.yaml)")
            return
        if self.topology.bug is not None:
            raise ValueError(
                "topology.bug: a broken variant applies to the bundled mock the harness starts, not to a target;"
                " drop topology.bug or target"
            )
        if self.backend != "external":
            raise ValueError(
                f"target: a scenario with a target runs on backend external, not {self.backend}; drop backend"
            )
        path = Path(self.target)
        if not path.is_absolute() and self.source:  # beside the scenario first (a run directory's copy)
            beside = Path(self.source).parent / path
            path = beside if beside.exists() else path
        try:
            found = load_target(path)
        except TargetError as exc:
            raise ValueError(f"target: {exc}") from None
        missing = found.missing_links()
        if missing:
            raise ValueError(
                f"target: {path} gives no links.{missing[0]} (missing: {missing}); a chaos run sends all traffic"
                " through Toxiproxy, so every link needs `listen` (the harness's listener) and `upstream`"
                " (the service) in the target file"
            )
        self._target = found
        self._target_path = path.resolve()

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        self._check_target()
        topo = self.topology
        if not topo.payee_timeout_s < topo.switch_timeout_s:
            raise ValueError(
                f"topology.payee_timeout_s ({topo.payee_timeout_s}) must be shorter than topology.switch_timeout_s"
                f" ({topo.switch_timeout_s}) so the switch can answer before the payer bank gives up"
            )
        names = [f.name for f in self.faults]
        for i, fault in enumerate(self.faults):
            where = f"faults[{i}]"
            try:
                expanded = expand_targets(fault, self.link_names, self.service_names)
            except ValueError as exc:
                raise ValueError(f"{where}.targets: {exc}") from None
            if self._target is not None and KINDS[fault.kind].targets == "services":
                for service in expanded:
                    if problem := self._target.process_fault_problem(fault.kind, service):
                        raise ValueError(f"{where}.kind: {problem}; or choose a link fault")
            if fault.kind == "power_loss" and self.backend != "local":
                raise ValueError(
                    f"{where}.kind: power_loss needs the local backend (its layer records what each service"
                    " writes); set backend: local or choose crash"
                )
            if fault.end > self.load.duration:
                raise ValueError(
                    f"{where} ends at {fault.end:g}s, after the load stops at {self.load.duration:g}s;"
                    " shorten it or lengthen load.duration, so its effect and recovery are measured"
                )
            if fault.name and (problem := name_problem(fault.name)):
                raise ValueError(f"{where}.name: {problem}")
            if fault.name and names.count(fault.name) > 1:
                raise ValueError(f"{where}.name: {fault.name!r} is used twice; fault names must be unique")
        # Toxics on one link may overlap (Toxiproxy stacks them); two faults on one service may not.
        overlap = schedule_conflict(self.faults, self.link_names, self.service_names)
        if overlap:
            raise ValueError(overlap)
        for i, action in enumerate(self.settlement):
            if action.at > self.load.duration:
                raise ValueError(f"settlement[{i}].at: {action.at:g}s is after the load stops")
        if self.load.payer_banks:
            unknown = sorted(set(self.load.payer_banks) - set(self.bank_codes))
            if unknown:
                raise ValueError(f"load.payer_banks: {unknown} are not banks; banks are {self.bank_codes}")
        return self

    def named_faults(self) -> list[FaultSpec]:
        """Faults with a name each (`<kind>-<n>` when the file gave none, '_' as '-' like any fault name)."""
        return [
            f if f.name else f.model_copy(update={"name": f"{f.kind.replace('_', '-')}-{i + 1}"})
            for i, f in enumerate(self.faults)
        ]


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse(data: Any, source: str) -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: a scenario must be a mapping with at least a 'name'")
    try:
        return Scenario.model_validate({**data, "source": source})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown field; {_hint(err['loc'])}"
            elif err["type"] == "literal_error":
                msg = f"{msg} (got {err['input']!r})"
            problems.append(f"{_loc(err['loc'])}: {msg}" if err["loc"] else msg)
        raise ScenarioError(f"{source}: " + "; ".join(problems)) from None


def _hint(loc: tuple[Any, ...]) -> str:
    models: dict[str, type[BaseModel]] = {
        "topology": TopologySpec, "load": LoadSpec, "faults": FaultSpec, "settlement": SettlementAction,
        "expect": Expectations, "availability": AvailabilityExpectation, "consistency": ConsistencyExpectation,
    }  # fmt: skip
    parent = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), None)
    model = models.get(parent or "", Scenario)
    fields = [f for f in model.model_fields if f != "source"]
    extra = f"; fault kinds are {list(FAULT_KINDS)}" if model is FaultSpec else ""
    return f"fields here are {fields}{extra}"


# The scenarios here are about 1 KB; a file this big is a mistake or an attack, refused unread.
MAX_SCENARIO_BYTES = 256 * 1024


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML without what a scenario never needs and what hurts: aliases (a few hundred bytes of
    nested aliases expand to gigabytes) and duplicate keys (YAML keeps the last one, silently)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.constructor.ConstructorError(
                None, None, f"an alias (*{event.anchor}) is not allowed in a scenario file; write the value out",
                event.start_mark,
            )  # fmt: skip
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first[key].line + 1}); keep one",
                        key_node.start_mark,
                    )  # fmt: skip
                first[key] = key_node.start_mark
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


def load(path: Path, target: Path | None = None) -> Scenario:
    """A scenario file, refused before anything starts if it is malformed (file, field and fix named).
    `target`: run the same file against this target file (as if it said `target:`)."""
    try:
        size = path.stat().st_size
        if size > MAX_SCENARIO_BYTES:
            raise ScenarioError(
                f"{path}: {size:,} bytes; a scenario file may have at most {MAX_SCENARIO_BYTES:,}",
                fix="is this the right file?",
            )
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ScenarioError(f"{path}: no such scenario file") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ScenarioError(
            f"{path}: line {line}: not UTF-8 text (byte {raw[exc.start]:#04x})", fix="save it as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader, stricter still
    except yaml.MarkedYAMLError as exc:  # one line: where, and what is wrong there
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ScenarioError(f"{path}: {where}{problem or 'not valid YAML'}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not valid YAML: {exc}") from None
    if target is not None and isinstance(data, dict):
        data = {**data, "target": str(target.resolve()), "backend": "external"}
    return parse(data, str(path))


def as_data(scenario: Scenario, target: str | None = None) -> dict[str, Any]:
    """The scenario as plain data that validates again: every default written out, except the other
    load model's fields (which a scenario may not hold: see LoadSpec). `target`: where the copy will
    find its target file (default: where this one found it)."""
    data = scenario.model_dump(mode="json", exclude_defaults=False)
    if scenario.target_path is not None:
        data["target"] = target or str(scenario.target_path)
    for name in CLOSED_ONLY if scenario.load.model == "open" else OPEN_ONLY:
        data["load"].pop(name, None)
    return data


def dump(scenario: Scenario, target: str | None = None) -> str:
    """The scenario as run (scenario.yaml of a run directory)."""
    return yaml.safe_dump(as_data(scenario, target), sort_keys=False)


def load_recorded(path: Path) -> Scenario:
    """The scenario.yaml of a run directory. One written before the open model existed has no
    `load.model` and was run closed-loop: it is read as `model: closed` (its users and spawn rate
    are what ran)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return load(path)  # the strict loader says what is wrong, as for any scenario file
    if isinstance(data, dict) and isinstance(data.get("load"), dict) and "model" not in data["load"]:
        data["load"] = {**data["load"], "model": "closed"}
    return parse(data, str(path))
