"""Checkers: pure functions from a run directory's files to figures and verdicts (re-runnable later)."""
