"""The participant contract: its committed OpenAPI files are what the code generates, the bundled
mock offers every path of it, and its target file format refuses bad files naming field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import contract
from harness import target as targets
from mock_switch.config import SystemConfig, account_number
from mock_switch.openapi import BANK_OPS, SWITCH_OPS

ROOT = Path(__file__).resolve().parent.parent


def test_committed_openapi_files_are_what_the_code_generates() -> None:
    stale = contract.stale_files()
    assert not stale, (
        f"docs/contract/{', '.join(stale)} differ from what harness/contract.py generates;"
        f" regenerate with `{contract.REGENERATE}` and commit the result"
    )


def test_a_changed_or_missing_file_is_found_stale(tmp_path: Path) -> None:
    for name, text in contract.openapi_files().items():
        (tmp_path / name).write_text(text)
    assert contract.stale_files(tmp_path) == []
    (tmp_path / "bank.openapi.json").write_text(contract.openapi_files()["bank.openapi.json"].replace("ACSC", "OK"))
    (tmp_path / "switch.openapi.json").unlink()
    assert sorted(contract.stale_files(tmp_path)) == ["bank.openapi.json", "switch.openapi.json"]


def test_the_mock_offers_every_operation_of_the_contract() -> None:
    """The bundled mock is the reference implementation: every contract path is one of its routes."""
    offered = {"bank": {(o.method, o.path) for o in BANK_OPS}, "switch": {(o.method, o.path) for o in SWITCH_OPS}}
    for cap in contract.CAPABILITIES:
        for op in cap.all_ops():
            assert (op.method, op.path) in offered[cap.side], f"{cap.name}: the mock has no {op.method} {op.path}"


def test_required_and_optional_are_marked_in_the_documents() -> None:
    bank = contract.side_document("bank")
    assert bank["paths"]["/payments"]["post"]["x-required"] is True
    assert bank["paths"]["/entries"]["get"]["x-required"] is False
    assert bank["paths"]["/entries"]["get"]["summary"].startswith("(optional)")
    switch = contract.side_document("switch")
    assert switch["paths"]["/transfers"]["get"]["x-required"] is True
    windows = switch["paths"]["/settlement/windows"]["get"]
    assert windows["x-required"] is False and windows["x-capability"] == "settlement"
    rows = windows["responses"]["200"]["content"]["application/json"]["schema"]
    assert rows == {"type": "array", "items": {"$ref": "#/components/schemas/WindowRow"}}
    assert "WindowRow" in switch["components"]["schemas"]


# -- target files -----------------------------------------------------------------------------------

GOOD = """\
name: t
currency: NGN
switch: {url: "http://127.0.0.1:9000"}
participants:
  - {code: ACME, url: "http://127.0.0.1:9001", account: "0100000001"}
  - {code: BETA, url: "http://127.0.0.1:9002/", account: "0200000001"}
"""


def test_a_good_target_loads(tmp_path: Path) -> None:
    f = tmp_path / "t.yaml"
    f.write_text(GOOD)
    t = targets.load(f)
    assert [p.code for p in t.participants] == ["ACME", "BETA"]
    assert t.bank("BETA").url == "http://127.0.0.1:9002"  # trailing slash dropped
    assert t.conform.amount == 100 and t.conform.over_cap_amount is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("ACME", "acme"), "participants.0.code: String should match pattern"),
        (GOOD.replace("BETA", "ACME"), "bank codes must be unique, repeated: ['ACME']"),
        (GOOD.replace('"http://127.0.0.1:9001"', '"127.0.0.1:9001"'), "participants.0.url: Value error, must start"),
        (GOOD.replace('"0100000001"', "0100000001"), "participants.0.account: Input should be a valid string"),
        (GOOD.replace("currency: NGN\n", ""), "currency: Field required"),
        (GOOD + "contract: '9.9'\n", "contract: version '9.9' is not known"),
        (GOOD + "colour: blue\n", "colour: Extra inputs are not permitted"),
        (GOOD.split("  - {code: BETA")[0], "at least two banks are needed"),
        ("- just\n- a list\n", "a target file is a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_target_is_refused_naming_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(targets.TargetError) as err:
        targets.load(f)
    assert str(f) in str(err.value) and expected in str(err.value)
    if "valid string" in expected:
        assert "quote account numbers" in str(err.value)


def test_a_missing_target_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(targets.TargetError, match="no such target file"):
        targets.load(tmp_path / "nope.yaml")


def test_the_example_target_matches_the_example_mock_configuration() -> None:
    """targets/mock.yaml is what README tells a user to run conform with against targets/mock.json:
    its fixtures must be true of that configuration (the accounts exist, the blocked one is blocked,
    the unknown one is unknown, the over-cap amount is affordable and over the cap)."""
    t = targets.load(ROOT / "targets" / "mock.yaml")
    system = SystemConfig.load(ROOT / "targets" / "mock.json")
    assert [p.code for p in t.participants] == [b.code for b in system.banks]
    assert t.currency == system.currency
    assert t.switch.url == f"http://{system.switch.listen}"
    parties = {p.account: p for p in system.parties()}
    for i, (p, bank) in enumerate(zip(t.participants, system.banks, strict=True)):
        assert p.url == f"http://{bank.listen}"
        assert p.account in parties and not parties[p.account].blocked
        assert p.blocked_account is not None and parties[p.blocked_account].blocked
        assert p.unknown_account is not None and p.unknown_account not in parties
        assert p.unknown_account.startswith(account_number(i, 0)[:2])
        over = t.conform.over_cap_amount
        assert over is not None and bank.net_debit_cap < over <= bank.opening_balance
        # A conform run makes len(banks) payments and one replay per run: plenty of runs before AM04.
        assert t.conform.amount * 10 < bank.opening_balance


def test_contract_md_names_every_capability_endpoint_and_row() -> None:
    doc = (ROOT / "docs" / "contract.md").read_text()
    assert f"(version {contract.CONTRACT_VERSION})" in doc
    assert contract.REGENERATE in doc
    for cap in contract.CAPABILITIES:
        assert f"`{cap.name}`" in doc, cap.name
        for op in cap.all_ops():
            assert f"`{op.method} {op.path}`" in doc, f"{op.method} {op.path}"
        for read in cap.reads:
            assert f"`{read.row.__name__}`" in doc, read.row.__name__
            for name in read.row.model_fields:
                assert f"`{name}`" in doc, f"{read.row.__name__}.{name}"
    for reason in contract.REQUIRED_REASONS + tuple(contract.FAULT_ONLY_REASONS):
        assert reason.value in doc, reason
