"""Random chaos: Hypothesis draws fault schedules and runs each one for real.

- Against robust components, no drawn schedule may fail ANY check of its run: the run's own
  result.json verdicts are read (availability recovery, consistency and the books, time to
  consistency, lost acknowledged payments, and every check added later), not a chosen few figures.
- Against naive components, Hypothesis must find a schedule that breaks the books (an anomalous
  payment or a books invariant) and shrink it to a small one, written as a scenario file a person
  can replay with `harness run`.

Runs are not deterministic (the same schedule meets the load at slightly different moments), so a
schedule is judged by up to REPLAYS real runs and fails when any of them fails; its verdict is then
kept, so Hypothesis sees one answer per schedule (never a "flaky" error) and shrinking always ends
in a schedule that really failed. That minimal schedule is written as a replay file, and the file
itself is run again (CONFIRM times: once in CI, 3 times in a hunt) to say how often it fails on replay.

Budgets. CI: EXAMPLES schedules (2), each replayed REPLAYS times (2) while it passes; at most
RUN_BUDGET real runs for the naive search and its shrinking. A hunt, for people (`make hunt`):
HARNESS_CHAOS_HUNT_S=600 draws random schedules against the robust components for that long
(3 replays each), then prints how many schedules and runs it tried and what failed, with the
replay file of any failure. Other knobs: HARNESS_CHAOS_EXAMPLES, HARNESS_CHAOS_REPLAYS,
HARNESS_CHAOS_RUNS.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from harness.faults import KINDS, FaultSpec, crash_loop_slot_s, schedule_conflict
from harness.result import reconciliation_breaks
from harness.runner import RunOutcome, run
from harness.scenario import (
    AvailabilityExpectation,
    ConsistencyExpectation,
    Expectations,
    LoadSpec,
    Scenario,
    TopologySpec,
    dump,
    load,
)
from harness.testbed import powerloss

pytestmark = pytest.mark.scenario

HUNT_S = float(os.environ.get("HARNESS_CHAOS_HUNT_S", "0"))  # > 0: a hunt of that many seconds
HUNTING = HUNT_S > 0
EXAMPLES = int(os.environ.get("HARNESS_CHAOS_EXAMPLES", "100000" if HUNTING else "2"))
REPLAYS = int(os.environ.get("HARNESS_CHAOS_REPLAYS", "3" if HUNTING else "2"))
# Real runs a search may spend, searching and shrinking together (each is ~25 s).
RUN_BUDGET = int(os.environ.get("HARNESS_CHAOS_RUNS", "40" if HUNTING else "6"))
CONFIRM = 3 if HUNTING else 1  # runs of a written replay file
CANDIDATES = 3  # failing schedules tried as the replay file, smallest first, until one fails again
# Faults end by 13 s. Against robust components the load outlasts the last heal by at least 7 s
# (plus Locust's boot): room for the availability check's recovery (3 consecutive good seconds
# after restarts that take up to 4 s on a busy machine), which a robust system must reach after any
# schedule. (With the former 12 s of load, a switch crash healed at 10 s left 3 to 4 s of answers:
# result.json said FAIL, "did not recover", in 2 of 2 runs while this test, reading only anomalies
# and lost payments, passed.) The naive search judges only the books, so its runs stop sooner.
LOAD_S = {"robust": 20.0, "naive": 14.0}
RATE = 60.0  # arrivals per second
TOPOLOGY_BANKS = 3
TOPOLOGY = TopologySpec(banks=TOPOLOGY_BANKS)
LINKS = [n for n in TOPOLOGY.link_names if not n.startswith("customers->")]
SERVICES = TOPOLOGY.service_names

# A power loss needs the recorder library built here (a C compiler); without one the search leaves
# that kind out rather than erroring (CI has one and sets HARNESS_REQUIRE_POWERLOSS=1).
POWER_LOSS = ["power_loss"] if powerloss.problem() is None or os.environ.get("HARNESS_REQUIRE_POWERLOSS") == "1" else []
CRASH_LOOP = {"kills": 2, "down_ms": 500}
CRASH_LOOP_S = CRASH_LOOP["kills"] * crash_loop_slot_s(CRASH_LOOP["down_ms"])  # 5 s


@st.composite
def faults(draw: st.DrawFn) -> FaultSpec:
    # Order matters: Hypothesis shrinks towards the first choice, so the simplest faults come first.
    kind = draw(
        st.sampled_from(
            ["latency", "timeout", "down", "crash", "pause", "reset_peer", "slicer", "crash_loop", *POWER_LOSS]
        )
    )  # fmt: skip
    start = draw(st.sampled_from([2.0, 4.0, 6.0, 8.0]))
    if kind == "crash_loop":
        seed = draw(st.integers(1, 1000))
        return FaultSpec(kind=kind, targets=[draw(st.sampled_from(SERVICES))], start=start, duration=CRASH_LOOP_S,
                         attributes={**CRASH_LOOP, "seed": seed})  # fmt: skip
    duration = draw(st.sampled_from([2.0, 4.0]))
    if KINDS[kind].targets == "services":
        return FaultSpec(kind=kind, targets=[draw(st.sampled_from(SERVICES))], start=start, duration=duration,
                         attributes=dict(KINDS[kind].defaults))  # fmt: skip
    # Link faults hit either direction: downstream delays the answers, upstream the requests (a
    # jittered request can arrive after its own status query).
    stream = draw(st.sampled_from(["downstream", "upstream"]))
    attributes: dict[str, int] = {
        "latency": {"latency": draw(st.sampled_from([1500, 3000])), "jitter": draw(st.sampled_from([0, 1000]))},
        "timeout": {"timeout": 0},
        "reset_peer": {"timeout": 0},
        "slicer": {"average_size": 16, "size_variation": 8, "delay": 2000},
    }.get(kind, {})
    return FaultSpec(kind=kind, targets=[draw(st.sampled_from(LINKS))], start=start, duration=duration,
                     attributes=attributes, stream=stream)  # fmt: skip


def _named(fs: list[FaultSpec]) -> list[FaultSpec]:
    return [f.model_copy(update={"name": f"f{i + 1}-{f.kind.replace('_', '-')}"}) for i, f in enumerate(fs)]


schedules = (
    st.lists(faults(), min_size=1, max_size=3)
    .map(_named)
    # A scenario refuses two faults on one service at once (healing one would undo the other).
    .filter(lambda fs: schedule_conflict(fs, TOPOLOGY.link_names, SERVICES) is None)
)


def scenario_for(schedule: list[FaultSpec], resilience: str) -> Scenario:
    return Scenario(
        name=f"random-chaos-{resilience}",
        description="A fault schedule drawn by Hypothesis.",
        topology=TopologySpec(banks=TOPOLOGY_BANKS, resilience=resilience, accounts=200),  # type: ignore[arg-type]
        # Open model at a modest rate: faults meet steady demand, and a 20 s run stays quick on 2 cores.
        load=LoadSpec(rate=RATE, duration=LOAD_S[resilience]),
        faults=schedule,
        expect=Expectations(
            # A random schedule has no availability floor to meet (a floor fitted to one fault means
            # nothing for another), but the service must come back after the last heal: the
            # availability check still fails a run that never recovers.
            availability=AvailabilityExpectation(baseline_success_ratio=None, steady_success_ratio=None),
            consistency=ConsistencyExpectation(verdict="consistent", max_time_to_consistency_s=30),
        ),
    )


def failed_checks(outcome: RunOutcome) -> list[str]:
    """Every failed or unknown check of a run, as its result.json says (empty: the run passed)."""
    r = outcome.result
    failures = [f"{name}: {line}" for name, v in (r.get("checks") or {}).items() for line in v["failures"]]
    if r["verdict"] != "pass" and not failures:
        failures.append(f"verdict {r['verdict']}: {r.get('failures')}")
    return failures


def books_broken(outcome: RunOutcome) -> list[str]:
    """What the naive hunt looks for: anomalous payments or a books invariant that does not hold."""
    rec = (outcome.result.get("consistency") or {}).get("reconciliation")
    breaks = reconciliation_breaks(rec) if rec else None
    return [f"reconciliation breaks: {breaks.detail()}"] if breaks is not None and breaks.total else []


@dataclass
class Trial:
    """One schedule's real runs (at most REPLAYS, stopping at the first failing one)."""

    schedule: list[FaultSpec] = field(default_factory=list)
    runs: list[tuple[Path, list[str]]] = field(default_factory=list)
    error: Exception | None = None  # a run that could not complete (the harness raised)

    @property
    def failed(self) -> bool:
        return any(problems for _, problems in self.runs)

    def failing_run(self) -> tuple[Path, list[str]]:
        return next((d, p) for d, p in self.runs if p)


@dataclass
class Search:
    """A schedule fails when any of its replays fails; each schedule is judged once and remembered,
    so Hypothesis always gets the same answer for the same schedule."""

    resilience: str
    out: Path
    judge: Callable[[RunOutcome], list[str]]
    replays: int
    run_budget: int  # real runs while searching
    shrink_budget: int  # real runs once a failure is found, to shrink it
    deadline: float | None = None  # a hunt draws no new schedule after this, unless shrinking
    max_runs: int = 10**9  # real runs in all, searching and shrinking
    trials: dict[str, Trial] = field(default_factory=dict)
    runs: int = 0
    runs_at_first_failure: int | None = None
    log: Path | None = None

    def may_run(self) -> bool:
        if self.runs >= self.max_runs:
            return False
        if self.runs_at_first_failure is not None:
            return self.runs - self.runs_at_first_failure < self.shrink_budget
        return self.runs < self.run_budget and (self.deadline is None or time.time() < self.deadline)

    def fails(self, schedule: list[FaultSpec]) -> bool:
        key = dump(scenario_for(schedule, self.resilience))
        trial = self.trials.get(key)
        if trial is None:
            if not self.may_run():
                return False  # budget spent: keep the smallest failing schedule found so far
            trial = self.trials[key] = Trial(schedule)
            for _ in range(self.replays):
                outcome = self._run(schedule, trial)
                if outcome is None:
                    break
                trial.runs.append((outcome.run_dir, self.judge(outcome)))
                if trial.failed:
                    break
            if trial.failed and self.runs_at_first_failure is None:
                self.runs_at_first_failure = self.runs
            self._log(schedule, trial)
        if trial.error is not None:
            raise trial.error
        return trial.failed

    def _run(self, schedule: list[FaultSpec], trial: Trial) -> RunOutcome | None:
        """One real run; None when the harness raised twice in a row (no verdict: `trial.error`).
        A run that raised once is run again: it says nothing about the schedule (e.g. a testbed
        that could not start), and the error is printed so a person sees it."""
        for attempt in (1, 2):
            self.runs += 1
            try:
                return run(scenario_for(schedule, self.resilience), self.out, progress=None)
            except Exception as exc:
                print(
                    f"[{self.resilience}] run raised (attempt {attempt} of 2): {type(exc).__name__}: {exc}", flush=True
                )
                if attempt == 2:
                    trial.error = exc
        return None

    def failures(self) -> int:
        return sum(t.failed for t in self.trials.values())

    def _log(self, schedule: list[FaultSpec], trial: Trial) -> None:
        line = {
            "at": time.time(),
            "faults": [f.model_dump(mode="json") for f in schedule],
            "runs": [{"run_dir": str(d), "failures": p} for d, p in trial.runs],
            "failed": trial.failed,
            "error": None if trial.error is None else f"{type(trial.error).__name__}: {trial.error}",
        }
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("a") as f:
                f.write(json.dumps(line) + "\n")
        verdict = "FAILED: " + "; ".join(trial.failing_run()[1]) if trial.failed else "passed"
        if trial.error is not None:
            verdict = f"ERROR (no verdict): {type(trial.error).__name__}: {trial.error}"
        print(f"[{self.resilience}] schedule {len(self.trials)} ({len(trial.runs)} runs) {verdict}:"
              f" {[f.name for f in schedule]}", flush=True)  # fmt: skip

    def summary(self) -> str:
        return f"{len(self.trials)} schedules tried in {self.runs} real runs, {self.failures()} failed"

    def minimal_failure(self, examples: int) -> list[FaultSpec] | None:
        """Hypothesis's smallest failing schedule, or None. A hunt searches in rounds of `examples`
        random schedules until its deadline; CI makes one round."""
        while True:
            try:
                return find(schedules, self.fails, settings=search_settings(examples))
            except NoSuchExample:
                if self.deadline is None or not self.may_run():
                    return None


def search_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not HUNTING,  # CI draws the same schedules each time; a hunt draws new ones
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )


def write_replay(minimal: list[FaultSpec], search: Search, name: str) -> tuple[Path, str, int]:
    """The minimal failing schedule as a scenario file, then that file run again CONFIRM times (its
    own runs, from the file as written). When it does not fail again (a rare failure), the next
    smallest failing schedules take its place, up to CANDIDATES of them, so the file left behind
    is, whenever the search found one, a schedule that fails again when replayed. Returns the
    file, the report (also written beside it as .txt) and how many of its replays failed."""
    replay = search.out / f"{name}.yaml"
    replay.parent.mkdir(parents=True, exist_ok=True)
    others = [t.schedule for t in search.trials.values() if t.failed and t.schedule != minimal]
    candidates = [minimal, *sorted(others, key=len)][:CANDIDATES]
    lines: list[str] = []
    again = 0
    for i, schedule in enumerate(candidates):
        text = dump(scenario_for(schedule, search.resilience))
        replay.write_text(text)
        first_dir, first_problems = search.trials[text].failing_run()
        again = 0
        runs = []
        for _ in range(CONFIRM):
            outcome = run(load(replay), search.out / "replays", progress=None)
            problems = search.judge(outcome)
            again += bool(problems)
            runs.append(f"  replay {outcome.run_dir}: {'; '.join(problems) or 'passed'}")
        label = "minimal failing schedule" if i == 0 else "next smallest failing schedule"
        lines += [f"{label}:", text, f"it failed in {first_dir}: {'; '.join(first_problems)}",
                  f"the replay file failed again in {again} of {CONFIRM} runs:", *runs]  # fmt: skip
        if again:
            break
    header = f"{search.summary()}; replay with `harness run {replay}`"
    report = "\n".join([header, *lines])
    (replay.parent / f"{name}.txt").write_text(report + "\n")
    return replay, report, again


def test_robust_components_pass_every_check_under_random_faults(pytestconfig: pytest.Config) -> None:
    out = Path(pytestconfig.getoption("--harness-out"))
    if HUNTING:  # the hunt's runs in a folder of their own, with its log
        out = out / "random-chaos-hunt-robust"
    search = Search(
        "robust", out, failed_checks, REPLAYS,
        run_budget=10**6 if HUNTING else EXAMPLES * REPLAYS, shrink_budget=RUN_BUDGET,
        deadline=time.time() + HUNT_S if HUNTING else None, log=out / "random-chaos-robust-hunt.jsonl",
    )  # fmt: skip
    minimal = search.minimal_failure(5 if HUNTING else EXAMPLES)
    print(f"\nrandom chaos against robust components: {search.summary()}")
    if minimal is None:
        assert search.failures() == 0
        return
    _, report, _ = write_replay(minimal, search, "random-chaos-robust-minimal")
    pytest.fail(f"robust components failed a check under a random fault schedule\n{report}")


def test_naive_components_break_and_hypothesis_shrinks_the_schedule(pytestconfig: pytest.Config) -> None:
    # The hunt's runs fail on purpose (that is what it searches for): keep them out of the suite
    # page's scenario list, in a folder of their own.
    out = Path(pytestconfig.getoption("--harness-out")) / "random-chaos-hunt"
    # Naive components break the books on most schedules: one run per schedule finds and shrinks.
    search = Search("naive", out, books_broken, 1, run_budget=RUN_BUDGET, shrink_budget=RUN_BUDGET,
                    max_runs=RUN_BUDGET, log=out / "random-chaos-naive-hunt.jsonl")  # fmt: skip
    minimal = search.minimal_failure(max(EXAMPLES, 6) if not HUNTING else 6)
    if minimal is None:
        pytest.fail(f"no drawn schedule broke the naive components ({search.summary()}): the checker has no teeth")
    replay, report, again = write_replay(minimal, search, "random-chaos-naive-minimal")
    print("\n" + report)
    # The schedule reported is one that really broke the books in a real run, not a guess, and
    # the file left behind breaks them again when replayed.
    assert search.trials[replay.read_text()].failed
    assert again, f"no failing schedule failed again on replay:\n{report}"
    assert 1 <= len(minimal) <= 3
