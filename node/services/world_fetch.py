"""Fetching what changed between two world roots, and a signed commit chain, from one peer
over ``/n3xus/blocks/1.0.0``.

:func:`fetch_world_delta` is the diff of canon-world.md §5 run across the network: it walks
the remote tree and the local one layer by layer from the top, and a subtree whose CID is
also a node of the local tree at that layer is complete here and never opened. Only the
remaining nodes are fetched (those not stored already), then the value blocks they point at
that are not stored, and for a shared world (§8) the record values those histories name.
Blocks fetched therefore grow with (changed keys x depth), not with the world's size; the
count is returned so tests and the API can show it.

:func:`fetch_commit_chain` fetches and verifies a head commit and its predecessors back to
a commit already verified (or the first commit): every signature, and the chain rules of
§6 (same world, seq down by one, time not increasing backwards).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from n3xus.canon.blockstore import BlockStore, Session
from n3xus.canon.cid import CID
from n3xus.canon.codec import decode
from n3xus.canon.entries import WorldCommit
from n3xus.canon.errors import CanonDecodeError, VerificationError
from n3xus.canon.world import key_layer
from n3xus.protocol.blocks import BlockReceived, DontHave

from ..p2p.blocks import BlockSession, SessionFailed

MAX_COMMITS_PER_SYNC: Final = 100_000
"""Commits one sync walks back at most: a writer's history since our last sync. A longer
chain (or one that never ends) is refused; the follower can re-follow from a fresh node."""
MAX_DELTA_BLOCKS: Final = 1_000_000
"""Blocks one world delta fetches at most: bounds memory against a tree that never ends."""

GetMany = Callable[[Sequence[CID]], Awaitable[dict[CID, bytes]]]


class WorldFetchError(Exception):
    """The peer could not give what its head needs (missing blocks, a broken chain)."""


@dataclass
class DeltaReport:
    nodes_fetched: int = 0
    values_fetched: int = 0
    nodes_visited: int = 0

    @property
    def blocks_fetched(self) -> int:
        return self.nodes_fetched + self.values_fetched


def session_getter(session: BlockSession, lease: Session, store: BlockStore) -> GetMany:
    """Fetch ``cids`` from the session's peer (each verified against its CID by the blocks
    core), store them under ``lease`` and return their bytes."""

    async def get_many(cids: Sequence[CID]) -> dict[CID, bytes]:
        out: dict[CID, bytes] = {}
        pending = list(dict.fromkeys(cids))
        while pending:
            batch, pending = pending[:max(1, session.limit)], pending[max(1, session.limit):]
            await session.want(batch)
            waiting = set(batch)
            while waiting:
                events = await session.next_answers()
                if not events:
                    raise WorldFetchError(f"{session.peer_id} closed the blocks stream")
                for event in events:
                    if isinstance(event, BlockReceived) and event.cid in waiting:
                        waiting.discard(event.cid)
                        out[event.cid] = event.data
                    elif isinstance(event, DontHave) and event.cid in waiting:
                        raise WorldFetchError(f"{session.peer_id} does not have {event.cid}")
            received = [out[cid] for cid in batch]
            await trio.to_thread.run_sync(_store_all, lease, batch, received)
        return out

    return get_many


def _store_all(lease: Session, cids: Sequence[CID], blocks: Sequence[bytes]) -> None:
    lease.put_blocks(list(zip(cids, blocks, strict=True)))


def _node_links(data: bytes) -> tuple[list[CID], list[CID], bytes | None]:
    """(child subtrees, value CIDs, first key) of an MST node block. Structure beyond the
    links is checked later, when the tree is diffed and merged (world.py verifies nodes)."""
    node = decode(data)
    if type(node) is not dict or set(node) != {"e", "l"} or type(node["e"]) is not list:
        raise CanonDecodeError("an MST node is a map {e, l}")
    children = [node["l"]] if isinstance(node["l"], CID) else []
    values: list[CID] = []
    first: bytes | None = None
    for entry in node["e"]:
        if type(entry) is not dict or not isinstance(entry.get("v"), CID):
            raise CanonDecodeError("an MST entry is a map with a value CID 'v'")
        if isinstance(entry.get("t"), CID):
            children.append(entry["t"])
        values.append(entry["v"])
        if first is None and type(entry.get("k")) is bytes:
            first = entry["k"]
    return children, values, first


def _root_layer(data: bytes) -> int:
    _, _, first = _node_links(data)
    if first is None:
        return 0  # the empty world (a root is never an empty intermediate node)
    try:
        return key_layer(first.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CanonDecodeError(f"bad first key in a world root: {exc}") from None


def _record_values(data: bytes) -> list[CID]:
    history = decode(data)
    if type(history) is not dict or type(history.get("r")) is not list:
        raise CanonDecodeError("a key's history is a map {r: [records]}")
    return [record["v"] for record in history["r"]
            if type(record) is dict and isinstance(record.get("v"), CID)]


async def fetch_world_delta(store: BlockStore, get_many: GetMany, local_root: CID | None,
                            remote_root: CID, *, shared: bool) -> DeltaReport:
    """Fetch what ``remote_root`` has that the local tree ``local_root`` does not (module
    doc). On return every block the remote tree's changed paths need is stored."""
    report = DeltaReport()
    run = trio.to_thread.run_sync

    async def blocks(cids: Sequence[CID], kind: str) -> dict[CID, bytes]:
        have: dict[CID, bytes] = await run(_stored, store, cids)
        missing = [cid for cid in cids if cid not in have]
        if len(missing) + report.blocks_fetched > MAX_DELTA_BLOCKS:
            raise WorldFetchError(f"the world delta is over {MAX_DELTA_BLOCKS} blocks")
        if missing:
            have.update(await get_many(missing))
            if kind == "node":
                report.nodes_fetched += len(missing)
            else:
                report.values_fetched += len(missing)
        return have

    remote_block = (await blocks([remote_root], "node"))[remote_root]
    remote_layer = _root_layer(remote_block)
    remote: dict[int, set[CID]] = {remote_layer: {remote_root}}
    local: dict[int, set[CID]] = {}
    if local_root is not None and local_root != remote_root:
        local_block = store.get(local_root)
        local[_root_layer(local_block)] = {local_root}
    elif local_root == remote_root:
        return report
    local_values: set[CID] = set()
    remote_values: set[CID] = set()
    layer = max([*remote, *local])
    while layer >= 0:
        ours, theirs = local.get(layer, set()), remote.get(layer, set())
        common = ours & theirs
        ours, theirs = ours - common, theirs - common
        fetched = await blocks(sorted(theirs, key=bytes), "node")
        report.nodes_visited += len(theirs)
        for cid in theirs:
            children, values, _ = _node_links(fetched[cid])
            remote.setdefault(layer - 1, set()).update(children)
            remote_values.update(values)
        for cid in ours:
            children, values, _ = await run(lambda c=cid: _node_links(store.get(c)))
            local.setdefault(layer - 1, set()).update(children)
            local_values.update(values)
        layer -= 1
    new_values = sorted(remote_values - local_values, key=bytes)
    histories = await blocks(new_values, "value")
    if shared:
        record_values: list[CID] = []
        for cid in new_values:
            record_values.extend(_record_values(histories[cid]))
        await blocks(sorted(set(record_values), key=bytes), "value")
    return report


def _stored(store: BlockStore, cids: Sequence[CID]) -> dict[CID, bytes]:
    return {cid: store.get(cid) for cid in cids if store.has(cid)}


async def fetch_commit_chain(store: BlockStore, get_many: GetMany, head: CID, *, world: str,
                             author: bytes, known: CID | None,
                             known_seq: int = -1) -> list[tuple[CID, WorldCommit]]:
    """The verified commits from ``head`` back to ``known`` (excluded) or the first commit,
    newest first; [] when ``head`` is not newer than ``known_seq`` (a stale head relayed
    late). Raises VerificationError / CanonDecodeError / WorldFetchError."""
    chain: list[tuple[CID, WorldCommit]] = []
    cid: CID | None = head
    later: WorldCommit | None = None
    while cid is not None and cid != known:
        if len(chain) >= MAX_COMMITS_PER_SYNC:
            raise WorldFetchError(f"more than {MAX_COMMITS_PER_SYNC} new commits in one sync")
        data = store.get(cid) if store.has(cid) else (await get_many([cid]))[cid]
        commit = WorldCommit.from_block(data)
        if not chain and commit.seq <= known_seq:
            return []
        if chain and commit.author != author:
            break  # the start of this author's run (a chain may change hands, §6)
        commit.verify()
        if commit.world != world or commit.author != author:
            raise VerificationError(f"commit {cid} is of world {commit.world!r} by "
                                    f"{commit.author.hex()[:16]}…, not the announced one")
        if later is not None and (commit.seq + 1 != later.seq or commit.time > later.time):
            raise VerificationError(f"commit {cid} does not precede its successor")
        chain.append((cid, commit))
        later, cid = commit, commit.prev
    return chain


__all__ = ["DeltaReport", "SessionFailed", "WorldFetchError", "fetch_commit_chain",
           "fetch_world_delta", "session_getter"]
