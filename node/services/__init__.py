"""Trio-side owners of the node's state: one service per concern (canon memory,
ledger, wallets and genesis). Routes and protocol handlers call into these; the
services own LMDB transactions and blocking work (run in worker threads)."""
