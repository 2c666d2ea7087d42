"""The DAG fetch planner: which blocks to want from which peer, sans-IO.

:class:`DagFetch` fetches everything reachable from a root CID that the local store lacks,
from one or several peers at once. The node tells it what happens (a peer joined or left, a
block arrived, a peer does not have a CID) and asks :meth:`DagFetch.plan` what to want from
whom; the per-peer :class:`~n3xus.protocol.blocks.BlocksRequester` carries the wants. It is
resumable by construction: it never wants a block the store has, and walks the links of
stored DAG-CBOR blocks to find what is missing below them, so a fetch restarted after a
disconnect or a crash asks only for the rest.

Links are followed in DAG-CBOR blocks only (``canon.blockstore.block_links``); raw blocks
are leaves; dag-pb blocks are kept as opaque leaves, as the store does; identity CIDs hold
their data inline and are never wanted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

from n3xus.canon.blockstore import HASH_IDENTITY, block_links
from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonError

from .errors import LocalProtocolError

MAX_DAG_BLOCKS: Final = 10_000_000
"""Most distinct blocks one fetch tracks (a 2.5 TiB file of 256 KiB chunks): bounds the
planner's memory (~100 bytes per CID) against a DAG that never ends."""
LOCAL_WALK_PER_PLAN: Final = 4096
"""Stored blocks whose links one :meth:`DagFetch.plan` call reads at most, so resuming a
large, mostly stored DAG never blocks the node's event loop for long."""


class LocalBlocks(Protocol):
    """What the planner reads from the local store (``BlockStore`` fits)."""

    def has(self, cid: CID) -> bool: ...

    def get(self, cid: CID) -> bytes: ...


@dataclass
class FetchProgress:
    blocks_fetched: int = 0
    bytes_fetched: int = 0
    blocks_stored_before: int = 0
    blocks_known: int = 0
    outstanding: int = 0
    unavailable: int = 0


@dataclass
class _Peer:
    window: int
    wanted: set[CID] = field(default_factory=set)
    lacks: set[CID] = field(default_factory=set)


class DagFetch:
    """Plans the fetch of the DAG under ``root`` from the peers added to it."""

    def __init__(self, root: CID, local: LocalBlocks) -> None:
        self.root = root
        self.local = local
        self._seen: set[CID] = set()
        self._to_walk: deque[CID] = deque()   # stored blocks whose links are not read yet
        self._missing: deque[CID] = deque()   # needed, not stored, not wanted from anyone
        self._assigned: dict[CID, str] = {}   # wanted from that peer
        self._unavailable: set[CID] = set()   # every current peer said dont-have
        self._peers: dict[str, _Peer] = {}
        self.progress = FetchProgress()
        self.failed: dict[CID, str] = {}      # fetched bytes that are not a valid block
        self._discover(root)

    # -- what the node reports ------------------------------------------------------------

    def add_peer(self, peer: str, window: int) -> None:
        """A peer to fetch from, with how many wants it may have open (the requester's
        window). A returning peer is asked again for what it lacked before."""
        if peer in self._peers:
            self._peers[peer].window = window
            return
        self._peers[peer] = _Peer(window)
        self._retry_unavailable()

    def set_window(self, peer: str, window: int) -> None:
        self._peers[peer].window = window

    def remove_peer(self, peer: str) -> list[CID]:
        """The peer disconnected (or was cut off): its wants go back to the queue, first.
        Answers them (the node may cancel them if the stream is still open)."""
        state = self._peers.pop(peer, None)
        if state is None:
            return []
        back = [cid for cid in state.wanted if self._assigned.get(cid) == peer]
        for cid in back:
            del self._assigned[cid]
        self._missing.extendleft(reversed(back))
        return back

    def block_received(self, peer: str, cid: CID, data: bytes) -> list[CID]:
        """A verified block arrived (the requester checked it against its CID) and the
        node stored it. Answers the new CIDs it links to that are not stored."""
        state = self._peers.get(peer)
        if state is not None:
            state.wanted.discard(cid)
        if self._assigned.get(cid) == peer:
            del self._assigned[cid]
        self._unavailable.discard(cid)
        self.progress.blocks_fetched += 1
        self.progress.bytes_fetched += len(data)
        return self._expand(cid, data)

    def dont_have(self, peer: str, cid: CID) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        state.wanted.discard(cid)
        state.lacks.add(cid)
        if self._assigned.get(cid) == peer:
            del self._assigned[cid]
            self._missing.appendleft(cid)

    # -- what the node asks ---------------------------------------------------------------

    def plan(self) -> dict[str, list[CID]]:
        """New wants per peer: each missing CID goes to the least loaded peer that has not
        said it lacks it, within every peer's window. CIDs no current peer has are set
        aside as unavailable (retried when a peer is added)."""
        self._walk_local(LOCAL_WALK_PER_PLAN)
        wants: dict[str, list[CID]] = {}
        deferred: list[CID] = []
        while self._missing and self._peers:
            cid = self._missing.popleft()
            if cid in self._assigned or self.local.has(cid):
                continue
            candidates = [(len(s.wanted) - s.window, name) for name, s in self._peers.items()
                          if cid not in s.lacks]
            if not candidates:
                self._unavailable.add(cid)
                continue
            free = [c for c in candidates if c[0] < 0]
            if not free:
                deferred.append(cid)
                break  # every peer that could serve it is full: wait for answers
            _, name = min(free)
            self._peers[name].wanted.add(cid)
            self._assigned[cid] = name
            wants.setdefault(name, []).append(cid)
        self._missing.extendleft(reversed(deferred))
        self._update_progress()
        return wants

    @property
    def done(self) -> bool:
        """Everything reachable from the root is stored."""
        return not (self._missing or self._assigned or self._to_walk or self._unavailable
                    or self.failed)

    @property
    def stuck(self) -> bool:
        """Nothing more can happen with the current peers: blocks no peer has (or bad
        blocks) and nothing wanted or left to plan."""
        return not self.done and not (self._missing or self._assigned or self._to_walk)

    @property
    def unavailable(self) -> frozenset[CID]:
        return frozenset(self._unavailable)

    # -- internals ------------------------------------------------------------------------

    def _update_progress(self) -> None:
        self.progress.blocks_known = len(self._seen)
        self.progress.outstanding = len(self._assigned)
        self.progress.unavailable = len(self._unavailable)

    def _retry_unavailable(self) -> None:
        self._missing.extend(sorted(self._unavailable, key=bytes))
        self._unavailable.clear()

    def _discover(self, cid: CID) -> bool:
        """Note a CID of the DAG; True if it is new and missing (queued to be wanted)."""
        if cid in self._seen or cid.hash_code == HASH_IDENTITY:
            return False
        if len(self._seen) >= MAX_DAG_BLOCKS:
            raise LocalProtocolError(f"DAG under {self.root} has over {MAX_DAG_BLOCKS} blocks")
        self._seen.add(cid)
        if self.local.has(cid):
            self.progress.blocks_stored_before += 1
            self._to_walk.append(cid)
            return False
        self._missing.append(cid)
        return True

    def _expand(self, cid: CID, data: bytes) -> list[CID]:
        try:
            links = block_links(cid, data)
        except (CanonError, ValueError) as exc:
            self.failed[cid] = str(exc)  # hashes right, yet not a valid block: no peer can fix it
            return []
        # (Not ``link in self._missing``: a deque scan per link made a 10,000-leaf node
        # quadratic.)
        return [link for link in links if self._discover(link)]

    def _walk_local(self, budget: int) -> None:
        while self._to_walk and budget > 0:
            budget -= 1
            cid = self._to_walk.popleft()
            try:
                data = self.local.get(cid)
            except (CanonError, KeyError) as exc:  # gone or corrupt since has()
                self.failed[cid] = f"stored block unreadable: {exc}"
                continue
            self._expand(cid, data)

    def extend(self, cids: Iterable[CID]) -> None:
        """More roots to fetch along (e.g. a log range's entries)."""
        for cid in cids:
            self._discover(cid)
