"""Fault kinds as data: one table says what every kind targets, takes and means.

Everything that needs to know about a kind reads `KINDS`: the scenario parser and `FaultSpec` (which
attributes a kind takes, what it may target), the nemesis (how to apply and heal it: its
`mechanism`), `harness list` and the chaos panel (`catalogue()`: help, units, defaults, the word for
a service under it). Adding a kind is one `KindInfo` here, one name in `FaultKind`, and, for a new
mechanism, its apply/heal pair in harness/nemesis/injector.py.

This is the data layer: standard library and pydantic only, so reading a scenario file never loads
the Toxiproxy client or the Docker SDK.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FaultKind = Literal[
    "latency", "bandwidth", "timeout", "reset_peer", "slow_close", "slicer", "limit_data",
    "down", "partition", "crash", "pause", "stop", "restart", "disconnect", "power_loss", "crash_loop",
]  # fmt: skip
Targets = Literal["links", "services"]
# How the nemesis does it; each one is an apply/heal pair in harness/nemesis/injector.py.
Mechanism = Literal[
    "toxic", "link_down", "signal", "kill", "stop", "restart", "disconnect", "power_loss", "crash_loop"
]  # fmt: skip


@dataclass(frozen=True)
class KindInfo:
    """One fault kind: what it targets, how it is done, what it takes and what the panel shows."""

    name: str
    targets: Targets
    mechanism: Mechanism
    help: str  # one line, for `harness list` and the chaos panel
    attributes: Mapping[str, str] = field(default_factory=dict)  # toxics: attribute -> unit and meaning
    defaults: Mapping[str, int] = field(default_factory=dict)  # what the panel pre-fills
    state: str | None = None  # a service's state while under it ("crashed"); None for link faults

    @property
    def toxic(self) -> bool:
        """A Toxiproxy toxic (it takes attributes, a stream and a toxicity)."""
        return self.mechanism == "toxic"


def _table(*kinds: KindInfo) -> dict[str, KindInfo]:
    return {k.name: k for k in kinds}


CRASH_LOOP_ATTRIBUTES = {
    "kills": "kill -9s in the window (1 to 20), each in a slot of its own",
    "down_ms": "ms dead before each restart",
    "seed": "seeds the moments of the kills (same seed, same moments)",
}
# A restart (start, then wait until healthy) takes about a second locally; each kill's slot leaves
# room for it, so the kills of a loop never overlap.
CRASH_LOOP_RESTART_S = 2.0


def crash_loop_slot_s(down_ms: int) -> float:
    """The least time one kill of a crash loop needs: dead for down_ms, then restarted."""
    return down_ms / 1000 + CRASH_LOOP_RESTART_S


# Toxiproxy units: times in ms (slicer's delay in µs), rates in KB/s, sizes in bytes; all integers.
KINDS: dict[str, KindInfo] = _table(
    KindInfo("latency", "links", "toxic", "responses delayed",
             {"latency": "added delay, ms", "jitter": "random +/- ms"}, {"latency": 1500, "jitter": 0}),
    KindInfo("bandwidth", "links", "toxic", "throughput capped",
             {"rate": "KB/s"}, {"rate": 1}),
    KindInfo("timeout", "links", "toxic", "data stops, then the connection is closed",
             {"timeout": "ms before the connection is closed; 0 = black hole until healed"}, {"timeout": 0}),
    KindInfo("reset_peer", "links", "toxic", "connections reset (TCP RST)",
             {"timeout": "ms before the connection is reset (TCP RST)"}, {"timeout": 0}),
    KindInfo("slow_close", "links", "toxic", "a connection's close passed on late",
             {"delay": "ms before a close is passed on"}, {"delay": 2000}),
    KindInfo("slicer", "links", "toxic", "data cut into small slices, delayed",
             {"average_size": "bytes per slice", "size_variation": "bytes", "delay": "µs between slices"},
             {"average_size": 16, "size_variation": 8, "delay": 1000}),
    KindInfo("limit_data", "links", "toxic", "connection closed after some bytes",
             {"bytes": "bytes passed before the connection is closed"}, {"bytes": 200}),
    KindInfo("down", "links", "link_down", "link disabled: connections refused"),
    KindInfo("partition", "links", "link_down", "every target link disabled together"),
    KindInfo("crash", "services", "kill", "kill -9; restarted when healed", state="crashed"),
    KindInfo("pause", "services", "signal", "SIGSTOP (docker: pause); SIGCONT when healed", state="paused"),
    KindInfo("stop", "services", "stop", "graceful stop (SIGTERM, SIGKILL after 5 s); started again when healed",
             state="stopped"),
    KindInfo("restart", "services", "restart", "stopped and started at once; healing checks it is back",
             state="restarted"),
    # Without a network of its own to leave (local processes) the service's Toxiproxy links go down
    # instead: the same isolation.
    KindInfo("disconnect", "services", "disconnect",
             "off the network (docker) or every Toxiproxy link down (local); back when healed", state="disconnected"),
    # The service runs under harness/testbed/powerloss.py's layer (local backend, a C compiler needed).
    KindInfo("power_loss", "services", "power_loss",
             "kill -9 and what it wrote but never fsynced is lost (local); restarted when healed",
             state="powered off"),
    # Repeated crashes: a durability bug is caught whatever moment a single kill would have hit.
    KindInfo("crash_loop", "services", "crash_loop",
             "kill -9 several times at seeded random moments of the window, restarted after each",
             CRASH_LOOP_ATTRIBUTES, {"kills": 3, "down_ms": 1000, "seed": 1}, state="crash-looping"),
)  # fmt: skip

# What a fault of each target type may name, for people (`harness list`).
TARGET_HELP: dict[str, str] = {
    "links": "links, a bank code (all its links) or 'switch' (its links to the banks)",
    "services": "'switch' or a bank code",
}

FAULT_KINDS: tuple[str, ...] = tuple(KINDS)
TOXICS: dict[str, dict[str, str]] = {k.name: dict(k.attributes) for k in KINDS.values() if k.toxic}
LINK_FAULTS: tuple[str, ...] = tuple(k.name for k in KINDS.values() if k.targets == "links" and not k.toxic)
ON_SERVICES: tuple[str, ...] = tuple(k.name for k in KINDS.values() if k.targets == "services")

# A fault's name is also its Toxiproxy toxic name, so it goes into URLs.
FAULT_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"
NAME_RULE = "use 1 to 40 lower-case letters, digits or '-', starting with a letter or digit"


def name_problem(name: str) -> str | None:
    """Why a fault name cannot be used (it would break the Toxiproxy URL that heals it), or None."""
    if re.fullmatch(FAULT_NAME, name):
        return None
    return f"{name!r} is not a usable fault name; {NAME_RULE} (pattern {FAULT_NAME})"


class FaultSpec(BaseModel):
    """One fault of a schedule: what, where, when (offset from the start of load) and how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    kind: FaultKind
    # Links (`switch->BNKB`), a bank code or `switch` (all of its links), or services for crash/pause.
    targets: list[str] = Field(min_length=1)
    start: float = Field(ge=0, description="seconds after load starts")
    duration: float = Field(gt=0, description="seconds until healed (for crash: until restarted)")
    attributes: dict[str, int] = Field(default_factory=dict)
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: float = Field(1.0, ge=0, le=1)

    @field_validator("targets", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check_attributes(self) -> FaultSpec:
        info = KINDS[self.kind]
        if info.toxic or info.attributes:  # toxics, and a crash loop
            unknown = sorted(set(self.attributes) - set(info.attributes))
            if unknown:
                raise ValueError(
                    f"attributes {unknown} do not apply to a {self.kind} fault; it takes "
                    + ", ".join(f"{k} ({v})" for k, v in info.attributes.items())
                )
            negative = sorted(k for k, v in self.attributes.items() if v < 0)
            if negative:
                raise ValueError(f"attributes {negative} must not be negative")
        elif self.attributes:
            raise ValueError(f"a {self.kind} fault takes no attributes")
        if self.kind == "crash_loop":
            self._check_crash_loop()
        return self

    def _check_crash_loop(self) -> None:
        defaults = KINDS["crash_loop"].defaults
        kills = self.attributes.get("kills", defaults["kills"])
        down_ms = self.attributes.get("down_ms", defaults["down_ms"])
        if not 1 <= kills <= 20:
            raise ValueError(f"attributes.kills: {kills}; a crash loop kills 1 to 20 times")
        need = kills * crash_loop_slot_s(down_ms)
        if self.duration < need:
            raise ValueError(
                f"a crash loop of {kills} kills, each dead {down_ms} ms and then restarted (about"
                f" {CRASH_LOOP_RESTART_S:g} s), needs a window of at least {need:g} s; duration is"
                f" {self.duration:g} s: lengthen it, or lower kills or down_ms"
            )

    def crash_loop_plan(self, target: str) -> list[float]:
        """The kill moments of a crash loop on `target`, in seconds from the window's start: one
        kill at a seeded random moment of each of `kills` equal slots, leaving each room to be dead
        `down_ms` and restart inside its slot. Same fault, same target: same moments."""
        defaults = KINDS["crash_loop"].defaults
        kills = self.attributes.get("kills", defaults["kills"])
        down_ms = self.attributes.get("down_ms", defaults["down_ms"])
        seed = self.attributes.get("seed", defaults["seed"])
        # Held until healed by hand (the chaos panel: infinite duration): slots of twice what a kill needs.
        slot = self.duration / kills if math.isfinite(self.duration) else 2 * crash_loop_slot_s(down_ms)
        room = max(0.0, slot - crash_loop_slot_s(down_ms))
        rng = random.Random(f"{seed}:{target}")  # a str seed is hashed the same in every process
        return [i * slot + rng.uniform(0, room) for i in range(kills)]

    @property
    def end(self) -> float:
        return self.start + self.duration


def service_links(service: str, links: Iterable[str]) -> list[str]:
    """The links into and out of a service. The switch's are those to and from the banks: customers
    never call it, and `customers->BNKA` belongs to BNKA."""
    return [
        name
        for name in links
        if service in name.split("->") and not (service == "switch" and name.startswith("customers->"))
    ]


def expand_targets(fault: FaultSpec, links: list[str], services: list[str]) -> list[str]:
    """Resolve bank codes and `switch` to their links (for link faults), validating every name."""
    if KINDS[fault.kind].targets == "services":
        bad = [t for t in fault.targets if t not in services]
        if bad:
            raise ValueError(f"{fault.kind} targets {bad}, which are not services; services are {services}")
        return list(fault.targets)
    out: list[str] = []
    for target in fault.targets:
        if target in links:
            out.append(target)
            continue
        touching = service_links(target, links)
        if not touching or target == "customers":
            raise ValueError(
                f"{fault.kind} targets {target!r}, which is neither a link nor a service; links are {links}"
            )
        out.extend(touching)
    return list(dict.fromkeys(out))


def _shared_services(a: FaultSpec, a_targets: Sequence[str], b: FaultSpec, b_targets: Sequence[str]) -> list[str]:
    """Services both faults hold. Healing the inner one of two would undo the outer one too (a SIGCONT
    ends both pauses; a restart ends a crash), so a service takes one service fault at a time."""
    if KINDS[a.kind].targets != "services" or KINDS[b.kind].targets != "services":
        return []  # link faults stack: Toxiproxy keeps each toxic, the nemesis counts who holds a link down
    return sorted(set(a_targets) & set(b_targets))


def service_conflict(
    new: FaultSpec, new_targets: Sequence[str], active: Iterable[tuple[FaultSpec, Sequence[str]]]
) -> str | None:
    """Why `new` cannot be applied while the `active` faults (with their expanded targets) hold a
    service it targets, or None."""
    for fault, targets in active:
        shared = _shared_services(new, new_targets, fault, targets)
        if shared:
            return f"{', '.join(shared)} is already under {fault.kind} fault {fault.name!r}; heal it first"
    return None


def schedule_conflict(faults: Sequence[FaultSpec], links: list[str], services: list[str]) -> str | None:
    """The first service fault of a schedule whose window overlaps an earlier-listed one on the same
    service (the nemesis would refuse it mid-run), as a message naming both by index; or None.
    Windows that only touch do not overlap: the schedule heals before it applies at one instant."""
    expanded = [expand_targets(f, links, services) for f in faults]
    for i, new in enumerate(faults):
        for j in range(i):
            old = faults[j]
            if not (new.start < old.end and old.start < new.end):
                continue
            shared = _shared_services(new, expanded[i], old, expanded[j])
            if shared:
                return (
                    f"faults[{i}]{_named(new)}: {new.kind} of {', '.join(shared)} from {new.start:g} s to"
                    f" {new.end:g} s overlaps faults[{j}]{_named(old)} ({old.kind} of {', '.join(shared)},"
                    f" {old.start:g}-{old.end:g} s); one service fault at a time per service: move or shorten"
                    " one so they do not overlap"
                )
    return None


def _named(fault: FaultSpec) -> str:
    return f" {fault.name!r}" if fault.name else ""


def losing_power(faults: Iterable[FaultSpec]) -> list[str]:
    """The services a schedule's power_loss faults target: the testbed starts them under the
    power-loss layer (harness/testbed/powerloss.py)."""
    return sorted({t for f in faults if KINDS[f.kind].mechanism == "power_loss" for t in f.targets})


def catalogue() -> list[dict[str, Any]]:
    """Every fault kind with what it targets, its attributes (with units), the panel's defaults and help."""
    return [
        {
            "kind": k.name,
            "targets": k.targets,
            "attributes": dict(k.attributes),
            "defaults": dict(k.defaults),
            "toxic": k.toxic,
            "help": k.help,
        }
        for k in KINDS.values()
    ]
