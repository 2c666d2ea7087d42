"""Prometheus metrics of the node's state owners, read when scraped.

Registered on the node's registry (``Node.counters.registry``) once the services
exist, next to the counters of :mod:`n3xus.node.runtime` and the API's per-route
metrics (:mod:`n3xus.node.api.metrics`):

canon store     ``n3xus_canon_blocks``, ``n3xus_canon_stored_bytes``, ``n3xus_canon_pins``,
                ``n3xus_canon_corrupt_blocks``, ``n3xus_canon_log_entries``
ledger          ``n3xus_ledger_log_entries``, ``n3xus_ledger_frozen_accounts``,
                ``n3xus_ledger_checkpoint_entries`` (tree size of the last signed
                checkpoint), ``n3xus_ledger_transactions_accepted_total``,
                ``n3xus_ledger_transactions_rejected_total{reason}`` (reason codes of
                specs/ledger.md)
process         ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
                ``process_open_fds``, ... (prometheus_client's ProcessCollector)

Collectors read LMDB, so the ``/metrics`` route and the console's sampler
(:class:`n3xus.node.api.console.ConsoleSampler`, from the node's start) run them in a
worker thread; either may scan the block store (at most every STORE_SCAN_INTERVAL_S). A
collection on the trio thread itself never scans: it reports the last scan, or no store
totals before the first one.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from n3xus.canon.blockstore import StoreStats

    from .canon import CanonService
    from .ledger import LedgerService

# Block store totals take one pass over the stored blocks; a scrape (or the console's
# 2-second sampler) reuses the last pass for this long, so a large store is not
# scanned over and over. Counts change slowly next to that.
STORE_SCAN_INTERVAL_S = 15.0


def _on_event_loop() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # a worker thread, or no trio run at all
        return False
    return True


class CanonCollector(Collector):
    def __init__(self, canon: CanonService) -> None:
        self._canon = canon
        self._lock = threading.Lock()
        self._stats: StoreStats | None = None
        self._scanned_at = float("-inf")

    def _store_stats(self) -> StoreStats | None:
        if _on_event_loop():  # never a full scan there
            return self._stats
        with self._lock:
            if self._stats is None or time.monotonic() - self._scanned_at >= STORE_SCAN_INTERVAL_S:
                self._stats = self._canon.store.stats()
                self._scanned_at = time.monotonic()
            return self._stats

    def collect(self) -> Iterator[Any]:
        yield GaugeMetricFamily("n3xus_canon_log_entries", "Entries in the signed canon log",
                                value=len(self._canon.log))
        stats = self._store_stats()
        if stats is None:
            return
        yield GaugeMetricFamily("n3xus_canon_blocks", "Blocks in the canon block store",
                                value=stats.blocks)
        yield GaugeMetricFamily("n3xus_canon_stored_bytes", "Bytes of block data stored",
                                value=stats.bytes)
        yield GaugeMetricFamily("n3xus_canon_pins", "Named pins", value=stats.pins)
        yield GaugeMetricFamily("n3xus_canon_corrupt_blocks",
                                "Blocks found not to hash to their CID (recorded, never served)",
                                value=len(stats.corrupt))


class LedgerCollector(Collector):
    def __init__(self, ledger: LedgerService) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Any]:
        ledger = self._ledger
        yield GaugeMetricFamily("n3xus_ledger_log_entries", "Entries in the ledger log",
                                value=ledger.store.log_size())
        yield GaugeMetricFamily("n3xus_ledger_frozen_accounts",
                                "Accounts frozen by a proven equivocation",
                                value=len(ledger.store.frozen_accounts()))
        yield GaugeMetricFamily("n3xus_ledger_checkpoint_entries",
                                "Tree size of the last signed ledger checkpoint (0: none yet)",
                                value=ledger.checkpoint_size())
        accepted, rejected = ledger.submit_counts()
        yield CounterMetricFamily("n3xus_ledger_transactions_accepted",
                                  "Transactions submitted to this node and accepted",
                                  value=accepted)
        family = CounterMetricFamily("n3xus_ledger_transactions_rejected",
                                     "Transactions submitted to this node and rejected, by reason",
                                     labels=["reason"])
        for reason, count in sorted(rejected.items()):
            family.add_metric([reason], count)
        yield family


_INSTALLED: weakref.WeakKeyDictionary[CollectorRegistry, bool] = weakref.WeakKeyDictionary()


def register_service_metrics(registry: CollectorRegistry, canon: CanonService | None,
                             ledger: LedgerService | None) -> None:
    """Add the canon, ledger and process collectors to ``registry`` (once per registry)."""
    if _INSTALLED.get(registry):
        return
    _INSTALLED[registry] = True
    ProcessCollector(registry=registry)
    if canon is not None:
        registry.register(CanonCollector(canon))
    if ledger is not None:
        registry.register(LedgerCollector(ledger))
