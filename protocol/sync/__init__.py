"""Sync cores (sans network IO): ledger entries and account chains (``ledger.py``, with its
messages in ``messages.py``). The node and the deterministic simulation (``protocol/sim``)
drive the same code."""
