"""An RFC 9162 Merkle tree whose full-subtree hashes live in one LMDB database, shared
by every persisted log (the canon log, the ledger's transparency log).

Layout: key ``u8 level || u64 BE index`` -> the 32-byte hash of that full subtree
(level 0 = leaf hashes). Appending stores exactly the subtrees each new leaf completes,
so roots and proofs at any size read O(log n) nodes (``canon.merkle``'s ``get_node``).
The tree does not record its own size: each log keeps its size next to its entries,
written in the same transaction, and passes it in.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Final

import lmdb

from . import merkle

NODE_KEY: Final = struct.Struct(">BQ")


def check_size(size: int | None, current: int) -> int:
    """``size`` (default ``current``) if it is a size the tree has had."""
    if size is None:
        return current
    if not 0 <= size <= current:
        raise ValueError(f"tree size {size} is not in 0..{current}")
    return size


class StoredTree:
    """Stored subtree hashes of one log. ``corrupt`` builds the error raised when a
    node that must exist is missing (each log reports it in its own error class)."""

    def __init__(self, db: lmdb._Database, hasher: merkle.TreeHash, name: str,
                 corrupt: Callable[[str], Exception]) -> None:
        self._db = db
        self._hasher = hasher
        self._name = name
        self._corrupt = corrupt

    def node(self, txn: lmdb.Transaction, level: int, index: int) -> bytes:
        digest = txn.get(NODE_KEY.pack(level, index), db=self._db)
        if digest is None:
            raise self._corrupt(f"{self._name} tree node ({level}, {index}) is missing")
        return bytes(digest)

    def stored(self, txn: lmdb.Transaction, level: int, index: int) -> bytes | None:
        """The stored hash, or None (for verifiers that compare every node)."""
        digest = txn.get(NODE_KEY.pack(level, index), db=self._db)
        return None if digest is None else bytes(digest)

    def getter(self, txn: lmdb.Transaction) -> Callable[[int, int], bytes]:
        return lambda level, index: self.node(txn, level, index)

    def append(self, txn: lmdb.Transaction, size: int, leaf_hashes: Iterable[bytes]) -> int:
        """Add leaves after the first ``size``; returns the new size. Refuses to
        overwrite a node: one beyond the recorded size means the store is damaged."""
        frontier = merkle.Frontier.from_nodes(self._hasher, size, self.getter(txn))
        nodes: list[tuple[bytes, bytes]] = []
        for leaf in leaf_hashes:
            for level, index, digest in frontier.append(leaf):
                nodes.append((NODE_KEY.pack(level, index), digest))
            size += 1
        nodes.sort()
        _, added = txn.cursor(db=self._db).putmulti(nodes, overwrite=False)
        if added != len(nodes):
            raise self._corrupt(f"{self._name} tree nodes exist beyond the recorded size")
        return size

    def root(self, txn: lmdb.Transaction, size: int) -> bytes:
        return merkle.root_at(self._hasher, size, self.getter(txn))

    def inclusion_proof(self, txn: lmdb.Transaction, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_proof(self._hasher, index, size, self.getter(txn))

    def consistency_proof(self, txn: lmdb.Transaction, old: int, new: int) -> list[bytes]:
        return merkle.consistency_proof(self._hasher, old, new, self.getter(txn))
