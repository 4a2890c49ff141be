"""Target files (`targets/*.yaml`): a system under test the harness did not start.

A target names the switch and each participant bank by code and address, and the test fixtures a
conformance run needs (an account to pay from and to, optionally a blocked one, an unknown one, an
amount over the net debit cap). Any bank codes, any number of banks (at least two: a payment goes
from one bank to another). Validated before anything is sent: a bad file gets a `TargetError`
naming the file, the field and the fix.

    contract: "1.0"              # the contract version the target claims (docs/contract.md)
    name: my-switch
    currency: NGN
    switch:
      url: http://127.0.0.1:9000
    participants:
      - code: ACME
        url: http://127.0.0.1:9001
        account: "0100000001"          # exists, not blocked, holds at least `amount` x 4
        blocked_account: "0100000049"  # optional: payments from it are refused AC06
        unknown_account: "0199999999"  # optional: no such account at this bank (AC01)
      - code: BETA
        url: http://127.0.0.1:9002
        account: "0200000001"
    conform:                     # optional
      amount: 100                # minor units, for the payments that should succeed
      over_cap_amount: 500000    # optional: affordable, but over the payer bank's net debit cap (AM23)
      timeout_s: 10
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError
from mock_switch.api import ACCOUNT, BANK, CURRENCY, PartyId

TARGET_VERSIONS = ("1.0",)


class TargetError(HarnessError, ValueError):
    """A target file is missing or malformed; the message names the file, the field and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://, e.g. http://127.0.0.1:9001")
    return value.rstrip("/")


class SwitchTarget(_Strict):
    url: str

    _check_url = field_validator("url")(_url)


class Participant(_Strict):
    code: str = BANK
    url: str
    account: str = ACCOUNT
    blocked_account: PartyId | None = None
    unknown_account: PartyId | None = None

    _check_url = field_validator("url")(_url)


class ConformSettings(_Strict):
    amount: int = Field(100, gt=0, le=10**12)
    over_cap_amount: int | None = Field(None, gt=0, le=10**12)
    timeout_s: float = Field(10.0, gt=0, le=120)


class Target(_Strict):
    contract: str = "1.0"
    name: str = Field(min_length=1)
    currency: str = CURRENCY
    switch: SwitchTarget
    participants: list[Participant]
    conform: ConformSettings = ConformSettings()

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.contract not in TARGET_VERSIONS:
            raise ValueError(f"contract: version {self.contract!r} is not known; this harness speaks {TARGET_VERSIONS}")
        codes = [p.code for p in self.participants]
        if len(codes) < 2:
            raise ValueError("participants: at least two banks are needed (a payment goes from one to another)")
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"participants: bank codes must be unique, repeated: {dupes}")
        return self

    def bank(self, code: str) -> Participant:
        for p in self.participants:
            if p.code == code:
                return p
        raise KeyError(code)


def load(path: Path) -> Target:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TargetError(f"{path}: no such target file", "give the path of a targets/*.yaml file") from None
    except yaml.YAMLError as exc:
        raise TargetError(f"{path}: not valid YAML: {exc}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise TargetError(f"{path}: a target file is a mapping", "see docs/contract.md for an example") from None
    try:
        return Target.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        fix = "see the target file format in docs/contract.md"
        if any(err["type"] == "string_type" for err in exc.errors()):
            fix = "quote account numbers and codes ('0100000001'): YAML reads 0100000001 as a number; " + fix
        raise TargetError(f"{path}: invalid target: {problems}", fix) from None
