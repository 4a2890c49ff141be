"""Checkers composed as in Jepsen (`compose`, `check-safe`): each check runs on its own, a check that
raises is "unknown" rather than the end of the verdict, and the run's validity merges them all.

A checker is a function from the run's inputs to a `CheckVerdict`; the checks themselves are in
harness/checkers/checks.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from harness.result import CheckVerdict, Validity

T = TypeVar("T")
Checker = Callable[[T], CheckVerdict]


@dataclass(frozen=True)
class Composed:
    """The merged validity of several checks, and each check's verdict by name (in run order)."""

    verdict: Validity
    checks: dict[str, CheckVerdict]

    @property
    def failures(self) -> list[str]:
        return [f for v in self.checks.values() for f in v.failures]


def merge(verdicts: Iterable[Validity]) -> Validity:
    """invalid if any is invalid (a known failure stands whatever else crashed), else unknown if any
    is unknown, else valid."""
    seen = set(verdicts)
    if "invalid" in seen:
        return "invalid"
    return "unknown" if "unknown" in seen else "valid"


def check_safe(name: str, checker: Checker[T]) -> Checker[T]:
    """`checker`, with any exception it raises turned into an unknown verdict carrying the error."""

    def safe(inputs: T) -> CheckVerdict:
        try:
            return checker(inputs)
        except Exception as exc:  # a crashing checker must not cost the other checks their verdicts
            return CheckVerdict.crashed(name, f"{type(exc).__name__}: {exc}")

    return safe


def compose(checkers: Mapping[str, Checker[T]]) -> Callable[[T], Composed]:
    """One checker made of several: each runs safely, in the mapping's order, on the same inputs."""

    def run(inputs: T) -> Composed:
        checks = {name: check_safe(name, checker)(inputs) for name, checker in checkers.items()}
        return Composed(merge(v.verdict for v in checks.values()), checks)

    return run
