"""Configuration of the mock payment system: who the participants are and where they listen.

One JSON file describes the whole system; every service reads it and picks its own section.
Customer accounts are generated deterministically from it, so the switch's party directory, the
banks' ledgers and the load generator all agree without exchanging data.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mock_switch.bugs import Bug

Resilience = Literal["robust", "naive"]
Durability = Literal["fsync", "os"]

BANK_CODE_PATTERN = r"^[A-Z]{4}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """Backoff for status queries (robust mode): initial, doubling, capped."""

    initial_s: float = Field(0.05, gt=0)
    max_s: float = Field(1.0, gt=0)
    multiplier: float = Field(2.0, ge=1)

    def delays(self) -> Iterator[float]:
        """Endless backoff delays with jitter, so retries from many payments do not align."""
        delay = self.initial_s
        while True:
            yield delay * random.uniform(0.5, 1.0)
            delay = min(self.max_s, delay * self.multiplier)


class BankConfig(_Strict):
    code: str = Field(pattern=BANK_CODE_PATTERN)
    name: str = ""
    net_debit_cap: int = Field(100_000_000, gt=0)
    settlement_balance: int = Field(500_000_000, ge=0)
    accounts: int = Field(1000, ge=1, le=1_000_000)
    opening_balance: int = Field(1_000_000, ge=0)
    # Every n-th account is blocked so AC06 happens naturally; 0 disables.
    blocked_every: int = Field(50, ge=0)
    listen: str = "127.0.0.1:0"
    # Address this bank uses to reach the switch (a Toxiproxy listener in chaos runs).
    switch_url: str = "http://127.0.0.1:0"
    resilience: Resilience = "robust"
    switch_timeout_s: float = Field(4.0, gt=0)
    # How long the bank keeps the customer waiting before answering PDNG (202).
    customer_timeout_s: float = Field(6.0, gt=0)
    # Simulated slow core banking when crediting incoming payments.
    credit_delay_ms: int = Field(0, ge=0)


class SwitchConfig(_Strict):
    listen: str = "127.0.0.1:0"
    # Address the switch uses to reach each bank (Toxiproxy listeners in chaos runs).
    bank_urls: dict[str, str] = Field(default_factory=dict)
    resilience: Resilience = "robust"
    # Deadline for the payee bank's answer; must be shorter than every bank's switch_timeout_s.
    payee_timeout_s: float = Field(2.0, gt=0)


class SystemConfig(_Strict):
    currency: str = Field("NGN", pattern=r"^[A-Z]{3}$")
    switch: SwitchConfig = SwitchConfig()
    banks: list[BankConfig]
    status_query: RetryPolicy = RetryPolicy()
    # fsync: every acknowledged write survives power loss (group commit, synchronous=FULL).
    # os: survives a killed process but not a killed machine (synchronous=NORMAL).
    durability: Durability = "fsync"
    # A deliberately broken variant (mock_switch/bugs.py), for `harness teeth` only; None: no bug.
    bug: Bug | None = None

    @model_validator(mode="after")
    def _check(self) -> SystemConfig:
        codes = [b.code for b in self.banks]
        if not codes:
            raise ValueError("banks: at least one bank is required")
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"banks: bank codes must be unique, repeated: {dupes}")
        unknown = sorted(set(self.switch.bank_urls) - set(codes))
        if unknown:
            raise ValueError(f"switch.bank_urls: no such bank {unknown}; banks are {codes}")
        for bank in self.banks:
            if self.switch.payee_timeout_s >= bank.switch_timeout_s:
                raise ValueError(
                    f"switch.payee_timeout_s ({self.switch.payee_timeout_s}) must be shorter than"
                    f" banks[{bank.code}].switch_timeout_s ({bank.switch_timeout_s}), so the"
                    " switch can answer before the payer bank gives up"
                )
        return self

    def bank(self, code: str) -> BankConfig:
        for bank in self.banks:
            if bank.code == code:
                return bank
        raise KeyError(f"no bank {code!r}; banks are {[b.code for b in self.banks]}")

    def bank_index(self, code: str) -> int:
        return [b.code for b in self.banks].index(code)

    def parties(self) -> Iterator[Party]:
        for index, bank in enumerate(self.banks):
            for i in range(bank.accounts):
                yield party(index, bank, i)

    def total_customer_money(self) -> int:
        return sum(b.accounts * b.opening_balance for b in self.banks)

    def total_settlement_money(self) -> int:
        return sum(b.settlement_balance for b in self.banks)

    @classmethod
    def load(cls, path: Path) -> SystemConfig:
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
            )
            raise ConfigError(f"{path}: invalid system configuration: {problems}") from None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        tmp.replace(path)


class ConfigError(Exception):
    """A configuration file is missing or invalid; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Party:
    bank: str
    account: str
    msisdn: str
    name: str
    blocked: bool
    opening_balance: int


_FIRST = ("Ada", "Kwame", "Amina", "Chidi", "Wanjiru", "Tendai", "Fatou", "Kofi", "Zanele", "Yusuf")
_LAST = ("Okafor", "Mensah", "Diallo", "Odhiambo", "Banda", "Nkosi", "Traore", "Abebe", "Moyo")


def party(bank_index: int, bank: BankConfig, i: int) -> Party:
    """The i-th customer of a bank: 10-digit account number, MSISDN, a readable name."""
    return Party(
        bank=bank.code,
        account=account_number(bank_index, i),
        msisdn=f"+2547{bank_index:02d}{i:06d}",
        name=f"{_FIRST[i % len(_FIRST)]} {_LAST[(i // len(_FIRST)) % len(_LAST)]}",
        blocked=bank.blocked_every > 0 and (i + 1) % bank.blocked_every == 0,
        opening_balance=bank.opening_balance,
    )


def account_number(bank_index: int, i: int) -> str:
    return f"{bank_index + 1:02d}{i:08d}"


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"listen address {listen!r} must look like HOST:PORT")
    return host.strip("[]"), int(port)
