"""Fetching whole DAGs (a file, a world, a log range) from peers: ``n3xus canon fetch``.

One :class:`FetchJob` per requested root. It finds sources (the peers given with ``--from``,
else the connected peers that answer ``have`` to a ``want-have`` and the providers the DHT
knows), opens one blocks session per source, and lets the sans-IO planner
(:class:`~n3xus.protocol.fetch.DagFetch`) spread the wants over them within each peer's
window. Per source there are two tasks: a writer sending the wants the planner gave it and
a reader taking verified answers. A source that fails (it vanished, or broke the protocol:
a block that does not match its CID, garbage) is dropped and its wants go to the others.

Blocks are stored as they arrive (a store task writes them in batches of
:data:`FLUSH_BYTES`, one LMDB transaction each, under a store session so a concurrent GC
cannot take them), so a fetch cut by a disconnect, a crash or a restart resumes with only
what is missing: the planner walks what is stored and wants the rest. A fetch not done is
recorded in LMDB (``node/fetches``: its sources and pin) and resumed at the node's next
start; asking for a DAG that is being fetched attaches to that fetch. Every block is
verified twice before it is kept: by the requester core against its CID (a mismatch is the
peer's fault: counted per peer, penalized, never stored) and again by the block store.

The service also announces pinned roots (``canon put``, finished fetches) to the DHT so
that other nodes find this one as a provider.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import lmdb
import trio
from libp2p.host.basic_host import BasicHost
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from trio_typing import TaskStatus

from n3xus.canon.blockstore import CODEC_DAG_CBOR, Session
from n3xus.canon.cid import CID
from n3xus.canon.codec import decode
from n3xus.canon.errors import CanonError
from n3xus.protocol.blocks import BlockReceived, DontHave
from n3xus.protocol.errors import LocalProtocolError
from n3xus.protocol.fetch import LOCAL_WALK_PER_PLAN, MAX_DAG_BLOCKS, DagFetch

from ..errors import AddressError, NodeError
from ..p2p import host as p2p
from ..p2p.blocks import BlockSession, PeerScores, SessionFailed, ask_have
from .canon import CanonService

logger = logging.getLogger(__name__)

FLUSH_BYTES: Final = 8 * 1024 * 1024
"""Received bytes written per LMDB transaction at most. The environment syncs each commit
(a write acknowledged survives a crash), so one commit per block would cost one fsync per
256 KiB; 8 MiB amortises it while a crash loses at most that much (fetched again)."""
MAX_STORE_QUEUE_BYTES: Final = 4 * FLUSH_BYTES
"""Verified block bytes waiting for the store task: when the disk is slower than the network
the readers wait here, so memory stays bounded. Counted in bytes, not blocks: a queue of 256
blocks forced one commit (one fsync) per 256 KiB of 1 KiB blocks."""
MAX_SOURCES: Final = 8
"""Peers one fetch draws from at once: more adds little on one machine's uplinks and costs a
stream and two tasks each."""
PROVIDER_SEARCH_TIMEOUT_S: Final = 20.0
"""How long a fetch without ``--from`` looks for providers (peers asked, then the DHT)."""
ASK_PEERS_TIMEOUT_S: Final = 5.0
"""How long connected peers get to answer a ``want-have`` for the root."""
MAX_KEPT_FETCHES: Final = 64
"""Finished fetches whose status the API still shows (the oldest are forgotten)."""
ANNOUNCE_CHECK_S: Final = 10.0
"""How often pinned roots are checked for announcing in the DHT: a root put or fetched is
findable by others within about this long."""
REANNOUNCE_S: Final = 12 * 3600.0
"""Provider records are re-announced after this long (Kademlia records expire after 24-48 h)."""
ANNOUNCE_RETRY_S: Final = 60.0
"""A root whose announcement no peer took (no DHT peers yet) is tried again after this."""
RESUME_DELAY_S: Final = 3.0
"""Seconds after start before unfinished fetches resume: bootstrap dials and hellos first."""
MAX_RESUME_ATTEMPTS: Final = 3
"""Starts at which an unfinished fetch is resumed while it keeps failing (no source, blocks
nobody has): after that only the operator asks again."""
_DB_INTENTS: Final = b"node/fetches"
"""LMDB: binary root CID -> JSON {sources, pin, attempts} of a fetch not yet done."""
MAX_ANNOUNCES_PER_ROUND: Final = 16
"""Announcements per round: each is a DHT lookup; a store with thousands of pins spreads
them over rounds instead of flooding the network at start."""


class FetchFailed(NodeError):
    """The DAG could not be fetched (no source, every source failed, blocks nobody has)."""


@dataclass
class SourceStats:
    """What one peer did for one fetch."""

    state: str = "connecting"   # connecting, fetching, finished, failed
    blocks: int = 0
    bytes: int = 0
    dont_haves: int = 0
    mismatches: int = 0
    error: str | None = None
    error_code: str | None = None

    def view(self) -> dict[str, Any]:
        return {"state": self.state, "blocks": self.blocks, "bytes": self.bytes,
                "dont_haves": self.dont_haves, "mismatches": self.mismatches,
                "error": self.error, "error_code": self.error_code}


@dataclass
class FetchJob:
    id: str
    root: CID
    sources: tuple[str, ...]
    pin: bool
    state: str = "searching"    # searching, fetching, done, failed
    error: str | None = None
    peers: dict[str, SourceStats] = field(default_factory=dict)
    planner: DagFetch | None = None
    file_size: int | None = None
    blocks_stored: int = 0
    bytes_stored: int = 0
    rejected: int = 0
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    elapsed_s: float | None = None
    finished: trio.Event = field(default_factory=trio.Event)

    def status(self) -> dict[str, Any]:
        progress = self.planner.progress if self.planner is not None else None
        elapsed = self.elapsed_s if self.elapsed_s is not None else time.monotonic() - self.started
        fetched_bytes = progress.bytes_fetched if progress else 0
        return {
            "id": self.id, "cid": str(self.root), "state": self.state, "error": self.error,
            "sources": list(self.sources), "pin": self.pin,
            "file_size": self.file_size,
            "blocks_fetched": progress.blocks_fetched if progress else 0,
            "bytes_fetched": fetched_bytes,
            "blocks_stored_before": progress.blocks_stored_before if progress else 0,
            "blocks_known": progress.blocks_known if progress else 0,
            "outstanding": progress.outstanding if progress else 0,
            "unavailable": progress.unavailable if progress else 0,
            "blocks_stored": self.blocks_stored, "bytes_stored": self.bytes_stored,
            "rejected": self.rejected,
            "peers": {peer: stats.view() for peer, stats in self.peers.items()},
            "started_at": round(self.started_at, 3), "elapsed_s": round(elapsed, 3),
            "bytes_per_s": round(fetched_bytes / elapsed, 1) if elapsed > 0 else 0.0,
        }

    def fail(self, reason: str) -> None:
        self.state, self.error = "failed", reason


class FetchMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.blocks = PromCounter("n3xus_fetch_blocks", "Blocks fetched from peers and stored",
                                  registry=registry)
        self.bytes = PromCounter("n3xus_fetch_bytes", "Bytes of blocks fetched from peers",
                                 registry=registry)
        self.mismatches = PromCounter(
            "n3xus_fetch_block_mismatches",
            "Blocks from peers whose bytes did not match their CID (never stored)",
            registry=registry)
        self.announced = PromCounter("n3xus_fetch_roots_announced",
                                     "Pinned roots announced in the DHT", registry=registry)


class FetchService:
    """DAG fetches and provider announcements. ``await nursery.start(service.run)``."""

    def __init__(self, host: BasicHost, canon: CanonService, *,
                 peerbook: PeerScores | None = None, discovery: Any = None,
                 registry: CollectorRegistry | None = None, announce: bool = True,
                 announce_check_s: float = ANNOUNCE_CHECK_S) -> None:
        self.host = host
        self.canon = canon
        self.peerbook = peerbook
        self.discovery = discovery
        self.announce = announce
        self.announce_check_s = announce_check_s
        self.metrics = FetchMetrics(registry)
        self.jobs: dict[str, FetchJob] = {}
        self.mismatches: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._announced: dict[CID, float] = {}
        self._intents = canon.env.open_db(_DB_INTENTS)

    # -- API ---------------------------------------------------------------------
    async def run(self, *, resume: bool = True,
                  task_status: TaskStatus[FetchService] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve fetches until cancelled; with ``resume``, fetches a previous run of the
        node left unfinished (a crash, a stop) start again after RESUME_DELAY_S."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.announce and self.discovery is not None:
                nursery.start_soon(self._announce_loop)
            if resume:
                nursery.start_soon(self._resume_unfinished)
            task_status.started(self)
            await trio.sleep_forever()

    def start(self, root: CID, sources: Sequence[str] = (), *, pin: bool = True) -> FetchJob:
        """Start fetching the DAG under ``root`` (from ``sources``: peer ids or dial
        addresses; none: find providers). Returns at once; watch ``job.status()``."""
        if self._nursery is None:
            raise NodeError("the fetch service is not running")
        running = next((j for j in self.jobs.values()
                        if j.root == root and not j.finished.is_set()), None)
        if running is not None:
            return running  # one fetch per DAG at a time: it would fetch blocks twice
        job = FetchJob(f"f{next(self._ids)}", root, tuple(sources), pin)
        self.jobs[job.id] = job
        while len(self.jobs) > MAX_KEPT_FETCHES:
            oldest = next((j for j in self.jobs.values() if j.finished.is_set()), None)
            if oldest is None:
                break
            del self.jobs[oldest.id]
        self._nursery.start_soon(self._run_job, job)
        return job

    async def fetch(self, root: CID, sources: Sequence[str] = (), *, pin: bool = True) -> FetchJob:
        job = self.start(root, sources, pin=pin)
        await job.finished.wait()
        return job

    def snapshot(self) -> dict[str, Any]:
        return {"fetches": len(self.jobs),
                "running": sum(1 for j in self.jobs.values() if not j.finished.is_set()),
                "mismatches_by_peer": dict(self.mismatches),
                "announced_roots": len(self._announced)}

    async def providers(self, root: CID) -> dict[str, Any]:
        """Who has ``root``: connected peers that say so, and the DHT's providers."""
        me = str(self.host.get_id())
        connected = [peer for peer, _ in p2p.connected_peers(self.host) if peer != me]
        peers = await ask_have(self.host, connected, root, self.peerbook, ASK_PEERS_TIMEOUT_S)
        dht: list[dict[str, Any]] = []
        if self.discovery is not None and self.discovery.dht is not None:
            found = await self.discovery.find_providers(root)
            dht = [{"peer_id": peer, "addrs": addrs} for peer, addrs in found if peer != me]
        return {"cid": str(root), "peers": sorted(peers), "dht": dht}

    # -- one fetch -----------------------------------------------------------------
    async def _run_job(self, job: FetchJob) -> None:
        try:
            await trio.to_thread.run_sync(self._remember, job, 0)
            with self.canon.store.session() as session:
                await self._fetch(job, session)
        except FetchFailed as exc:
            job.fail(str(exc))
        except (CanonError, LocalProtocolError, lmdb.Error) as exc:
            job.fail(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a bug: this fetch fails, the node and other fetches go on
            logger.exception("fetch %s of %s crashed", job.id, job.root)
            job.fail(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            job.elapsed_s = time.monotonic() - job.started
            if job.state != "done" and job.error is None:
                job.fail("cancelled")  # the node is stopping
            with trio.CancelScope(shield=True):  # also when the node is stopping
                await trio.to_thread.run_sync(self._settle, job)
            job.finished.set()
            logger.info("fetch %s of %s: %s", job.id, job.root, job.error or job.state)

    async def _fetch(self, job: FetchJob, session: Session) -> None:
        planner = await trio.to_thread.run_sync(DagFetch, job.root, self.canon.store)
        job.planner = planner
        # What is stored first: a resumed fetch wants only the rest.
        await trio.to_thread.run_sync(_walk_stored, planner)
        if self.canon.store.has(job.root):
            info = await trio.to_thread.run_sync(self.canon.file_info, job.root)
            job.file_size = None if info is None else info.size
        if not planner.done:
            peers = await self._find_sources(job)
            if not peers:
                raise FetchFailed(f"no peer to fetch {job.root} from"
                                  + (" (none of the given sources is reachable)"
                                     if job.sources else " (no provider found)"))
            job.state = "fetching"
            await _Transfer(self, job, planner, session).run(peers[:MAX_SOURCES])
        if job.pin:
            await trio.to_thread.run_sync(lambda: session.pin(job.root, str(job.root),
                                                              recursive=True))
        job.state = "done"
        if self.discovery is not None and self.announce and self._nursery is not None:
            self._nursery.start_soon(self._provide, job.root)

    async def _find_sources(self, job: FetchJob) -> list[str]:
        me = str(self.host.get_id())
        if job.sources:
            peers: list[str] = []
            for source in job.sources:
                try:
                    peer = await self._reach(source)
                except (AddressError, NodeError, OSError) as exc:
                    job.peers[source] = SourceStats("failed", error=str(exc))
                    continue
                if peer != me and peer not in peers:
                    peers.append(peer)
            return peers
        found: list[str] = []
        with trio.move_on_after(PROVIDER_SEARCH_TIMEOUT_S):
            connected = [peer for peer, _ in p2p.connected_peers(self.host) if peer != me]
            found = await ask_have(self.host, connected, job.root, self.peerbook,
                                   ASK_PEERS_TIMEOUT_S)
            if self.discovery is not None and self.discovery.dht is not None:
                for peer, addrs in await self.discovery.find_providers(job.root):
                    if peer == me or peer in found:
                        continue
                    for addr in addrs:
                        try:
                            found.append(await p2p.connect(self.host, addr))
                            break
                        except (AddressError, p2p.DialError) as exc:
                            logger.debug("provider %s at %s: %s", peer, addr, exc)
        return found

    async def _reach(self, source: str) -> str:
        """The peer id of a source, connected: a dial address is dialled; a peer id must
        be connected already or be found through the DHT."""
        if source.startswith("/"):
            return await p2p.connect(self.host, source)
        peer = str(p2p.parse_peer_id(source))
        if any(peer == connected for connected, _ in p2p.connected_peers(self.host)):
            return peer
        if self.discovery is not None and self.discovery.dht is not None:
            for addr in await self.discovery.find_peer(peer):
                try:
                    return await p2p.connect(self.host, addr)
                except p2p.DialError as exc:
                    logger.debug("dial %s: %s", addr, exc)
        raise NodeError(f"{peer} is not connected and cannot be found")

    # -- unfinished fetches ----------------------------------------------------------
    def _remember(self, job: FetchJob, attempts: int) -> None:
        """Record the fetch as unfinished (until it is done), with its sources."""
        key = bytes(job.root)
        with self.canon.env.begin(write=True, db=self._intents) as txn:
            old = txn.get(key)
            if old is not None:
                attempts = max(attempts, int(json.loads(bytes(old))["attempts"]))
            txn.put(key, json.dumps({"sources": list(job.sources), "pin": job.pin,
                                     "attempts": attempts}).encode())

    def _settle(self, job: FetchJob) -> None:
        """Done: forget it. Failed for a reason: count the attempt. Cancelled (the node
        stopped): keep it as it is, to resume at the next start."""
        key = bytes(job.root)
        with self.canon.env.begin(write=True, db=self._intents) as txn:
            old = txn.get(key)
            if job.state == "done" or old is None:
                txn.delete(key)
                return
            if job.error != "cancelled":
                record = json.loads(bytes(old))
                record["attempts"] = int(record["attempts"]) + 1
                txn.put(key, json.dumps(record).encode())

    def unfinished(self) -> list[tuple[CID, dict[str, Any]]]:
        with self.canon.env.begin(db=self._intents) as txn:
            return [(CID(bytes(key)), json.loads(bytes(value))) for key, value in txn.cursor()]

    async def _resume_unfinished(self) -> None:
        await trio.sleep(RESUME_DELAY_S)
        for root, record in await trio.to_thread.run_sync(self.unfinished):
            if int(record["attempts"]) < MAX_RESUME_ATTEMPTS:
                logger.info("resuming the unfinished fetch of %s", root)
                self.start(root, record["sources"], pin=bool(record["pin"]))

    # -- announcing ------------------------------------------------------------------
    async def _announce_loop(self) -> None:
        while True:
            await trio.sleep(self.announce_check_s)
            if self.discovery is None or self.discovery.dht is None:
                continue
            now = trio.current_time()
            pins = await trio.to_thread.run_sync(self.canon.store.pins)
            due = [pin.cid for pin in pins
                   if now >= self._announced.get(pin.cid, float("-inf"))]
            for cid in list(dict.fromkeys(due))[:MAX_ANNOUNCES_PER_ROUND]:
                await self._provide(cid)

    async def _provide(self, cid: CID) -> None:
        try:
            ok = await self.discovery.provide(cid)
        except NodeError as exc:
            logger.debug("announcing %s: %s", cid, exc)
            ok = False
        self._announced[cid] = trio.current_time() + (REANNOUNCE_S if ok else ANNOUNCE_RETRY_S)
        if ok:
            self.metrics.announced.inc()


class _Transfer:
    """The transfer part of one fetch: sources, their tasks, the store task."""

    def __init__(self, service: FetchService, job: FetchJob, planner: DagFetch,
                 session: Session) -> None:
        self.service = service
        self.job = job
        self.planner = planner
        self.session = session
        self.outbox: dict[str, list[CID]] = {}
        self.wakeups: dict[str, trio.Event] = {}
        self.active: set[str] = set()
        self.complete = trio.Event()
        self.store_error: str | None = None
        # Unbounded as a channel; bounded in bytes by _queue_block (MAX_STORE_QUEUE_BYTES).
        self.store_send, self.store_receive = trio.open_memory_channel[tuple[CID, bytes]](
            float("inf"))
        self.queued_bytes = 0
        self.drained = trio.Event()

    async def run(self, peers: Sequence[str]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._store_blocks)
            async with self.store_send, trio.open_nursery() as sources:
                for peer in peers:
                    self.active.add(peer)
                    self.job.peers[peer] = SourceStats()
                    sources.start_soon(self._source, peer)
                await self.complete.wait()
                sources.cancel_scope.cancel()
        # The store task has written everything (the channel closed above).
        if self.store_error is not None:
            raise FetchFailed(self.store_error)
        if not self.planner.done:
            raise FetchFailed(self._why_not_done())

    def _why_not_done(self) -> str:
        planner = self.planner
        if planner.failed:
            cid, reason = next(iter(planner.failed.items()))
            return f"block {cid} is not a valid block: {reason}"
        if planner.unavailable:
            return (f"{len(planner.unavailable)} blocks of the DAG are on none of the "
                    "sources (they answered dont-have)")
        errors = "; ".join(f"{peer}: {stats.error}" for peer, stats in self.job.peers.items()
                           if stats.error)
        return f"every source failed ({errors or 'no source left'})"

    def _dispatch(self) -> None:
        """Ask the planner for new wants and hand them to the sources' writers; notice
        the end of the fetch."""
        for peer, cids in self.planner.plan().items():
            self.outbox.setdefault(peer, []).extend(cids)
            self.wakeups[peer].set()
        if self.planner.done or self.planner.stuck or not self.active:
            self.complete.set()

    async def _source(self, peer: str) -> None:
        stats = self.job.peers[peer]
        service = self.service
        failures: list[SessionFailed] = []
        try:
            async with await BlockSession.open(service.host, peer, service.peerbook) as session:
                stats.state = "fetching"
                self.wakeups[peer] = trio.Event()
                self.planner.add_peer(peer, session.limit)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_wants, peer, session, nursery.cancel_scope,
                                       failures)
                    self._dispatch()
                    try:
                        await self._take_answers(peer, session, stats)
                    except SessionFailed as exc:
                        failures.append(exc)
                    nursery.cancel_scope.cancel()
            if failures:
                raise failures[0]
        except SessionFailed as exc:
            stats.state, stats.error = "failed", str(exc)
            stats.error_code = exc.code.label if exc.code is not None else None
        finally:
            if stats.state == "fetching":
                stats.state = "finished"
            self.active.discard(peer)
            self.planner.remove_peer(peer)
            self.wakeups.pop(peer, None)
            self.outbox.pop(peer, None)
            if stats.blocks and service.peerbook is not None:
                service.peerbook.reward(peer)
            self._dispatch()

    async def _send_wants(self, peer: str, session: BlockSession, scope: trio.CancelScope,
                          failures: list[SessionFailed]) -> None:
        try:
            while True:
                await self.wakeups[peer].wait()
                self.wakeups[peer] = trio.Event()
                cids, self.outbox[peer] = self.outbox.get(peer, []), []
                await session.want(cids)
        except SessionFailed as exc:
            failures.append(exc)
            scope.cancel()

    async def _take_answers(self, peer: str, session: BlockSession, stats: SourceStats) -> None:
        planner, job, metrics = self.planner, self.job, self.service.metrics
        while True:
            try:
                events = await session.next_answers()
            finally:
                if session.mismatches > stats.mismatches:
                    new = session.mismatches - stats.mismatches
                    stats.mismatches += new
                    self.service.mismatches[peer] += new
                    metrics.mismatches.inc(new)
            if not events:
                raise SessionFailed(f"{peer} closed the stream with wants outstanding")
            for event in events:
                if isinstance(event, BlockReceived):
                    if event.cid == job.root and event.cid.codec == CODEC_DAG_CBOR:
                        job.file_size = _file_size(event.data)
                    planner.block_received(peer, event.cid, event.data)
                    stats.blocks += 1
                    stats.bytes += len(event.data)
                    metrics.blocks.inc()
                    metrics.bytes.inc(len(event.data))
                    await self._queue_block(event.cid, event.data)
                elif isinstance(event, DontHave):
                    stats.dont_haves += 1
                    planner.dont_have(peer, event.cid)
            planner.set_window(peer, session.limit)
            self._dispatch()
            if self.complete.is_set():
                return

    async def _queue_block(self, cid: CID, data: bytes) -> None:
        while self.queued_bytes >= MAX_STORE_QUEUE_BYTES:
            await self.drained.wait()
            self.drained = trio.Event()
        self.queued_bytes += len(data)
        self.store_send.send_nowait((cid, data))

    async def _store_blocks(self) -> None:
        """Writes verified blocks in batches; the store checks each once more."""
        try:
            await self._store_batches()
        except (CanonError, lmdb.Error) as exc:
            self.store_error = f"storing fetched blocks failed: {exc}"
            self.complete.set()

    async def _store_batches(self) -> None:
        job = self.job
        async with self.store_receive:
            async for first in self.store_receive:
                batch = [first]
                size = len(first[1])
                while size < FLUSH_BYTES:
                    try:
                        item = self.store_receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(item)
                    size += len(item[1])
                self.queued_bytes -= size
                self.drained.set()
                rejected: list[tuple[CID, CanonError]] = []
                stored = await trio.to_thread.run_sync(self.session.put_blocks, batch,
                                                       _collector(rejected))
                refused = {cid for cid, _ in rejected}
                job.blocks_stored += len(stored)
                job.bytes_stored += sum(len(data) for cid, data in batch if cid not in refused)
                job.rejected += len(rejected)
                for cid, error in rejected:
                    logger.warning("fetch %s: block %s refused by the store: %s",
                                   job.id, cid, error)


def _collector(out: list[tuple[CID, CanonError]]) -> Callable[[CID, CanonError], None]:
    def collect(cid: CID, error: CanonError) -> None:
        out.append((cid, error))
    return collect


def _walk_stored(planner: DagFetch) -> None:
    """Let the planner read the links of every stored block of the DAG (it reads at most
    LOCAL_WALK_PER_PLAN per call; with no peer added, a call wants nothing)."""
    for _ in range(MAX_DAG_BLOCKS // LOCAL_WALK_PER_PLAN + 1):
        planner.plan()
        if planner.done or planner.stuck:
            return


def _file_size(data: bytes) -> int | None:
    """The size of an n3xus file from its root block (for the progress bar's total)."""
    try:
        value = decode(data)
    except (CanonError, ValueError):
        return None
    if isinstance(value, dict) and value.get("type") == "n3xus/file/v1":
        size = value.get("size")
        return size if isinstance(size, int) else None
    return None

