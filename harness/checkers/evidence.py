"""Evidence per fault: what each applied fault did, so that a fault which bit nothing is visible.

Pure, over the run directory's files: the history (`history.jsonl`), the fault timeline
(`faults.jsonl`) and Toxiproxy's byte counters sampled at each apply and heal
(`proxy_counters.jsonl`, harness/counters.py). For every fault window (one apply..heal; a flapping
fault has several):

- the payments it could touch (its *scope*): a fault on `customers->B` or `B->switch` touches the
  payments paid from B, on `switch->B` those paid to B, on bank B both, on the switch all of them;
- those of them that completed inside the window, by outcome: ok, business reject, technical
  reject, pending (PDNG), no answer (timeout, connection error, 5xx); the customers' timeouts and
  connection errors (a reset on their link); latency p50/p99; completions per second;
- the follow-ups it caused: status queries and re-sends of the payments whose first attempt
  completed inside the window (wherever the follow-up itself landed);
- Toxiproxy's counters of the links it targeted, from the sample before the apply to the sample after
  the heal: bytes received and sent per direction, and `undelivered` (received minus sent: bytes a
  toxic dropped or a broken connection lost). Service faults (crash, pause, stop, restart, and
  disconnect on docker) have the history's evidence only.

Each figure is set beside the baseline: the same scope's payments completed before the first apply
(and the counters from the schedule's start to the first apply), scaled by what the *untouched*
payments (those outside the scope: the control group) went through from their baseline to the same
window, since a busy host slows everything by itself (measured here: a toxic at toxicity 0 saw its
scope's p50 go from 157 to 280 ms, and the untouched payments' by x1.76). A window shows an
*observable effect* when at least one of these signals holds (`signals` names each that did):

- unavailable payments (not a definitive answer within the latency SLO) above what the baseline's
  ratio, or the untouched payments' ratio in the window if higher, predicts for as many payments:
  observed >= 1 and > expected + 3 * sqrt(expected);
- follow-ups (status queries + re-sends) above the baseline's rate per payment, by the same test;
- latency: p50 at least 1.5 times the expected (the baseline's times the untouched payments'
  factor) and 20 ms more, or p99 at least twice the expected and 100 ms more;
- throughput: completions per second under half the expected (the baseline's times the untouched
  payments' factor), when it predicts at least 10 in the window (a frozen service answers nothing,
  which is no error either);
- undelivered bytes on a targeted link more than twice the baseline's rate predicts (more than
  zero when the baseline lost none, or when there was no baseline sample).

A window with none of them is flagged "no observable effect": the fault changed nothing this run
could measure, so the scenario did not test what it says (no traffic crossed the target, a toxic too
mild, a toxicity of 0 ...). Overlapping windows share what they saw: each names the others. The
control group counts only with at least CONTROL_MIN payments in its baseline and in the window; a
fault on the switch touches every payment and has none (its figures face the bare baseline).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.checkers.availability import percentile
from harness.counters import delta
from harness.history import is_available, is_business_reject, is_payment, latency_ms
from harness.links import endpoints
from harness.timeline import FaultWindow, fault_windows

# The rule's constants, named so the docs and the code say the same thing.
SIGMAS = 3.0
P50_FACTOR, P50_MARGIN_MS = 1.5, 20.0
P99_FACTOR, P99_MARGIN_MS = 2.0, 100.0
THROUGHPUT_FACTOR, THROUGHPUT_MIN_EXPECTED = 0.5, 10.0
UNDELIVERED_FACTOR = 2.0
CONTROL_MIN = 10  # payments the untouched group needs in the baseline and in the window to count


@dataclass(frozen=True)
class Scope:
    """The payments a fault could touch."""

    payers: frozenset[str]
    payees: frozenset[str]
    everyone: bool

    def __call__(self, op: Mapping[str, Any]) -> bool:
        return self.everyone or op.get("payer") in self.payers or op.get("payee") in self.payees

    def untouched(self, op: Mapping[str, Any]) -> bool:
        """The control group: payments this fault could not touch."""
        return not self(op)

    @property
    def label(self) -> str:
        if self.everyone:
            return "all payments"
        both = sorted(self.payers & self.payees)
        parts = [f"from or to {b}" for b in both]
        parts += [f"from {b}" for b in sorted(self.payers - self.payees)]
        parts += [f"to {b}" for b in sorted(self.payees - self.payers)]
        return "payments " + " or ".join(parts) if parts else "no payment"


def scope_of(targets: Sequence[str]) -> Scope:
    """Which payments cross a fault's targets (links `customers->B`, `B->switch`, `switch->B`, or services)."""
    payers: set[str] = set()
    payees: set[str] = set()
    everyone = False
    for t in targets:
        if "->" in t:
            caller, callee = endpoints(t)
            if caller == "customers" or callee == "switch":
                payers.add(callee if caller == "customers" else caller)
            elif caller == "switch":
                payees.add(callee)
            else:
                everyone = True  # a link this module does not know: assume it touches every payment
        elif t == "switch":
            everyone = True
        else:
            payers.add(t)
            payees.add(t)
    return Scope(frozenset(payers), frozenset(payees), everyone)


def above(observed: float, expected: float) -> bool:
    """More than chance: at least one, and beyond `SIGMAS` Poisson deviations of the expectation."""
    return observed >= 1 and observed > expected + SIGMAS * math.sqrt(max(expected, 0.0))


@dataclass
class _Tally:
    """Payments of one scope completed in one span of time."""

    duration_s: float
    payments: list[Mapping[str, Any]]
    firsts: int  # payments whose first attempt completed in the span
    follow_ups: tuple[int, int]  # status queries, re-sends of those payments
    slo_ms: float

    @property
    def unavailable(self) -> int:
        return sum(1 for op in self.payments if not is_available(op, self.slo_ms))

    def latency(self, q: float) -> float | None:
        return percentile(sorted(latency_ms(op) for op in self.payments), q)

    @property
    def per_s(self) -> float | None:
        return len(self.payments) / self.duration_s if self.duration_s > 0 else None


def _outcomes(payments: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out = dict.fromkeys(("ok", "business_reject", "technical_reject", "pending", "no_answer"), 0)
    for op in payments:
        outcome = op.get("outcome")
        if outcome == "ok":
            out["ok"] += 1
        elif outcome == "fail":
            out["business_reject" if is_business_reject(op.get("reason")) else "technical_reject"] += 1
        elif op.get("status") == "PDNG":
            out["pending"] += 1
        else:
            out["no_answer"] += 1
    return out


def _r(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


class _History:
    """The history indexed once: payments' first attempts and their follow-ups."""

    def __init__(self, history: Sequence[Mapping[str, Any]]) -> None:
        self.first: list[Mapping[str, Any]] = []  # the first attempt of every payment id
        self.status_queries: Counter[str] = Counter()
        self.resends: Counter[str] = Counter()
        self.payments: list[Mapping[str, Any]] = []  # every payment line (re-sends too)
        seen: set[str] = set()
        for op in sorted(history, key=lambda o: (o.get("invoke", 0.0), o.get("complete", 0.0))):
            if is_payment(op):
                self.payments.append(op)
                if op["id"] in seen:
                    self.resends[op["id"]] += 1
                else:
                    seen.add(op["id"])
                    self.first.append(op)
            elif op.get("op") == "status_query":
                self.status_queries[op["id"]] += 1
        completes = [op["complete"] for op in self.payments]
        self.start = min(completes) if completes else None
        self.end = max(completes) if completes else None
        # By completion, each with its place in the invoke order, so a window's payments are a
        # binary search away (a long run with a fault a minute: log(n) per window, not n).
        order = sorted(range(len(self.payments)), key=lambda i: completes[i])
        self._completes = [completes[i] for i in order]
        self._places = order
        first_ids = {id(op) for op in self.first}
        self._first_places = [k for k, i in enumerate(order) if id(self.payments[i]) in first_ids]

    def tally(
        self, scope: Callable[[Mapping[str, Any]], bool], lo: float, hi: float, slo_ms: float, closed: bool = True
    ) -> _Tally:
        """Payments of `scope` completed in [lo, hi] ([lo, hi) when not `closed`), and the follow-ups
        of those first completed there."""

        i = bisect_left(self._completes, lo)
        j = (bisect_right if closed else bisect_left)(self._completes, hi)
        places = sorted(self._places[i:j])  # back in the invoke order, as every window reads them
        payments = [op for op in (self.payments[k] for k in places) if scope(op)]
        lo_f, hi_f = bisect_left(self._first_places, i), bisect_left(self._first_places, j)
        first_places = sorted(self._places[k] for k in self._first_places[lo_f:hi_f])
        firsts = [op["id"] for op in (self.payments[k] for k in first_places) if scope(op)]
        follow = (sum(self.status_queries[i] for i in firsts), sum(self.resends[i] for i in firsts))
        return _Tally(max(0.0, hi - lo), payments, len(firsts), follow, slo_ms)

    def baseline(
        self, scope: Callable[[Mapping[str, Any]], bool], first_apply: float | None, slo_ms: float
    ) -> _Tally | None:
        """The scope's payments completed before the first apply (None: no fault, no baseline to
        compare with); its duration runs from the history's first completion."""
        if first_apply is None:
            return None
        base = self.tally(scope, -math.inf, first_apply, slo_ms, closed=False)  # as the baseline phase
        base.duration_s = max(0.0, first_apply - self.start) if self.start is not None else 0.0
        return base


def _sample(
    samples: Sequence[Mapping[str, Any]], events: tuple[str, ...], fault: str, at: float | None
) -> Mapping[str, Any] | None:
    """The counters sampled with a fault's event, paired by the event's own time."""
    if at is None:
        return None
    for s in samples:
        stamp = s.get("event_at")
        ours = s.get("event") in events and s.get("fault") == fault
        if ours and isinstance(stamp, int | float) and abs(float(stamp) - at) < 1e-6:
            return s
    return None


def _links_of(w: FaultWindow, events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The Toxiproxy links a window's fault acted on (a disconnect done by Toxiproxy says which)."""
    links = [t for t in w.targets if "->" in t]
    for e in events:
        if e.get("event") == "apply" and e.get("fault") == w.fault and e.get("at") == w.apply:
            links += [str(x) for x in e.get("links") or [] if x not in links]
    return links


def evidence(
    history: Sequence[Mapping[str, Any]],
    faults: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    slo_ms: float,
) -> dict[str, Any]:
    """The `evidence` of result.json: one entry per fault window, and the names of those with no
    observable effect (see the module's docstring for the rule)."""
    windows = fault_windows(faults)
    h = _History(history)
    first_apply = min((w.apply for w in windows), default=None)
    t0 = h.start if h.start is not None else (first_apply or 0.0)
    starts = [s for s in samples if s.get("event") == "start" and s.get("links") is not None]
    base_start = min(starts, key=lambda s: float(s["at"])) if starts else None
    first = min(windows, key=lambda w: w.apply) if windows else None
    base_end = _sample(samples, ("apply",), first.fault, first.apply) if first else None
    counters_note = (
        "not recorded (no proxy_counters.jsonl: a run from before they were sampled, or Toxiproxy without metrics)"
        if not samples
        else None
    )

    out: list[dict[str, Any]] = []
    for w in windows:
        scope = scope_of(w.targets)
        end = w.heal if w.heal is not None else (h.end if h.end is not None else w.apply)
        win = h.tally(scope, w.apply, end, slo_ms)
        base = h.baseline(scope, first_apply, slo_ms)
        entry = _window_entry(w, t0, scope, win, base)
        control = _Control.of(
            h.tally(scope.untouched, w.apply, end, slo_ms), h.baseline(scope.untouched, first_apply, slo_ms)
        )
        entry["untouched"] = control.summary()
        proxies, proxy_signal = _proxy_evidence(w, faults, samples, base_start, base_end, end - w.apply)
        entry["proxies"] = proxies
        signals = _signals(win, base, control)
        if proxy_signal:
            signals.append(proxy_signal)
        entry["signals"] = signals
        entry["observable_effect"] = bool(signals)
        entry["overlaps"] = sorted(
            {o.fault for o in windows if o is not w and o.apply <= end and w.apply <= (o.heal or math.inf)} - {w.fault}
        )
        if not signals:
            entry["no_effect_reason"] = _why_nothing(win, base, proxies)
        out.append(entry)
    return {
        "windows": out,
        "no_effect": sorted({e["fault"] for e in out if not e["observable_effect"]}),
        "counters": counters_note or "sampled at each apply and heal (proxy_counters.jsonl)",
    }


def _window_entry(w: FaultWindow, t0: float, scope: Scope, win: _Tally, base: _Tally | None) -> dict[str, Any]:
    errors = Counter(str(op.get("error")) for op in win.payments if op.get("error"))
    reasons = Counter(
        str(op.get("reason"))
        for op in win.payments
        if op.get("outcome") == "fail" and not is_business_reject(op.get("reason"))
    )
    baseline: dict[str, Any] | None = None
    if base is not None:
        n0 = len(base.payments)
        baseline = {
            "duration_s": _r(base.duration_s, 3),
            "payments": n0,
            "per_s": _r(base.per_s, 2),
            "unavailable": base.unavailable,
            "unavailable_ratio": _r(base.unavailable / n0, 6) if n0 else None,
            "follow_ups_per_payment": _r(sum(base.follow_ups) / base.firsts, 6) if base.firsts else None,
            "p50_ms": _r(base.latency(0.50)),
            "p99_ms": _r(base.latency(0.99)),
        }
    return {
        "fault": w.fault,
        "kind": w.kind,
        "targets": list(w.targets),
        "apply": round(w.apply - t0, 3),
        "heal": None if w.heal is None else round(w.heal - t0, 3),
        "duration_s": round(win.duration_s, 3),
        "scope": scope.label,
        "payments": {"completed": len(win.payments), **_outcomes(win.payments), "unavailable": win.unavailable},
        "timeouts": errors.get("timeout", 0),
        "connection_errors": errors.get("connection", 0),
        "errors": dict(errors.most_common()),
        "technical_reasons": dict(reasons.most_common()),
        "status_queries": win.follow_ups[0],
        "resends": win.follow_ups[1],
        "per_s": _r(win.per_s, 2),
        "p50_ms": _r(win.latency(0.50)),
        "p99_ms": _r(win.latency(0.99)),
        "baseline": baseline,
    }


@dataclass(frozen=True)
class _Control:
    """How the payments a fault could not touch changed from the baseline to its window: what the
    machine and the load did by themselves (a busy 2-core host slows everything), which the
    fault's own scope is expected to share. Neutral (1, 1, 1, 0) when that group is too small."""

    p50: float = 1.0  # window p50 / baseline p50
    p99: float = 1.0
    rate: float = 1.0  # window completions per second / baseline's
    unavailable_ratio: float = 0.0  # in the window
    payments: int = 0  # in the window; 0 when not used

    @classmethod
    def of(cls, win: _Tally, base: _Tally | None) -> _Control:
        if base is None or len(win.payments) < CONTROL_MIN or len(base.payments) < CONTROL_MIN:
            return cls()

        def ratio(a: float | None, b: float | None) -> float:
            return a / b if a is not None and b else 1.0

        return cls(
            p50=ratio(win.latency(0.50), base.latency(0.50)),
            p99=ratio(win.latency(0.99), base.latency(0.99)),
            rate=ratio(win.per_s, base.per_s),
            unavailable_ratio=win.unavailable / len(win.payments),
            payments=len(win.payments),
        )

    def summary(self) -> dict[str, Any] | None:
        if not self.payments:
            return None
        return {
            "payments": self.payments,
            "unavailable_ratio": round(self.unavailable_ratio, 6),
            "p50_factor": round(self.p50, 3),
            "p99_factor": round(self.p99, 3),
            "per_s_factor": round(self.rate, 3),
        }

    @property
    def note(self) -> str:
        return "" if not self.payments else f"; untouched payments x{self.p50:.2f}"


def _signals(win: _Tally, base: _Tally | None, control: _Control) -> list[str]:
    n = len(win.payments)
    n0 = len(base.payments) if base is not None else 0
    signals: list[str] = []
    bad0 = max(base.unavailable / n0 if base is not None and n0 else 0.0, control.unavailable_ratio)
    if above(win.unavailable, n * bad0):
        predicts = "baseline and untouched payments predict" if control.payments else "baseline predicts"
        signals.append(f"{win.unavailable} of {n} payments not available ({predicts} {n * bad0:.1f})")
    follow0 = sum(base.follow_ups) / base.firsts if base is not None and base.firsts else 0.0
    if above(sum(win.follow_ups), win.firsts * follow0):
        signals.append(
            f"{win.follow_ups[0]} status queries and {win.follow_ups[1]} re-sends"
            f" (baseline rate predicts {win.firsts * follow0:.1f})"
        )
    if base is not None and n and n0:
        # The baseline scaled by what the untouched payments went through in the same window.
        p50, p50_0 = win.latency(0.50), _scaled(base.latency(0.50), control.p50)
        p99, p99_0 = win.latency(0.99), _scaled(base.latency(0.99), control.p99)
        if p50 is not None and p50_0 is not None and p50 >= P50_FACTOR * p50_0 and p50 - p50_0 >= P50_MARGIN_MS:
            signals.append(f"p50 latency {p50:,.0f} ms vs {p50_0:,.0f} ms expected from the baseline{control.note}")
        elif p99 is not None and p99_0 is not None and p99 >= P99_FACTOR * p99_0 and p99 - p99_0 >= P99_MARGIN_MS:
            signals.append(f"p99 latency {p99:,.0f} ms vs {p99_0:,.0f} ms expected from the baseline{control.note}")
    rate0 = _scaled(base.per_s if base is not None else None, control.rate)
    if rate0 and rate0 * win.duration_s >= THROUGHPUT_MIN_EXPECTED:
        rate = win.per_s or 0.0
        if rate < THROUGHPUT_FACTOR * rate0:
            signals.append(f"{rate:,.1f} payments/s completed vs {rate0:,.1f}/s expected from the baseline")
    return signals


def _scaled(x: float | None, factor: float) -> float | None:
    return None if x is None else x * factor


def _proxy_evidence(
    w: FaultWindow,
    faults: Sequence[Mapping[str, Any]],
    samples: Sequence[Mapping[str, Any]],
    base_start: Mapping[str, Any] | None,
    base_end: Mapping[str, Any] | None,
    duration_s: float,
) -> tuple[dict[str, Any], str | None]:
    """The counters of the links a window targeted, from the apply's sample to the heal's; and the
    signal they give, if any."""
    links = _links_of(w, faults)
    if not links:
        return {"links": {}, "note": "a service fault: no link of its own (history evidence only)"}, None
    before = _sample(samples, ("apply",), w.fault, w.apply)
    after = _sample(samples, ("heal", "heal-failed"), w.fault, w.heal)
    missing = next((s.get("error") for s in (before, after) if s is not None and s.get("error")), None)
    if before is None or after is None or missing:
        why = missing or ("no sample at its apply" if before is None else "no sample at its heal")
        return {"links": {}, "note": f"counters not available: {why}"}, None
    per_link = {link: delta(before, after, link) for link in links}
    undelivered = sum(max(0, d["undelivered"]) for link in per_link.values() for d in link.values())
    base_rate: float | None = None
    if base_start is not None and base_end is not None and base_end.get("links") is not None:
        span = float(base_end["at"]) - float(base_start["at"])
        if span > 0:
            lost = sum(max(0, d["undelivered"]) for link in links for d in delta(base_start, base_end, link).values())
            base_rate = lost / span
    expected = (base_rate or 0.0) * duration_s
    proxies: dict[str, Any] = {
        "links": per_link,
        "undelivered_bytes": undelivered,
        "baseline_undelivered_bytes_per_s": _r(base_rate, 3),
    }
    signal = None
    if undelivered > 0 and undelivered > UNDELIVERED_FACTOR * expected:
        signal = f"{undelivered:,} bytes undelivered on {', '.join(links)} (baseline rate predicts {expected:,.0f})"
    return proxies, signal


def _why_nothing(win: _Tally, base: _Tally | None, proxies: Mapping[str, Any]) -> str:
    if not win.payments and not (base and base.payments):
        return "no payment it could touch was made: nothing crossed its targets"
    if not win.payments:
        expected = (base.per_s or 0.0) * win.duration_s if base is not None else 0.0
        parts = [f"no payment in its scope completed inside it (the baseline's rate predicts {expected:.1f})"]
    else:
        parts = [f"{len(win.payments)} payments in its scope completed inside it, as in the baseline"]
    links = proxies.get("links") or {}
    if links and not any(d["received"] for link in links.values() for d in link.values()):
        parts.append("no connection on its links ended inside it (Toxiproxy counts bytes when a connection ends)")
    elif links:
        parts.append("its links lost no byte")
    elif proxies.get("note"):
        parts.append(str(proxies["note"]))
    return "; ".join(parts)
