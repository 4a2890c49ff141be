"""The open model's arrival schedule: when customers arrive, whatever the system answers.

Pure (no Locust, no clock): a shape says the arrival rate over time, `schedule` turns it into the
offsets (seconds from the start) at which customers arrive, and `for_slice` deals them out to the
Locust processes without duplicates. The locustfile's arrival generator plays one slice.

Shapes are rates (arrivals per second), the open-model twins of the closed model's user counts:

- constant: `rate` for the whole duration;
- ramp: from `base_rate` linearly to `rate` over `ramp_s`, then `rate`;
- spike: `base_rate`, then `rate` for `spike_s` from `spike_at_s`, then `base_rate` again.

Arrival times are the inverse of the cumulative rate Λ(t) = ∫ rate: with `even` spacing (the
default) the k-th arrival is where Λ reaches k + 0.5, so a constant 150/s puts one every 6.67 ms
and any window of w seconds holds rate*w arrivals, give or take one; that makes a fault window's
demand exact and a run repeatable. `poisson` spaces them by exponential draws of Λ instead
(independent customers, bursts included), deterministic from the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ShapeKind = Literal["constant", "ramp", "spike"]
Spacing = Literal["even", "poisson"]
SHAPE_KINDS: tuple[ShapeKind, ...] = ("constant", "ramp", "spike")
SPACINGS: tuple[Spacing, ...] = ("even", "poisson")

# A schedule longer than this is a mistake (10 minutes at 2,000/s), refused before it eats memory.
MAX_ARRIVALS = 1_200_000


@dataclass(frozen=True, slots=True)
class RateShape:
    """Arrival rate over [0, duration_s): see the module docstring for each kind."""

    kind: ShapeKind
    rate: float  # arrivals/s: constant rate; peak of a ramp; rate during a spike
    duration_s: float
    base_rate: float = 0.0  # ramp: rate at the start; spike: rate before and after
    ramp_s: float = 0.0
    spike_at_s: float = 0.0
    spike_s: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in SHAPE_KINDS:
            problems.append(f"kind {self.kind!r}: use one of {', '.join(SHAPE_KINDS)}")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            problems.append(f"rate {self.rate}: must be a positive number of arrivals per second")
        if not (self.base_rate >= 0 and math.isfinite(self.base_rate)):
            problems.append(f"base_rate {self.base_rate}: must be zero or more arrivals per second")
        if not (0 < self.duration_s < math.inf):
            problems.append(f"duration_s {self.duration_s}: must be a positive number of seconds")
        if min(self.ramp_s, self.spike_at_s, self.spike_s) < 0:
            problems.append("ramp_s, spike_at_s and spike_s must not be negative")
        if problems:
            raise ValueError("arrival shape: " + "; ".join(problems))
        if self.expected() > MAX_ARRIVALS:
            raise ValueError(
                f"arrival shape: {self.expected():,.0f} arrivals; at most {MAX_ARRIVALS:,} per run"
                " (lower the rate or the duration)"
            )

    def pieces(self) -> list[tuple[float, float, float, float]]:
        """The rate as linear pieces (start, end, rate at start, rate at end) covering [0, duration_s)."""
        d = self.duration_s
        if self.kind == "constant":
            cuts = [(0.0, d, self.rate, self.rate)]
        elif self.kind == "ramp":
            r = min(self.ramp_s, d)
            peak_at_r = self.base_rate + (self.rate - self.base_rate) * (r / self.ramp_s) if self.ramp_s else self.rate
            cuts = [(0.0, r, self.base_rate, peak_at_r), (r, d, self.rate, self.rate)]
        else:
            a, b = min(self.spike_at_s, d), min(self.spike_at_s + self.spike_s, d)
            base = self.base_rate
            cuts = [(0.0, a, base, base), (a, b, self.rate, self.rate), (b, d, base, base)]
        return [c for c in cuts if c[1] > c[0]]

    def rate_at(self, t: float) -> float:
        for start, end, r0, r1 in self.pieces():
            if start <= t < end:
                return r0 + (r1 - r0) * (t - start) / (end - start)
        return 0.0

    def expected(self) -> float:
        """Λ(duration): how many arrivals the shape asks for."""
        return sum((end - start) * (r0 + r1) / 2 for start, end, r0, r1 in self.pieces())


def _invert(pieces: Sequence[tuple[float, float, float, float]], targets: Sequence[float]) -> list[float]:
    """For each target (ascending), the t at which the cumulative rate reaches it."""
    out: list[float] = []
    k = 0
    done = 0.0  # Λ at the start of the current piece
    for start, end, r0, r1 in pieces:
        span = end - start
        slope = (r1 - r0) / span
        area = span * (r0 + r1) / 2
        while k < len(targets) and targets[k] < done + area:
            need = targets[k] - done  # solve r0*x + slope*x^2/2 = need for x in [0, span)
            x = _root(r0, slope, need)
            out.append(start + min(max(x, 0.0), span))
            k += 1
        done += area
    return out


def _root(r0: float, slope: float, need: float) -> float:
    """x >= 0 with r0*x + slope*x^2/2 = need: how far into a linear piece its area reaches `need`."""
    if abs(slope) < 1e-12:  # a constant piece (a piece of zero rate has no area, so is never asked)
        return need / r0
    # The root that lies in the piece; max() guards float noise below zero.
    return (-r0 + math.sqrt(max(0.0, r0 * r0 + 2 * slope * need))) / slope


def schedule(shape: RateShape, spacing: Spacing = "even", seed: int = 1) -> list[float]:
    """Every arrival's offset in seconds from the start, ascending, all in [0, duration_s)."""
    total = shape.expected()
    if spacing == "even":
        targets = [k + 0.5 for k in range(math.floor(total + 0.5))]
    elif spacing == "poisson":
        rng = random.Random(seed)
        targets = []
        at = rng.expovariate(1.0)
        while at < total:
            targets.append(at)
            at += rng.expovariate(1.0)
    else:
        raise ValueError(f"arrival spacing {spacing!r}: use one of {', '.join(SPACINGS)}")
    return _invert(shape.pieces(), targets)


def as_kind(raw: str) -> ShapeKind:
    for kind in SHAPE_KINDS:
        if raw == kind:
            return kind
    raise ValueError(f"rate shape {raw!r}: use one of {', '.join(SHAPE_KINDS)}")


def as_spacing(raw: str) -> Spacing:
    for spacing in SPACINGS:
        if raw == spacing:
            return spacing
    raise ValueError(f"arrival spacing {raw!r}: use one of {', '.join(SPACINGS)}")


def for_slice(offsets: Sequence[float], index: int, count: int) -> list[tuple[int, float]]:
    """The arrivals (number, offset) slice `index` of `count` plays: every count-th, so the slices are
    disjoint, together are the whole schedule, and each spreads evenly over the run."""
    if not 0 <= index < count:
        raise ValueError(f"arrival slice {index} of {count}: need 0 <= index < count")
    return [(k, offsets[k]) for k in range(index, len(offsets), count)]
