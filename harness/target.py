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
    compose:                     # optional, or as well: services that are containers of a compose project
      project: my-switch         # its name (the com.docker.compose.project label of its containers)
      file: docker-compose.yaml  # optional: its compose file (relative: to this file), to check the names now
      services: {ACME: acme, BETA: beta}  # harness service -> compose service: these take container faults
    load:
      accounts: 100              # the load pays between accounts NN00000000 .. (NN: position in participants, from 01)
    capabilities: [bank_books, positions, settlement]  # optional ones offered (default: all of them)
    ledgers:                     # optional: where reconciliation reads the books (default: from: api)
      from: export               # api: the contract's read API; export: files your system writes
      dir: /var/export/ledgers   # the export files (docs/contract.md, "Ledger export files")
      command: "my-exporter --out /var/export/ledgers"  # optional: run (sh) before each read
"""

from __future__ import annotations

import shutil
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
# crash_loop is kills and restarts: what crash needs.
PROCESS_NEEDS["crash_loop"] = PROCESS_NEEDS["crash"]
# What a service of a compose project can take, through the Docker SDK on its container
# (harness/testbed/compose.py); disconnect, like every other target, takes its Toxiproxy links down.
COMPOSE_KINDS = ("pause", "crash", "stop", "restart", "crash_loop")
NEVER_EXTERNAL = {
    "power_loss": "power_loss needs the local backend's layer under a service the harness started",
}


class ProcessControl(_Strict):
    """How the harness can act on a service's process: signals go to the pid in `pid_file` (read at
    each fault); `start_command` (run with sh) starts it again after a crash, stop or restart."""

    pid_file: str | None = None
    start_command: str | None = None


class ComposeSettings(_Strict):
    """Services of the target that are containers of a Docker Compose project the user brought up:
    found by the labels com.docker.compose.project=`project` and com.docker.compose.service."""

    project: str = Field(min_length=1)
    file: str | None = None  # the project's compose file: its service names are checked at load
    services: dict[str, str] = Field(min_length=1)  # harness service (switch, a bank code) -> compose service


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
    compose: ComposeSettings | None = None
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
        if self.compose is not None:
            strangers = [name for name in self.compose.services if name not in services]
            if strangers:
                raise ValueError(
                    f"compose.services: {strangers} are not services; services are {services}"
                    " (the keys are the harness's names, the values the compose project's service names)"
                )
            both = [name for name in self.compose.services if name in self.processes]
            if both:
                raise ValueError(
                    f"compose.services: {both} also in processes:; a service is controlled one way, drop one of them"
                )
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
        if self.compose is not None and service in self.compose.services:
            return None if kind in COMPOSE_KINDS else f"a {kind} fault cannot be done to a compose service"
        control = self.processes.get(service)
        lacking = [n for n in needs if control is None or getattr(control, n) is None]
        if lacking:
            return (
                f"a {kind} fault needs {' and '.join(f'processes.{service}.{n}' for n in lacking)} in the"
                f" target file, or compose.services.{service} (its service in a compose project): the harness"
                " did not start it, so it cannot signal or start it otherwise"
            )
        return None

    def compose_file(self, base: Path) -> Path | None:
        """The compose file named by `compose.file` (a relative path: from the folder `base`)."""
        if self.compose is None or self.compose.file is None:
            return None
        return base / Path(self.compose.file).expanduser()

    def compose_problem(self, base: Path) -> str | None:
        """Why `compose.services` does not match the compose file (when the target names one), or None."""
        path = self.compose_file(base)
        if path is None or self.compose is None:
            return None
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            return f"compose.file: cannot read {path} ({exc.strerror}); give the project's compose file, or drop file"
        except yaml.YAMLError as exc:
            return f"compose.file: {path} is not valid YAML: {exc}"
        declared = data.get("services") if isinstance(data, dict) else None
        if not isinstance(declared, dict):
            return f"compose.file: {path} has no `services:` mapping; is it a compose file?"
        for name, service in self.compose.services.items():
            if service not in declared:
                return (
                    f"compose.services.{name}: {service!r} is not a service of {path}; its services are"
                    f" {sorted(declared)}: name one of them"
                )
            if isinstance(declared[service], dict) and "deploy" in declared[service]:
                replicas = (declared[service]["deploy"] or {}).get("replicas", 1)
                if replicas != 1:
                    return (
                        f"compose.services.{name}: {service!r} has deploy.replicas {replicas}; container faults"
                        " act on one container per service: run one replica"
                    )
        return None

    def bank(self, code: str) -> Participant:
        for p in self.participants:
            if p.code == code:
                return p
        raise KeyError(code)


def keep_copy(path: Path, run_dir: Path, name: str) -> None:
    """The target file into a run directory (as `name`), and the compose file it names beside it
    when `compose.file` is a relative path within the target's folder, so the copy loads again
    (`harness check RUN_DIR`) wherever the run directory goes."""
    shutil.copyfile(path, run_dir / name)
    found = load(path)
    compose = found.compose_file(path.resolve().parent)
    if compose is None or found.compose is None or Path(found.compose.file or "").is_absolute():
        return
    relative = Path(found.compose.file or "")
    if ".." not in relative.parts:
        (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(compose, run_dir / relative)


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
        found = Target.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        fix = "see the target file format in docs/contract.md"
        if any(err["type"] == "string_type" for err in exc.errors()):
            fix = "quote account numbers and codes ('0100000001'): YAML reads 0100000001 as a number; " + fix
        raise TargetError(f"{path}: invalid target: {problems}", fix) from None
    if problem := found.compose_problem(path.resolve().parent):
        raise TargetError(f"{path}: invalid target: {problem}", "see the compose section in docs/contract.md")
    return found
