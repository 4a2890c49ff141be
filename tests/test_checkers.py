"""Checkers are composed as in Jepsen: a check that crashes is "unknown" and costs no other check its
verdict, and "unknown" never passes. One Result model writes and reads result.json. Time to
consistency says "no anomaly opened" rather than a time nothing converged in, and how precisely the
sampler's real ticks place it. The bulkhead places payments by completion, like every other figure.

Run-directory tests use the saved real run tests/fixtures/naive-run.tar.gz (see test_report.py)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from harness import cli
from harness.checkers import checks
from harness.checkers.checks import RunInputs, bulkhead_ratio
from harness.checkers.compose import check_safe, compose, merge
from harness.checkers.consistency import Convergence, time_to_consistency
from harness.checkers.reconcile import Reconciliation
from harness.checkers.run import check_run
from harness.errors import RunDirError
from harness.report import page as report
from harness.result import SCHEMA, CheckVerdict, read_result, write_result
from harness.runner import check

FIXTURE = Path(__file__).parent / "fixtures" / "naive-run.tar.gz"

# What the checker said of the fixture before it was split into composed checks (its result.json then),
# with its amount in the one money format (harness.fmt.fmt_money) since.
FIXTURE_FAILURES = [
    "consistency: 12 anomalies {'credit_without_debit': 12}, books failing: conservation"
    " (customer money + held in flight - opening = +NGN 1,022.40 (must be 0))",
    "time to consistency never reached (objective 20.0 s)",
]


def valid(_: object) -> CheckVerdict:
    return CheckVerdict.judged([], figure=1)


def invalid(_: object) -> CheckVerdict:
    return CheckVerdict.judged(["target 0.99, measured 0.5"])


def crashing(_: object) -> CheckVerdict:
    raise ZeroDivisionError("division by zero")


# -- compose and check_safe -----------------------------------------------------------------------


def test_a_crashing_checker_is_unknown_with_its_error_and_the_others_still_run() -> None:
    ran: list[str] = []

    def after(inputs: object) -> CheckVerdict:
        ran.append("after")
        return valid(inputs)

    composed = compose({"first": valid, "boom": crashing, "after": after})(object())
    assert composed.verdict == "unknown"
    boom = composed.checks["boom"]
    assert (boom.verdict, boom.error) == ("unknown", "ZeroDivisionError: division by zero")
    assert ran == ["after"]
    assert composed.checks["first"].verdict == composed.checks["after"].verdict == "valid"
    assert composed.checks["after"].figures == {"figure": 1}
    # The crash is a failure line too, so every reader that lists failures shows it.
    assert composed.failures == ["boom check could not run: ZeroDivisionError: division by zero"]


@pytest.mark.parametrize("order", [("boom", "bad"), ("bad", "boom")])
def test_invalid_beats_unknown_whatever_the_order(order: tuple[str, str]) -> None:
    checkers = {"boom": crashing, "bad": invalid}
    composed = compose({name: checkers[name] for name in order})(object())
    assert composed.verdict == "invalid"
    assert list(composed.checks) == list(order)


def test_merge_is_valid_only_when_every_check_is() -> None:
    assert merge(["valid", "valid"]) == "valid"
    assert merge(["valid", "unknown"]) == "unknown"
    assert merge(["unknown", "invalid", "valid"]) == "invalid"


def test_check_safe_passes_a_verdict_through_and_does_not_swallow_an_interrupt() -> None:
    assert check_safe("bad", invalid)(object()) == invalid(object())

    def interrupted(_: object) -> CheckVerdict:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C stops the check; it is not a verdict
        check_safe("ctrl-c", interrupted)(object())


# -- check_run on a saved run directory -----------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("fixture")
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(runs, filter="data")
    return runs / "naive-run"


@pytest.fixture
def run_dir(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "naive-run"
    shutil.copytree(pristine, copy)
    return copy


def expect(run_dir: Path, section: str, **values: object) -> None:
    """Change the scenario's expectations in a run directory, as if it had been run with them."""
    scenario = yaml.safe_load((run_dir / "scenario.yaml").read_text())
    scenario["expect"][section].update(values)
    (run_dir / "scenario.yaml").write_text(yaml.safe_dump(scenario))


def test_check_run_on_the_fixture_gives_the_verdict_and_failures_it_always_gave(run_dir: Path) -> None:
    result = check_run(run_dir)
    assert result.verdict == "fail"
    assert result.failures == FIXTURE_FAILURES
    assert {name: v.verdict for name, v in result.checks.items()} == {
        "availability": "valid",
        "bulkhead": "valid",
        "consistency": "invalid",
        "time_to_consistency": "invalid",
        "customer_view": "valid",
        "evidence": "valid",  # it flags, never fails
        "ledger_replay": "valid",  # naive components break payments, not the switch's books
        "stress": "valid",  # it declares no stress
    }
    assert result.checks["time_to_consistency"].failures == FIXTURE_FAILURES[1:]
    assert result.consistency.reconciliation is not None
    assert result.consistency.reconciliation["anomalies"]["credit_without_debit"] == 12
    assert result.reproduce == "python tests/fixtures/make_naive_run.py"
    assert not (run_dir / "result.json").exists(), "check_run decides; writing is write_result's job"


def test_expecting_anomalies_turns_the_same_run_into_a_pass(run_dir: Path) -> None:
    expect(run_dir, "consistency", verdict="anomalies_detected")
    result = check_run(run_dir)
    assert (result.verdict, result.failures) == ("pass", [])
    assert result.scenario.expects_anomalies
    assert all(v.verdict == "valid" for v in result.checks.values())


def test_an_acknowledged_payment_that_did_not_settle_is_the_customer_view_failure(run_dir: Path) -> None:
    first = check_run(run_dir)
    assert first.consistency.reconciliation is not None
    pid = first.consistency.reconciliation["examples"]["credit_without_debit"][0]["payment_id"]
    last = json.loads((run_dir / "history.jsonl").read_text().splitlines()[-1])
    told_ok = {**last, "id": pid, "outcome": "ok", "status": "ACSC", "reason": None, "error": None,
               "invoke": last["complete"], "complete": last["complete"] + 0.01, "latency_ms": 10.0}  # fmt: skip
    with (run_dir / "history.jsonl").open("a") as f:
        f.write(json.dumps(told_ok) + "\n")
    view = check_run(run_dir).checks["customer_view"]
    assert view.verdict == "invalid"
    assert view.failures == [f"1 acknowledged payments lost, e.g. {[pid]}"]


def test_a_killed_run_without_ledgers_names_the_file_and_the_fix(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (run_dir / "ledgers.json").unlink()
    with pytest.raises(RunDirError, match=r"ledgers\.json missing") as err:
        check_run(run_dir)
    assert "harness run" in str(err.value)  # the fix
    assert cli.main(["check", str(run_dir)]) == 2
    assert "ledgers.json" in capsys.readouterr().err
    assert not (run_dir / "result.json").exists()


def test_a_half_written_ledgers_file_is_a_run_dir_error(run_dir: Path) -> None:
    text = (run_dir / "ledgers.json").read_text()
    (run_dir / "ledgers.json").write_text(text[: len(text) // 2])
    with pytest.raises(RunDirError, match=r"ledgers\.json: not valid JSON"):
        check_run(run_dir)


# -- a crashing check through the runner: visible everywhere, never a pass ------------------------


def test_a_crashing_check_makes_the_run_unknown_and_not_ok(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expect(run_dir, "consistency", verdict="anomalies_detected")  # every other check is valid

    def broken_bulkhead(run: RunInputs) -> CheckVerdict:
        return CheckVerdict.judged([], bulkhead_success_ratio=1 / len([]))

    monkeypatch.setitem(checks.CHECKS, "bulkhead", broken_bulkhead)
    outcome = check(run_dir, progress=print)
    assert not outcome.ok
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["verdict"] == "unknown"
    assert saved["checks"]["bulkhead"] == {
        "verdict": "unknown",
        "failures": ["bulkhead check could not run: ZeroDivisionError: division by zero"],
        "error": "ZeroDivisionError: division by zero",
    }
    assert saved["checks"]["availability"] == {"verdict": "valid", "failures": []}
    assert saved["availability"]["overall"]["operations"] > 0  # the other checks' figures are all there
    assert saved["consistency"]["reconciliation"]["anomaly_count"] == 12
    assert "UNKNOWN       bulkhead check could not run" in capsys.readouterr().out
    banner = (run_dir / "report.html").read_text().split('id="verdict"')[1].split("</section>")[0]
    assert "Unknown: a check could not run" in banner and "ZeroDivisionError" in banner
    assert read_result(run_dir).verdict == "unknown"
    assert cli.main(["check", str(run_dir)]) == 1  # the CLI (and so CI) does not pass it


def test_when_availability_crashes_the_result_is_still_written_and_the_suite_page_shows_it(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(checks.CHECKS, "availability", crashing)
    outcome = check(run_dir, progress=print)  # neither the report nor the console may cost the result
    assert not outcome.ok
    saved = read_result(run_dir)
    assert saved.verdict == "fail"  # the consistency failures still stand: invalid beats unknown
    assert saved.availability is None
    crashed = "availability check could not run: ZeroDivisionError: division by zero"
    assert saved.failures == [crashed, *FIXTURE_FAILURES]
    # The page is written too, saying what is not known (tests/test_report_verdict.py).
    assert "report.html could not be written" not in capsys.readouterr().err
    assert "Availability was not measured" in (run_dir / "report.html").read_text()
    rows = report.index_model(run_dir.parent, run_dir.parent)["rows"]
    assert [(r["scenario"], r["latest"]["verdict"], r["latest"]["availability"]) for r in rows] == [
        ("fixture-naive-slow-payee", "fail", None)
    ]


# -- time to consistency from the sampler's ticks ------------------------------------------------

HEAL = 1_795_440_000.0


def tick(after_heal: float, open_anomalies: int) -> dict[str, object]:
    return {"at": HEAL + after_heal, "open_anomalies": open_anomalies, "by_class": {}}


def test_samples_that_never_saw_an_anomaly_say_no_anomaly_opened() -> None:
    samples = [tick(-3.1, 0), tick(-1.0, 0), tick(1.6, 0), tick(3.7, 0)]
    # Not 1.6 s (the first tick after the heal): nothing was open, so nothing converged.
    assert time_to_consistency(samples, HEAL, 0, HEAL + 5) == Convergence(0.0, False, None)
    assert time_to_consistency(samples, None, 0) == Convergence(0.0, False, None)  # no fault either
    assert time_to_consistency([], HEAL, 0) == Convergence(0.0, None, None)  # nothing watched: not known


def test_irregular_ticks_give_the_gap_around_the_convergence_as_its_resolution() -> None:
    samples = [tick(-1.2, 0), tick(0.9, 4), tick(1.3, 2), tick(4.7, 0), tick(5.2, 0), tick(11.0, 0)]
    conv = time_to_consistency(list(reversed(samples)), HEAL, 0, HEAL + 12)  # the order of lines does not matter
    assert conv.anomaly_opened is True
    assert conv.seconds == pytest.approx(4.7)
    assert conv.resolution_s == pytest.approx(3.4)  # zero somewhere between the ticks at 1.3 and 4.7 s


def test_an_anomaly_open_at_the_last_tick_before_the_heal_counts() -> None:
    # No tick after the heal saw it, but it was open when the fault healed, as far as anyone knows.
    assert time_to_consistency([tick(-0.5, 3), tick(1.5, 0)], HEAL, 0) == Convergence(1.5, True, 2.0)
    # Closed before the heal: nothing was open from the heal on.
    assert time_to_consistency([tick(-4, 3), tick(-2, 0), tick(1, 0)], HEAL, 0) == Convergence(0.0, False, None)


def test_the_final_reconciliation_has_the_last_word() -> None:
    assert time_to_consistency([tick(1, 0)], HEAL, 2) == Convergence(None, True, None)
    # The last sample still saw an anomaly; the ledgers, snapshot at +9 s, were clean.
    assert time_to_consistency([tick(1, 2), tick(3, 1)], HEAL, 0, HEAL + 9) == Convergence(9.0, True, 6.0)


def test_a_run_whose_samples_never_saw_an_anomaly_says_no_anomaly_opened_everywhere(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fixture's ledgers hold anomalies: a clean final reconciliation stands in for clean ledgers.
    monkeypatch.setattr(RunInputs, "reconciliation", property(lambda self: Reconciliation()))
    lines = (run_dir / "consistency.jsonl").read_text().splitlines()
    quiet = [{**json.loads(line), "open_anomalies": 0, "by_class": {}} for line in lines]
    (run_dir / "consistency.jsonl").write_text("".join(json.dumps(q) + "\n" for q in quiet))
    outcome = check(run_dir, progress=print)
    c = outcome.result["consistency"]
    assert c["time_to_consistency_s"] == 0.0 and c["anomaly_opened"] is False
    assert c["time_to_consistency_resolution_s"] is None
    assert outcome.result["checks"]["time_to_consistency"] == {"verdict": "valid", "failures": []}  # objective 20 s
    assert "time to consistency no anomaly opened" in capsys.readouterr().out
    page = (run_dir / "report.html").read_text()
    banner = page.split('id="verdict"')[1].split("</section>")[0]
    assert '>no anomaly opened</div><div class="k">time to consistency<' in banner
    scorecard = page.split('id="scorecard"')[1].split("</table>")[0]
    assert "no anomaly opened" in scorecard
    assert read_result(run_dir).consistency.anomaly_opened is False


# -- the bulkhead ---------------------------------------------------------------------------------

T0 = 1_795_440_000.0


def test_the_bulkhead_places_a_payment_by_when_it_completed() -> None:
    faults = [
        {"event": "apply", "fault": "c", "kind": "down", "targets": ["switch->BNKC"], "at": T0 + 10},
        {"event": "heal", "fault": "c", "kind": "down", "targets": ["switch->BNKC"], "at": T0 + 20},
    ]

    def pay(pid: str, invoke: float, complete: float, outcome: str) -> dict[str, object]:
        return {"op": "payment", "id": pid, "payer": "BNKA", "payee": "BNKB", "amount": 100,
                "invoke": T0 + invoke, "complete": T0 + complete, "outcome": outcome,
                "status": "ACSC" if outcome == "ok" else None, "reason": None, "http": None,
                "error": None if outcome == "ok" else "timeout"}  # fmt: skip

    history = [
        pay("sent-before-answered-inside", 9.0, 10.9, "unknown"),  # the fault's to spoil: in the window
        pay("inside", 12.0, 12.1, "ok"),
        pay("sent-inside-answered-after", 19.5, 20.4, "ok"),  # answered once the fault was gone: not in it
        pay("touched-bank", 12.0, 12.1, "unknown") | {"payee": "BNKC"},  # a bank the fault touched
    ]
    assert bulkhead_ratio(history, faults, 2000.0) == 0.5


# -- result.json: written and read in one place ---------------------------------------------------


def test_write_then_read_gives_the_same_result_and_checks_carry_no_figures(run_dir: Path) -> None:
    result = check_run(run_dir)
    path = write_result(run_dir, result)
    raw = json.loads(path.read_text())
    assert list(raw)[:5] == ["schema", "scenario", "verdict", "failures", "checks"]
    assert raw["schema"] == SCHEMA
    assert raw["checks"]["consistency"] == {"verdict": "invalid", "failures": FIXTURE_FAILURES[:1]}
    assert read_result(path).as_json() == raw == result.as_json()


def test_a_result_written_before_per_check_verdicts_still_reads(run_dir: Path) -> None:
    old = check_run(run_dir).as_json()
    del old["checks"]
    (run_dir / "result.json").write_text(json.dumps(old))
    result = read_result(run_dir / "result.json")
    assert (result.verdict, result.failures, result.checks) == ("fail", FIXTURE_FAILURES, {})


def test_read_result_refuses_an_unknown_schema_saying_which_it_reads(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps({"schema": "payswitch-chaos/result/v2", "verdict": "pass"}))
    with pytest.raises(RunDirError) as err:
        read_result(tmp_path)
    message = str(err.value)
    assert "'payswitch-chaos/result/v2'" in message and f"reads {SCHEMA!r} only" in message
    assert f"harness check {tmp_path}" in message


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "no result yet"), ('{"schema": "payswitch-chaos/res', "not valid JSON"), ("[]", "expected a JSON object")],
)
def test_read_result_explains_a_missing_or_broken_file(tmp_path: Path, content: str | None, says: str) -> None:
    if content is not None:
        (tmp_path / "result.json").write_text(content)
    with pytest.raises(RunDirError, match=says):
        read_result(tmp_path / "result.json")
