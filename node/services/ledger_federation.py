"""Ledger federation on the node: the network's transactions and fraud proofs reach every
node, and every node ends with the same state (specs/ledger.md §14,
specs/protocol-ledger-sync.md).

Wiring (``Node.run``, after the hello and before discovery dials anyone)::

    federation = LedgerFederation(host, ledger_service, gossip, peerbook, registry=registry)
    await nursery.start(federation.run)

* **Gossip.** Entries this node appends that did not come from a peer (its clients'
  transactions, fraud proofs it makes, entries it released from hold) are published on the
  gossipsub topic ``/n3xus/ledger/<network id>`` as §14.1 ``gossip`` messages. A received
  message is ingested *while gossipsub validates it*: an entry the ledger refuses as
  malformed, badly signed, of another network (a fault of the message) makes it ``REJECT``
  (not forwarded, the forwarder penalized); otherwise it is ``ACCEPT``\\ ed and forwarded.
* **Anti-entropy.** ``/n3xus/ledger-sync/2.0.0`` with a random peer every second
  (``node/p2p/ledger_sync.py``), answered from the sync core (``protocol/sync/ledger.py``).
  Pulled entries are ingested in large batches sorted by canonical order, so a catch-up
  does not make the ledger replay what it already processed.
* **Ingest.** Every entry from a peer goes through one queue: batches are decoded once, their
  signatures checked on every core (the check depends on nothing but the entry; the compiled
  twin runs it on native threads that never take the GIL), then admitted in one LMDB write
  transaction (group commit: one fsync per batch, not per message) without checking
  signatures again, taking the decoded transactions; the next batch is checked while one is
  admitted (:class:`ParallelVerifier`).
* **Clock.** Entries are admitted with the node's clock (future-dated ones are held), and
  held entries are released every :data:`RELEASE_INTERVAL_S`.

Every use of the sync core and every ingest runs in a worker thread, one at a time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, NamedTuple, TypeVar

import trio
from blake3 import blake3
from libp2p.host.basic_host import BasicHost
from prometheus_client import CollectorRegistry, Counter

from n3xus.ledger.errors import Reason
from n3xus.ledger.ingest import (
    Accepted,
    Held,
    Outcome,
    Pending,
    Rejected,
    prepare_entries,
    verify_signatures_async,
)
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import Tx
from n3xus.protocol.sync.ledger import LedgerSync
from n3xus.protocol.sync.messages import (
    MAX_GOSSIP_BYTES,
    MAX_GOSSIP_ENTRIES,
    Chain,
    Gossip,
    Message,
    Pull,
    Query,
    Summary,
    decode_message,
    encode_message,
    gossip_messages,
)

from ..logs import get_logger
from ..p2p.gossip import GossipService, Verdict
from ..p2p.ledger_sync import LedgerSyncService
from .ledger import LedgerService

__all__ = ["MAX_GOSSIP_BYTES", "MAX_GOSSIP_ENTRIES", "LedgerFederation", "ParallelVerifier",
           "admit_checked", "gossip_messages", "topic_of"]

log = get_logger("n3xus.ledger.federation")
T = TypeVar("T")

RELEASE_INTERVAL_S: Final = 1.0
"""Held entries are released, and the sync summaries brought up to date, every second."""
MAX_BATCH_ENTRIES: Final = 50_000
"""Entries admitted in one write transaction: large enough that a burst costs a few
fsyncs, small enough that one batch holds the ledger for a few seconds at most."""
PARALLEL_MIN_ENTRIES: Final = 64
"""Below this many entries the signatures are checked inline: starting threads costs more
than it saves."""
MAX_RECEIVED_MARKS: Final = 500_000
"""Entries remembered as received from peers (16 bytes each, ~16 MiB): they are not
published again, since every peer that gossiped or served them has them."""
FAULT_REASONS: Final = frozenset({
    Reason.MALFORMED, Reason.UNSUPPORTED_VERSION, Reason.UNKNOWN_OP, Reason.BAD_AMOUNT,
    Reason.OVERFLOW, Reason.WRONG_NETWORK, Reason.BAD_SIGNATURE, Reason.BAD_PROOF})
"""Refusals that make a gossip message invalid: the entry is wrong in itself. Others
(``replay``, ``frozen``, ``too-early``, a full pending queue) depend on what the receiver
knows or its clock, never a reason to blame the sender."""
GOSSIP_PEER: Final = "gossipsub"
"""The sync core's one gossip "peer": its gossip sends become one gossipsub publish."""


def topic_of(network: Any) -> str:
    """The gossipsub topic of a network (its genesis CID as text)."""
    return f"/n3xus/ledger/{network}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _mark(entry: bytes) -> bytes:
    return blake3(entry).digest()[:16]


def penalty_for(reason: Reason) -> str:
    """The PeerBook penalty of a faulty entry (protocol.md §8's weights)."""
    return "bad-signature" if reason in (Reason.BAD_SIGNATURE, Reason.BAD_PROOF) else "malformed"


class Checked(NamedTuple):
    """What :class:`ParallelVerifier` found out about one entry."""

    key: bytes
    """Its canonical order key (b"" for fraud proofs and undecodable bytes)."""
    verdict: bool | None
    """True/False for a transaction whose signature was checked; None when the ledger must
    judge it itself (a fraud proof, which admission verifies in full; bytes that do not
    decode or name another network; a transaction the ledger already holds, which
    admission calls a replay)."""
    tx: Tx | None
    """The decoded transaction of this network (admission takes it instead of decoding the
    bytes again), else None."""


class ParallelVerifier:
    """Checks the signatures of a batch on every core, ahead of the ordered apply.

    :meth:`check_ahead` decodes the entries on the calling thread (the ledger's: the decode
    holds the GIL wherever it runs, and admission reuses its result), then starts the
    signature checks on ``workers`` threads and returns at once, so the caller can apply the
    previous batch while this one is verified: a pipeline, the ordered apply on one core and
    the checks, which have no order, on the others. The compiled twin checks on native
    threads that never take the GIL (``verify_signatures_async``): CPython gives a waiting
    thread the GIL only when the holder blocks or its 5 ms switch interval runs out, so a
    Python-level worker would stall behind the apply at every hand-off."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)

    def check(self, store: LedgerStore | None, entries: Sequence[bytes]) -> list[Checked]:
        return self.check_ahead(store, entries)()

    def check_ahead(self, store: LedgerStore | None,
                    entries: Sequence[bytes]) -> Callable[[], list[Checked]]:
        """Decode ``entries`` and start verifying them; the returned callable waits for the
        result (what :meth:`check` returns). Entries the ledger gains meanwhile are judged
        by admission all the same (replays are found first)."""
        found = self._decode(store, entries)
        txs = [tx for _, tx, verify in found if verify and tx is not None]
        threads = self.workers if self.workers > 1 and len(txs) >= PARALLEL_MIN_ENTRIES else 0
        pending = verify_signatures_async(txs, threads)

        def result() -> list[Checked]:
            done = iter(pending.wait())
            return [Checked(key, next(done) if verify else None, tx)
                    for key, tx, verify in found]
        return result

    def pipelined(self, store: LedgerStore | None,
                  batches: Sequence[Sequence[bytes]]) -> Iterator[list[Checked]]:
        """What :meth:`check` returns for each of ``batches`` in turn, the next batch
        decoded and its checks started before this one's are awaited (so the verify threads
        never wait for a decode) and running while the caller admits this one."""
        ahead = self.check_ahead(store, batches[0]) if batches else None
        for index in range(len(batches)):
            assert ahead is not None
            following = self.check_ahead(store, batches[index + 1]) \
                if index + 1 < len(batches) else None
            yield ahead()
            ahead = following

    @staticmethod
    def _decode(store: LedgerStore | None,
                entries: Sequence[bytes]) -> list[tuple[bytes, Tx | None, bool]]:
        """(order key, the Tx or None, whether its signature needs checking) per entry."""
        if store is None:
            return prepare_entries(entries, None, None)
        with store.env.begin() as txn:  # one read snapshot for the lookups
            return prepare_entries(entries, store.genesis.network_id,
                                   partial(txn.get, db=store.dbs.ids))


@dataclass
class _Job:
    entries: list[bytes]
    source: str | None
    pulled: bool
    done: trio.Event = field(default_factory=trio.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    error: BaseException | None = None


def admit_checked(store: LedgerStore, entries: Sequence[bytes], checked: Sequence[Checked],
                  *, sort: bool, now: int | None) -> list[Outcome]:
    """Admit ``entries`` whose signatures ``checked`` has judged, in one write transaction
    without a second check (in canonical order when ``sort``), handing admission the
    decoded transactions. The badly signed ones are admitted after it with the full check:
    refused all the same, as ``replay`` when a copy with a good signature is known (§6.1
    checks replays first), else ``bad-signature``. One outcome per entry, in the order
    given."""
    items = [entry if found.tx is None else found.tx for entry, found in zip(entries, checked,
                                                                              strict=True)]
    if not sort and all(found.verdict is not False for found in checked):
        return store.ingest(items, verify=False, now_ms=now)  # the common case, in order
    order = sorted(range(len(entries)), key=lambda i: checked[i].key) if sort \
        else list(range(len(entries)))
    outcomes: list[Outcome | None] = [None] * len(entries)
    admitted = [i for i in order if checked[i].verdict is not False]
    forged = [i for i in order if checked[i].verdict is False]
    for indexes, verify in ((admitted, False), (forged, True)):
        if indexes:
            results = store.ingest([items[i] for i in indexes], verify=verify, now_ms=now)
            for index, outcome in zip(indexes, results, strict=True):
                outcomes[index] = outcome
    return [o for o in outcomes if o is not None]


class FederationCounters:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.entries = Counter("n3xus_ledger_peer_entries", "Ledger entries received from "
                               "peers, by how they came and their outcome",
                               ["via", "outcome"], registry=registry)
        self.published = Counter("n3xus_ledger_published_entries", "Ledger entries this node "
                                 "published on gossipsub", registry=registry)
        self.batches = Counter("n3xus_ledger_ingest_batches", "Write transactions of peer "
                               "entries (group commits)", registry=registry)


class LedgerFederation:
    """The node's ledger federation (see the module docstring); implements the
    ``SyncBackend`` of ``node/p2p/ledger_sync.py``."""

    def __init__(self, host: BasicHost, service: LedgerService, gossip: GossipService,
                 peerbook: Any = None, *, registry: CollectorRegistry | None = None,
                 verify_workers: int | None = None,
                 sync_interval_s: float | None = None) -> None:
        self.service = service
        self.store = service.store
        self.gossip = gossip
        self.peerbook = peerbook
        self.topic = topic_of(service.genesis.cid)
        self.verifier = ParallelVerifier(verify_workers)
        self.counters = FederationCounters(registry)
        self.syncer = LedgerSyncService(host, self, peerbook) if sync_interval_s is None \
            else LedgerSyncService(host, self, peerbook, interval_s=sync_interval_s)
        self.sync: LedgerSync | None = None
        self._lock = trio.Lock()
        self._jobs: list[_Job] = []
        self._wake = trio.Event()
        self._kicked = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._received: dict[bytes, None] = {}
        self.on_ingested: list[Callable[[list[bytes], list[Outcome]], None]] = []
        """Observers of each peer batch (entries, outcomes), called on the trio thread
        (benchmarks time arrivals with it)."""

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.sync = await trio.to_thread.run_sync(LedgerSync, self.store)
        self.sync.add_peer(GOSSIP_PEER)
        self.syncer.register()  # before any dial: the hello lists the protocol
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._ingest_loop)
                await self.gossip.join(self.topic, self._on_gossip)
                self.service.listeners.append(self.kick)
                nursery.start_soon(self._announce_loop)
                await nursery.start(self.syncer.run)
                task_status.started(self)
        finally:
            if self.kick in self.service.listeners:
                self.service.listeners.remove(self.kick)

    def kick(self) -> None:
        """The log grew outside this module (a client's submit): announce soon. Callable
        from any thread."""
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._kicked.set)
        except trio.RunFinishedError:
            pass  # the node is stopping: nothing to announce to

    def snapshot(self) -> dict[str, Any]:
        return {"topic": self.topic, "mesh_peers": self.gossip.mesh_peers(self.topic),
                "sync": dict(self.syncer.counters),
                "sync_core": dict(self.sync.counters) if self.sync is not None else None,
                "verify_workers": self.verifier.workers}

    # -- the ledger thread ---------------------------------------------------------------
    async def _in_ledger(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a worker thread, one at a time (the sync core is not thread-safe,
        and ingests are serialized anyway by LMDB's single writer)."""
        async with self._lock:
            return await trio.to_thread.run_sync(fn)

    def _core(self) -> LedgerSync:
        if self.sync is None:
            raise RuntimeError("ledger federation is not running")
        return self.sync

    # -- ingest --------------------------------------------------------------------------
    async def ingest(self, entries: list[bytes], source: str | None, *,
                     pulled: bool = False) -> list[Outcome]:
        """Admit ``entries`` from ``source`` through the batching queue; their outcomes."""
        job = _Job(entries, source, pulled)
        self._jobs.append(job)
        self._wake.set()
        await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.outcomes

    async def _ingest_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._jobs:
                jobs: list[_Job] = []
                total = 0
                while self._jobs and (not jobs or total + len(self._jobs[0].entries)
                                      <= MAX_BATCH_ENTRIES):
                    job = self._jobs.pop(0)
                    jobs.append(job)
                    total += len(job.entries)
                try:
                    publish = await self._in_ledger(partial(self._process, jobs))
                except Exception as exc:  # noqa: BLE001 - handed to each waiting caller
                    log.error("ingest of peer entries failed", error=repr(exc))
                    for job in jobs:
                        job.error = exc
                    publish = []
                for job in jobs:
                    job.done.set()
                    for observer in self.on_ingested:
                        observer(job.entries, job.outcomes)
                await self._publish(publish)

    def _process(self, jobs: list[_Job]) -> list[bytes]:
        """(Ledger thread.) Admit each pulled job in one write transaction (sorted), then
        every gossip job together in one; the signatures of the next of these are checked on
        all cores while the current one is admitted. Announce; the entries to publish."""
        self.counters.batches.inc()
        units: list[list[_Job]] = [[job] for job in jobs if job.pulled]
        gossip = [job for job in jobs if not job.pulled]
        if gossip:  # every gossip message of the batch in one transaction
            units.append(gossip)
        batches = [[entry for job in unit for entry in job.entries] for unit in units]
        checks = self.verifier.pipelined(self.store, batches)
        for unit, entries, checked in zip(units, batches, checks, strict=True):
            outcomes = admit_checked(self.store, entries, checked, sort=unit[0].pulled,
                                     now=now_ms())
            at = 0
            for job in unit:
                job.outcomes = outcomes[at:at + len(job.entries)]
                at += len(job.entries)
        for job in jobs:
            via = "chain" if job.pulled else "gossip"
            for outcome in job.outcomes:
                self.counters.entries.labels(via, _outcome_name(outcome)).inc()
            if job.source is not None:
                for entry in job.entries:
                    self._remember(entry)
        return self._announce()

    def _remember(self, entry: bytes) -> None:
        self._received[_mark(entry)] = None
        if len(self._received) > MAX_RECEIVED_MARKS:
            del self._received[next(iter(self._received))]

    def _announce(self) -> list[bytes]:
        """(Ledger thread.) Bring the sync summaries up to date with the log; the new
        entries that no peer gave us (to publish)."""
        fresh: list[bytes] = []
        for _, message in self._core().announce():
            if isinstance(message, Gossip):
                fresh += [e for e in message.entries if _mark(e) not in self._received]
        return list(dict.fromkeys(fresh))

    async def _announce_loop(self) -> None:
        released_at = trio.current_time()
        while True:
            with trio.move_on_after(RELEASE_INTERVAL_S):
                await self._kicked.wait()
            self._kicked = trio.Event()
            release = trio.current_time() - released_at >= RELEASE_INTERVAL_S
            if release:
                released_at = trio.current_time()
            publish = await self._in_ledger(partial(self._release_and_announce, release))
            await self._publish(publish)

    def _release_and_announce(self, release: bool) -> list[bytes]:
        if release:
            self.store.release(now_ms())
        return self._announce()

    async def _publish(self, entries: list[bytes]) -> None:
        for message in gossip_messages(entries):
            await self.gossip.publish(self.topic, encode_message(message))
            self.counters.published.inc(len(message.entries))

    # -- gossip --------------------------------------------------------------------------
    async def _on_gossip(self, peer: str, data: bytes) -> tuple[Verdict, str | None]:
        try:
            message = decode_message(data)
        except ValueError:
            return Verdict.REJECT, "malformed"
        if not isinstance(message, Gossip) or not message.entries:
            return Verdict.REJECT, "malformed"
        outcomes = await self.ingest(list(message.entries), peer)
        for outcome in outcomes:
            if isinstance(outcome, Rejected) and outcome.reason in FAULT_REASONS:
                log.info("invalid ledger gossip", peer_id=peer, reason=str(outcome.reason))
                return Verdict.REJECT, penalty_for(outcome.reason)
        return Verdict.ACCEPT, None

    # -- SyncBackend ---------------------------------------------------------------------
    async def root_query(self) -> Query:
        return await self._in_ledger(lambda: self._core().root_query())

    async def on_query(self, peer: str, message: Query) -> Summary:
        sends = await self._in_ledger(lambda: self._core().receive(peer, message))
        summary = sends[0][1]
        assert isinstance(summary, Summary)
        return summary

    async def on_summary(self, peer: str, message: Summary, max_pushes: int) -> list[Message]:
        sends = await self._in_ledger(lambda: self._core().on_summary(peer, message, max_pushes))
        return [m for _, m in sends if isinstance(m, Query | Pull | Chain)]

    async def on_pull(self, peer: str, message: Pull) -> Chain:
        sends = await self._in_ledger(lambda: self._core().receive(peer, message))
        chain = sends[0][1]
        assert isinstance(chain, Chain)
        return chain

    async def ingest_pulled(self, peer: str, entries: list[bytes]) -> None:
        await self.ingest(entries, peer, pulled=True)


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Accepted):
        return "accepted"
    if isinstance(outcome, Pending):
        return "pending"
    if isinstance(outcome, Held):
        return "held"
    return "rejected"
