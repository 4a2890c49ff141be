"""Reports for people: the run page, the suite page, formatting and a headless-browser check.

Reads results; never recomputes a figure."""
