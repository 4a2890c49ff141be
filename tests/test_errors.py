"""Known failures are HarnessErrors, and the command line prints one as a line (exit 2), not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessError, LoadError, ScenarioError, TestbedError
from harness.load import control
from harness.scenario import ScenarioError as ScenarioErrorOfScenario
from harness.testbed.containers import DockerUnavailable
from harness.testbed.images import ImageError
from harness.testbed.local import TopologyError
from harness.testbed.proxies import ToxiproxyError


def test_missing_scenario_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main(["run", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert f"{missing}: no such scenario file" in line


def test_missing_run_directory_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-run"
    assert cli.main(["check", str(missing)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith("harness check: ") and str(missing) in line


def test_any_command_failing_with_a_harness_error_prints_message_and_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def doctor(args: object) -> int:
        raise TopologyError("switch exited with code 1 during start-up", fix="see logs/switch.log")

    monkeypatch.setattr(cli, "doctor", doctor)
    assert cli.main(["doctor"]) == 2
    assert capsys.readouterr().err == "harness doctor: switch exited with code 1 during start-up; see logs/switch.log\n"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("a bug keeps its traceback")])
def test_ctrl_c_and_bugs_are_not_turned_into_a_message(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def doctor(args: object) -> int:
        raise exc

    monkeypatch.setattr(cli, "doctor", doctor)
    with pytest.raises(type(exc)):
        cli.main(["doctor"])


@pytest.mark.parametrize("error", [TopologyError, ToxiproxyError, DockerUnavailable, ImageError])
def test_testbed_failures_are_testbed_errors(error: type[Exception]) -> None:
    assert issubclass(error, TestbedError)


def test_load_and_scenario_failures_are_the_harness_errors() -> None:
    # One class each, wherever it is imported from, so `except` clauses and the CLI agree.
    assert control.LoadError is LoadError and issubclass(LoadError, HarnessError)
    assert ScenarioErrorOfScenario is ScenarioError and issubclass(ScenarioError, HarnessError)
