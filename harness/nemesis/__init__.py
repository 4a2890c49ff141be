"""Faults: applied to links (Toxiproxy) and services (processes, containers), healed always, on a schedule.

What each fault kind is lives in harness/faults.py (data); how it is applied and healed, here.
"""

from harness.nemesis.injector import CounterSource, Nemesis, NetworkControl, ProxyControl, ServiceControl
from harness.nemesis.schedule import SchedulePlayer

__all__ = ["CounterSource", "Nemesis", "NetworkControl", "ProxyControl", "SchedulePlayer", "ServiceControl"]
