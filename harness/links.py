"""Links: which directed network paths a topology has, and what one is.

Every call between the parts of the system under test crosses Toxiproxy on a link named by who calls
whom: `customers->BNKA` (Locust to its bank), `BNKA->switch` (the payer bank to the switch),
`switch->BNKA` (the switch to the payee bank). `link_names` is the one definition of that set; the
scenario validator, both testbed backends and the nemesis all ask it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_BANKS = 26  # one letter each: BNKA .. BNKZ


def bank_codes(n: int) -> list[str]:
    """The codes of a topology's `n` banks: BNKA, BNKB, ..."""
    if not 1 <= n <= MAX_BANKS:
        raise ValueError(f"banks must be between 1 and {MAX_BANKS}")
    return [f"BNK{chr(ord('A') + i)}" for i in range(n)]


def link_names(bank_codes: Iterable[str]) -> list[str]:
    """Every link of a topology with these banks, in a stable order (per bank: customers, to the
    switch, from the switch)."""
    return [name for code in bank_codes for name in (f"customers->{code}", f"{code}->switch", f"switch->{code}")]


def payment_route(payer: str, payee: str) -> tuple[str, str, str]:
    """The links a customer payment crosses, in order: to its bank, the payer bank to the switch,
    the switch to the payee bank (status queries between them use the same links)."""
    return f"customers->{payer}", f"{payer}->switch", f"switch->{payee}"


def endpoints(name: str) -> tuple[str, str]:
    """(caller, callee) of a link name: `BNKA->switch` is ("BNKA", "switch")."""
    caller, sep, callee = name.partition("->")
    if not sep or not caller or not callee:
        raise ValueError(f"{name!r} is not a link name (caller->callee)")
    return caller, callee


@dataclass(frozen=True)
class Link:
    """A directed network path through Toxiproxy, e.g. `switch->BNKB`."""

    name: str  # as people write it: customers->BNKA, BNKA->switch, switch->BNKA
    listen: str  # host:port of the proxy listener (what the caller dials)
    upstream: str  # host:port of the real service

    @property
    def proxy(self) -> str:
        """Toxiproxy's name for the proxy (no '>' in URLs)."""
        return self.name.replace("->", "__to__")
