"""Pure-Python twin of the in-memory state tree (``_smt_c.pyx`` is the compiled one: the same
names, the same roots, walks and errors). ``smt.py`` defines the tree (``specs/ledger.md``
§11) and keeps one :class:`MemoryTree` per store, checked against the root committed in LMDB.

The tree is held as nodes referred to by integers, so a batch of changes touches only the
nodes on the changed paths and a walk follows child references:

- ``0`` is an empty subtree, ``2 i + 1`` the leaf in slot ``i`` (its hash and state key),
  ``2 i + 2`` the inner node in slot ``i`` (its hash and two child references);
- an inner node has two non-empty children, or one empty child and one inner child (a
  lone leaf always moves up to where it is alone, as the definition says);
- freed slots are reused, so the slots in use stay near the number of nodes.

An update runs in two passes. The first changes the structure: one recursive descent over
the changes sorted by path, splitting them by the bit of each depth, so a node shared by
many changed paths is visited once; where the descent reaches an empty subtree or a leaf,
the leaf (if it stays) and the changes below are built into a new subtree. Every inner node
left on a changed path is listed at its depth. The second pass hashes those nodes level by
level from the deepest up (the compiled twin hashes each level many nodes at a time).

After an exception (a 255-bit path collision, memory) the tree is inconsistent and must be
rebuilt; ``smt.StateTree`` drops it.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable
from typing import Final

from blake3 import blake3

from .errors import LedgerCorruptError

__all__ = ["EMPTY", "HASH_BYTES", "MAX_DEPTH", "MAX_KEY_BYTES", "MemoryTree"]

HASH_BYTES: Final = 32
EMPTY: Final = bytes(HASH_BYTES)
# The deepest inner node: position keys of the definition give the depth one byte, and two
# keys whose paths share 255 bits would be a BLAKE3 collision in all but one bit.
MAX_DEPTH: Final = 255
# A leaf hashes ``u8 len(key) || key``: longer keys cannot be committed.
MAX_KEY_BYTES: Final = 255
_NO_REF: Final = 0  # the reference of an empty subtree

# (path, state key, leaf hash or None for a removal, slot of the resident leaf or -1)
_Entry = tuple[bytes, bytes, bytes | None, int]


def _path(key: bytes) -> bytes:
    return blake3(key).digest()


def _leaf_hash(key: bytes, value: bytes) -> bytes:
    """BLAKE3(0x00 || u8 len(key) || key || value); the caller checked len(key)."""
    return blake3(b"\x00" + bytes((len(key),)) + key + value).digest()


def _split(entries: list[_Entry], depth: int, lo: int, hi: int) -> int:
    """First index in ``[lo, hi)`` whose path has bit ``depth`` set (the entries are sorted
    by path and share the bits above ``depth``, so that bit is 0s then 1s)."""
    byte, mask = depth >> 3, 0x80 >> (depth & 7)
    while lo < hi:
        mid = (lo + hi) >> 1
        if entries[mid][0][byte] & mask:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _is_leaf(ref: int) -> bool:
    return ref & 1 == 1


def _sorted_entries(changes: Iterable[tuple[bytes, bytes | None]]) -> list[_Entry]:
    entries: list[_Entry] = []
    for key, value in changes:
        key = bytes(key)
        if len(key) > MAX_KEY_BYTES:
            raise ValueError(f"a state key is at most {MAX_KEY_BYTES} bytes")
        digest = None if value is None else _leaf_hash(key, bytes(value))
        entries.append((_path(key), key, digest, -1))
    entries.sort(key=lambda entry: entry[0])
    for a, b in zip(entries, entries[1:], strict=False):
        if a[0] == b[0]:
            raise ValueError("a key is changed twice in one update")
    return entries


class MemoryTree:
    """The state tree in memory: :meth:`build` from all entries, :meth:`update` by changes,
    :meth:`root`, :meth:`walk` (a proof's path)."""

    __slots__ = ("_hashes", "_left", "_right", "_inner_free", "_leaf_hashes", "_leaf_keys",
                 "_leaf_free", "_root", "_leaves")

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self._hashes: list[bytes] = []
        self._left = array("I")
        self._right = array("I")
        self._inner_free: list[int] = []
        self._leaf_hashes: list[bytes] = []
        self._leaf_keys: list[bytes] = []
        self._leaf_free: list[int] = []
        self._root = _NO_REF
        self._leaves = 0

    def __len__(self) -> int:
        """The number of leaves (state entries)."""
        return self._leaves

    def memory_bytes(self) -> int:
        """Bytes held by the node lists and arrays and the hash and key objects they refer to
        (a diagnostic: it visits every node)."""
        lists = (self._hashes, self._inner_free, self._leaf_hashes, self._leaf_keys,
                 self._leaf_free)
        held = sum(sys.getsizeof(items) for items in lists)
        held += sum(sys.getsizeof(column) for column in (self._left, self._right))
        unique = {id(item): item for items in (self._hashes, self._leaf_hashes, self._leaf_keys)
                  for item in items}
        return held + sum(sys.getsizeof(item) for item in unique.values())

    # --- slots -------------------------------------------------------------------------

    def _new_leaf(self, key: bytes, digest: bytes) -> int:
        self._leaves += 1
        if self._leaf_free:
            slot = self._leaf_free.pop()
            self._leaf_hashes[slot] = digest
            self._leaf_keys[slot] = key
        else:
            slot = len(self._leaf_keys)
            self._leaf_hashes.append(digest)
            self._leaf_keys.append(key)
        return 2 * slot + 1

    def _free_leaf(self, slot: int) -> None:
        self._leaves -= 1
        self._leaf_keys[slot] = b""  # drop the key's bytes now; the hash is replaced on reuse
        self._leaf_free.append(slot)

    def _new_inner(self, left: int, right: int) -> int:
        if self._inner_free:
            slot = self._inner_free.pop()
            self._left[slot] = left
            self._right[slot] = right
        else:
            slot = len(self._hashes)
            self._hashes.append(EMPTY)  # a placeholder: _rehash sets it (the node is listed)
            self._left.append(left)
            self._right.append(right)
        return slot

    def _hash_of(self, ref: int) -> bytes:
        if ref == _NO_REF:
            return EMPTY
        if ref & 1:
            return self._leaf_hashes[ref >> 1]
        return self._hashes[(ref >> 1) - 1]

    # --- building and updating ---------------------------------------------------------

    def _build(self, entries: list[_Entry], depth: int, lo: int, hi: int,
               levels: list[list[int]]) -> int:
        """The subtree of ``entries[lo:hi]`` (all kept) at ``depth``; new inner nodes are
        listed in ``levels`` for hashing."""
        if hi <= lo:
            return _NO_REF
        if hi - lo == 1:
            _, key, digest, slot = entries[lo]
            if slot >= 0:
                return 2 * slot + 1
            assert digest is not None  # removals never reach a build (_settle drops them)
            return self._new_leaf(key, digest)
        if depth >= MAX_DEPTH:
            raise LedgerCorruptError("two state keys share a 255-bit path")
        split = _split(entries, depth, lo, hi)
        left = self._build(entries, depth + 1, lo, split, levels)
        right = self._build(entries, depth + 1, split, hi, levels)
        slot = self._new_inner(left, right)
        levels[depth].append(slot)
        return 2 * slot + 2

    def _settle(self, ref: int, depth: int, entries: list[_Entry], lo: int, hi: int,
                levels: list[list[int]]) -> int:
        """Where the descent meets an empty subtree or a leaf: the leaf (unless changed)
        and the changes ``entries[lo:hi]`` that set a value, built into a subtree."""
        kept: list[_Entry] = []
        resident = ref >> 1 if ref != _NO_REF else -1
        resident_path = _path(self._leaf_keys[resident]) if resident >= 0 else b""
        for entry in entries[lo:hi]:
            path, key, digest, _ = entry
            if resident >= 0 and resident_path < path:
                kept.append((resident_path, self._leaf_keys[resident], None, resident))
                resident = -1
            if resident >= 0 and resident_path == path:
                if digest is None:
                    self._free_leaf(resident)
                else:  # the same key with a new value: its slot is kept
                    self._leaf_hashes[resident] = digest
                    kept.append((path, key, digest, resident))
                resident = -1
            elif digest is not None:
                kept.append(entry)
        if resident >= 0:
            kept.append((resident_path, self._leaf_keys[resident], None, resident))
        return self._build(kept, depth, 0, len(kept), levels)

    def _update(self, ref: int, depth: int, entries: list[_Entry], lo: int, hi: int,
                levels: list[list[int]]) -> int:
        if ref == _NO_REF or ref & 1:
            return self._settle(ref, depth, entries, lo, hi, levels)
        slot = (ref >> 1) - 1
        split = _split(entries, depth, lo, hi)
        left, right = self._left[slot], self._right[slot]
        if split > lo:
            left = self._update(left, depth + 1, entries, lo, split, levels)
        if hi > split:
            right = self._update(right, depth + 1, entries, split, hi, levels)
        if (left == _NO_REF and (right == _NO_REF or _is_leaf(right))) or (
                right == _NO_REF and _is_leaf(left)):
            # At most one leaf is left below: it moves up here and this node goes.
            self._inner_free.append(slot)
            return left | right
        self._left[slot] = left
        self._right[slot] = right
        levels[depth].append(slot)
        return ref

    def _rehash(self, levels: list[list[int]]) -> None:
        """Hash the listed inner nodes, deepest level first (children before parents)."""
        hashes = self._hashes
        for depth in range(MAX_DEPTH, -1, -1):
            for slot in levels[depth]:
                hashes[slot] = blake3(b"\x01" + self._hash_of(self._left[slot])
                                      + self._hash_of(self._right[slot])).digest()

    def build(self, items: Iterable[tuple[bytes, bytes]]) -> bytes:
        """Replace the tree by the one over ``items`` ((key, value), keys distinct);
        returns the root."""
        entries = _sorted_entries(items)
        self._clear()
        levels: list[list[int]] = [[] for _ in range(MAX_DEPTH + 1)]
        self._root = self._build(entries, 0, 0, len(entries), levels)
        self._rehash(levels)
        return self.root()

    def update(self, changes: Iterable[tuple[bytes, bytes | None]]) -> bytes:
        """Set (a value) or remove (None) keys, each at most once; returns the new root."""
        entries = _sorted_entries(changes)
        if entries:
            levels: list[list[int]] = [[] for _ in range(MAX_DEPTH + 1)]
            self._root = self._update(self._root, 0, entries, 0, len(entries), levels)
            self._rehash(levels)
        return self.root()

    # --- reading -------------------------------------------------------------------------

    def root(self) -> bytes:
        return self._hash_of(self._root)

    def walk(self, key: bytes) -> tuple[list[bytes], tuple[bytes, bytes] | None]:
        """Sibling hashes from the root down along ``key``'s path, and the leaf where the
        walk ends ((leaf hash, its state key): ``key``'s own or another's), or None at an
        empty subtree."""
        path = _path(bytes(key))
        siblings: list[bytes] = []
        ref, depth = self._root, 0
        while ref != _NO_REF and not ref & 1:
            slot = (ref >> 1) - 1
            left, right = self._left[slot], self._right[slot]
            if path[depth >> 3] & (0x80 >> (depth & 7)):
                siblings.append(self._hash_of(left))
                ref = right
            else:
                siblings.append(self._hash_of(right))
                ref = left
            depth += 1
        if ref == _NO_REF:
            return siblings, None
        return siblings, (self._leaf_hashes[ref >> 1], self._leaf_keys[ref >> 1])
