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

For chaos scenarios against the target (a scenario's `target:`, harness/testbed/external.py), also:

    links:                       # every link, each a Toxiproxy listener the harness creates
      customers->ACME: {listen: "127.0.0.1:9201", upstream: "127.0.0.1:9001"}  # the load dials listen
      ACME->switch:    {listen: "127.0.0.1:9202", upstream: "127.0.0.1:9000"}  # configure ACME to dial listen
      switch->ACME:    {listen: "127.0.0.1:9203", upstream: "127.0.0.1:9001"}  # configure the switch to dial it
      ...
    processes:                   # optional: only these services can take process faults
      switch: {pid_file: /run/switch.pid, start_command: "systemctl start my-switch"}
    load:
      accounts: 100              # the load pays between accounts NN00000000 .. (NN: position in participants, from 01)
    capabilities: [bank_books, positions, settlement]  # optional ones offered (default: all of them)
    ledgers:                     # optional: where reconciliation reads the books (default: from: api)
      from: export               # api: the contract's read API; export: files your system writes
      dir: /var/export/ledgers   # the export files (docs/contract.md, "Ledger export files")
      command: "my-exporter --out /var/export/ledgers"  # optional: run (sh) before each read
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import HarnessError
from harness.links import link_names
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


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} must be HOST:PORT, e.g. 127.0.0.1:9201 (no http://)")
    return value


class LinkAddress(_Strict):
    """One link of the target: the harness's Toxiproxy listens on `listen` and forwards to `upstream`."""

    listen: str
    upstream: str

    _check = field_validator("listen", "upstream")(_host_port)


# Process faults and what each needs from `processes.<service>` (the others cannot be done to a
# system the harness did not start).
PROCESS_NEEDS: dict[str, tuple[str, ...]] = {
    "pause": ("pid_file",),
    "crash": ("pid_file", "start_command"),
    "stop": ("pid_file", "start_command"),
    "restart": ("pid_file", "start_command"),
}
NEVER_EXTERNAL = {
    "power_loss": "power_loss needs the local backend's layer under a service the harness started",
}


class ProcessControl(_Strict):
    """How the harness can act on a service's process: signals go to the pid in `pid_file` (read at
    each fault); `start_command` (run with sh) starts it again after a crash, stop or restart."""

    pid_file: str | None = None
    start_command: str | None = None


class LoadSettings(_Strict):
    accounts: int = Field(100, ge=1, le=10**8)


OPTIONAL_CAPABILITIES = ("bank_books", "positions", "settlement")


class LedgerSettings(_Strict):
    """Where the checkers read the target's books: its read API, or export files its system writes
    (harness/ledger_export.py); `command` (sh) is run before each read, at the opening and the end."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: Literal["api", "export"] = Field("api", alias="from")
    dir: str | None = None
    command: str | None = None

    @model_validator(mode="after")
    def _check(self) -> LedgerSettings:
        if self.source == "export" and not self.dir:
            raise ValueError("ledgers.dir: `from: export` needs the directory your system writes the export files to")
        if self.source == "api" and (self.dir or self.command):
            raise ValueError("ledgers: dir and command are for `from: export`; add it, or drop them")
        return self


class Target(_Strict):
    contract: str = "1.0"
    name: str = Field(min_length=1)
    currency: str = CURRENCY
    switch: SwitchTarget
    participants: list[Participant]
    conform: ConformSettings = ConformSettings()
    links: dict[str, LinkAddress] = Field(default_factory=dict)
    processes: dict[str, ProcessControl] = Field(default_factory=dict)
    load: LoadSettings = LoadSettings()
    capabilities: list[str] | None = None  # the optional capabilities offered; None: all of them
    ledgers: LedgerSettings = LedgerSettings()

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
        known = link_names(codes)
        unknown = [name for name in self.links if name not in known]
        if unknown:
            raise ValueError(f"links: {unknown} are not links of these banks; links are {known}")
        services = ["switch", *codes]
        strangers = [name for name in self.processes if name not in services]
        if strangers:
            raise ValueError(f"processes: {strangers} are not services; services are {services}")
        if self.capabilities is not None:
            wrong = [c for c in self.capabilities if c not in OPTIONAL_CAPABILITIES]
            if wrong:
                raise ValueError(
                    f"capabilities: {wrong} are not optional capabilities; they are {OPTIONAL_CAPABILITIES}"
                )
        return self

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.participants]

    @property
    def services(self) -> list[str]:
        return ["switch", *self.codes]

    def offers(self, capability: str) -> bool:
        """Whether the target offers an optional capability (the required ones it must)."""
        return capability not in OPTIONAL_CAPABILITIES or self.capabilities is None or capability in self.capabilities

    def missing_links(self) -> list[str]:
        """The links a chaos run needs that `links:` does not give (every one is needed: all traffic
        goes through Toxiproxy)."""
        return [name for name in link_names(self.codes) if name not in self.links]

    def process_fault_problem(self, kind: str, service: str) -> str | None:
        """Why a process fault of `kind` cannot be done to `service` of this target, or None."""
        if kind in NEVER_EXTERNAL:
            return NEVER_EXTERNAL[kind]
        needs = PROCESS_NEEDS.get(kind)
        if needs is None:  # disconnect: every link of the service down, through Toxiproxy
            return None
        control = self.processes.get(service)
        lacking = [n for n in needs if control is None or getattr(control, n) is None]
        if lacking:
            return (
                f"a {kind} fault needs {' and '.join(f'processes.{service}.{n}' for n in lacking)} in the"
                " target file (the harness did not start it, so it cannot signal or start it otherwise)"
            )
        return None

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
