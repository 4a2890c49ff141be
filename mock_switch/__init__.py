"""A mock national instant-payment switch and its participant banks (the system under test)."""

__version__ = "0.1.0"
