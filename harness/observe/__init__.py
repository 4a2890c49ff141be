"""The live side of a run: ledger snapshots and the consistency sampler, while the system runs."""
