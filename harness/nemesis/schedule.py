"""Playing a fault schedule: each fault applied at its start and healed at its end, against the wall clock."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from harness.errors import FaultError
from harness.faults import FaultSpec

if TYPE_CHECKING:
    from harness.nemesis.injector import Nemesis


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
            self.nemesis.sample_counters()  # the baseline's counters start here
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
                for name in {f.name: f for _, _, _, f in self.events}:
                    try:
                        self.nemesis.heal(name)
                    except FaultError as exc:  # in the timeline as heal-failed; heal the rest
                        self.error = self.error or exc

    def stop(self, timeout_s: float = 60.0) -> None:
        self.stop_event.set()
        self.join(timeout_s)
