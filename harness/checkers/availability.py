"""Availability: per-second and per-phase success ratio, latency and errors, time to detect and time
to recover, nines and error-budget burn, and the SLO verdicts (DESIGN.md section 5).

Pure functions over a history (`history.jsonl`) and a fault timeline (`faults.jsonl`), so a saved
run can be re-checked later. An operation is *good* when it is a definitive answer (ACSC, or a
business reject) within the latency SLO; everything else spends error budget.

Time is read by COMPLETE time for the buckets, the phase timeline, time to detect and time to
recover: an outcome only exists once the customer has it, and the history is appended in that
order. Bucketing by invoke time would book a 10 s timeout against the second it was sent, so a
timeout fault would show a time to detect of ~0 s although no customer knew anything for 10 s, and
the seconds just after a heal would look clean while customers were still hanging. By completion,
time to detect is when the first customer actually got a bad answer, recovery waits for the
stragglers, and a second's bucket is final once that second has passed (a live view agrees with a
re-check). The price: a slow operation counts in the second it finished, and a bucket's count is
the completion rate, which drops to zero while customers hang; that is the signal we want.

The per-phase figures that the SLO verdicts judge are by DEMAND: each payment counts in the phase
it was asked in (its invoke time, the open model's scheduled arrival), so a frozen switch shows as
its whole demand unanswered rather than as the few answers that came back during the freeze; a
payment in flight when a fault was applied counts in `fault` (the fault decided its answer). The
same payments by completion are kept beside them (`phases_by_completion`); overall both are one set.

Phases: `baseline` until the first apply, `fault` while any fault is active, then `recovery` from
the heal until `recovery_window_s` consecutive seconds each at least the baseline ratio minus a
tolerance (from the answer that starts them), then `steady` until the next apply. A flapping fault
repeats fault, recovery (steady) for every quiet gap; time to recover is measured from the last heal.

Each time says how precisely it is known (`resolution_s` in the summary). Time to detect is exact:
an apply and a completion are both recorded instants. Recovery is decided on the 1 s buckets, as
before, but no longer reported at a bucket edge (which snapped 0.2 s to about 1 s): the instant is
the answer, within the second before the streak, from which the same windows slid there hold. So it
is an answer a customer got; the system came back somewhere after the answer before it (or the
heal), and that gap is its resolution: no customer could have seen it sooner.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import Any

from harness.history import BUSINESS_REASONS, STATUS_QUERY
from harness.timeline import FaultWindow, active_periods, fault_windows

PHASES = ("baseline", "fault", "recovery", "steady")

# A run with no bad operation has infinitely many nines; report this many instead ("at least").
MAX_NINES = 9.0

# A history longer than this is a clock error (an epoch of 0, milliseconds for seconds), not a run.
MAX_SPAN_S = 7 * 24 * 3600

# Per-operation state, kept in one bytearray so counting and searching run in C.
_DOWN, _GOOD, _SLOW = 0, 1, 2  # technical failure | good | definitive but over the latency SLO
_IS_GOOD = bytes(int(i == _GOOD) for i in range(256))  # state -> 1 if good, for bytearray.translate

BUCKET_S = 1.0  # per-second figures and charts
DETECT_RESOLUTION_S = 0.0  # time to detect: an apply and a completion, both recorded instants


@dataclass(frozen=True, slots=True)
class PhaseTarget:
    """Per-phase override of the SLO targets (None: the SLO's own target, if it sets one for that
    phase). `judged=False`: no success-ratio verdict in that phase at all (a `null` expectation)."""

    success_ratio: float | None = None
    p99_ms: float | None = None
    judged: bool = True


@dataclass(frozen=True)
class SLO:
    """What "available" means for a run, and the targets the verdicts compare against.

    `success_ratio` is the target for baseline and steady (and the error budget); `p99_ms` the
    target for baseline; `phase_targets` adds or replaces targets per phase (e.g. a floor during
    `fault`). Recovery is a good answer that starts `recovery_window_s` consecutive 1 s windows,
    each non-empty with a success ratio of at least the baseline's minus `recovery_tolerance`.
    """

    latency_slo_ms: float = 2000.0
    success_ratio: float = 0.999
    p99_ms: float | None = None
    max_recovery_s: float | None = None
    recovery_window_s: int = 3
    recovery_tolerance: float = 0.01
    phase_targets: dict[str, PhaseTarget] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.latency_slo_ms > 0:
            raise ValueError(f"SLO latency_slo_ms={self.latency_slo_ms}: must be > 0 (milliseconds)")
        if not 0 < self.success_ratio < 1:
            raise ValueError(f"SLO success_ratio={self.success_ratio}: must be in (0, 1), e.g. 0.999")
        if self.recovery_window_s < 1:
            raise ValueError(f"SLO recovery_window_s={self.recovery_window_s}: must be at least 1 second")
        if not 0 <= self.recovery_tolerance < 1:
            raise ValueError(f"SLO recovery_tolerance={self.recovery_tolerance}: must be in [0, 1)")
        if self.max_recovery_s is not None and self.max_recovery_s < 0:
            raise ValueError(f"SLO max_recovery_s={self.max_recovery_s}: must be >= 0 seconds")
        unknown = sorted(set(self.phase_targets) - set(PHASES))
        if unknown:
            raise ValueError(f"SLO phase_targets names unknown phases {unknown}; phases are: {', '.join(PHASES)}")
        for phase, t in self.phase_targets.items():
            if t.success_ratio is not None and not 0 <= t.success_ratio <= 1:
                raise ValueError(f"SLO phase_targets[{phase!r}].success_ratio={t.success_ratio}: must be in [0, 1]")

    def ratio_target(self, phase: str) -> float | None:
        override = self.phase_targets.get(phase)
        if override is not None and not override.judged:
            return None
        if override is not None and override.success_ratio is not None:
            return override.success_ratio
        return self.success_ratio if phase in ("baseline", "steady") else None

    def p99_target(self, phase: str) -> float | None:
        override = self.phase_targets.get(phase)
        if override is not None and override.p99_ms is not None:
            return override.p99_ms
        return self.p99_ms if phase == "baseline" else None


@dataclass(frozen=True, slots=True)
class Stats:
    """Operations completed in a span of time (a phase, or the whole run)."""

    duration_s: float
    operations: int
    good: int
    slow: int  # definitive answers over the latency SLO (not available, no reason code)
    errors: dict[str, int]  # every outcome other than ok, by reason (business rejects included)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p999_ms: float | None

    @property
    def success_ratio(self) -> float | None:
        return self.good / self.operations if self.operations else None

    @property
    def throughput(self) -> float | None:
        """Operations per second of the phase (arrivals by demand; completions by completion)."""
        return self.operations / self.duration_s if self.duration_s > 0 else None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One second of completions, [start + t, start + t + 1)."""

    t: int
    count: int
    good: int
    slow: int
    errors: dict[str, int]
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def success_ratio(self) -> float | None:
        return self.good / self.count if self.count else None


@dataclass(frozen=True, slots=True)
class Segment:
    phase: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Recovery:
    """After a heal that left no fault active: when the success ratio was back, if it was.

    `resolution_s`: the system came back within this long before `recovered` (the gap since the
    answer before it, or since the heal); None when it did not recover."""

    heal: float
    recovered: float | None
    resolution_s: float | None = None

    @property
    def time_to_recover_s(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.heal


@dataclass(frozen=True, slots=True)
class Verdict:
    name: str
    target: float | None
    measured: float | None
    ok: bool


@dataclass
class Availability:
    slo: SLO
    operations: int
    start: float | None  # first completion (epoch seconds); offsets in the summary are from here
    end: float | None  # last completion
    overall: Stats
    # Per phase, by demand: each payment in the phase it was asked in (its invoke time; the open
    # model's scheduled arrival), or in `fault` when a fault was applied while it was in flight. The
    # SLO verdicts judge these. Overall both placements are the same set.
    phases: dict[str, Stats]
    # The same payments placed by completion, the placement of the buckets, time to detect and
    # time to recover (see the module's docstring).
    phases_by_completion: dict[str, Stats]
    timeline: list[Segment]
    faults: list[FaultWindow]
    recoveries: list[Recovery]
    baseline_ratio: float | None
    recovery_threshold: float | None
    time_to_recover_s: float | None
    time_to_recover_resolution_s: float | None
    per_second: list[Bucket]
    verdicts: list[Verdict]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def nines(self) -> float | None:
        return nines(self.overall.success_ratio)

    @property
    def error_budget_burn(self) -> float | None:
        return error_budget_burn(self.overall.success_ratio, self.slo.success_ratio)

    def summary(self) -> dict[str, Any]:
        t0 = self.start or 0.0

        def off(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 3)

        def stats(s: Stats) -> dict[str, Any]:
            ratio = s.success_ratio
            return {
                "duration_s": round(s.duration_s, 3),
                "operations": s.operations,
                "good": s.good,
                "slow": s.slow,
                "success_ratio": _round(ratio, 6),
                "nines": _round(nines(ratio), 3),
                # The budget is the SLO's; per phase this says how much of it that phase spent.
                "error_budget_burn": _round(error_budget_burn(ratio, self.slo.success_ratio), 3),
                "throughput": _round(s.throughput, 2),
                "p50_ms": _round(s.p50_ms, 1),
                "p95_ms": _round(s.p95_ms, 1),
                "p99_ms": _round(s.p99_ms, 1),
                "p999_ms": _round(s.p999_ms, 1),
                "errors": s.errors,
            }

        return {
            "ok": self.ok,
            "slo": asdict(self.slo),
            "operations": self.operations,
            "start": self.start,
            "end": self.end,
            "duration_s": round(self.overall.duration_s, 3),
            "overall": stats(self.overall),
            "phases": {name: stats(s) for name, s in self.phases.items()},
            "phases_by_completion": {name: stats(s) for name, s in self.phases_by_completion.items()},
            "baseline_ratio": _round(self.baseline_ratio, 6),
            "recovery_threshold": _round(self.recovery_threshold, 6),
            "time_to_recover_s": _round(self.time_to_recover_s, 3),
            # How precisely each time is known, in seconds (0.0: exact); null when there is no time.
            "resolution_s": {
                "time_to_detect_s": DETECT_RESOLUTION_S,
                "time_to_recover_s": _round(self.time_to_recover_resolution_s, 3),
                "buckets_s": BUCKET_S,
            },
            "timeline": [{"phase": s.phase, "start": off(s.start), "end": off(s.end)} for s in self.timeline],
            "faults": [
                {
                    "fault": w.fault,
                    "kind": w.kind,
                    "targets": list(w.targets),
                    "apply": off(w.apply),
                    "heal": off(w.heal),
                    "healed": w.heal is not None,
                    "time_to_detect_s": _round(w.time_to_detect_s, 3),
                    "operations": w.operations,
                    "success_ratio": _round(w.good / w.operations if w.operations else None, 6),
                }
                for w in self.faults
            ],
            "recoveries": [
                {
                    "heal": off(r.heal),
                    "recovered": off(r.recovered),
                    "time_to_recover_s": _round(r.time_to_recover_s, 3),
                    "resolution_s": _round(r.resolution_s, 3),
                }
                for r in self.recoveries
            ],
            "verdicts": [
                {"name": v.name, "target": _round(v.target, 6), "measured": _round(v.measured, 6), "ok": v.ok}
                for v in self.verdicts
            ],
            "warnings": self.warnings,
            "per_second": [
                {
                    "t": b.t,
                    "count": b.count,
                    "good": b.good,
                    "slow": b.slow,
                    "success_ratio": _round(b.success_ratio, 6),
                    "throughput": b.count,  # completions in a 1 s bucket (the last one may be partial)
                    "p50_ms": _round(b.p50_ms, 1),
                    "p95_ms": _round(b.p95_ms, 1),
                    "p99_ms": _round(b.p99_ms, 1),
                    "errors": b.errors,
                }
                for b in self.per_second
            ],
        }


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


# ----------------------------------------------------------------------------- reading run files


# ----------------------------------------------------------------------------- small measures


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values: the smallest value with at least a fraction `q` of
    all values at or below it (an observed latency, never an interpolation). None when empty."""
    n = len(ordered)
    if n == 0:
        return None
    rank = math.ceil(q * n - 1e-9)  # 0.99 * 100 must be rank 99, not 100 by float noise
    return ordered[min(n, max(1, rank)) - 1]


def nines(ratio: float | None) -> float | None:
    """-log10(1 - ratio): 0.999 -> 3. A perfect ratio reports MAX_NINES."""
    if ratio is None:
        return None
    if ratio >= 1:
        return MAX_NINES
    return min(MAX_NINES, -math.log10(1 - ratio))


def error_budget_burn(ratio: float | None, target: float) -> float | None:
    """Share of the error budget spent: 1.0 spent exactly, above 1 overspent."""
    if ratio is None:
        return None
    return (1 - ratio) / (1 - target)


# ----------------------------------------------------------------------------- the checker


def check_availability(
    history: Sequence[Mapping[str, Any]],
    faults: Iterable[Mapping[str, Any]] = (),
    slo: SLO | None = None,
    *,
    op_types: Collection[str] | None = ("payment",),
) -> Availability:
    """Measure availability of a run. `op_types` selects the operations that count (status queries
    are follow-ups of an unknown payment, not customer payments); None counts every operation."""
    slo = slo or SLO()
    windows = fault_windows(faults)
    warnings = [
        f"fault {w.fault!r} applied at {w.apply} was never healed; it counts as active until the end of the history"
        for w in windows
        if w.heal is None
    ]
    if op_types is None:
        selected = list(history)
    else:
        wanted = frozenset(op_types)
        selected = [o for o in history if o.get("op", "payment") in wanted]
    if not selected:
        return _empty(slo, windows, warnings)

    ops, completes = _sorted_by_complete(selected)
    n = len(ops)
    t0, t_end = float(completes[0]), float(completes[-1])
    if t_end - t0 > MAX_SPAN_S:
        raise ValueError(
            f"history spans {t_end - t0:,.0f} s, from operation {ops[0].get('id')!r} to {ops[-1].get('id')!r}; "
            "'complete' must be epoch seconds (is one clock wrong, or in milliseconds?)"
        )
    lats, keys, state = _classify(ops, slo.latency_slo_ms)

    # Buckets: [t0 + b, t0 + b + 1); the same bisect defines bucket and phase membership.
    n_buckets = int(t_end - t0) + 1
    bounds = [0]
    for b in range(1, n_buckets):
        bounds.append(bisect_left(completes, t0 + b, bounds[-1]))
    bounds.append(n)
    per_second = []
    bucket_lats: list[list[float]] = []  # each sorted once; phases merge these runs
    for b in range(n_buckets):
        s, e = bounds[b], bounds[b + 1]
        ordered = sorted(lats[s:e])
        bucket_lats.append(ordered)
        per_second.append(
            Bucket(
                t=b,
                count=e - s,
                good=state.count(_GOOD, s, e),
                slow=state.count(_SLOW, s, e),
                errors=_errors(Counter(keys[s:e])),
                p50_ms=percentile(ordered, 0.50),
                p95_ms=percentile(ordered, 0.95),
                p99_ms=percentile(ordered, 0.99),
            )
        )

    periods = active_periods(windows)
    first_apply = periods[0][0] if periods else math.inf
    base_end = bisect_left(completes, first_apply)
    baseline_ratio = state.count(_GOOD, 0, base_end) / base_end if base_end else None
    reference = baseline_ratio if baseline_ratio is not None else slo.success_ratio
    threshold = reference - slo.recovery_tolerance
    good_before = list(accumulate(state.translate(_IS_GOOD), initial=0))  # good ops among the first k

    def streak_start(heal: float, next_apply: float) -> int | None:
        """First of the first `recovery_window_s` consecutive buckets, all after the heal and before
        the next apply, each non-empty with a ratio >= threshold. An empty second breaks the run:
        no answers is not recovery (customers are hanging)."""
        b = max(0, math.ceil(heal - t0))
        while b < n_buckets and t0 + b < heal:  # float noise around the ceiling
            b += 1
        while b > 0 and t0 + b - 1 >= heal:
            b -= 1
        streak = 0
        for k in range(b, n_buckets):
            if t0 + k + 1 > next_apply:
                return None
            bucket = per_second[k]
            if bucket.count and bucket.good >= threshold * bucket.count:
                streak += 1
                if streak == slo.recovery_window_s:
                    return k - streak + 1
            else:
                streak = 0
        return None

    def sustained(s: int, c: float) -> bool:
        """The same windows slid to start at c (op index s is the first completing at c)."""
        for i in range(1, slo.recovery_window_s + 1):
            e = bisect_left(completes, c + i, s)
            if e == s or good_before[e] - good_before[s] < threshold * (e - s):
                return False
            s = e
        return True

    def recovered_at(heal: float, next_apply: float) -> Recovery:
        """Whether it recovered is decided on whole seconds, as the buckets show it: sliding the
        window over every answer would give a degraded system hundreds of chances a second to look
        recovered by luck. When is then found to the answer: the first good completion, in the
        second before the streak and not before the heal, from which the windows slid there still
        hold; else the streak's first answer. Resolution: the gap since the answer before (or the
        heal), in which the system came back unseen."""
        b = streak_start(heal, next_apply)
        if b is None:
            return Recovery(heal, None)
        lo = bisect_left(completes, max(heal, t0 + b - 1))
        at = bounds[b]  # the streak's first answer (its first bucket is not empty)
        for j in range(lo, at):
            if state[j] == _GOOD and sustained(bisect_left(completes, completes[j], lo, j), completes[j]):
                at = j
                break
        c = completes[at]
        first = bisect_left(completes, c, 0, at)
        before = completes[first - 1] if first else heal
        return Recovery(heal, c, c - max(before, heal))

    # The phase timeline over the whole time axis, then clipped to the run.
    axis: list[Segment] = []
    recoveries: list[Recovery] = []
    if not periods:
        axis.append(Segment("baseline", -math.inf, math.inf))
    else:
        axis.append(Segment("baseline", -math.inf, periods[0][0]))
        for k, (a, h) in enumerate(periods):
            axis.append(Segment("fault", a, h))
            if h == math.inf:
                break
            nxt = periods[k + 1][0] if k + 1 < len(periods) else math.inf
            recovery = recovered_at(h, nxt)
            recoveries.append(recovery)
            r = recovery.recovered
            if r is None:
                axis.append(Segment("recovery", h, nxt))
            else:
                axis += [Segment("recovery", h, r), Segment("steady", r, nxt)]
    timeline = [Segment(s.phase, max(s.start, t0), min(s.end, t_end)) for s in axis]
    timeline = [s for s in timeline if s.end > s.start]
    if not timeline:  # every operation completed in the same instant
        timeline = [Segment(s.phase, t0, t_end) for s in axis if s.start <= t0 < s.end]

    # Operations per phase: the segments are contiguous, so each is an index range of the sorted ops.
    starts = [0] + [bisect_left(completes, s.start) for s in timeline[1:]] + [n]
    ranges: dict[str, list[tuple[int, int]]] = {p: [] for p in PHASES}
    durations = dict.fromkeys(PHASES, 0.0)
    for k, seg in enumerate(timeline):
        ranges[seg.phase].append((starts[k], starts[k + 1]))
        durations[seg.phase] += seg.end - seg.start
    phases: dict[str, Stats] = {}
    everything: list[float] = []
    for p in PHASES:
        chosen: list[float] = []
        for s, e in ranges[p]:
            # Whole buckets are sorted runs and timsort merges runs in near-linear time; only the
            # partial buckets at a segment's edges are really sorted again.
            b = bisect_right(bounds, s) - 1
            while b < n_buckets and bounds[b] < e:
                lo, hi = bounds[b], bounds[b + 1]
                chosen += bucket_lats[b] if s <= lo and hi <= e else lats[max(s, lo) : min(e, hi)]
                b += 1
        chosen.sort()
        phases[p] = _stats(durations[p], ranges[p], chosen, state, keys)
        everything += chosen
    everything.sort()  # four sorted runs: timsort merges them in near-linear time
    overall = _stats(t_end - t0, [(0, n)], everything, state, keys)

    # Time to detect: the first bad completion at or after the apply, before the next apply of the
    # same fault and before the system is next steady (a later failure is not this fault's doing).
    steady_starts = [s.start for s in axis if s.phase == "steady"]
    measured: list[FaultWindow] = []
    for w in windows:
        later = [x.apply for x in windows if x.fault == w.fault and x.apply > w.apply]
        deadline = min([*later, *(s for s in steady_starts if s > w.apply), math.inf])
        i = bisect_left(completes, w.apply)
        j = n if deadline == math.inf else bisect_left(completes, deadline)
        hits = [x for x in (state.find(_DOWN, i, j), state.find(_SLOW, i, j)) if x >= 0]
        ttd = completes[min(hits)] - w.apply if hits else None
        stop = n if w.heal is None else bisect_left(completes, w.heal)
        measured.append(
            FaultWindow(
                w.fault, w.kind, w.targets, w.apply, w.heal, ttd, max(0, stop - i), state.count(_GOOD, i, max(i, stop))
            )
        )

    # Demand per phase (the judged figures): each payment in the phase its invoke time (the open
    # model's scheduled arrival) falls in, except that one still in flight when a fault was applied
    # is the fault's: the fault decided its answer, not the phase it was asked in.
    demand_phases = _by_demand(ops, completes, timeline, [w.apply for w in windows], durations, lats, state, keys)

    healed = bool(periods) and periods[-1][1] != math.inf
    ttr = recoveries[-1].time_to_recover_s if healed else None
    ttr_resolution = recoveries[-1].resolution_s if healed else None
    if periods and periods[-1][0] > t_end:
        warnings.append("the last fault was applied after the last operation completed: the history cannot show it")
    if ttr is None and healed:
        warnings.append(
            f"no {slo.recovery_window_s} s window at a success ratio >= {threshold:.4f} after the last heal "
            "(never recovered, or the run ended too soon after the heal)"
        )

    return Availability(
        slo=slo,
        operations=n,
        start=t0,
        end=t_end,
        overall=overall,
        phases=demand_phases,
        phases_by_completion=phases,
        timeline=timeline,
        faults=measured,
        recoveries=recoveries,
        baseline_ratio=baseline_ratio,
        recovery_threshold=threshold,
        time_to_recover_s=ttr,
        time_to_recover_resolution_s=ttr_resolution,
        per_second=per_second,
        verdicts=_verdicts(slo, demand_phases, bool(periods), ttr),
        warnings=warnings,
    )


def _by_demand(
    ops: Sequence[Mapping[str, Any]],
    completes: Sequence[float],
    timeline: Sequence[Segment],
    applies: Iterable[float],
    durations: Mapping[str, float],
    lats: Sequence[float],
    state: bytearray,
    keys: Sequence[str | None],
) -> dict[str, Stats]:
    """Per-phase figures with each operation in the phase it was asked in (before the first
    completion: the first phase), or in `fault` when a fault was applied between its invoke and
    its completion. A phase's duration is its span on the timeline, as by completion."""
    seg_starts = [s.start for s in timeline]
    apply_times = sorted(applies)
    members: dict[str, list[int]] = {p: [] for p in PHASES}
    for i, o in enumerate(ops):
        invoke = o.get("invoke")
        at = float(invoke) if isinstance(invoke, int | float) else completes[i]
        phase = timeline[max(0, bisect_right(seg_starts, at) - 1)].phase
        if phase != "fault":
            k = bisect_right(apply_times, at)
            if k < len(apply_times) and apply_times[k] <= completes[i]:
                phase = "fault"
        members[phase].append(i)
    out: dict[str, Stats] = {}
    for p, idx in members.items():
        ordered = sorted(lats[i] for i in idx)
        states = Counter(state[i] for i in idx)
        out[p] = Stats(
            duration_s=durations[p],
            operations=len(idx),
            good=states[_GOOD],
            slow=states[_SLOW],
            errors=_errors(Counter(keys[i] for i in idx)),
            p50_ms=percentile(ordered, 0.50),
            p95_ms=percentile(ordered, 0.95),
            p99_ms=percentile(ordered, 0.99),
            p999_ms=percentile(ordered, 0.999),
        )
    return out


def _sorted_by_complete(ops: list[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[float]]:
    """The operations in completion order, and their completion times; bad times name the operation."""

    def bad(op: Mapping[str, Any]) -> bool:
        c = op.get("complete")
        return not isinstance(c, int | float) or isinstance(c, bool) or not math.isfinite(c)

    def error(op: Mapping[str, Any]) -> ValueError:
        return ValueError(
            f"history operation {op.get('id')!r}: 'complete' must be epoch seconds, got {op.get('complete')!r} "
            "(see docs/run-directory.md)"
        )

    try:
        ordered = sorted(ops, key=itemgetter("complete"))
    except (KeyError, TypeError):
        culprit = next((o for o in ops if bad(o)), None)
        if culprit is None:
            raise
        raise error(culprit) from None
    completes: list[float] = list(map(itemgetter("complete"), ordered))
    # Strings sort among themselves and NaN sorts anywhere without raising: check the ends and the sum.
    if bad(ordered[0]) or bad(ordered[-1]) or not math.isfinite(math.fsum(completes)):
        raise error(next(o for o in ordered if bad(o)))
    return ordered, completes


def _classify(ops: Sequence[Mapping[str, Any]], limit_ms: float) -> tuple[list[float], list[str | None], bytearray]:
    """Latency, error key (None for ok) and state of every operation, in parallel arrays."""
    n = len(ops)
    lats = [0.0] * n
    keys: list[str | None] = [None] * n
    state = bytearray(n)  # _DOWN unless proven good or slow
    i = 0
    try:
        for i, o in enumerate(ops):
            lat = o.get("latency_ms")
            if lat is None:
                lat = (o["complete"] - o["invoke"]) * 1000.0
            lats[i] = lat
            outcome = o.get("outcome")
            if outcome == "ok":
                state[i] = _GOOD if lat <= limit_ms else _SLOW
                continue
            key = o.get("reason") or o.get("error") or ("PDNG" if o.get("status") == "PDNG" else "unknown")
            keys[i] = key
            # history.is_definitive, inlined: hot loop
            if outcome == "fail" and (key in BUSINESS_REASONS or (key == "AG09" and o.get("op") == STATUS_QUERY)):
                state[i] = _GOOD if lat <= limit_ms else _SLOW
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"history operation {ops[i].get('id')!r}: no usable latency ({exc!r}); "
            "it needs 'latency_ms' or numeric 'invoke' and 'complete' (see docs/run-directory.md)"
        ) from None
    return lats, keys, state


def _errors(counts: Counter[str | None]) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))) if k is not None}


def _stats(
    duration: float, ranges: list[tuple[int, int]], ordered: list[float], state: bytearray, keys: list[str | None]
) -> Stats:
    errors: Counter[str | None] = Counter()
    for s, e in ranges:
        errors.update(keys[s:e])
    return Stats(
        duration_s=duration,
        operations=sum(e - s for s, e in ranges),
        good=sum(state.count(_GOOD, s, e) for s, e in ranges),
        slow=sum(state.count(_SLOW, s, e) for s, e in ranges),
        errors=_errors(errors),
        p50_ms=percentile(ordered, 0.50),
        p95_ms=percentile(ordered, 0.95),
        p99_ms=percentile(ordered, 0.99),
        p999_ms=percentile(ordered, 0.999),
    )


def _verdicts(slo: SLO, phases: Mapping[str, Stats], had_faults: bool, ttr: float | None) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for p in PHASES:
        s = phases[p]
        if not s.operations:  # a phase that did not happen has nothing to judge
            continue
        target = slo.ratio_target(p)
        ratio = s.success_ratio
        if target is not None and ratio is not None:
            verdicts.append(Verdict(f"success_ratio.{p}", target, ratio, ratio >= target))
        p99 = slo.p99_target(p)
        if p99 is not None and s.p99_ms is not None:
            verdicts.append(Verdict(f"p99_ms.{p}", p99, s.p99_ms, s.p99_ms <= p99))
    if had_faults:
        # Never recovering is a failure whether or not a maximum recovery time was given.
        ok = ttr is not None and (slo.max_recovery_s is None or ttr <= slo.max_recovery_s)
        verdicts.append(Verdict("time_to_recover_s", slo.max_recovery_s, ttr, ok))
    return verdicts


def _empty(slo: SLO, windows: list[FaultWindow], warnings: list[str]) -> Availability:
    nothing = Stats(0.0, 0, 0, 0, {}, None, None, None, None)
    return Availability(
        slo=slo,
        operations=0,
        start=None,
        end=None,
        overall=nothing,
        phases=dict.fromkeys(PHASES, nothing),
        phases_by_completion=dict.fromkeys(PHASES, nothing),
        timeline=[],
        faults=windows,
        recoveries=[],
        baseline_ratio=None,
        recovery_threshold=None,
        time_to_recover_s=None,
        time_to_recover_resolution_s=None,
        per_second=[],
        verdicts=[Verdict("operations", 1, 0, False)],  # no operations: nothing shows the service was up
        warnings=[*warnings, "the history has no operations to measure"],
    )
