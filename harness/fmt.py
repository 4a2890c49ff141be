"""How figures read for people, shared by the checkers' failure lines, the console and the report.

Here rather than in the report package so that checkers do not depend on the report (data flows
one way: checkers -> result -> report).
"""

from __future__ import annotations

NA = "\N{EN DASH}"  # shown for a figure that does not exist (no fault, no recovery, ...)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NA
    if seconds < 1:
        return f"{seconds * 1000:,.0f} ms"
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.1f} h"
