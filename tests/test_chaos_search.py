"""The crash loop fault kind and the random-chaos search's judging, without real runs.

- A crash loop kills at its planned, seeded moments (never early), restarts after each kill, leaves
  its service running when healed (even mid-kill), and its heal line says what it did.
- The random-chaos search judges a run by every check of its result.json, treats a schedule as
  failing when any replay fails, answers Hypothesis the same for the same schedule (so a
  nondeterministic failure never turns into a "flaky" error), and always ends a failure in a
  replay file holding a schedule that really failed.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.faults import FaultSpec
from harness.nemesis import Nemesis
from harness.runner import RunOutcome
from harness.scenario import ScenarioError, TopologySpec, parse
from harness.timeline import read_timeline

ROOT = Path(__file__).resolve().parents[1]


def _load_chaos() -> Any:
    """scenarios/test_random_chaos.py, by path (scenarios/ is not a package on sys.path)."""
    spec = importlib.util.spec_from_file_location("random_chaos", ROOT / "scenarios" / "test_random_chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["random_chaos"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()

LINKS = TopologySpec(banks=3).link_names
SERVICES = ["switch", "BNKA", "BNKB", "BNKC"]


def loop(duration: float = 9, **attributes: int) -> FaultSpec:
    return FaultSpec(name="loop", kind="crash_loop", targets=["BNKB"], start=0, duration=duration,
                     attributes=attributes)  # fmt: skip


# -- the crash loop's plan and validation ---------------------------------------------------------


def test_a_crash_loop_plans_one_seeded_kill_per_slot_with_room_to_restart() -> None:
    f = loop(duration=15, kills=3, down_ms=1000, seed=7)
    plan = f.crash_loop_plan("BNKB")
    assert plan == f.crash_loop_plan("BNKB"), "same fault, same moments"
    assert plan != loop(duration=15, kills=3, down_ms=1000, seed=8).crash_loop_plan("BNKB")
    assert plan != f.crash_loop_plan("switch"), "each target its own moments"
    assert len(plan) == 3
    for i, at in enumerate(plan):  # slot i is [5i, 5i + 5): the kill leaves 1 s dead + 2 s restart in it
        assert 5 * i <= at <= 5 * i + 5 - 3


def test_a_crash_loop_held_until_healed_by_hand_still_kills() -> None:
    plan = loop(duration=math.inf, kills=3, down_ms=1000).crash_loop_plan("BNKB")
    assert len(plan) == 3 and all(math.isfinite(at) for at in plan)
    assert all(b - a >= 3 for a, b in itertools.pairwise(plan)), "room to restart between kills"


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"duration": 5, "attributes": {"kills": 3}}, r"needs a window of at least 9 s; duration is 5 s"),
        ({"duration": 30, "attributes": {"kills": 0}}, r"attributes.kills: 0; a crash loop kills 1 to 20 times"),
        ({"duration": 30, "attributes": {"latency": 5}}, r"attributes \['latency'\] do not apply to a crash_loop"),
    ],
)
def test_a_crash_loop_that_cannot_fit_is_refused_naming_the_fix(fault: dict[str, Any], message: str) -> None:
    data = {"name": "t", "load": {"duration": 40},
            "faults": [{"kind": "crash_loop", "targets": "switch", "start": 1, **fault}]}  # fmt: skip
    with pytest.raises(ScenarioError, match=r"faults\[0\].*" + message):
        parse(data, "x.yaml")


# -- the crash loop in the nemesis ----------------------------------------------------------------


class Services:
    """Each service's state and every call, with the moment it was made."""

    service_names = SERVICES

    def __init__(self) -> None:
        self.states = dict.fromkeys(SERVICES, "running")
        self.calls: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()

    def _do(self, op: str, name: str, state: str) -> None:
        with self.lock:
            self.calls.append((op, name, time.time()))
            self.states[name] = state

    def kill(self, name: str) -> None:
        self._do("kill", name, "crashed")

    def restart(self, name: str) -> None:
        self._do("restart", name, "running")

    def signal(self, name: str, sig: signal.Signals) -> None:
        self._do(sig.name, name, "paused")

    def stop_service(self, name: str) -> None:
        self._do("stop", name, "stopped")

    def start_service(self, name: str) -> None:
        self._do("start", name, "running")

    def ops(self) -> list[str]:
        with self.lock:
            return [op for op, _, _ in self.calls]


class Proxy:
    def add_toxic(self, *_: Any) -> None: ...
    def remove_toxic(self, *_: Any) -> None: ...
    def set_enabled(self, *_: Any) -> None: ...
    def reset(self) -> None: ...


def wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    by = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < by, "the crash loop did not get there in time"
        time.sleep(0.01)


def test_a_crash_loop_kills_at_its_moments_restarts_each_time_and_records_it(tmp_path: Path) -> None:
    services = Services()
    nemesis = Nemesis(Proxy(), {}, services, tmp_path / "faults.jsonl")
    f = loop(duration=4.4, kills=2, down_ms=100, seed=3)  # slots of 2.2 s, kills within the first 0.1 s of each
    nemesis.apply(f)
    applied = time.time()
    wait_for(lambda: services.ops().count("restart") == 2)
    nemesis.heal("loop")
    assert services.ops() == ["kill", "restart", "kill", "restart"]
    assert services.states["BNKB"] == "running"
    kills = [at for op, _, at in services.calls if op == "kill"]
    for at, planned in zip(kills, f.crash_loop_plan("BNKB"), strict=True):
        assert at >= applied - 0.05 + planned, "a kill before its planned moment"
    heal = [e for e in read_timeline(tmp_path / "faults.jsonl") if e["event"] == "heal"]
    assert len(heal) == 1 and list(heal[0]["kills"]) == ["BNKB"]
    recorded = heal[0]["kills"]["BNKB"]
    assert [k for k, _ in recorded] == pytest.approx(kills, abs=0.05)
    assert all(restarted >= killed + 0.1 for killed, restarted in recorded), "restarted before down_ms"


def test_a_crash_loop_healed_while_its_service_is_dead_restarts_it(tmp_path: Path) -> None:
    services = Services()
    nemesis = Nemesis(Proxy(), {}, services, tmp_path / "faults.jsonl")
    nemesis.apply(loop(duration=62, kills=1, down_ms=60_000, seed=1))  # killed at once, dead for a minute
    wait_for(lambda: "kill" in services.ops())
    nemesis.heal("loop")  # long before the minute is up
    assert services.ops() == ["kill", "restart"] and services.states["BNKB"] == "running"
    assert nemesis.active == {}


# -- the random-chaos search ----------------------------------------------------------------------


def outcome(run_dir: Path, checks: dict[str, list[str]], anomalies: int = 0) -> RunOutcome:
    verdict = "fail" if any(checks.values()) else "pass"
    result = {
        "verdict": verdict,
        "failures": [f for fs in checks.values() for f in fs],
        "checks": {k: {"verdict": "invalid" if v else "valid", "failures": v} for k, v in checks.items()},
        "consistency": {"reconciliation": {"anomaly_count": anomalies, "books": []}},
    }
    return RunOutcome(run_dir, result)


def test_any_failed_check_fails_the_robust_judgement_books_and_recovery_included(tmp_path: Path) -> None:
    clean = {"availability": [], "consistency": [], "customer_view": []}
    assert chaos.failed_checks(outcome(tmp_path, clean)) == []
    books = {**clean, "consistency": ["consistency: 0 anomalies {}, books failing: reservations (BNKA 500)"]}
    assert chaos.failed_checks(outcome(tmp_path, books)) == [f"consistency: {books['consistency'][0]}"]
    never = {**clean, "availability": ["availability did not recover after the last heal"]}
    assert chaos.failed_checks(outcome(tmp_path, never))


def test_a_schedule_failing_in_some_replays_fails_and_shrinks_to_a_replay_file_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs fail some of the time, as real ones may: a schedule with a pause fails on every second run
    of it (deterministic, so the test does not hang on which draws the strategy makes)."""
    seen: dict[str, int] = {}

    def fake_run(scenario: Any, out: Path, progress: Any = None) -> RunOutcome:
        key = repr([(f.kind, f.targets, f.start) for f in scenario.faults])
        seen[key] = seen.get(key, 0) + 1
        bad = any(f.kind == "pause" for f in scenario.faults) and seen[key] % 2 == 0
        run_dir = out / f"run-{sum(seen.values())}"
        run_dir.mkdir(parents=True)
        return outcome(run_dir, {"consistency": ["books failing: windows"] if bad else []})

    monkeypatch.setattr(chaos, "run", fake_run)
    search = chaos.Search("robust", tmp_path, chaos.failed_checks, replays=3, run_budget=200, shrink_budget=200)
    minimal = search.minimal_failure(40)  # raises Flaky if the same schedule were answered two ways
    assert minimal is not None and any(f.kind == "pause" for f in minimal)
    # Shrunk: no failing schedule seen is shorter (how far Hypothesis gets depends on its draws).
    first_failure = next(t.schedule for t in search.trials.values() if t.failed)
    assert len(minimal) == min(len(t.schedule) for t in search.trials.values() if t.failed) < len(first_failure)
    replay, report, again = chaos.write_replay(minimal, search, "minimal")
    assert search.trials[replay.read_text()].failed, "the replay file holds a schedule that really failed"
    assert "failed again in" in report and (tmp_path / "minimal.txt").exists()
    # Only pause schedules fail: each replay of the file is a fresh draw, so it failed again or
    # every candidate (at most 3) was replayed in turn.
    assert again or report.count("failed again in 0 of") == min(chaos.CANDIDATES, search.failures())
    # A schedule is replayed until one run fails, never more than `replays` times.
    assert all(1 <= len(t.runs) <= 3 for t in search.trials.values())
    assert all(t.runs[-1][1] for t in search.trials.values() if len(t.runs) < 3)


def test_a_search_spends_at_most_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(scenario: Any, out: Path, progress: Any = None) -> RunOutcome:
        return outcome(out, {"availability": []})

    monkeypatch.setattr(chaos, "run", fake_run)
    search = chaos.Search("robust", tmp_path, chaos.failed_checks, replays=2, run_budget=5, shrink_budget=5)
    assert search.minimal_failure(50) is None
    assert search.runs <= 5 + 1 and search.failures() == 0  # the last schedule's replays may end past it


@pytest.mark.parametrize("raises", [1, 2])
def test_a_run_that_raises_is_run_again_once_then_its_error_is_the_answer_every_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raises: int
) -> None:
    """The harness failing (e.g. a testbed that could not start) is no verdict on the schedule: the
    run is made again once; a second error stops the search with that error, never a "flaky" one,
    however many times Hypothesis asks about the schedule."""
    calls = []

    def fake_run(scenario: Any, out: Path, progress: Any = None) -> RunOutcome:
        calls.append(scenario)
        if len(calls) <= raises:
            raise RuntimeError("toxiproxy-server not found")
        return outcome(out, {"availability": []})

    monkeypatch.setattr(chaos, "run", fake_run)
    search = chaos.Search("robust", tmp_path, chaos.failed_checks, replays=2, run_budget=20, shrink_budget=20)
    first_trial = lambda: next(iter(search.trials.values()))  # noqa: E731
    if raises == 1:
        assert search.minimal_failure(3) is None
        assert first_trial().error is None and len(first_trial().runs) == 2
    else:
        with pytest.raises(RuntimeError, match="toxiproxy-server not found"):
            search.minimal_failure(5)
        assert first_trial().error is not None and not first_trial().runs


def test_a_minimal_schedule_that_does_not_fail_again_gives_way_to_the_next_smallest_that_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run(scenario: Any, out: Path, progress: Any = None) -> RunOutcome:
        bad = scenario.faults[0].kind == "crash"  # the latency schedule failed once, by chance
        return outcome(out, {"consistency": ["books failing: windows"] if bad else []})

    monkeypatch.setattr(chaos, "run", fake_run)
    search = chaos.Search("naive", tmp_path, chaos.failed_checks, replays=1, run_budget=9, shrink_budget=9)
    rare = [FaultSpec(name="f1-latency", kind="latency", targets=["BNKA->switch"], start=2, duration=2)]
    solid = [FaultSpec(name="f1-crash", kind="crash", targets=["switch"], start=2, duration=2)]
    for schedule in (rare, solid):
        search.trials[chaos.dump(chaos.scenario_for(schedule, "naive"))] = chaos.Trial(
            schedule, [(tmp_path, ["consistency: books failing"])]
        )
    replay, report, again = chaos.write_replay(rare, search, "minimal")
    assert again == chaos.CONFIRM and "kind: crash" in replay.read_text()
    assert "minimal failing schedule" in report and "next smallest failing schedule" in report
