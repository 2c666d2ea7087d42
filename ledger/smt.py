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

Storage. :class:`SparseMerkleTree` keeps every non-empty position in one key-value store
(an LMDB database in the node): key ``prefix || u8 depth`` (the path's first ``depth`` bits,
left-aligned in 32 bytes, the other bits zero), value ``0x00 || leaf hash || state key``
for a leaf or ``0x01 || left hash || right hash`` for an inner node (whose own hash is then
BLAKE3 of the stored value). Because an inner node holds both child hashes, an update reads
only the positions on the changed paths, and a proof reads only the walked path. A batch of
k changed keys costs O(k log n) reads, hashes and writes; a proof O(log n) reads.
:func:`root_of` computes the same root from scratch (the in-memory ledger, audits).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from blake3 import blake3

from .errors import LedgerCorruptError
from .rules import state_leaf

HASH_BYTES: Final = 32
EMPTY: Final = bytes(HASH_BYTES)
PATH_BITS: Final = 256
# Depth fits the position key's one byte. Two keys whose BLAKE3 paths share 255 bits would
# need more: that is a hash collision in all but one bit, never met by honest keys.
MAX_DEPTH: Final = 255
_LEAF: Final = 0x00
_NODE: Final = 0x01
_ROOT_POSITION: Final = bytes(33)

# (hash, state key) of a leaf; (stored value 0x01 || left || right, None) of an inner node;
# None for an empty subtree.
Content = tuple[bytes, bytes | None] | None
Getter = Callable[[bytes], bytes | None]
Putter = Callable[[bytes, bytes], object]


def key_path(key: bytes) -> int:
    """The key's path as a 256-bit integer (bit 0 is the most significant)."""
    return int.from_bytes(blake3(key).digest(), "big")


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return blake3(b"\x00" + state_leaf(key, value)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return blake3(b"\x01" + left + right).digest()


def _bit(path: int, depth: int) -> int:
    return (path >> (PATH_BITS - 1 - depth)) & 1


def position(depth: int, prefix: int) -> bytes:
    """The store key of the subtree at ``depth`` whose path starts with ``prefix``: the
    prefix left-aligned in 32 bytes, then the depth. Prefix first keeps the positions of
    one path near each other in the store (one B-tree page holds several of its deep
    levels), so a batch dirties far fewer pages than a layout by depth would."""
    return (prefix << (PATH_BITS - depth)).to_bytes(32, "big") + bytes((depth,))


def _hash(content: Content) -> bytes:
    if content is None:
        return EMPTY
    if content[1] is None:
        return blake3(content[0]).digest()  # an inner node: 0x01 || left || right
    return content[0]


def _inner(left: Content, right: Content) -> tuple[bytes, None]:
    return b"\x01" + _hash(left) + _hash(right), None


def _children(content: tuple[bytes, bytes | None]) -> tuple[bytes, bytes]:
    raw = content[0]
    return raw[1:1 + HASH_BYTES], raw[1 + HASH_BYTES:]


def _encode(content: tuple[bytes, bytes | None]) -> bytes:
    digest, key = content
    return digest if key is None else b"\x00" + digest + key


def _decode(raw: bytes) -> Content:
    if raw[0] == _NODE and len(raw) == 1 + 2 * HASH_BYTES:
        return bytes(raw), None
    if raw[0] == _LEAF and len(raw) > 1 + HASH_BYTES:
        return bytes(raw[1:1 + HASH_BYTES]), bytes(raw[1 + HASH_BYTES:])
    raise LedgerCorruptError("a state tree position holds neither a leaf nor a node")


class _Leaves:
    """Leaves sorted by path, with the paths apart for bisection."""

    __slots__ = ("paths", "items")

    def __init__(self, items: list[tuple[int, bytes, bytes]]) -> None:
        items.sort()
        self.items = items  # (path, leaf hash, key)
        self.paths = [item[0] for item in items]


def _split(paths: Sequence[int], depth: int, prefix: int, lo: int, hi: int) -> int:
    """First index in ``[lo, hi)`` whose path has bit ``depth`` set (paths share ``prefix``)."""
    return bisect_left(paths, ((prefix << 1) | 1) << (PATH_BITS - 1 - depth), lo, hi)


def _build(leaves: _Leaves, depth: int, prefix: int, lo: int, hi: int,
           sink: Callable[[bytes, bytes], object] | None) -> Content:
    """The subtree of ``leaves[lo:hi]`` at (depth, prefix); its positions below ``depth``
    are given to ``sink`` (None: only hash)."""
    if hi <= lo:
        return None
    if hi - lo == 1:
        _, digest, key = leaves.items[lo]
        return digest, key
    if depth >= MAX_DEPTH:
        raise LedgerCorruptError("two state keys share a 255-bit path")
    split = _split(leaves.paths, depth, prefix, lo, hi)
    left = _build(leaves, depth + 1, prefix << 1, lo, split, sink)
    right = _build(leaves, depth + 1, (prefix << 1) | 1, split, hi, sink)
    if sink is not None:
        if left is not None:
            sink(position(depth + 1, prefix << 1), _encode(left))
        if right is not None:
            sink(position(depth + 1, (prefix << 1) | 1), _encode(right))
    return _inner(left, right)


def _side_hash(side: Content | bytes) -> bytes:
    """The hash of a child given as its content or, unread, as its hash."""
    return side if isinstance(side, bytes) else _hash(side)


def root_of(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The state root over (key, value) entries (any order, keys distinct)."""
    leaves = _Leaves([(key_path(key), leaf_hash(key, value), key) for key, value in items])
    return _hash(_build(leaves, 0, 0, 0, len(leaves.items), None))


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


class SparseMerkleTree:
    """The tree over a key-value store of positions (one LMDB write transaction's
    ``get/put/delete`` bound to the tree's database, or dict methods)."""

    def __init__(self, get: Getter, put: Putter, delete: Callable[[bytes], object]) -> None:
        self._get = get
        self._put = put
        self._delete = delete

    def _read(self, depth: int, prefix: int) -> Content:
        raw = self._get(position(depth, prefix))
        return None if raw is None else _decode(raw)

    def root(self) -> bytes:
        return _hash(self._read(0, 0))

    def update(self, changes: Iterable[tuple[bytes, bytes | None]]) -> bytes:
        """Set (value) or remove (None) keys; returns the new root."""
        leaves = _Leaves([(key_path(key), b"" if value is None else leaf_hash(key, value), key)
                          for key, value in changes])
        if not leaves.items:
            return self.root()
        for a, b in zip(leaves.paths, leaves.paths[1:], strict=False):
            if a == b:
                raise ValueError("a key is changed twice in one update")
        root = self._update(leaves, 0, 0, self._read(0, 0), 0, len(leaves.items))
        if root is None:
            self._delete(_ROOT_POSITION)
        else:
            self._put(_ROOT_POSITION, _encode(root))
        return _hash(root)

    def _update(self, changes: _Leaves, depth: int, prefix: int, content: Content, lo: int,
                hi: int) -> Content:
        if content is None or content[1] is not None:
            # Empty or one leaf: nothing is stored below; rebuild from the leaves left.
            merged: dict[int, tuple[bytes, bytes]] = {}
            if content is not None:
                assert content[1] is not None
                merged[key_path(content[1])] = (content[0], content[1])
            for path, digest, key in changes.items[lo:hi]:
                if digest:
                    merged[path] = (digest, key)
                else:
                    merged.pop(path, None)
            leaves = _Leaves([(path, digest, key) for path, (digest, key) in merged.items()])
            return _build(leaves, depth, prefix, 0, len(leaves.items), self._put)
        split = _split(changes.paths, depth, prefix, lo, hi)
        left_prefix, right_prefix = prefix << 1, (prefix << 1) | 1
        left_hash, right_hash = _children(content)
        # Only the changed sides are read; an unchanged side is known by its hash, and read
        # only when the other side empties (a lone leaf there moves up).
        old_left: Content | bytes = left_hash
        old_right: Content | bytes = right_hash
        if split > lo:
            old_left = self._read(depth + 1, left_prefix)
            left: Content | bytes = self._update(changes, depth + 1, left_prefix, old_left, lo, split)
        else:
            left = left_hash
        if hi > split:
            old_right = self._read(depth + 1, right_prefix)
            right: Content | bytes = self._update(changes, depth + 1, right_prefix, old_right,
                                                  split, hi)
        else:
            right = right_hash
        if isinstance(left, bytes) and left == EMPTY:
            left = None
        if isinstance(right, bytes) and right == EMPTY:
            right = None
        if left is None and isinstance(right, bytes):
            right = self._read(depth + 1, right_prefix)
        if right is None and isinstance(left, bytes):
            left = self._read(depth + 1, left_prefix)
        lone: Content | bytes = None
        if left is None and (right is None or (not isinstance(right, bytes) and right[1] is not None)):
            lone = right
        elif right is None and not isinstance(left, bytes) and left is not None and left[1] is not None:
            lone = left
        else:
            for child, old, child_prefix, changed in ((left, old_left, left_prefix, split > lo),
                                                      (right, old_right, right_prefix, hi > split)):
                if changed:
                    assert not isinstance(child, bytes)
                    if child is None:
                        self._delete(position(depth + 1, child_prefix))
                    elif child != old:
                        self._put(position(depth + 1, child_prefix), _encode(child))
            return (b"\x01" + _side_hash(left) + _side_hash(right)), None
        # At most one leaf is left below: it moves up here, the children's positions go.
        for old, child_prefix in ((old_left, left_prefix), (old_right, right_prefix)):
            if old is not None and not (isinstance(old, bytes) and old == EMPTY):
                self._delete(position(depth + 1, child_prefix))
        assert not isinstance(lone, bytes)
        return lone

    def bulk_load(self, items: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Root and every position of a tree over ``items``, sorted for one bulk insert into
        an empty store (the caller writes them)."""
        leaves = _Leaves([(key_path(key), leaf_hash(key, value), key) for key, value in items])
        nodes: list[tuple[bytes, bytes]] = []
        root = _build(leaves, 0, 0, 0, len(leaves.items),
                      lambda where, raw: nodes.append((where, raw)))
        if root is not None:
            nodes.append((_ROOT_POSITION, _encode(root)))
        nodes.sort()
        return _hash(root), nodes

    def walk(self, key: bytes) -> tuple[list[bytes], Content]:
        """Sibling hashes from the root down along ``key``'s path, and the content where the
        walk ends (None, or a leaf: (hash, its key))."""
        path = key_path(key)
        depth, prefix = 0, 0
        content = self._read(0, 0)
        siblings: list[bytes] = []
        while content is not None and content[1] is None:
            bit = _bit(path, depth)
            left, right = _children(content)
            siblings.append(left if bit else right)
            prefix = (prefix << 1) | bit
            depth += 1
            if (right if bit else left) == EMPTY:
                return siblings, None
            content = self._read(depth, prefix)
            if content is None:
                raise LedgerCorruptError("a state tree node links a missing position")
        return siblings, content
