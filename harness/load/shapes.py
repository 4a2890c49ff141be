"""Load shapes for the payment customers: constant, ramp and spike, each with a bounded duration.

Locust runs a `LoadTestShape` automatically when one is visible in the locustfile, so the shapes
live here and `harness/load/locustfile.py` binds only the one asked for with `--shape` (or
PAYSWITCH_SHAPE). Their parameters are Locust custom arguments (also editable in the web UI):

    --shape-users N        constant users; peak of a ramp; users during a spike
    --shape-base-users N   users at the start of a ramp; users before and after a spike
    --shape-spawn-rate R   users started (or stopped) per second
    --shape-duration S     total duration; the test stops after it, whatever the shape
    --shape-ramp-s S       ramp: seconds from base to peak users, then hold
    --spike-at-s S         spike: when the spike starts
    --spike-s S            spike: how long it lasts

Imports Locust (and so gevent's monkey-patching): import it only inside a Locust process.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from locust import LoadTestShape
from locust.argument_parser import LocustArgumentParser


@dataclass(frozen=True, slots=True)
class ShapeSettings:
    users: int = 10
    base_users: int = 1
    spawn_rate: float = 10.0
    duration_s: float = 60.0
    ramp_s: float = 30.0
    spike_at_s: float = 10.0
    spike_s: float = 10.0

    @classmethod
    def from_options(cls, options: Any) -> ShapeSettings:
        """Read the --shape-* custom arguments; a missing one keeps its default."""
        defaults = cls()

        def get(name: str, default: float) -> float:
            value = getattr(options, name, None)
            return default if value is None else float(value)

        settings = cls(
            users=int(get("shape_users", defaults.users)),
            base_users=int(get("shape_base_users", defaults.base_users)),
            spawn_rate=get("shape_spawn_rate", defaults.spawn_rate),
            duration_s=get("shape_duration", defaults.duration_s),
            ramp_s=get("shape_ramp_s", defaults.ramp_s),
            spike_at_s=get("spike_at_s", defaults.spike_at_s),
            spike_s=get("spike_s", defaults.spike_s),
        )
        settings.check()
        return settings

    def check(self) -> None:
        problems = []
        if self.users < 0 or self.base_users < 0:
            problems.append("--shape-users and --shape-base-users must not be negative")
        if not self.spawn_rate > 0:
            problems.append("--shape-spawn-rate must be positive")
        if not (0 < self.duration_s < math.inf):
            problems.append("--shape-duration must be a positive number of seconds")
        if self.ramp_s < 0 or self.spike_at_s < 0 or self.spike_s < 0:
            problems.append("--shape-ramp-s, --spike-at-s and --spike-s must not be negative")
        if problems:
            raise ValueError("load shape: " + "; ".join(problems))


def add_arguments(parser: LocustArgumentParser, in_web_ui: bool) -> None:
    """Register the shape parameters as Locust custom arguments (env vars PAYSWITCH_SHAPE_*, ...)."""
    d = ShapeSettings()
    ui: dict[str, Any] = {"include_in_web_ui": in_web_ui}  # shown in the web UI only when a shape is in use
    parser.add_argument("--shape-users", type=int, default=d.users, env_var="PAYSWITCH_SHAPE_USERS",
                       help="constant users; peak of a ramp; users during a spike", **ui)  # fmt: skip
    parser.add_argument("--shape-base-users", type=int, default=d.base_users, env_var="PAYSWITCH_SHAPE_BASE_USERS",
                       help="users at the start of a ramp; users before and after a spike", **ui)  # fmt: skip
    parser.add_argument("--shape-spawn-rate", type=float, default=d.spawn_rate, env_var="PAYSWITCH_SHAPE_SPAWN_RATE",
                       help="users started or stopped per second", **ui)  # fmt: skip
    parser.add_argument("--shape-duration", type=float, default=d.duration_s, env_var="PAYSWITCH_SHAPE_DURATION",
                       help="total duration in seconds; the test stops after it", **ui)  # fmt: skip
    parser.add_argument("--shape-ramp-s", type=float, default=d.ramp_s, env_var="PAYSWITCH_SHAPE_RAMP_S",
                       help="ramp: seconds from base to peak users", **ui)  # fmt: skip
    parser.add_argument("--spike-at-s", type=float, default=d.spike_at_s, env_var="PAYSWITCH_SPIKE_AT_S",
                       help="spike: seconds after start when the spike begins", **ui)  # fmt: skip
    parser.add_argument("--spike-s", type=float, default=d.spike_s, env_var="PAYSWITCH_SPIKE_S",
                       help="spike: how long the spike lasts, in seconds", **ui)  # fmt: skip


class BoundedShape(LoadTestShape):
    """A shape that stops the test after --shape-duration seconds."""

    abstract: ClassVar[bool] = True
    name: ClassVar[str] = ""

    def settings(self) -> ShapeSettings:
        options = self.runner.environment.parsed_options if self.runner is not None else None
        return ShapeSettings.from_options(options)

    def tick(self) -> tuple[int, float] | None:
        s = self.settings()
        t = time.perf_counter() - self.start_time
        if t >= s.duration_s:
            return None
        return self.users_at(t, s), self.spawn_rate_at(t, s)

    def users_at(self, t: float, s: ShapeSettings) -> int:
        raise NotImplementedError

    def spawn_rate_at(self, t: float, s: ShapeSettings) -> float:
        return s.spawn_rate


class ConstantShape(BoundedShape):
    """--shape-users users (started at --shape-spawn-rate) for --shape-duration seconds."""

    abstract: ClassVar[bool] = False
    name: ClassVar[str] = "constant"

    def users_at(self, t: float, s: ShapeSettings) -> int:
        return s.users


class RampShape(BoundedShape):
    """From --shape-base-users to --shape-users linearly over --shape-ramp-s, then hold."""

    abstract: ClassVar[bool] = False
    name: ClassVar[str] = "ramp"

    def users_at(self, t: float, s: ShapeSettings) -> int:
        if s.ramp_s <= 0 or t >= s.ramp_s:
            return s.users
        return round(s.base_users + (s.users - s.base_users) * t / s.ramp_s)


class SpikeShape(BoundedShape):
    """--shape-base-users, then --shape-users for --spike-s from --spike-at-s, then base again.

    The spike's users all start (and stop) within about a second, whatever --shape-spawn-rate says."""

    abstract: ClassVar[bool] = False
    name: ClassVar[str] = "spike"

    def users_at(self, t: float, s: ShapeSettings) -> int:
        return s.users if s.spike_at_s <= t < s.spike_at_s + s.spike_s else s.base_users

    def spawn_rate_at(self, t: float, s: ShapeSettings) -> float:
        return max(s.spawn_rate, float(abs(s.users - s.base_users)))


SHAPES: dict[str, type[BoundedShape]] = {cls.name: cls for cls in (ConstantShape, RampShape, SpikeShape)}
