"""World-state federation: following worlds of other nodes and sharing worlds between writers
(issue 9; specs/canon-world.md §8-§9, specs/protocol-world-sync.md).

Two kinds of *tracked* world, kept in LMDB (``federation/worlds``: name -> DAG-CBOR
``{"mode", "owner", "sources"}``):

* ``follow``: another node's ordinary world. Its owner's signed commits become our head as
  they are (``canon.world_adopt``), after every commit since the last one we took is fetched
  and verified, and only if the new head descends from ours (an owner that forks its own
  history is refused). Nobody writes it here.
* ``shared``: a world of several writers (canon-world.md §8). Our head is our own commit of
  our replica; a peer's head is merged in (``SharedWorld.merge``: union of signed records)
  when its commit verifies and its author is a writer of the merged state. Local writes are
  signed records (the writer check is the merged writer set); only the owner changes the set.
  Removal is final: the merge drops the removed writer's records (ours too), so a removed
  writer's commits, refused by every node, leave no record behind on any replica.

Moving heads: the announce loop tells connected peers (``announce``) whenever a world's head
here changes; announcements of tracked worlds queue a sync from the announcer. Gossip is best
effort, so an anti-entropy loop also asks connected peers and the follow sources for their
heads every ``sync_interval_s``: a node that was down catches up by itself. A sync fetches the
commit chain, then only the changed MST paths (:mod:`.world_fetch`), then verifies and merges
in a worker thread. A rejected head (bad signature, non-writer, fork) is remembered and
counted, never merged.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from nacl.signing import SigningKey
from trio_typing import TaskStatus

from n3xus.canon.blockstore import Session
from n3xus.canon.cid import CID
from n3xus.canon.codec import decode, encode
from n3xus.canon.entries import WorldCommit
from n3xus.canon.errors import CanonError
from n3xus.canon.world import World, diff
from n3xus.canon.world_merge import (
    MAX_RECORDS_PER_KEY,
    RECORD_TAG,
    WRITERS_PREFIX,
    Record,
    SharedWorld,
    signing_bytes,
)
from n3xus.protocol.errors import ProtocolError
from n3xus.protocol.framing import decode_message
from n3xus.protocol.world_sync import Announce, Head, parse, to_map

from ..errors import NodeError
from ..logs import get_logger
from ..p2p import host as p2p
from ..p2p.blocks import BlockSession, SessionFailed
from ..p2p.world_sync import WorldSyncFailed, WorldSyncServer, announce, request_head
from .canon import CanonService, WorldNotFoundError, WorldWrite
from .world_fetch import (
    GetMany,
    WorldFetchError,
    fetch_commit_chain,
    fetch_world_delta,
    session_getter,
)

log = get_logger("n3xus.worlds")

_DB_TRACKED = b"federation/worlds"
_DB_AUTHORS = b"federation/world-authors"  # name \0 author -> last commit merged/adopted
SYNC_INTERVAL_ENV: Final = "N3XUS_WORLD_SYNC_INTERVAL_S"
DEFAULT_SYNC_INTERVAL_S: Final = 10.0
"""Anti-entropy period: announcements carry changes at once; this only bounds how long a
missed announcement (a node down, a dropped stream) stays missed."""
FIRST_ROUND_S: Final = 3.0
"""Delay of the first anti-entropy round after start: time for bootstrap dials and hellos."""
ANNOUNCE_CHECK_S: Final = 0.2
"""How often local heads are compared with what was last announced (one LMDB cursor over
the world names): the delay between a local commit and its announcement."""
SYNC_QUEUE: Final = 256
"""Queued announced heads; when full, further announcements are dropped (counted) and the
next anti-entropy round picks the change up."""
MAX_SYNC_PEERS: Final = 16
"""Peers asked per world per anti-entropy round."""
MAX_REJECTED_REMEMBERED: Final = 10_000
"""Rejected head CIDs kept so a bad head is not fetched again on every round."""
MAX_SOURCES: Final = 16


class WorldFederationError(NodeError):
    """A follow or writers operation that cannot be done (409-like conflicts)."""


class NotAWriterError(PermissionError):
    """The key may not write this world (not in its writer set, or the world is followed)."""


@dataclass
class Tracked:
    name: str
    mode: str  # "follow" | "shared"
    owner: bytes
    sources: list[str]

    def to_block(self) -> bytes:
        return encode({"mode": self.mode, "owner": self.owner, "sources": self.sources})

    @classmethod
    def from_block(cls, name: str, data: bytes) -> Tracked:
        value = decode(data)
        return cls(name, value["mode"], value["owner"], list(value["sources"]))


@dataclass
class WorldStats:
    syncs: int = 0
    adopted: int = 0
    rejected: int = 0
    commits_verified: int = 0
    blocks_fetched: int = 0
    last_blocks_fetched: int = 0
    last_error: str | None = None
    last_rejected: str | None = None  # the head CID last rejected
    last_sync_at: float | None = None

    def view(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SharedValues:
    """The current values of a shared world, read like a World (get_link, get, items, len)."""

    def __init__(self, shared: SharedWorld) -> None:
        self.shared = shared
        self.writers = frozenset(shared.writers())
        self.root = shared.root

    def get_link(self, key: str) -> CID | None:
        return self.shared.link(key, self.writers)

    def get(self, key: str, default: Any = None) -> Any:
        link = self.get_link(key)
        return default if link is None else decode(self.shared.tree.store.get(link))

    def items(self, prefix: str | None = None) -> Iterator[tuple[str, Any]]:
        for key, link in self.shared.items():
            if prefix is None or key.startswith(prefix):
                yield key, decode(self.shared.tree.store.get(link))

    def __len__(self) -> int:
        return sum(1 for _ in self.shared.items())


@dataclass
class SyncOutcome:
    world: str
    peer: str
    head: str | None
    result: str  # "current", "adopted", "merged", "rejected", "failed", "untracked"
    reason: str | None = None
    commits_verified: int = 0
    blocks_fetched: int = 0
    root: str | None = None

    def view(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Runtime:
    locks: dict[str, trio.Lock] = field(default_factory=dict)
    rejected: dict[CID, str] = field(default_factory=dict)
    announced: dict[str, CID] = field(default_factory=dict)
    dropped_announces: int = 0


class WorldsFederation:
    """``await nursery.start(service.run)``; the node registers :attr:`server` before dialing."""

    def __init__(self, canon: CanonService, host: Any = None, peerbook: Any = None, *,
                 sync_interval_s: float | None = None) -> None:
        self.canon = canon
        self.store = canon.store
        self.host = host
        self.peerbook = peerbook
        env_interval = os.environ.get(SYNC_INTERVAL_ENV)
        self.sync_interval_s = (sync_interval_s if sync_interval_s is not None
                                else float(env_interval) if env_interval
                                else DEFAULT_SYNC_INTERVAL_S)
        self._tracked_db = canon.env.open_db(_DB_TRACKED)
        self._authors_db = canon.env.open_db(_DB_AUTHORS)
        self._lock = threading.RLock()  # local writes vs merge commits of tracked worlds
        self.tracked: dict[str, Tracked] = {}
        with canon.env.begin(db=self._tracked_db) as txn:
            for key, value in txn.cursor():
                name = bytes(key).decode()
                self.tracked[name] = Tracked.from_block(name, bytes(value))
        self.stats: dict[str, WorldStats] = {}
        self._rt = _Runtime()
        self._queue_send, self._queue_receive = trio.open_memory_channel[tuple[str, Head]](SYNC_QUEUE)
        self._wake = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        # Gossipsub (node/p2p/gossip.py), when the node runs one: announcements are published
        # on ``topic`` (``/n3xus/world/<network>``) and reach peers of peers; without it they
        # go to each connected peer on a world-sync stream.
        self.gossip: Any = None
        self.topic: str | None = None
        self.server = (WorldSyncServer(host, peerbook, self.head_of, self.on_announce)
                       if host is not None else None)
        canon.hook = self

    # -- the canon hook (worker threads) ----------------------------------------------
    def handles(self, name: str) -> bool:
        return name in self.tracked

    def _shared(self, name: str, tracked: Tracked, at: CID | None = None) -> SharedWorld:
        if at is None:
            try:
                at = self.canon.world_head(name)[1].root
            except WorldNotFoundError:
                at = None
        else:
            value = decode(self.store.get(at))
            if isinstance(value, dict) and "world" in value and "root" in value:
                at = value["root"]
        return SharedWorld(self.store, tracked.owner, name, at)

    def values(self, name: str, at: CID | None) -> Any:
        tracked = self.tracked[name]
        if tracked.mode == "follow":
            return self.canon.world(name, at)
        if at is None:
            self.canon.world_head(name)  # WorldNotFoundError before any replica exists
        return SharedValues(self._shared(name, tracked, at))

    def update(self, name: str, set_values: dict[str, Any], delete: list[str],
               signer: SigningKey) -> WorldWrite:
        tracked = self.tracked[name]
        if tracked.mode == "follow":
            raise NotAWriterError(f"world {name!r} follows the world of {tracked.owner.hex()}; "
                                  "only its owner writes it")
        for key in [*set_values, *delete]:
            if key.startswith(WRITERS_PREFIX):
                raise ValueError(f"keys under {WRITERS_PREFIX} are reserved for the writer set "
                                 "(use world writers add/remove)")
        with self._lock:
            shared = self._shared(name, tracked)
            author = bytes(signer.verify_key)
            if author not in shared.writers():
                raise NotAWriterError(f"{author.hex()} is not a writer of world {name!r} "
                                      f"(owner {tracked.owner.hex()})")
            changes: dict[str, CID | None] = {
                key: self.store.put(encode(value)) for key, value in set_values.items()}
            changes.update({key: None for key in delete if shared.link(key) is not None})
            shared = _write_many(shared, signer, changes)
            return self.canon.world_commit_root(name, shared.root, signer)

    # -- writers (worker threads) -------------------------------------------------------
    def _save(self, tracked: Tracked | None, name: str) -> None:
        with self.canon.env.begin(write=True, db=self._tracked_db) as txn:
            if tracked is None:
                txn.delete(name.encode())
            else:
                txn.put(name.encode(), tracked.to_block())
        if tracked is None:
            self.tracked.pop(name, None)
        else:
            self.tracked[name] = tracked

    def _convert(self, name: str) -> Tracked:
        """Make our plain world ``name`` shared, owned by the node key: every key becomes a
        record of ours at clock 1 (a fresh world if it does not exist)."""
        key = self.canon.key
        owner = bytes(key.verify_key)
        records: dict[str, Any] = {}
        try:
            head = self.canon.world_head(name)[1]
            if head.author != owner:
                raise WorldFederationError(f"world {name!r} here is signed by {head.author.hex()}, "
                                           "not this node: only its owner can share it")
            for item_key, link in World(self.store, head.root).links():
                signature = key.sign(RECORD_TAG + encode({"c": 1, "k": item_key, "o": owner,
                                                          "v": link, "w": name})).signature
                records[item_key] = {"r": [Record(owner, 1, item_key, link, signature).to_map()]}
        except WorldNotFoundError:
            pass
        tree = World(self.store).update(set=records)
        tracked = Tracked(name, "shared", owner, [])
        self.canon.world_commit_root(name, tree.root)
        self._save(tracked, name)
        return tracked

    def set_writer(self, name: str, writer: bytes, active: bool) -> dict[str, Any]:
        with self._lock:
            tracked = self.tracked.get(name)
            me = bytes(self.canon.key.verify_key)
            if tracked is None:
                if not active:
                    raise WorldFederationError(f"world {name!r} is not shared: no writer to remove")
                tracked = self._convert(name)
            if tracked.mode != "shared" or tracked.owner != me:
                raise NotAWriterError(f"only the owner of world {name!r} "
                                      f"({tracked.owner.hex()}) changes its writers")
            if writer == me:
                raise WorldFederationError("the owner is always a writer")
            shared = self._shared(name, tracked)
            if active and writer in shared.removed():
                raise WorldFederationError(f"{writer.hex()} was removed from world {name!r}; "
                                           "removal is final (add a new key instead)")
            shared = shared.set_writer(self.canon.key, writer, active)
            self.canon.world_commit_root(name, shared.root)
        self._poke()
        return self.writers(name)

    def writers(self, name: str) -> dict[str, Any]:
        tracked = self.tracked.get(name)
        if tracked is None:
            head = self.canon.world_head(name)[1]
            return {"world": name, "mode": "local", "owner": head.author.hex(),
                    "writers": [head.author.hex()]}
        if tracked.mode == "follow":
            return {"world": name, "mode": "follow", "owner": tracked.owner.hex(),
                    "writers": [tracked.owner.hex()]}
        return {"world": name, "mode": "shared", "owner": tracked.owner.hex(),
                "writers": [key.hex() for key in self._shared(name, tracked).writers()]}

    def status(self, name: str) -> dict[str, Any]:
        tracked = self.tracked.get(name)
        stats = self.stats.get(name, WorldStats())
        return {"world": name, "mode": "local" if tracked is None else tracked.mode,
                "owner": None if tracked is None else tracked.owner.hex(),
                "sources": [] if tracked is None else list(tracked.sources),
                "stats": stats.view()}

    # -- follow ---------------------------------------------------------------------------
    async def follow(self, name: str, source: str) -> SyncOutcome:
        """Track ``name`` as it is on ``source`` (a peer id or dial address) and sync once."""
        peer = await self._reach(source)
        head = await request_head(self.host, self.peerbook, peer, name)
        if head.head is None or head.author is None:
            raise WorldFederationError(f"{peer} has no world named {name!r}")
        tracked = self.tracked.get(name)
        mode, owner = ("shared", head.owner) if head.owner is not None else ("follow", head.author)
        if tracked is None:
            try:
                await trio.to_thread.run_sync(self.canon.world_head, name)
                raise WorldFederationError(f"a world named {name!r} already exists here; "
                                           "following needs a name not in use")
            except WorldNotFoundError:
                pass
            tracked = Tracked(name, mode, owner, [])
        elif tracked.owner != owner:
            raise WorldFederationError(f"world {name!r} here is of {tracked.owner.hex()}, "
                                       f"{peer} has the one of {owner.hex()}")
        if source not in tracked.sources:
            tracked.sources = [*tracked.sources, source][-MAX_SOURCES:]
        await trio.to_thread.run_sync(self._save, tracked, name)
        return await self.sync(peer, head)

    async def unfollow(self, name: str) -> dict[str, Any]:
        tracked = self.tracked.get(name)
        if tracked is None:
            raise WorldFederationError(f"world {name!r} is not followed here")
        if tracked.mode == "shared" and tracked.owner == bytes(self.canon.key.verify_key):
            raise WorldFederationError(f"world {name!r} is shared by this node (its owner); "
                                       "remove writers instead")
        await trio.to_thread.run_sync(self._save, None, name)
        return {"world": name, "following": False}

    async def _reach(self, source: str) -> str:
        if source.startswith("/"):
            return await p2p.connect(self.host, source)
        peer = str(p2p.parse_peer_id(source))
        if any(peer == connected for connected, _ in p2p.connected_peers(self.host)):
            return peer
        raise WorldFederationError(f"{peer} is not connected; give its dial address")

    # -- the protocol's callbacks -----------------------------------------------------------
    async def head_of(self, name: str) -> Head:
        tracked = self.tracked.get(name)
        try:
            cid, commit = await trio.to_thread.run_sync(self.canon.world_head, name)
        except (WorldNotFoundError, CanonError):
            return Head(name, None, None, None)
        owner = tracked.owner if tracked is not None and tracked.mode == "shared" else None
        return Head(name, cid, commit.author, owner)

    def on_announce(self, peer: str, message: Announce) -> None:
        if message.world not in self.tracked:
            return
        try:
            self._queue_send.send_nowait((peer, Head(message.world, message.head,
                                                     message.author, message.owner)))
        except trio.WouldBlock:
            self._rt.dropped_announces += 1

    async def _on_gossip(self, peer: str, data: bytes) -> tuple[Any, str | None]:
        """A gossiped announcement: malformed is rejected (the forwarder pays); any
        well-formed one is forwarded, and for a tracked world a sync from the forwarder
        is queued (it forwarded the head, so it most likely has its blocks)."""
        from ..p2p.gossip import Verdict

        try:
            message = parse(decode_message(data))
        except (ProtocolError, ValueError):
            return Verdict.REJECT, "malformed"
        if not isinstance(message, Announce):
            return Verdict.REJECT, "malformed"
        self.on_announce(peer, message)
        return Verdict.ACCEPT, None

    def _poke(self) -> None:
        """From a worker thread: a head changed, announce soon."""
        if self._token is not None:
            self._token.run_sync_soon(self._wake.set)

    # -- sync ------------------------------------------------------------------------------
    async def sync(self, peer: str, head: Head) -> SyncOutcome:
        name = head.world
        lock = self._rt.locks.setdefault(name, trio.Lock())
        async with lock:
            outcome = await self._sync(peer, head)
        stats = self.stats.setdefault(name, WorldStats())
        stats.syncs += 1
        stats.last_sync_at = time.time()
        stats.commits_verified += outcome.commits_verified
        stats.blocks_fetched += outcome.blocks_fetched
        if outcome.blocks_fetched:
            stats.last_blocks_fetched = outcome.blocks_fetched
        if outcome.result in ("adopted", "merged"):
            stats.adopted += 1
            self._wake.set()
        elif outcome.result == "rejected":
            stats.rejected += 1
            stats.last_error = outcome.reason
            stats.last_rejected = outcome.head
        elif outcome.result == "failed":
            stats.last_error = outcome.reason
        if outcome.result == "failed" or (outcome.result == "rejected" and head.head is not None
                                          and head.head in self._rt.rejected):
            log.info("world sync", world=name, peer=peer, result=outcome.result,
                     reason=outcome.reason)
        elif outcome.result == "rejected":
            # A follower's own commits of a shared world are refused every round: expected.
            log.debug("world sync", world=name, peer=peer, result=outcome.result,
                      reason=outcome.reason)
        return outcome

    def _known_author_head(self, name: str, author: bytes) -> CID | None:
        with self.canon.env.begin(db=self._authors_db) as txn:
            raw = txn.get(name.encode() + b"\0" + author)
        return None if raw is None else CID(bytes(raw))

    def _set_author_head(self, name: str, author: bytes, cid: CID) -> None:
        with self.canon.env.begin(write=True, db=self._authors_db) as txn:
            txn.put(name.encode() + b"\0" + author, bytes(cid))

    async def _sync(self, peer: str, head: Head) -> SyncOutcome:
        name = head.world
        out = SyncOutcome(name, peer, None if head.head is None else str(head.head), "current")
        tracked = self.tracked.get(name)
        if tracked is None:
            out.result = "untracked"
            return out
        if head.head is None or head.author is None:
            return out
        run = trio.to_thread.run_sync
        try:
            local_cid, local_commit = await run(self.canon.world_head, name)
        except WorldNotFoundError:
            local_cid, local_commit = None, None
        known = await run(self._known_author_head, name, head.author)
        if head.head in (local_cid, known):
            return out
        if head.head in self._rt.rejected:
            out.result, out.reason = "rejected", self._rt.rejected[head.head]
            return out
        expected_owner = head.owner if head.owner is not None else head.author
        mode = "shared" if head.owner is not None else "follow"
        if expected_owner != tracked.owner or (mode == "follow" and tracked.mode == "shared"):
            return self._reject(out, head.head, f"{peer}'s world {name!r} is of "
                                f"{expected_owner.hex()} ({mode}), ours of "
                                f"{tracked.owner.hex()} ({tracked.mode})")
        converting = mode == "shared" and tracked.mode == "follow"
        if mode == "shared" and not converting and local_commit is not None:
            writers = await run(lambda: self._shared(name, tracked, local_commit.root).writers())
            if head.author not in writers:
                # Not remembered: the announcement adding this writer may still be on its way.
                out.result = "rejected"
                out.reason = f"commit author {head.author.hex()} is not a writer of {name!r}"
                return out
        known_seq = -1 if known is None else WorldCommit.from_block(
            await run(self.store.get, known)).seq
        try:
            with self.store.session() as lease:
                async with self._blocks_from(peer, lease) as get_many:
                    chain = await fetch_commit_chain(self.store, get_many, head.head, world=name,
                                                     author=head.author, known=known,
                                                     known_seq=known_seq)
                    out.commits_verified = len(chain)
                    if not chain:
                        return out  # not newer than what we have of that author
                    if mode == "follow" and known is not None and chain[-1][1].prev != known:
                        return self._reject(out, head.head, "the owner's new head does not "
                                            "descend from ours (a forked history)")
                    remote_root = chain[0][1].root
                    local_root = None if local_commit is None else local_commit.root
                    report = await fetch_world_delta(self.store, get_many, local_root,
                                                     remote_root, shared=mode == "shared")
                    out.blocks_fetched = report.blocks_fetched
                result = await run(self._adopt, tracked, head, remote_root,
                                   None if converting else local_root)
        except (ProtocolError, SessionFailed, WorldFetchError, WorldSyncFailed) as exc:
            out.result, out.reason = "failed", str(exc)
            return out
        except NotAWriterError as exc:
            # Not remembered: a later change of the writer set may admit this very head.
            out.result, out.reason = "rejected", str(exc)
            return out
        except CanonError as exc:  # a bad signature or a malformed block: never good
            return self._reject(out, head.head, f"{type(exc).__name__}: {exc}")
        out.result, out.root = result
        if converting:
            await run(self._save, Tracked(name, "shared", tracked.owner, tracked.sources), name)
        return out

    @asynccontextmanager
    async def _blocks_from(self, peer: str, lease: Session) -> AsyncIterator[GetMany]:
        """A getter of blocks from ``peer`` (a blocks session; verified, stored under
        ``lease``). Tests replace it to deliver in-process in chosen orders."""
        async with await BlockSession.open(self.host, peer, self.peerbook) as session:
            yield session_getter(session, lease, self.store)

    def _reject(self, out: SyncOutcome, cid: CID, reason: str) -> SyncOutcome:
        if len(self._rt.rejected) >= MAX_REJECTED_REMEMBERED:
            self._rt.rejected.pop(next(iter(self._rt.rejected)))
        self._rt.rejected[cid] = reason
        out.result, out.reason = "rejected", reason
        return out

    def _adopt(self, tracked: Tracked, head: Head, remote_root: CID,
               local_root: CID | None) -> tuple[str, str]:
        """Worker thread: verify and take the fetched state. Raises CanonError (bad tree,
        bad record signature) or NotAWriterError."""
        assert head.head is not None and head.author is not None
        name = tracked.name
        with self._lock:
            if head.owner is None:
                # Every changed node and value is read and checked (§4) by the diff.
                for change in diff(self.store, local_root or World(self.store).root,
                                   remote_root).changes:
                    if change.new is not None:
                        self.store.get(change.new)
                self.canon.world_adopt(name, head.head)
                self._set_author_head(name, head.author, head.head)
                return "adopted", str(remote_root)
            if local_root is not None:
                # Re-read under the lock: a local write may have committed during the fetch.
                local_root = self.canon.world_head(name)[1].root
            local = SharedWorld(self.store, tracked.owner, name, local_root)
            remote = SharedWorld(self.store, tracked.owner, name, remote_root)
            merged = local.merge(remote)
            if head.author not in merged.writers():
                raise NotAWriterError(f"commit author {head.author.hex()} is not a writer of "
                                      f"{name!r}")
            if merged.root != local.root or local_root is None:
                self.canon.world_commit_root(name, merged.root)
            self._set_author_head(name, head.author, head.head)
            return "merged", str(merged.root)

    # -- tasks ---------------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[WorldsFederation] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        self._token = trio.lowlevel.current_trio_token()
        if self.gossip is not None and self.topic is not None:
            await self.gossip.join(self.topic, self._on_gossip)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sync_announced)
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._anti_entropy)
            task_status.started(self)
            await trio.sleep_forever()

    def _peers(self) -> list[str]:
        me = str(self.host.get_id())
        peers = [peer for peer, _ in p2p.connected_peers(self.host) if peer != me]
        if self.peerbook is not None:
            peers = [peer for peer in peers if self.peerbook.is_accepted(peer)]
        return peers

    async def _sync_announced(self) -> None:
        async for peer, head in self._queue_receive:
            await self.sync(peer, head)

    def _local_heads(self) -> dict[str, tuple[CID, bytes]]:
        heads = {}
        for name in self.canon.world_names():
            cid, commit = self.canon.world_head(name)
            heads[name] = (cid, commit.author)
        return heads

    async def _announce_loop(self) -> None:
        while True:
            with trio.move_on_after(ANNOUNCE_CHECK_S):
                await self._wake.wait()
            self._wake = trio.Event()
            heads = await trio.to_thread.run_sync(self._local_heads)
            changed = [(name, cid, author) for name, (cid, author) in heads.items()
                       if self._rt.announced.get(name) != cid]
            if not changed:
                continue
            peers = self._peers()
            async with trio.open_nursery() as nursery:
                for name, cid, author in changed:
                    self._rt.announced[name] = cid
                    tracked = self.tracked.get(name)
                    owner = tracked.owner if tracked is not None and tracked.mode == "shared" else None
                    message = Announce(name, cid, author, owner)
                    if self.gossip is not None and self.topic is not None:
                        await self.gossip.publish(self.topic, encode(to_map(message)))
                        continue
                    for peer in peers:
                        nursery.start_soon(self._announce_one, peer, message)

    async def _announce_one(self, peer: str, message: Announce) -> None:
        try:
            await announce(self.host, self.peerbook, peer, message)
        except WorldSyncFailed as exc:
            log.debug("world announce", peer=peer, world=message.world, error=str(exc))

    async def _anti_entropy(self) -> None:
        # The first round soon after start: a restarted node catches up in seconds, once the
        # bootstrap dials are through, not one whole period later.
        await trio.sleep(min(self.sync_interval_s, FIRST_ROUND_S))
        while True:
            await self.sync_round()
            await trio.sleep(self.sync_interval_s)

    async def sync_round(self) -> list[SyncOutcome]:
        """Ask connected peers (and unconnected follow sources) for the heads of every
        tracked world; sync what differs."""
        outcomes = []
        for name, tracked in list(self.tracked.items()):
            peers = self._peers()
            for source in tracked.sources:
                if source.startswith("/") and source.rsplit("/", 1)[-1] not in peers:
                    try:
                        peers.append(await p2p.connect(self.host, source))
                    except (p2p.DialError, NodeError, OSError) as exc:
                        log.debug("follow source unreachable", world=name, source=source,
                                  error=str(exc))
            for peer in peers[:MAX_SYNC_PEERS]:
                try:
                    head = await request_head(self.host, self.peerbook, peer, name)
                except WorldSyncFailed as exc:
                    log.debug("world head request", peer=peer, world=name, error=str(exc))
                    continue
                if head.head is not None:
                    outcomes.append(await self.sync(peer, head))
        return outcomes

    def snapshot(self) -> dict[str, Any]:
        return {"tracked": {name: t.mode for name, t in self.tracked.items()},
                "rejected_heads": len(self._rt.rejected),
                "dropped_announces": self._rt.dropped_announces}


def _write_many(shared: SharedWorld, signer: SigningKey, changes: dict[str, CID | None]) -> SharedWorld:
    """``SharedWorld.write`` for many keys in one tree update (one new path per key, not one
    whole new tree version per key): each key gets a record at 1 + its greatest clock."""
    author = bytes(signer.verify_key)
    histories: dict[str, Any] = {}
    for key, link in changes.items():
        history = shared.history(key)
        clock = 1 + max((record.clock for record in history), default=0)
        signature = signer.sign(signing_bytes(shared.owner, shared.name, key, clock, link)).signature
        records = sorted([*history, Record(author, clock, key, link, signature)],
                         key=lambda record: record.order)[-MAX_RECORDS_PER_KEY:]
        histories[key] = {"r": [record.to_map() for record in records]}
    tree = shared.tree.update(set=histories)
    return SharedWorld(shared.tree.store, shared.owner, shared.name, tree.root)
