"""pytest plugin: every YAML file in a `scenarios/` directory (and in `scenarios/docker/`) is a test.

Registered through the `pytest11` entry point, so `pytest scenarios/` just works. A scenario
passes when its expectations hold (SLOs and consistency invariants); a failure prints what was
expected, what was measured, the run directory and the command that reproduces it.

Tests marked `docker` (every `backend: docker` scenario, and the docker backend's own tests) skip,
with the reason, when no Docker engine answers; with HARNESS_REQUIRE_DOCKER=1 (CI) they fail instead.
Scenarios with a power_loss fault (marked `powerloss`) skip likewise when the power-loss layer cannot
be built here (no C compiler); with HARNESS_REQUIRE_POWERLOSS=1 (CI) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.faults import losing_power
from harness.procs import sigterm_unwinds
from harness.scenario import Scenario, ScenarioError, load


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "payment-switch chaos harness")
    group.addoption("--harness-out", default="reports/runs", help="where scenario runs write their run directories")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario: a chaos scenario run against the mock payment system")
    config.addinivalue_line("markers", "docker: needs a Docker engine (backend: docker)")
    config.addinivalue_line("markers", "powerloss: needs the power-loss layer (a C compiler, testbed/powerloss.py)")
    # A CI timeout sends SIGTERM: pytest then unwinds as on Ctrl-C, so a running scenario heals its
    # faults and stops its services in its finally blocks instead of dying with them applied.
    sigterm_unwinds()


# Set once any scenario ran in this session, so the suite page is rebuilt only when there is news.
_RAN = pytest.StashKey[Path]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = session.config.stash.get(_RAN, None)
    if out is None:
        return
    from harness.report.page import write_index

    session.config.stash[_RAN] = write_index(out.parent, out)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    index = config.stash.get(_RAN, None)
    if index is not None and index.name == "index.html":
        terminalreporter.write_line(f"suite page: {index} (each scenario's report.html is linked from it)")


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    folder = file_path.parent
    in_scenarios = folder.name == "scenarios" or (folder.name == "docker" and folder.parent.name == "scenarios")
    if file_path.suffix in (".yaml", ".yml") and in_scenarios:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("powerloss") is not None:
        _need_power_loss_layer()
    if item.get_closest_marker("docker") is None:
        return
    from harness.testbed.containers import engine_problem

    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("HARNESS_REQUIRE_DOCKER") == "1":
        pytest.fail(f"HARNESS_REQUIRE_DOCKER=1 and the docker backend cannot run: {problem}", pytrace=False)
    pytest.skip(f"backend docker: {problem} (set HARNESS_REQUIRE_DOCKER=1 to fail instead)")


def _need_power_loss_layer() -> None:
    from harness.testbed.powerloss import problem

    why = problem()
    if why is None:
        return
    if os.environ.get("HARNESS_REQUIRE_POWERLOSS") == "1":
        pytest.fail(f"HARNESS_REQUIRE_POWERLOSS=1 and {why}", pytrace=False)
    pytest.skip(f"power_loss fault: {why} (set HARNESS_REQUIRE_POWERLOSS=1 to fail instead)")


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            scenario = load(self.path)
        except ScenarioError as exc:
            raise self.CollectError(str(exc)) from None
        item = ScenarioItem.from_parent(self, name=scenario.name, scenario=scenario)
        item.add_marker(pytest.mark.scenario)
        if scenario.backend == "docker":
            item.add_marker(pytest.mark.docker)
        if losing_power(scenario.faults):
            item.add_marker(pytest.mark.powerloss)
        yield item


class ScenarioFailed(Exception):
    def __init__(self, report: str) -> None:
        super().__init__(report)
        self.report = report


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario

    def runtest(self) -> None:
        from harness.runner import run

        out = Path(self.config.getoption("--harness-out"))
        self.config.stash[_RAN] = out
        outcome = run(self.scenario, out, progress=None)
        self.user_properties.append(("run_dir", str(outcome.run_dir)))
        if not outcome.ok:
            raise ScenarioFailed(outcome.failure_report())

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return excinfo.value.report
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.scenario.name}"
