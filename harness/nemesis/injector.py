"""The nemesis: faults applied to links (Toxiproxy) and services (processes) on a schedule.

Every apply and heal is appended to the fault timeline (faults.jsonl) with its real timestamp.
Faults are healed when their window ends, by `heal_all()` in a `finally`, and Toxiproxy is reset
when the harness starts, so a crashed run cannot leave a toxic behind for the next one.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from harness.faults import (
    FAULT_KINDS,
    LINK_FAULTS,
    ON_SERVICES,
    TOXICS,
    FaultKind,
    FaultSpec,
    expand_targets,
)
from harness.testbed.proxies import Link, ToxiproxyServer

# The old split of ON_SERVICES, for harness/web/control.py until it uses harness.faults.catalogue().
SERVICE_FAULTS: tuple[str, ...] = ("crash", "pause")
NODE_FAULTS: tuple[str, ...] = tuple(k for k in ON_SERVICES if k not in SERVICE_FAULTS)
__all__ = [
    "FAULT_KINDS",
    "LINK_FAULTS",
    "NODE_FAULTS",
    "SERVICE_FAULTS",
    "TOXICS",
    "FaultKind",
    "FaultSpec",
    "Nemesis",
    "NetworkControl",
    "SchedulePlayer",
    "ServiceControl",
    "expand_targets",
]


class ServiceControl(Protocol):
    """What the nemesis needs from a topology backend to crash and pause services."""

    @property
    def service_names(self) -> list[str]: ...
    def kill(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...
    def signal(self, name: str, sig: signal.Signals) -> None: ...
    def stop_service(self, name: str) -> None: ...
    def start_service(self, name: str) -> None: ...


@runtime_checkable
class NetworkControl(Protocol):
    """A backend with a network of its own to take a service off (docker); others fall back to Toxiproxy."""

    def disconnect(self, name: str) -> None: ...
    def connect(self, name: str) -> None: ...


@dataclass
class _Active:
    fault: FaultSpec
    targets: list[str]
    links: list[str] = field(default_factory=list)  # links a disconnect took down (no network to leave)


@dataclass
class Nemesis:
    toxiproxy: ToxiproxyServer
    links: dict[str, Link]
    services: ServiceControl
    timeline_path: Path
    active: dict[str, _Active] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _out: IO[str] | None = None

    def record(self, event: str, fault: FaultSpec, targets: list[str], at: float | None = None, **extra: Any) -> None:
        if self._out is None:
            self.timeline_path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.timeline_path.open("a")
        at = time.time() if at is None else at
        line = {"event": event, "fault": fault.name, "kind": fault.kind, "targets": targets, "at": at}
        if event == "apply" and fault.attributes:
            line["attributes"] = dict(fault.attributes)
        line.update(extra)
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()

    def apply(self, fault: FaultSpec) -> None:
        targets = expand_targets(fault, list(self.links), self._service_names())
        with self._lock:
            if fault.name in self.active:
                raise ValueError(f"fault {fault.name!r} is already active")
            # The fault starts when we begin applying it (a partition takes several API calls);
            # it ends when the heal has completed. Neither edge flatters the system.
            started = time.time()
            if fault.kind in TOXICS:
                for t in targets:
                    self.toxiproxy.add_toxic(
                        self.links[t], fault.name, fault.kind, dict(fault.attributes), fault.stream, fault.toxicity
                    )
            elif fault.kind in LINK_FAULTS:
                for t in targets:
                    self.toxiproxy.set_enabled(self.links[t], False)
            elif fault.kind == "crash":
                for t in targets:
                    self.services.kill(t)
            elif fault.kind == "pause":
                for t in targets:
                    self.services.signal(t, signal.SIGSTOP)
            elif fault.kind == "stop":
                for t in targets:
                    self.services.stop_service(t)
            elif fault.kind == "restart":
                for t in targets:
                    self.services.restart(t)
            extra: dict[str, Any] = {}
            links: list[str] = []
            if fault.kind == "disconnect":
                if isinstance(self.services, NetworkControl):
                    for t in targets:
                        self.services.disconnect(t)
                    extra["via"] = "network"
                else:
                    links = self._links_of(targets)
                    for link in links:
                        self.toxiproxy.set_enabled(self.links[link], False)
                    extra.update(via="toxiproxy", links=links)
            self.active[fault.name] = _Active(fault, targets, links)
            self.record("apply", fault, targets, at=started, **extra)

    def heal(self, name: str) -> None:
        with self._lock:
            act = self.active.pop(name, None)
            if act is None:
                return
            fault, targets = act.fault, act.targets
            if fault.kind in TOXICS:
                for t in targets:
                    self.toxiproxy.remove_toxic(self.links[t], fault.name)
            elif fault.kind in LINK_FAULTS or act.links:
                still_down = {t for a in self.active.values() if a.fault.kind in LINK_FAULTS for t in a.targets}
                still_down |= {t for a in self.active.values() for t in a.links}
                for t in act.links or targets:
                    if t not in still_down:  # overlapping partitions: the link stays down for the other
                        self.toxiproxy.set_enabled(self.links[t], True)
            elif fault.kind == "crash":
                for t in targets:
                    self.services.restart(t)
            elif fault.kind == "pause":
                for t in targets:
                    self.services.signal(t, signal.SIGCONT)
            elif fault.kind in ("stop", "restart"):
                for t in targets:
                    self.services.start_service(t)
            elif fault.kind == "disconnect" and isinstance(self.services, NetworkControl):
                for t in targets:
                    self.services.connect(t)
            self.record("heal", fault, targets)

    def heal_all(self) -> None:
        """Heal everything still active (in reverse order of application), then reset Toxiproxy."""
        for name in reversed(list(self.active)):
            act = self.active[name]
            try:
                self.heal(name)
            except Exception as exc:  # keep healing the rest; the reset below is the backstop
                self.active.pop(name, None)
                self.record("heal-failed", act.fault, act.targets, error=str(exc))
        self.toxiproxy.reset()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def _service_names(self) -> list[str]:
        return self.services.service_names

    def _links_of(self, services: list[str]) -> list[str]:
        """Every link into or out of these services (a disconnect without a network to leave)."""
        probe = FaultSpec(kind="partition", targets=services, start=0, duration=1)
        return expand_targets(probe, list(self.links), self._service_names())


class SchedulePlayer(threading.Thread):
    """Plays a fault schedule against the wall clock from `t0`; heals everything on stop."""

    def __init__(self, nemesis: Nemesis, schedule: list[FaultSpec], t0: float, heal_all: bool = True) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.nemesis = nemesis
        # False: at the end heal only this schedule's faults (the chaos panel's own faults stay on).
        self.heal_all = heal_all
        self.events = sorted(
            [(f.start, 1, "apply", f) for f in schedule] + [(f.end, 0, "heal", f) for f in schedule],
            key=lambda e: (e[0], e[1]),  # at the same instant, heal before apply
        )
        self.t0 = t0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for offset, _, action, fault in self.events:
                if self.stop_event.wait(max(0.0, self.t0 + offset - time.time())):
                    return
                if action == "apply":
                    self.nemesis.apply(fault)
                else:
                    self.nemesis.heal(fault.name)
        except BaseException as exc:  # surfaced by stop(); the run must not pretend it went well
            self.error = exc
        finally:
            if self.heal_all:
                self.nemesis.heal_all()
            else:
                for fault in {f.name: f for _, _, _, f in self.events}.values():
                    self.nemesis.heal(fault.name)

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        self.join(timeout_s)
