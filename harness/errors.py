"""One exception root for every failure the harness knows how to explain.

A `HarnessError` says what is wrong, where, and (when there is one) how to fix it; the command line
prints it in one line instead of a traceback. Anything else that escapes is a bug.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base of every known failure: `str()` is a complete message for a person."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}; {self.fix}" if self.fix else self.message


class ScenarioError(HarnessError, ValueError):
    """A scenario file is malformed; the message names the file, the field and the fix."""


class RunDirError(HarnessError, FileNotFoundError):
    """A run directory is missing, partial, or holds a file in a format this version cannot read."""


class TimelineError(HarnessError, ValueError):
    """faults.jsonl breaks its format (an event without a time, a heal without an apply ...)."""


class TestbedError(HarnessError, RuntimeError):
    """Toxiproxy, a service or a container could not be started, reached or stopped."""

    __test__ = False  # not a pytest test class, despite the name


class FaultError(HarnessError, RuntimeError):
    """A fault could not be applied or healed; nothing of it is left behind."""


class LoadError(HarnessError, RuntimeError):
    """Locust could not be started or did not finish; the message names the log to read."""


class RunFileError(HarnessError, ValueError):
    """A line of a run-directory JSONL file that cannot be read (the message names file and line)."""
