"""Deterministic simulation of the federation protocols: the real sans-IO cores and ledgers
driven by a simulated network and clock in one process (``ledger.py``). Run it with
``python -m n3xus.protocol.sim --nodes 1000 --seed S``."""
