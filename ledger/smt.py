"""The ledger's state commitment: a compressed sparse Merkle tree keyed by BLAKE3(state key)
(``specs/ledger.md`` §11, ledger v2).

Definition. Each state entry (key, value) sits at the 256-bit *path* ``BLAKE3(key)``. The
hash of the subtree at depth ``d`` holding the set ``L`` of entries whose paths share its
``d``-bit prefix is::

    EMPTY (32 zero bytes)                          if L is empty
    BLAKE3(0x00 || u8 len(key) || key || value)    if L holds one entry (its leaf hash)
    BLAKE3(0x01 || hash(left) || hash(right))      otherwise; left = entries whose bit d is 0

and the state root is the hash at depth 0. A leaf thus sits at the shallowest depth where
it is alone, so the tree has about log2(n) levels and does not depend on the order of
writes. A proof of a key is the sibling hashes on its path down to where the walk ends:
at its own leaf (present), at an empty subtree, or at another key's leaf (absent).
:func:`root_of` computes the root from scratch (the in-memory ledger, audits, tests) and
:func:`verify_proof` checks a proof; both are the reference the stored tree must equal.

Keeping it. The tree is a function of the state, so what a node keeps is a cache: a
:class:`MemoryTree` (the compiled twin ``_smt_c`` or the pure ``_smt_py``, chosen as every
twin is, ``canon/twins.py``) per store, and in the store's tree database one record, the
root the state had when the tree was last brought up to date (committed in the same write
transaction as that state). A checkpoint applies the keys changed since (the store's dirty
keys) to the memory tree: O(k log n) for k keys, with no tree write to LMDB but that root,
so the checkpoint's commit stays as small as the root. A proof walks the memory tree:
O(log n).

Why this is crash- and process-safe: the memory tree is used only while its root equals the
committed record of the transaction at hand; the root is a hash of every entry, so equal
roots mean the same entries. Otherwise (a restart, another process's checkpoint, a write
transaction that aborted after the tree was updated, an old store holding the per-position
layout of earlier versions) it is rebuilt from the state database, which LMDB keeps
consistent across crashes. The rebuild is the cost of opening: 1-2 s per million
entries compiled (~16 s pure), and the tree holds about 175 MiB per million entries in memory
(``bench/ledger.py`` reports both).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import lmdb
from blake3 import blake3

from n3xus.canon.twins import select_twin

from .errors import LedgerCorruptError
from .rules import state_leaf

HASH_BYTES: Final = 32
EMPTY: Final = bytes(HASH_BYTES)
PATH_BITS: Final = 256
# A proof has at most 255 siblings. Two keys whose BLAKE3 paths share 255 bits would need
# more: that is a hash collision in all but one bit, never met by honest keys.
MAX_DEPTH: Final = 255
# The key of the one record of a store's tree database: the committed root. (Earlier
# versions kept one record per tree position there, keyed by 33 bytes; an update drops them.)
ROOT_RECORD: Final = b"root"

_impl, IMPLEMENTATION = select_twin("n3xus.ledger._smt_c", "n3xus.ledger._smt_py", "state tree")

if TYPE_CHECKING:
    # The pure twin is the typed contract; the compiled twin has the same names.
    from ._smt_py import MemoryTree as MemoryTree
else:
    MemoryTree = _impl.MemoryTree


def key_path(key: bytes) -> int:
    """The key's path as a 256-bit integer (bit 0 is the most significant)."""
    return int.from_bytes(blake3(key).digest(), "big")


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return blake3(b"\x00" + state_leaf(key, value)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return blake3(b"\x01" + left + right).digest()


def _bit(path: int, depth: int) -> int:
    return (path >> (PATH_BITS - 1 - depth)) & 1


# --------------------------------------------------------------- the reference definition


def _split(paths: Sequence[int], depth: int, prefix: int, lo: int, hi: int) -> int:
    """First index in ``[lo, hi)`` whose path has bit ``depth`` set (paths share ``prefix``)."""
    return bisect_left(paths, ((prefix << 1) | 1) << (PATH_BITS - 1 - depth), lo, hi)


def _subtree_hash(paths: Sequence[int], hashes: Sequence[bytes], depth: int, prefix: int,
                  lo: int, hi: int) -> bytes:
    """The hash of the subtree at (depth, prefix) holding the leaves ``[lo, hi)``."""
    if hi <= lo:
        return EMPTY
    if hi - lo == 1:
        return hashes[lo]
    if depth >= MAX_DEPTH:
        raise LedgerCorruptError("two state keys share a 255-bit path")
    split = _split(paths, depth, prefix, lo, hi)
    return node_hash(_subtree_hash(paths, hashes, depth + 1, prefix << 1, lo, split),
                     _subtree_hash(paths, hashes, depth + 1, (prefix << 1) | 1, split, hi))


def root_of(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The state root over (key, value) entries (any order, keys distinct): the definition,
    written out directly."""
    leaves = sorted((key_path(key), leaf_hash(key, value)) for key, value in items)
    paths = [path for path, _ in leaves]
    return _subtree_hash(paths, [digest for _, digest in leaves], 0, 0, 0, len(leaves))


@dataclass(frozen=True)
class Proof:
    """The walk of ``key``'s path: ``siblings`` from the root down, ending at ``leaf`` (the
    (key, value) found there, which is ``key``'s own when present) or at an empty subtree."""

    key: bytes
    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None

    @property
    def value(self) -> bytes | None:
        """The proved value (None: absent)."""
        return self.leaf[1] if self.leaf is not None and self.leaf[0] == self.key else None


def verify_proof(root: bytes, proof: Proof) -> bytes | None:
    """Check ``proof`` against ``root``; return the value proved (None: absent). Raises
    ValueError when it does not prove anything under this root."""
    path = key_path(proof.key)
    depth = len(proof.siblings)
    if depth > MAX_DEPTH:
        raise ValueError(f"a proof has at most {MAX_DEPTH} siblings")
    if proof.leaf is None:
        digest = EMPTY
    else:
        other, value = proof.leaf
        if other != proof.key and key_path(other) >> (PATH_BITS - depth) != path >> (PATH_BITS - depth):
            raise ValueError("the leaf shown is not on the key's path")
        digest = leaf_hash(other, value)
    for level in range(depth - 1, -1, -1):
        sibling = proof.siblings[level]
        digest = node_hash(sibling, digest) if _bit(path, level) else node_hash(digest, sibling)
    if digest != root:
        raise ValueError("the proof does not lead to the state root")
    return proof.value


# ------------------------------------------------------------------ the tree of a store


def tree_records(items: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Root and the tree database's records for a state of ``items``, to be written into an
    empty tree database next to that state (a bulk load)."""
    root = MemoryTree().build(items)
    return root, [(ROOT_RECORD, root)]


def _state_items(txn: lmdb.Transaction, state_db: Any) -> Iterator[tuple[bytes, bytes]]:
    # Without buffers=True (never used on these transactions) the binding yields bytes.
    return cast(Iterator[tuple[bytes, bytes]], txn.cursor(db=state_db).iternext())


class StateTree:
    """One store's tree in memory, shared by its transactions through :meth:`view`. A lock
    keeps threads from seeing it half updated; the record check (module docstring) keeps
    any transaction from using it when it does not match that transaction's state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memory: MemoryTree | None = None

    def view(self, txn: lmdb.Transaction, state_db: Any, tree_db: Any) -> TreeView:
        """The tree as of ``txn`` (its state database ``state_db``, its tree database
        ``tree_db``)."""
        return TreeView(self, txn, state_db, tree_db)


class TreeView:
    """The state tree seen from one LMDB transaction. ``update`` and ``bulk_load`` need a
    write transaction."""

    __slots__ = ("_tree", "_txn", "_state_db", "_tree_db")

    def __init__(self, tree: StateTree, txn: lmdb.Transaction, state_db: Any,
                 tree_db: Any) -> None:
        self._tree = tree
        self._txn = txn
        self._state_db = state_db
        self._tree_db = tree_db

    def _stored(self) -> bytes | None:
        raw = self._txn.get(ROOT_RECORD, db=self._tree_db)
        if raw is None:
            return None
        if len(raw) != HASH_BYTES:
            raise LedgerCorruptError("the state tree's root record is not a 32-byte hash")
        return bytes(raw)

    def _memory(self, stored: bytes | None) -> MemoryTree:
        """The memory tree, rebuilt from this transaction's state unless its root is the
        committed one (the caller holds the lock)."""
        memory = self._tree._memory
        if memory is None or stored is None or memory.root() != stored:
            self._tree._memory = None  # not trusted while rebuilding
            memory = MemoryTree()
            memory.build(_state_items(self._txn, self._state_db))
            self._tree._memory = memory
        return memory

    def root(self) -> bytes:
        """The root committed for this transaction's state (its dirty keys not applied)."""
        stored = self._stored()
        if stored is not None:
            return stored
        with self._tree._lock:
            return self._memory(None).root()

    def update(self, changes: Iterable[tuple[bytes, bytes | None]]) -> bytes:
        """Set (value) or remove (None) keys, each at most once, in the memory tree, and
        record the new root in this write transaction; returns it. With no changes, this
        only makes sure the root is recorded."""
        stored = self._stored()
        with self._tree._lock:
            memory = self._memory(stored)
            try:
                root = memory.update(changes)
            except BaseException:
                self._tree._memory = None  # possibly half updated: rebuilt on next use
                raise
        if root != stored:
            if stored is None and self._txn.stat(self._tree_db)["entries"]:
                self._txn.drop(self._tree_db, delete=False)  # an earlier version's positions
            self._txn.put(ROOT_RECORD, root, db=self._tree_db)
        return root

    def walk(self, key: bytes) -> tuple[list[bytes], tuple[bytes, bytes] | None]:
        """Sibling hashes from the root down along ``key``'s path, and the leaf where the
        walk ends ((leaf hash, its state key)), or None at an empty subtree."""
        stored = self._stored()
        with self._tree._lock:
            return self._memory(stored).walk(key)

    def bulk_load(self, items: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Root and records of a tree over ``items`` (the whole state), for one bulk insert
        into the emptied tree database (the caller writes them); the memory tree becomes it."""
        memory = MemoryTree()
        root = memory.build(items)
        with self._tree._lock:
            self._tree._memory = memory
        return root, [(ROOT_RECORD, root)]
