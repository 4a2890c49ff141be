"""The nemesis: faults applied to links (Toxiproxy) and services (processes, containers).

What a kind means is data (harness/faults.py); how it is done is its mechanism, one apply/heal pair
in `_MECHANISMS` below. Applying is all-or-nothing: when a step fails on one target, the targets
already done are healed again and `FaultError` names the fault and the target. Every apply and heal
is appended to the fault timeline (faults.jsonl) with its real timestamp. Faults are healed when
their window ends, by `heal_all()` in a `finally`, and Toxiproxy is reset when the harness starts,
so a crashed run cannot leave a toxic behind for the next one.

When the proxy control can report Toxiproxy's byte counters (`CounterSource`) and a counters path is
given, the nemesis samples them for every link just before an apply begins and just after a heal
completes (and at the start of a schedule, for the baseline) into proxy_counters.jsonl
(harness/counters.py), so the evidence checker can say what each fault did on the wire. A sample
that fails is recorded as an error line; it never stops a fault.

The nemesis does not import the testbed: it needs only what the protocols below describe, which the
testbeds provide (and tests fake).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.counters import CounterWriter, LinkCounters
from harness.errors import FaultError
from harness.faults import (
    KINDS,
    FaultSpec,
    Mechanism,
    expand_targets,
    service_conflict,
    service_links,
)
from harness.timeline import TimelineWriter


class ProxiedLink(Protocol):
    """A link as the testbed made it (harness/testbed/proxies.py Link); the nemesis hands it to the proxy."""

    @property
    def name(self) -> str: ...


class ProxyControl(Protocol):
    """What the nemesis needs from the Toxiproxy server (harness/testbed/proxies.py ToxiproxyServer)."""

    def add_toxic(
        self, link: Any, name: str, kind: str, attributes: dict[str, int], stream: str, toxicity: float, /
    ) -> None: ...
    def remove_toxic(self, link: Any, name: str, /) -> None: ...  # a toxic already gone counts as removed
    def set_enabled(self, link: Any, enabled: bool, /) -> None: ...
    def reset(self) -> None: ...


class ServiceControl(Protocol):
    """What the nemesis needs from a topology backend to crash, pause, stop and restart services."""

    @property
    def service_names(self) -> list[str]: ...
    def kill(self, name: str) -> None: ...
    def restart(self, name: str) -> None: ...
    def signal(self, name: str, sig: signal.Signals) -> None: ...
    def stop_service(self, name: str) -> None: ...
    def start_service(self, name: str) -> None: ...


@runtime_checkable
class CounterSource(Protocol):
    """A Toxiproxy that reports its byte counters per link (ToxiproxyServer.byte_counters)."""

    def byte_counters(self, links: Iterable[Any], /) -> LinkCounters: ...


@runtime_checkable
class PowerControl(Protocol):
    """A backend that can cut a service's power: kill -9 and lose what it never fsynced (the local
    backend, for services started under harness/testbed/powerloss.py's layer). Returns what was lost."""

    def power_loss(self, name: str, /) -> Mapping[str, object]: ...


@runtime_checkable
class NetworkControl(Protocol):
    """A backend with a network of its own to take a service off (docker); others fall back to Toxiproxy."""

    def disconnect(self, name: str) -> None: ...
    def connect(self, name: str) -> None: ...


@dataclass
class _Active:
    fault: FaultSpec
    targets: list[str]
    links: list[str] = field(default_factory=list)  # the links this fault holds down


class _CrashLoop(threading.Thread):
    """One service's crash loop: kill -9 at each planned moment, dead `down_ms`, restarted (the
    restart waits until the service is healthy). Stopping it ends the loop; a service dead at that
    moment is restarted first, so a healed loop always leaves its service running."""

    def __init__(self, services: ServiceControl, fault: FaultSpec, service: str) -> None:
        super().__init__(name=f"crash-loop-{fault.name}-{service}", daemon=True)
        self.services, self.service = services, service
        self.plan = fault.crash_loop_plan(service)
        self.down_s = fault.attributes.get("down_ms", KINDS["crash_loop"].defaults["down_ms"]) / 1000
        self.stop_event = threading.Event()
        self.t0 = time.time()
        self.kills: list[list[float]] = []  # [killed at, restarted at (healthy again)] per kill
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for offset in self.plan:
                if self.stop_event.wait(max(0.0, self.t0 + offset - time.time())):
                    return
                killed = time.time()
                self.services.kill(self.service)
                self.stop_event.wait(self.down_s)  # healed while dead: restart at once
                self.services.restart(self.service)
                self.kills.append([killed, time.time()])
        except BaseException as exc:  # surfaced by the heal
            self.error = exc

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        self.join(timeout_s)
        if self.is_alive():
            raise FaultError(f"the crash loop on {self.service} did not stop within {timeout_s:g} s")
        if self.error is not None:
            raise self.error


# One step of a mechanism, on one target (a link name or a service name).
Step = Callable[["Nemesis", FaultSpec, str], None]


@dataclass
class Nemesis:
    toxiproxy: ProxyControl
    links: Mapping[str, ProxiedLink]
    services: ServiceControl
    timeline_path: Path
    counters_path: Path | None = None  # proxy_counters.jsonl; None: no sampling
    active: dict[str, _Active] = field(default_factory=dict)
    _loops: dict[tuple[str, str], _CrashLoop] = field(default_factory=dict)  # (fault, service) -> its loop
    _done_loops: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)  # their kills, once healed
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _timeline: TimelineWriter = field(init=False)
    _counters: CounterWriter | None = field(init=False, default=None)
    _lost: dict[str, Mapping[str, object]] = field(init=False, default_factory=dict)  # the last power loss's

    def __post_init__(self) -> None:
        self._timeline = TimelineWriter(self.timeline_path)
        if self.counters_path is not None:
            self._counters = CounterWriter(self.counters_path)

    def record(self, event: str, fault: FaultSpec, targets: list[str], at: float | None = None, **extra: Any) -> float:
        """Append one event to the timeline; returns its `at`."""
        if event == "apply":
            extra.setdefault("attributes", dict(fault.attributes))
        at = time.time() if at is None else at
        self._timeline.write(event, fault.name, fault.kind, targets, at, **extra)
        return at

    def _read_counters(self) -> tuple[float, LinkCounters | None, str | None] | None:
        """(when, the counters of every link, or why they could not be read); None: no sampling."""
        if self._counters is None or not isinstance(self.toxiproxy, CounterSource):
            return None
        at = time.time()
        try:
            return at, self.toxiproxy.byte_counters(list(self.links.values())), None
        except Exception as exc:  # evidence is a by-product: a fault must not fail for want of it
            return at, None, f"{type(exc).__name__}: {exc}"

    def _write_counters(
        self, event: str, fault: str | None, event_at: float | None, read: tuple[float, Any, str | None] | None
    ) -> None:
        if read is not None and self._counters is not None:
            at, links, error = read
            self._counters.write(event, fault, event_at, at, links, error)

    def sample_counters(self) -> None:
        """A `start` sample: the fault schedule begins (the baseline's counters run from here)."""
        with self._lock:
            self._write_counters("start", None, None, self._read_counters())

    def apply(self, fault: FaultSpec) -> None:
        """Apply on every target or on none: raises ValueError when refused before anything was done,
        FaultError when a step failed (what was done is undone, and nothing is in the timeline)."""
        targets = expand_targets(fault, list(self.links), self.services.service_names)
        apply_step, heal_step = _MECHANISMS[KINDS[fault.kind].mechanism]
        with self._lock:
            if fault.name in self.active:
                raise ValueError(f"fault {fault.name!r} is already active")
            conflict = service_conflict(fault, targets, ((a.fault, a.targets) for a in self.active.values()))
            if conflict:
                raise ValueError(f"cannot apply {fault.name!r}: {conflict}")
            # The fault starts when we begin applying it (a partition takes several API calls);
            # it ends when the heal has completed. Neither edge flatters the system. The counters
            # are read just before, so the window's bytes are all after them.
            before = self._read_counters()
            started = time.time()
            done: list[str] = []
            for target in targets:
                try:
                    apply_step(self, fault, target)
                except Exception as exc:
                    # A step that raised counts as not done: undoing it could restart a service
                    # nobody crashed. The error names its target so a person can look.
                    undo_failed = self._run(heal_step, fault, done)
                    left = f"; could not undo it on {_describe(undo_failed)}" if undo_failed else ""
                    raise FaultError(
                        f"could not apply fault {fault.name!r} ({fault.kind}) on {target}: {exc}{left}",
                        fix="nothing of it is active" if not undo_failed else "heal all to reset Toxiproxy",
                    ) from exc
                done.append(target)
            self.active[fault.name] = _Active(fault, targets, self._links_held(fault, targets))
            self.record("apply", fault, targets, at=started, **self._how(fault, targets))
            self._write_counters("apply", fault.name, started, before)

    def heal(self, name: str) -> None:
        """Heal every target (on to the next when one fails); FaultError, after a `heal-failed` line
        in the timeline, when some target could not be healed."""
        with self._lock:
            act = self.active.pop(name, None)
            if act is None:
                return
            fault, targets = act.fault, act.targets
            failed = self._run(_MECHANISMS[KINDS[fault.kind].mechanism][1], fault, targets)
            if failed:
                at = self.record(
                    "heal-failed", fault, targets, error=_describe(failed), **self._loop_record(fault, targets)
                )
                self._write_counters("heal-failed", name, at, self._read_counters())
                raise FaultError(
                    f"could not heal fault {name!r} ({fault.kind}) on {_describe(failed)}",
                    fix="heal all resets Toxiproxy; a service may need restarting by hand",
                )
            at = self.record("heal", fault, targets, **self._loop_record(fault, targets))
            self._write_counters("heal", name, at, self._read_counters())

    def heal_all(self) -> None:
        """Heal everything still active (in reverse order of application), then reset Toxiproxy."""
        for name in reversed(list(self.active)):
            # A FaultError is in the timeline as heal-failed; heal the rest, the reset below is the backstop.
            with contextlib.suppress(FaultError):
                self.heal(name)
        self.toxiproxy.reset()

    def close(self) -> None:
        self._timeline.close()
        if self._counters is not None:
            self._counters.close()

    def _run(self, step: Step, fault: FaultSpec, targets: list[str]) -> list[tuple[str, Exception]]:
        """Run a heal step on every target; the targets it failed on, with why."""
        failed: list[tuple[str, Exception]] = []
        for target in targets:
            try:
                step(self, fault, target)
            except Exception as exc:
                failed.append((target, exc))
        return failed

    def _loop_record(self, fault: FaultSpec, targets: list[str]) -> dict[str, Any]:
        """What a healed crash loop did, for its heal line: {"kills": {service: [[killed, restarted], ...]}}."""
        if KINDS[fault.kind].mechanism != "crash_loop":
            return {}
        done = {t: self._done_loops.pop((fault.name, t), []) for t in targets}
        return {"kills": done}

    def _has_network(self) -> bool:
        return isinstance(self.services, NetworkControl)

    def _service_links(self, service: str) -> list[str]:
        return service_links(service, self.links)

    def _links_held(self, fault: FaultSpec, targets: list[str]) -> list[str]:
        """The links this fault keeps down (another fault's heal must leave them down)."""
        mechanism = KINDS[fault.kind].mechanism
        if mechanism == "link_down":
            return list(targets)
        if mechanism == "disconnect" and not self._has_network():
            return [link for t in targets for link in self._service_links(t)]
        return []

    def _how(self, fault: FaultSpec, targets: list[str]) -> dict[str, Any]:
        """What the apply line says about how a disconnect was done (the backend decides), or what a
        power loss undid per service."""
        if KINDS[fault.kind].mechanism == "power_loss":
            return {"lost": {t: self._lost.pop(t, {}) for t in targets}}
        if KINDS[fault.kind].mechanism != "disconnect":
            return {}
        if self._has_network():
            return {"via": "network"}
        return {"via": "toxiproxy", "links": self._links_held(fault, targets)}

    def _held_down(self) -> set[str]:
        return {link for a in self.active.values() for link in a.links}

    def _enable(self, link: str) -> None:
        # Overlapping faults on one link: it stays down until the last of them is healed.
        if link not in self._held_down():
            self.toxiproxy.set_enabled(self.links[link], True)

    # -- the mechanisms' steps, one target each ---------------------------------------------------

    def _add_toxic(self, fault: FaultSpec, link: str) -> None:
        self.toxiproxy.add_toxic(
            self.links[link], fault.name, fault.kind, dict(fault.attributes), fault.stream, fault.toxicity
        )

    def _remove_toxic(self, fault: FaultSpec, link: str) -> None:
        self.toxiproxy.remove_toxic(self.links[link], fault.name)

    def _link_down(self, fault: FaultSpec, link: str) -> None:
        self.toxiproxy.set_enabled(self.links[link], False)

    def _link_up(self, fault: FaultSpec, link: str) -> None:
        self._enable(link)

    def _sigstop(self, fault: FaultSpec, service: str) -> None:
        self.services.signal(service, signal.SIGSTOP)

    def _sigcont(self, fault: FaultSpec, service: str) -> None:
        self.services.signal(service, signal.SIGCONT)

    def _kill(self, fault: FaultSpec, service: str) -> None:
        self.services.kill(service)

    def _power_loss(self, fault: FaultSpec, service: str) -> None:
        if not isinstance(self.services, PowerControl):
            raise FaultError(
                f"this backend ({type(self.services).__name__}) cannot cut a service's power",
                fix="power_loss faults run on the local backend (backend: local)",
            )
        self._lost[service] = self.services.power_loss(service)

    def _restart(self, fault: FaultSpec, service: str) -> None:
        self.services.restart(service)

    def _stop(self, fault: FaultSpec, service: str) -> None:
        self.services.stop_service(service)

    def _start(self, fault: FaultSpec, service: str) -> None:
        self.services.start_service(service)  # a no-op for a running service, then waits until healthy

    def _start_loop(self, fault: FaultSpec, service: str) -> None:
        loop = _CrashLoop(self.services, fault, service)
        self._loops[(fault.name, service)] = loop
        loop.start()

    def _stop_loop(self, fault: FaultSpec, service: str) -> None:
        loop = self._loops.pop((fault.name, service), None)
        if loop is not None:
            try:
                loop.stop()
            finally:
                self._done_loops[(fault.name, service)] = loop.kills

    def _disconnect(self, fault: FaultSpec, service: str) -> None:
        if isinstance(self.services, NetworkControl):
            self.services.disconnect(service)
            return
        down: list[str] = []
        try:
            for link in self._service_links(service):
                self.toxiproxy.set_enabled(self.links[link], False)
                down.append(link)
        except Exception:  # one service is one step: leave none of its links down
            for link in down:
                with contextlib.suppress(Exception):
                    self._enable(link)
            raise

    def _connect(self, fault: FaultSpec, service: str) -> None:
        if isinstance(self.services, NetworkControl):
            self.services.connect(service)
        else:
            for link in self._service_links(service):
                self._enable(link)


# Mechanism -> (apply one target, heal one target). Healing also undoes a half-done apply.
_MECHANISMS: dict[Mechanism, tuple[Step, Step]] = {
    "toxic": (Nemesis._add_toxic, Nemesis._remove_toxic),
    "link_down": (Nemesis._link_down, Nemesis._link_up),
    "signal": (Nemesis._sigstop, Nemesis._sigcont),
    "kill": (Nemesis._kill, Nemesis._restart),
    "stop": (Nemesis._stop, Nemesis._start),
    "restart": (Nemesis._restart, Nemesis._start),
    "disconnect": (Nemesis._disconnect, Nemesis._connect),
    "power_loss": (Nemesis._power_loss, Nemesis._restart),
    "crash_loop": (Nemesis._start_loop, Nemesis._stop_loop),
}


def _describe(failed: list[tuple[str, Exception]]) -> str:
    return "; ".join(f"{target}: {exc}" for target, exc in failed)
