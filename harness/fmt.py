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


def fmt_money(minor: int | None, currency: str = "", signed: bool = False) -> str:
    """The one way an amount is written: integers in minor units (DESIGN.md section 3) as
    'NGN 1,234,567.89'; `signed` adds '+' to a positive difference ('+NGN 1,022.40')."""
    if minor is None:
        return NA
    sign = "-" if minor < 0 else ("+" if signed and minor > 0 else "")
    major, cents = divmod(abs(int(minor)), 100)
    return f"{sign}{currency + ' ' if currency else ''}{major:,}.{cents:02d}"


# How a run's verdict reads for people. `expected` is a pass of a scenario that runs naive components
# on purpose and expects the checkers to catch anomalies: not a green pass beside lost money.
VERDICT_TEXT = {
    "pass": "Pass: expectations met",
    "expected": "Anomalies caught as expected",
    "fail": "Fail: expectations not met",
    "unknown": "Unknown: a check could not run",
}


def shown_verdict(verdict: str, expects_anomalies: bool) -> str:
    """pass | expected | fail | unknown: `expected` for a pass that caught the anomalies it expected."""
    return "expected" if verdict == "pass" and expects_anomalies else verdict
