"""The node's canon memory as one service: block store, files, worlds, the canon log
and CAR import/export, wired to the node's LMDB environment and identity key.

Everything here is synchronous and blocking (LMDB, hashing, signing); the HTTP layer
calls it from worker threads. The canon packages stay sans-IO and clock-free; this
is the place that reads the clock and decides what gets pinned.

Pinning policy (what the garbage collector keeps):
- ``canon put`` pins what it stored under the CID's text, unless asked not to;
- each world's head commit is pinned recursively under ``world/<name>``: a commit
  links its tree and its previous commit, so the whole history stays;
- imported CAR roots are pinned under ``import/<cid>``;
- canon log payloads are pinned by the log itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import lmdb
from nacl.signing import SigningKey

from n3xus.canon import car, files
from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID
from n3xus.canon.codec import decode
from n3xus.canon.entries import WorldCommit, commit_history, load_commit, sign_commit
from n3xus.canon.errors import BlockNotFoundError, CanonDecodeError, CanonError
from n3xus.canon.log import CanonLog
from n3xus.canon.world import World

_DB_WORLDS = b"canon/worlds"  # world name (UTF-8) -> binary CID of its head commit
WORLD_PIN_PREFIX = "world/"
IMPORT_PIN_PREFIX = "import/"
# A world history listing stops here unless asked for more: a long-lived world has
# one commit per write, and a listing is for people.
DEFAULT_HISTORY_LIMIT = 100


class WorldNotFoundError(CanonError, KeyError):
    """No world of that name on this node."""


class WorldHook(Protocol):
    """Worlds another service keeps (node/services/worlds_federation.py: shared and followed
    worlds): their writes and reads go through it."""

    def handles(self, name: str) -> bool: ...

    def update(self, name: str, set_values: dict[str, Any], delete: list[str],
               signer: SigningKey) -> WorldWrite: ...

    def values(self, name: str, at: CID | None) -> Any: ...


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class WorldWrite:
    commit: WorldCommit
    commit_cid: CID
    log_index: int


class CanonService:
    def __init__(self, env: lmdb.Environment, key: SigningKey, origin: str) -> None:
        self.env = env
        self.key = key
        self.author = bytes(key.verify_key)
        self.store = BlockStore(env)
        self.log = CanonLog(env, self.store, origin)
        self._worlds = env.open_db(_DB_WORLDS)
        # Shared and followed worlds (set by the federation service when it starts).
        self.hook: WorldHook | None = None

    # -- blocks and files -----------------------------------------------------------
    def put_block(self, data: bytes, codec: str, hash: str, pin: bool) -> CID:
        with self.store.session() as session:
            cid = session.put(data, codec=codec, hash=hash)
            if pin:
                session.pin(cid, str(cid), recursive=True)
        return cid

    def add_file(self, readable: files.Readable, pin: bool, hash: str = "blake3") -> tuple[CID, int]:
        with self.store.session() as session:
            root = files.add_stream(session, readable, hash=hash)
            if pin:
                session.pin(root, str(root), recursive=True)
        return root, files.file_info(self.store, root).size

    def file_info(self, cid: CID) -> files.FileInfo | None:
        """The file description if ``cid`` is an n3xus file root, else None."""
        if cid.codec_name != "dag-cbor":
            return None
        try:
            return files.file_info(self.store, cid)
        except CanonDecodeError:
            return None

    def stat(self, cid: CID) -> dict[str, Any]:
        st = self.store.stat(cid)
        info = self.file_info(cid)
        pins = list(st.pin_names)
        doc: dict[str, Any] = {
            "cid": str(cid), "size": st.size, "codec": cid.codec_name, "hash": cid.hash_name,
            "links": st.links, "pins": pins,
        }
        if info is not None:
            doc["file"] = {"size": info.size, "chunk_size": info.chunk_size,
                           "chunks": info.chunk_count}
        return doc

    # -- worlds -------------------------------------------------------------------
    def world_names(self) -> list[str]:
        with self.env.begin(db=self._worlds) as txn:
            return [bytes(k).decode() for k, _ in txn.cursor()]

    def world_head(self, name: str) -> tuple[CID, WorldCommit]:
        with self.env.begin(db=self._worlds) as txn:
            raw = txn.get(name.encode())
        if raw is None:
            raise WorldNotFoundError(f"no world named {name!r}")
        cid = CID(bytes(raw))
        return cid, load_commit(self.store, cid)

    def world(self, name: str, at: CID | None = None) -> World:
        """The world's current state, or its state at commit or root ``at``."""
        if at is None:
            return World(self.store, self.world_head(name)[1].root)
        value = decode(self.store.get(at))
        if isinstance(value, dict) and "root" in value and "world" in value:
            return World(self.store, load_commit(self.store, at).root)
        return World(self.store, at)

    def world_update(self, name: str, set_values: dict[str, Any], delete: list[str],
                     signer: SigningKey | None = None) -> WorldWrite:
        """Apply changes, sign a commit with the node key (or ``signer``: an agent's own
        key, node/services/agents.py), log it, move the head."""
        key = self.key if signer is None else signer
        if self.hook is not None and self.hook.handles(name):
            return self.hook.update(name, set_values, delete, key)
        try:
            head_cid: CID | None
            head_cid, head = self.world_head(name)
            base = World(self.store, head.root)
            seq_time = head.time
        except WorldNotFoundError:
            head_cid, base, seq_time = None, World(self.store), 0
        with self.store.session() as session:
            updated = base.update(set=set_values, delete=delete)
            session.hold(updated.root)
            previous = load_commit(self.store, head_cid) if head_cid is not None else None
            commit = sign_commit(key, world=name, root=updated.root,
                                 time=max(now_ms(), seq_time, self.log.head().time),
                                 previous=previous)
            commit_block = commit.to_block()
            commit_cid = session.put(commit_block)
            entry = self.log.append(key, "world-commit", commit_block,
                                    time=commit.time)
            session.pin(commit_cid, WORLD_PIN_PREFIX + name, recursive=True)
            with self.env.begin(write=True, db=self._worlds) as txn:
                txn.put(name.encode(), bytes(commit_cid))
        return WorldWrite(commit, commit_cid, entry.seq)

    def world_values(self, name: str, at: CID | None = None) -> Any:
        """What ``world get``/``list`` read: the world itself, or for a shared world the
        view of its current values (same reading methods: get_link, get, items, len)."""
        if self.hook is not None and self.hook.handles(name):
            return self.hook.values(name, at)
        return self.world(name, at)

    def world_commit_root(self, name: str, root: CID, signer: SigningKey | None = None) -> WorldWrite:
        """Sign, log and adopt the next commit of ``name`` at ``root`` (a tree already in
        the store): how merged shared-world states become the head."""
        key = self.key if signer is None else signer
        try:
            previous: WorldCommit | None = self.world_head(name)[1]
        except WorldNotFoundError:
            previous = None
        seq_time = 0 if previous is None else previous.time
        with self.store.session() as session:
            session.hold(root)
            commit = sign_commit(key, world=name, root=root,
                                 time=max(now_ms(), seq_time, self.log.head().time),
                                 previous=previous)
            commit_block = commit.to_block()
            commit_cid = session.put(commit_block)
            entry = self.log.append(key, "world-commit", commit_block, time=commit.time)
            session.pin(commit_cid, WORLD_PIN_PREFIX + name, recursive=True)
            with self.env.begin(write=True, db=self._worlds) as txn:
                txn.put(name.encode(), bytes(commit_cid))
        return WorldWrite(commit, commit_cid, entry.seq)

    def world_adopt(self, name: str, commit_cid: CID) -> None:
        """Make another node's verified commit the head of ``name`` (a followed world).
        Its history's older trees need not be stored: the pin allows missing blocks."""
        with self.store.session() as session:
            session.pin(commit_cid, WORLD_PIN_PREFIX + name, recursive=True, allow_missing=True)
            with self.env.begin(write=True, db=self._worlds) as txn:
                txn.put(name.encode(), bytes(commit_cid))

    def world_history(self, name: str, limit: int = DEFAULT_HISTORY_LIMIT) -> Iterator[tuple[CID, WorldCommit]]:
        head_cid, _ = self.world_head(name)
        for commit in commit_history(self.store, head_cid, max_commits=limit):
            yield commit.cid, commit

    # -- log ----------------------------------------------------------------------
    def log_entries(self, start: int, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for index, entry in self.log.entries(start):
            if len(out) >= limit:
                break
            out.append({"index": index, "cid": str(entry.cid), "type": entry.type,
                        "version": entry.version, "author": entry.author.hex(),
                        "time": entry.time, "payload": str(entry.payload)})
        return out

    # -- CAR ----------------------------------------------------------------------
    def export_sections(self, roots: list[CID]) -> Iterator[bytes]:
        """A CARv1 of the DAGs under ``roots``, as consecutive byte strings (header
        first, then one section per block). Lazy: blocks are read as it goes."""
        for root in roots:
            if not self.store.has(root):
                raise BlockNotFoundError(f"no block {root}")
        yield car.encode_header(roots)
        for cid, data in car.iter_dag(self.store, roots):
            yield car.encode_section(cid, data)

    def author_roots(self, author: bytes) -> tuple[list[CID], list[CID]]:
        """(world head commits, log entries) authored by ``author``."""
        worlds = []
        for name in self.world_names():
            cid, commit = self.world_head(name)
            if commit.author == author:
                worlds.append(cid)
        entries = [entry.cid for _, entry in self.log.entries(0) if entry.author == author]
        return worlds, entries

    def author_sections(self, author: bytes) -> Iterator[bytes]:
        """One CARv1 with everything ``author`` signed: their worlds (trees and
        history) and their canon log entries with payloads. Log entries are exported
        without following ``prev`` (that chain holds other authors' entries too)."""
        worlds, entries = self.author_roots(author)
        yield car.encode_header(worlds + entries)
        seen: set[CID] = set()
        for cid, data in car.iter_dag(self.store, worlds):
            seen.add(cid)
            yield car.encode_section(cid, data)
        for entry_cid in entries:
            index = self.log.index_of(entry_cid)
            if index is None:  # pragma: no cover - author_roots just listed it
                raise BlockNotFoundError(f"no canon log entry {entry_cid}")
            if entry_cid not in seen:
                seen.add(entry_cid)
                yield car.encode_section(entry_cid, self.log.entry_block(index))
            for cid, data in car.iter_dag(self.store, [self.log.entry(index).payload]):
                if cid not in seen:
                    seen.add(cid)
                    yield car.encode_section(cid, data)

    def import_car(self, stream: BinaryIO) -> car.ImportReport:
        with self.store.session() as session:
            report = car.import_car(session, stream)
            for root in report.roots:
                if self.store.has(root):
                    session.pin(root, IMPORT_PIN_PREFIX + str(root), recursive=True,
                                allow_missing=True)
        return report
