"""Checkers: pure functions from a run directory's files to figures and verdicts (re-runnable later).

`run.check_run(RUN_DIR)` is the entry point: it loads the files, runs the checks of `checks.py`
composed as in Jepsen (`compose.py`: a crashing check is "unknown", never the end of the verdict)
and returns the `harness.result.Result`. availability.py, reconcile.py, consistency.py and
evidence.py (what each fault did) measure.
"""
