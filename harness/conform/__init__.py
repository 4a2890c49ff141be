"""`harness conform TARGET`: check a running system against the participant contract, without faults.

The live counterpart of harness/contract.py: it sends the requests a conformance run needs to the
target's banks and switch (payments that succeed, one request per reason code a request can
provoke, a replay, status queries, name enquiries), reads the read API back, and gives one verdict
per check: PASS, FAIL (with what to fix) or SKIP (an optional capability or fixture the target does
not offer, and what that costs). `suite.run` does the work; `suite.table` shows it.
"""
