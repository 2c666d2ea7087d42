"""The transactions' signature checks (``specs/ledger.md`` §4.2): one at a time, or a batch
split over threads so they run while the ledger thread applies the previous batch.

Pure-Python twin of :mod:`n3xus.ledger._ingest_verify_c` (same names, same verdicts); the
selector is :mod:`n3xus.ledger.ingest`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .tx import Tx, verify_tx_signature

__all__ = ["PendingSignatures", "verify_signature", "verify_signatures", "verify_signatures_async"]


def verify_signature(tx: Tx) -> bool:
    """The transaction's signature check alone (§4.2)."""
    return verify_tx_signature(tx)


def verify_signatures(txs: Iterable[Tx]) -> list[bool]:
    """:func:`verify_signature` of each transaction (the compiled twin releases the GIL
    once for the whole list; here each PyNaCl call releases it)."""
    return [verify_tx_signature(tx) for tx in txs]


class PendingSignatures:
    """Signature checks under way (:func:`verify_signatures_async`); :meth:`wait` returns
    the verdicts. Here Python threads (each PyNaCl call releases the GIL); the compiled
    twin uses native threads that never need the GIL."""

    def __init__(self, txs: Iterable[Tx], threads: int) -> None:
        self._txs = list(txs)
        self._results: list[bool] = []
        self._parts: list[list[bool]] = []
        self._threads: list[threading.Thread] = []
        if threads < 1 or len(self._txs) < 2:
            self._results = verify_signatures(self._txs)
            return
        size = -(-len(self._txs) // min(threads, len(self._txs)))
        for start in range(0, len(self._txs), size):
            part: list[bool] = []
            self._parts.append(part)
            thread = threading.Thread(target=lambda part=part, start=start: part.extend(
                verify_signatures(self._txs[start:start + size])), daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self) -> list[bool]:
        """The verdicts, one per transaction, in order (waits for the threads)."""
        if self._threads:
            for thread in self._threads:
                thread.join()
            self._results = [ok for part in self._parts for ok in part]
            self._threads = []
            if len(self._results) != len(self._txs):
                raise RuntimeError("a signature check thread failed")
        return list(self._results)


def verify_signatures_async(txs: Iterable[Tx], threads: int) -> PendingSignatures:
    """Start :func:`verify_signature` of each transaction on ``threads`` threads (0: here,
    before returning); ``.wait()`` gives the verdicts."""
    return PendingSignatures(txs, threads)

