"""The system under test as configuration: which services, on which ports, dialling each other how.

`build_system` makes the configuration both backends start from; `route_through` points every caller
at its link's Toxiproxy listener for the local backend (containers.py has the docker twin).
Here rather than in local.py because neither starts a process: the runner, the web front end and the
docker backend need them without the local backend's process control.
"""

from __future__ import annotations

from typing import Any

from harness.links import Link, bank_codes, endpoints, link_names
from harness.procs import free_port
from mock_switch.config import BankConfig, Resilience, SwitchConfig, SystemConfig


def build_system(
    banks: int = 4,
    resilience: Resilience = "robust",
    switch_resilience: Resilience | None = None,
    payee_timeout_s: float = 2.0,
    **overrides: Any,
) -> SystemConfig:
    """A system on free loopback ports with every link direct (no proxy yet).

    System-wide settings (durability, status_query, currency) and any BankConfig field
    (accounts=200, credit_delay_ms=..., switch_timeout_s=...) can be overridden."""
    codes = bank_codes(banks)
    system_kw = {k: overrides.pop(k) for k in ("durability", "status_query", "currency", "bug") if k in overrides}
    switch_port = free_port()
    bank_ports = {code: free_port() for code in codes}
    return SystemConfig(
        switch=SwitchConfig(
            listen=f"127.0.0.1:{switch_port}",
            bank_urls={code: f"http://127.0.0.1:{port}" for code, port in bank_ports.items()},
            resilience=switch_resilience or resilience,
            payee_timeout_s=payee_timeout_s,
        ),
        banks=[
            BankConfig(
                code=code,
                listen=f"127.0.0.1:{bank_ports[code]}",
                switch_url=f"http://127.0.0.1:{switch_port}",
                resilience=resilience,
                **overrides,
            )
            for code in codes
        ],
        **system_kw,
    )


def with_fresh_ports(system: SystemConfig, host: str = "127.0.0.1") -> SystemConfig:
    """The same system with every service on a newly chosen free port (its direct links follow)."""
    switch = f"{host}:{free_port(host)}"
    banks = {b.code: f"{host}:{free_port(host)}" for b in system.banks}
    return system.model_copy(
        update={
            "switch": system.switch.model_copy(
                update={"listen": switch, "bank_urls": {code: f"http://{a}" for code, a in banks.items()}}
            ),
            "banks": [
                b.model_copy(update={"listen": banks[b.code], "switch_url": f"http://{switch}"}) for b in system.banks
            ],
        }
    )


def route_through(system: SystemConfig, host: str = "127.0.0.1") -> tuple[SystemConfig, dict[str, Link]]:
    """Give every link its own proxy listener and point each caller at it.

    Returns the system to start (banks dial the switch, and the switch dials each bank, through
    their link's listener) and the links to create on the Toxiproxy server."""
    listens = {"switch": system.switch.listen, **{b.code: b.listen for b in system.banks}}
    links = {
        name: Link(name, f"{host}:{free_port(host)}", listens[endpoints(name)[1]])
        for name in link_names(b.code for b in system.banks)
    }
    routed = system.model_copy(
        update={
            "switch": system.switch.model_copy(
                update={"bank_urls": {b.code: f"http://{links[f'switch->{b.code}'].listen}" for b in system.banks}}
            ),
            "banks": [
                b.model_copy(update={"switch_url": f"http://{links[f'{b.code}->switch'].listen}"}) for b in system.banks
            ],
        }
    )
    return routed, links
