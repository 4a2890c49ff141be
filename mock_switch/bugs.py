"""Deliberately broken variants of the mock ("bugs"), for `harness teeth`: the harness checks its own
teeth by running a short scenario against each and proving a check catches it.

Like the `naive` resilience knob, a bug is chosen in the system configuration (`SystemConfig.bug`,
`topology.bug` in a scenario) and each is one small code path in the mock, marked `# BUG(<name>)`.
Never set one outside a teeth run: each breaks an invariant on purpose.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Bug = Literal[
    "cap-race",
    "peak-underreported",
    "phantom-reservation",
    "close-early",
    "double-settle",
    "lost-credit",
    "position-drift",
    "lost-ack",
]

# name -> (the invariant it breaks, what the code does wrong)
BUGS: dict[str, tuple[str, str]] = {
    "cap-race": (
        "net debit cap",
        "the switch checks the cap against position and closed-window receivable only, ignoring its own"
        " reservations in flight (and records that as the peak), so concurrent payments overrun the cap",
    ),
    "peak-underreported": (
        "net debit cap",
        "the switch admits a payment while the exposure before it is under the cap (not exposure + amount),"
        " and records the peak without the payment's own amount: the cap is overrun by up to one payment"
        " and the recorded peak never shows it",
    ),
    "phantom-reservation": (
        "reservations",
        "an aborted transfer does not release the payer's reservation at the switch",
    ),
    "close-early": (
        "settlement windows",
        "closing a window freezes its net positions at once, while transfers reserved in it are still in"
        " flight; they commit into the frozen window and settlement moves the stale figures",
    ),
    "double-settle": (
        "settlement movements",
        "settling a window debits and credits the settlement accounts twice, but records each movement once",
    ),
    "lost-credit": (
        "three-way reconciliation",
        "the payee bank answers ACCP for one credit in ten but its write is lost (no credit, no entry)",
    ),
    "position-drift": (
        "positions",
        "for one committed transfer in ten the switch forgets to lower the payee bank's position",
    ),
    "lost-ack": (
        "customer view (acknowledged payments)",
        "the payer bank tells the customer ACSC for one payment in ten that the switch rejected (and reversed)",
    ),
}


def one_in(payment_id: str, n: int) -> bool:
    """A stable one-in-n choice of payments (the same ids on every run and every restart)."""
    return int.from_bytes(hashlib.sha256(payment_id.encode()).digest()[:4], "big") % n == 0
