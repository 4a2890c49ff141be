"""Faults: applied to links (Toxiproxy) and services (processes, containers), healed always, on a schedule."""
