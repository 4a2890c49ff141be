"""Settlement consistency over time and from the customer's side.

- consistency.jsonl (written live by harness/observe/sampler.py): the open anomaly count over time.
- Time to consistency: from the last heal until the open anomaly count reaches zero for good.
- Customer view vs truth: a customer told ACSC whose payment did not settle is a lost acknowledged
  payment (the worst kind); a customer told RJCT whose money moved was misinformed.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.reconcile import Reconciliation


@dataclass(frozen=True, slots=True)
class Convergence:
    """Time to consistency, and how much the sampler's ticks let anyone know of it.

    - no anomaly opened: `anomaly_opened` False, `seconds` 0.0 (it meets any objective);
    - never consistent: `seconds` None (anomalies left at the end);
    - converged: `seconds` from the reference to the first tick that saw none after the last that
      saw some; the count reached zero somewhere in the `resolution_s` between those two ticks.
    `anomaly_opened` is None when there is no sample at all (nothing was watched)."""

    seconds: float | None
    anomaly_opened: bool | None
    resolution_s: float | None = None


def time_to_consistency(
    samples: Sequence[Mapping[str, Any]], last_heal: float | None, final_open: int, final_at: float | None = None
) -> Convergence:
    """From the last heal until the open anomaly count reached zero and stayed there.

    The ticks are the samples' own times (1 to 6 s apart under load), plus the final reconciliation
    at `final_at` (when the ledgers were snapshot), which has the last word: anomalies left at the
    end mean the system never became consistent. The last tick at or before the heal counts too:
    what it saw was still open when the fault healed, as far as anyone knows. Without a fault the
    reference is the first sample."""
    if final_open > 0:
        return Convergence(None, True)
    if not samples:
        return Convergence(0.0, None)  # a clean end, but nothing watched the way there
    ticks = sorted((float(s["at"]), int(s["open_anomalies"])) for s in samples)
    if final_at is not None:
        ticks.append((max(final_at, ticks[-1][0]), 0))
    since = ticks[0][0] if last_heal is None else last_heal
    ticks = ticks[max(0, bisect_right([at for at, _ in ticks], since) - 1) :]
    last_open = max((i for i, (_, n) in enumerate(ticks) if n > 0), default=None)
    if last_open is None:
        return Convergence(0.0, False)
    if last_open == len(ticks) - 1:  # only without final_at: no tick after the last open one
        return Convergence(None, True)
    (opened, _), (closed, _) = ticks[last_open], ticks[last_open + 1]
    return Convergence(max(0.0, closed - since), True, closed - opened)


@dataclass
class CustomerView:
    told_ok: int = 0
    told_failed: int = 0
    never_told: int = 0  # the customer gave up without a definitive answer
    lost_acknowledged: list[str] = field(default_factory=list)  # told ACSC, did not settle
    misinformed_failure: list[str] = field(default_factory=list)  # told RJCT, money moved

    def summary(self, examples: int = 10) -> dict[str, Any]:
        return {
            "told_ok": self.told_ok,
            "told_failed": self.told_failed,
            "never_told": self.never_told,
            "lost_acknowledged": len(self.lost_acknowledged),
            "misinformed_failure": len(self.misinformed_failure),
            "examples": {
                "lost_acknowledged": self.lost_acknowledged[:examples],
                "misinformed_failure": self.misinformed_failure[:examples],
            },
        }


def customer_view(history: Sequence[Mapping[str, Any]], rec: Reconciliation) -> CustomerView:
    """Compare each customer's last definitive answer with what the ledgers finally say."""
    last: dict[str, Mapping[str, Any]] = {}
    for op in sorted(history, key=lambda o: o["complete"]):
        # A definitive answer replaces anything earlier; an unknown one never hides a definitive one.
        if op["outcome"] in ("ok", "fail") or op["id"] not in last:
            last[op["id"]] = op
    money_moved = rec.settled_ids | {v.payment_id for v in rec.anomalies.get("credit_without_debit", [])}
    view = CustomerView()
    for pid, op in last.items():
        if op["outcome"] == "ok":
            view.told_ok += 1
            if pid not in rec.settled_ids:
                view.lost_acknowledged.append(pid)
        elif op["outcome"] == "fail":
            view.told_failed += 1
            if pid in money_moved:
                view.misinformed_failure.append(pid)
        else:
            view.never_told += 1
    view.lost_acknowledged.sort()
    view.misinformed_failure.sort()
    return view
