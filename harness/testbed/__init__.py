"""Brings the system under test up and down: Toxiproxy and its links, local processes or containers, images."""
