"""Chaos-testing harness for payment switches: topology, nemesis, load, history, checkers, reports."""

__version__ = "0.1.0"
