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


NO_ANOMALY = "no anomaly opened"


def fmt_measured(seconds: float | None, resolution_s: float | None) -> str:
    """A time with how precisely it is known: '305 ms (resolution 10 ms)'; exact or unknown: just the time."""
    text = fmt_duration(seconds)
    if seconds is not None and resolution_s:
        text += f" (resolution {fmt_duration(resolution_s)})"
    return text


def fmt_time_to_consistency(seconds: float | None, anomaly_opened: bool | None, resolution_s: float | None) -> str:
    """'no anomaly opened' rather than a time nothing converged in; 'never' when anomalies were left."""
    if anomaly_opened is False:
        return NO_ANOMALY
    if seconds is None:
        return "never" if anomaly_opened else NA
    return fmt_measured(seconds, resolution_s)
