"""Settlement consistency over time and from the customer's side.

- consistency.jsonl (written live by harness/observe/sampler.py): the open anomaly count over time.
- Time to consistency: from the last heal until the open anomaly count reaches zero for good.
- Customer view vs truth: a customer told ACSC whose payment did not settle is a lost acknowledged
  payment (the worst kind); a customer told RJCT whose money moved was misinformed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.reconcile import Reconciliation


def time_to_consistency(samples: list[dict[str, Any]], last_heal: float | None, final_open: int) -> float | None:
    """Seconds from the last heal until anomalies reached zero and stayed there; None if never.

    With no fault, it is 0 when the run ended clean. The final reconciliation has the last word:
    anomalies left at the end mean the system never became consistent."""
    if final_open > 0:
        return None
    if last_heal is None:
        return 0.0
    after = sorted((s for s in samples if s["at"] >= last_heal), key=lambda s: s["at"])
    if not after:
        return 0.0
    # The first zero after the last sample that still had open anomalies.
    last_open = max((i for i, s in enumerate(after) if s["open_anomalies"] > 0), default=-1)
    if last_open == len(after) - 1:
        return None
    return max(0.0, float(after[last_open + 1]["at"]) - last_heal)


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
