"""Pure-Python twin of the RFC 9162 Merkle tree module (import :mod:`n3xus.canon.merkle`).

The tree is the one of RFC 9162 §2.1 (RFC 6962 §2.1): ``leaf = H(0x00 || entry)``,
``node = H(0x01 || left || right)``, the empty tree hashes to ``H(b"")``, and a tree of
``n > 1`` leaves splits at the largest power of two below ``n``. The hash ``H`` is a
parameter (:class:`TreeHash`): BLAKE3 in production, SHA-256 for RFC 6962 tooling.

Storage model. A log that appends one leaf at a time keeps, for every *full* subtree, its
hash keyed by ``(level, index)``: level 0 holds the leaf hashes, and node ``(level, i)``
covers leaves ``[i << level, (i + 1) << level)``. :class:`Frontier` appends a leaf in
O(log n) memory and returns the full nodes that the append completed, for the caller to
store. Every root and proof is then computed from O(log n) of those stored nodes through
a ``get_node(level, index) -> bytes`` callback, so the core never does IO itself; the
``*_ranges``/:func:`perfect_subtrees` planners name the nodes up front for callers that
prefer to fetch them in one batch.

Verification follows the reference verifier (transparency-dev/merkle ``proof``): hashes
are exactly 32 bytes, a consistency proof from size 0 is an error, equal sizes need an
empty proof and equal roots, and proof lengths must be exact.

The compiled twin ``_merkle_c`` exposes the same names and byte-identical results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import final

from blake3 import blake3

from .errors import VerificationError

__all__ = [
    "BLAKE3",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "SHA256",
    "Frontier",
    "GetNode",
    "MerkleTree",
    "NodeID",
    "TreeHash",
    "consistency_proof",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "perfect_subtrees",
    "range_hash",
    "root_at",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in every leaf, node and root hash (BLAKE3-256 and SHA-256 alike)."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size and leaf index: the reference verifier and the C2SP checkpoint
format use unsigned 64-bit sizes, so a larger tree could not be checked by auditors."""

_LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: domain separation of leaves from nodes
_NODE_PREFIX = b"\x01"

NodeID = tuple[int, int]
"""``(level, index)`` of a full subtree: it covers leaves ``[index << level, (index + 1) << level)``."""

GetNode = Callable[[int, int], bytes]
"""Callback answering the stored hash of the full subtree at ``(level, index)``."""


@final
@dataclass(frozen=True, eq=False, repr=False)
class TreeHash:
    """The hash function of a tree: ``digest(data) -> 32 bytes`` plus the RFC 9162 framing.

    Compared by identity: the compiled twin recognises :data:`BLAKE3` and :data:`SHA256`
    and hashes them in C; any other instance is called through :attr:`digest`. Final,
    because both twins frame nodes as ``digest(0x01 || left || right)`` directly.
    """

    name: str
    digest: Callable[[bytes], bytes]

    def leaf_hash(self, entry: bytes) -> bytes:
        """``H(0x00 || entry)``: the hash of one log entry."""
        return self.digest(_LEAF_PREFIX + entry)

    def node_hash(self, left: bytes, right: bytes) -> bytes:
        """``H(0x01 || left || right)``: the hash of an interior node."""
        return self.digest(_NODE_PREFIX + left + right)

    def empty_root(self) -> bytes:
        """``H(b"")``: the root of the empty tree."""
        return self.digest(b"")

    def __repr__(self) -> str:
        return f"TreeHash({self.name!r})"


def _blake3_digest(data: bytes) -> bytes:
    return blake3(data).digest()


def _sha256_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


BLAKE3 = TreeHash("blake3", _blake3_digest)
"""BLAKE3-256: the production hash of n3xus logs."""

SHA256 = TreeHash("sha256", _sha256_digest)
"""SHA-256: the RFC 6962 / C2SP hash, for conformance vectors and external tooling."""


# --------------------------------------------------------------------------- helpers


def _trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1


def _check_hasher(hasher: object) -> TreeHash:
    if not isinstance(hasher, TreeHash):
        raise TypeError(f"hasher must be a TreeHash, not {type(hasher).__name__}")
    return hasher


def _check_count(value: object, what: str) -> int:
    """A size or index given by our own caller: misuse is a ValueError/TypeError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ValueError(f"{what} {value} is outside 0..2**64-1")
    return value


def _check_stored(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(data)}")
    return data


def _leaf_bytes(value: object, position: int) -> bytes:
    if type(value) is bytes and len(value) == HASH_SIZE:
        return value  # the common case, without building an error label
    return _check_stored(value, f"leaf hash {position}")


def _proof_u64(value: object, what: str) -> int:
    """A size or index that arrived with a proof: anything odd fails verification."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise VerificationError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise VerificationError(f"{what} {value} is outside 0..2**64-1")
    return value


def _proof_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise VerificationError(f"{what} must be bytes, not {type(value).__name__}")
    data = bytes(value)
    if len(data) != HASH_SIZE:
        raise VerificationError(f"{what} has {len(data)} bytes, want {HASH_SIZE}")
    return data


def _proof_hashes(proof: Sequence[bytes]) -> list[bytes]:
    if isinstance(proof, bytes | bytearray | memoryview | str):
        raise VerificationError("proof must be a sequence of hashes, not one byte string")
    return [_proof_hash(item, f"proof[{i}]") for i, item in enumerate(proof)]


# ------------------------------------------------------------------- tree planning


def perfect_subtrees(begin: int, end: int) -> list[NodeID]:
    """The full subtrees that exactly cover leaves ``[begin, end)``, left to right.

    Each one is the largest aligned power-of-two block that starts at the current position
    and fits; a range has at most ``2 * 64`` of them.
    """
    _check_count(begin, "begin")
    _check_count(end, "end")
    if begin > end:
        raise ValueError(f"range [{begin}, {end}) is reversed")
    nodes: list[NodeID] = []
    while begin < end:
        fit = (end - begin).bit_length() - 1
        level = fit if begin == 0 else min(fit, _trailing_zeros(begin))
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def _check_subtree_range(begin: int, end: int) -> None:
    # MTH(D[begin:end]) is a node of some RFC 9162 tree only when begin is aligned to the
    # smallest power of two holding end - begin leaves; other ranges have no defined hash.
    if begin >= end:
        raise ValueError(f"range [{begin}, {end}) is empty")
    if begin % (1 << (end - begin - 1).bit_length()):
        raise ValueError(f"range [{begin}, {end}) is not an RFC 9162 subtree")


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose subtree hashes form the inclusion proof of ``index`` in ``size``.

    RFC 9162 §2.1.3.1 order: from the leaf's sibling up to the root's child. Every range is
    a full subtree except possibly one on the tree's right edge.
    """
    _check_count(index, "leaf index")
    _check_count(size, "tree size")
    if index >= size:
        raise ValueError(f"leaf index {index} is beyond tree size {size}")
    return _path_ranges(index, size, 0)


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose subtree hashes form the consistency proof from ``size1`` to
    ``size2`` (RFC 9162 §2.1.4.1); empty when the sizes are equal."""
    _check_count(size1, "size1")
    _check_count(size2, "size2")
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    shift = _trailing_zeros(size1)
    ranges: list[tuple[int, int]] = []
    if size1 != 1 << shift:
        # The old tree's rightmost full subtree; a verifier whose old tree is itself a
        # full subtree already knows it as root1, so it is left out in that case.
        ranges.append((size1 - (1 << shift), size1))
    ranges.extend(_path_ranges(size1 - 1, size2, shift))
    return ranges


def _path_ranges(index: int, size: int, start_level: int) -> list[tuple[int, int]]:
    """Siblings of the path from leaf ``index`` to the root of a ``size``-leaf tree,
    from ``start_level`` up: every sibling below the level where the path meets the
    right edge, then the left siblings along the right edge."""
    inner = (index ^ (size - 1)).bit_length()
    ranges: list[tuple[int, int]] = []
    for level in range(start_level, inner):
        begin = ((index >> level) ^ 1) << level
        ranges.append((begin, min(begin + (1 << level), size)))
    for level in range(inner, index.bit_length()):
        if (index >> level) & 1:
            begin = ((index >> level) - 1) << level
            ranges.append((begin, begin + (1 << level)))
    return ranges


# --------------------------------------------------- roots and proofs from stored nodes


def range_hash(hasher: TreeHash, begin: int, end: int, get_node: GetNode) -> bytes:
    """``MTH(D[begin:end])`` from the stored full subtrees covering the range (at most
    ``2 * 64`` lookups). ``begin`` must be aligned as an RFC 9162 subtree."""
    _check_hasher(hasher)
    _check_count(begin, "begin")
    _check_count(end, "end")
    _check_subtree_range(begin, end)
    nodes = perfect_subtrees(begin, end)
    level, index = nodes[-1]
    acc = _check_stored(get_node(level, index), f"stored node ({level}, {index})")
    for level, index in reversed(nodes[:-1]):
        left = _check_stored(get_node(level, index), f"stored node ({level}, {index})")
        acc = hasher.node_hash(left, acc)
    return acc


def root_at(hasher: TreeHash, size: int, get_node: GetNode) -> bytes:
    """The root of the first ``size`` leaves, from stored full subtrees."""
    _check_hasher(hasher)
    if _check_count(size, "tree size") == 0:
        return hasher.empty_root()
    return range_hash(hasher, 0, size, get_node)


def inclusion_proof(hasher: TreeHash, index: int, size: int, get_node: GetNode) -> list[bytes]:
    """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    return [range_hash(hasher, b, e, get_node) for b, e in inclusion_proof_ranges(index, size)]


def consistency_proof(hasher: TreeHash, size1: int, size2: int, get_node: GetNode) -> list[bytes]:
    """The RFC 9162 consistency proof between tree sizes ``size1`` and ``size2``."""
    return [range_hash(hasher, b, e, get_node) for b, e in consistency_proof_ranges(size1, size2)]


def root_from_leaf_hashes(hasher: TreeHash, leaf_hashes: Sequence[bytes]) -> bytes:
    """The root over a list of leaf hashes, bottom-up (pairing neighbours and carrying an
    odd last node up unchanged gives the RFC 9162 left-balanced tree)."""
    _check_hasher(hasher)
    level = [_leaf_bytes(h, i) for i, h in enumerate(leaf_hashes)]
    if not level:
        return hasher.empty_root()
    digest = hasher.digest
    while len(level) > 1:
        parents = [
            digest(_NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            parents.append(level[-1])
        level = parents
    return level[0]


# -------------------------------------------------------------------------- verifying


def root_from_inclusion_proof(
    hasher: TreeHash, index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root implied by an inclusion proof; raises :class:`VerificationError` when the
    proof cannot belong to leaf ``index`` of a ``size``-leaf tree."""
    _check_hasher(hasher)
    index = _proof_u64(index, "leaf index")
    size = _proof_u64(size, "tree size")
    if index >= size:
        raise VerificationError(f"leaf index {index} is beyond tree size {size}")
    acc = _proof_hash(leaf_hash, "leaf hash")
    hashes = _proof_hashes(proof)
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    if len(hashes) != inner + border:
        raise VerificationError(f"wrong proof length {len(hashes)}, want {inner + border}")
    digest = hasher.digest
    for level in range(inner):
        if (index >> level) & 1:
            acc = digest(_NODE_PREFIX + hashes[level] + acc)
        else:
            acc = digest(_NODE_PREFIX + acc + hashes[level])
    for sibling in hashes[inner:]:
        acc = digest(_NODE_PREFIX + sibling + acc)
    return acc


def verify_inclusion(
    hasher: TreeHash,
    index: int,
    size: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    root: bytes,
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the ``size``-leaf tree with ``root``;
    raises :class:`VerificationError` with the reason otherwise."""
    calculated = root_from_inclusion_proof(hasher, index, size, leaf_hash, proof)
    if calculated != _root_bytes(root, "root"):
        raise VerificationError("inclusion proof does not lead to the expected root")


def root_from_consistency_proof(
    hasher: TreeHash, size1: int, size2: int, proof: Sequence[bytes], root1: bytes
) -> bytes:
    """The ``size2`` root implied by a consistency proof from the ``size1`` tree with
    ``root1``; raises :class:`VerificationError` when the proof does not hold."""
    _check_hasher(hasher)
    size1 = _proof_u64(size1, "size1")
    size2 = _proof_u64(size2, "size2")
    hashes = _proof_hashes(proof)
    if size2 < size1:
        raise VerificationError(f"size2 ({size2}) < size1 ({size1})")
    if size1 == 0:
        raise VerificationError("a consistency proof from the empty tree is meaningless")
    if size1 == size2:
        if hashes:
            raise VerificationError("size1 == size2, but the proof is not empty")
        # As the reference verifier: equal sizes only require equal roots.
        return _root_bytes(root1, "root1")
    if not hashes:
        raise VerificationError("empty consistency proof")
    old_root = _proof_hash(root1, "root1")

    index = size1 - 1
    inner = (index ^ (size2 - 1)).bit_length()
    border = (index >> inner).bit_count()
    shift = _trailing_zeros(size1)
    inner -= shift
    if size1 == 1 << shift:
        seed, rest = old_root, hashes
    else:
        seed, rest = hashes[0], hashes[1:]
    if len(rest) != inner + border:
        want = inner + border + (len(hashes) - len(rest))
        raise VerificationError(f"wrong proof length {len(hashes)}, want {want}")

    digest = hasher.digest
    mask = index >> shift
    old_acc = new_acc = seed
    for i in range(inner):
        sibling = rest[i]
        if (mask >> i) & 1:
            old_acc = digest(_NODE_PREFIX + sibling + old_acc)
            new_acc = digest(_NODE_PREFIX + sibling + new_acc)
        else:
            # A right sibling did not exist yet in the old tree: it only grows the new one.
            new_acc = digest(_NODE_PREFIX + new_acc + sibling)
    for sibling in rest[inner:]:
        old_acc = digest(_NODE_PREFIX + sibling + old_acc)
        new_acc = digest(_NODE_PREFIX + sibling + new_acc)
    if old_acc != old_root:
        raise VerificationError("consistency proof does not lead to root1")
    return new_acc


def verify_consistency(
    hasher: TreeHash,
    size1: int,
    size2: int,
    proof: Sequence[bytes],
    root1: bytes,
    root2: bytes,
) -> None:
    """Check that the ``size2`` tree with ``root2`` extends the ``size1`` tree with
    ``root1``; raises :class:`VerificationError` with the reason otherwise."""
    calculated = root_from_consistency_proof(hasher, size1, size2, proof, root1)
    if calculated != _root_bytes(root2, "root2"):
        raise VerificationError("consistency proof does not lead to root2")


def _root_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise VerificationError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


# ----------------------------------------------------------------- incremental trees


class Frontier:
    """The right edge of an append-only tree: one full-subtree hash per set bit of the
    size, so appending and computing the root need O(log n) memory and time.

    ``append`` answers the full nodes it completed, as ``(level, index, hash)`` (the leaf
    itself first); a log that stores them can serve every proof through ``get_node``.
    """

    __slots__ = ("_hasher", "_hashes", "_size")

    def __init__(self, hasher: TreeHash, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self._hasher = _check_hasher(hasher)
        self._size = _check_count(size, "tree size")
        self._hashes = [_check_stored(h, "frontier hash") for h in hashes]
        if len(self._hashes) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} frontier hashes, "
                f"got {len(self._hashes)}"
            )

    @classmethod
    def from_nodes(cls, hasher: TreeHash, size: int, get_node: GetNode) -> Frontier:
        """Rebuild the frontier of the first ``size`` leaves from stored full nodes."""
        hashes = [get_node(level, index) for level, index in perfect_subtrees(0, size)]
        return cls(hasher, size, hashes)

    @property
    def hasher(self) -> TreeHash:
        return self._hasher

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The full-subtree hashes of ``perfect_subtrees(0, size)``, left to right."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf; answer the full nodes completed by it, leaf first."""
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        acc = _check_stored(leaf_hash, "leaf hash")
        index = self._size
        completed = [(0, index, acc)]
        level = 0
        while index & 1:
            acc = self._hasher.node_hash(self._hashes.pop(), acc)
            index >>= 1
            level += 1
            completed.append((level, index, acc))
        self._hashes.append(acc)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The root of the current tree."""
        if not self._hashes:
            return self._hasher.empty_root()
        acc = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            acc = self._hasher.node_hash(left, acc)
        return acc

    def __repr__(self) -> str:
        return f"Frontier(hasher={self._hasher.name}, size={self._size})"


class MerkleTree:
    """An in-memory tree keeping every full-subtree hash (about 64 bytes per leaf), for
    tests, tools and logs small enough to hold in memory. Level ``L`` is one contiguous
    buffer of the ``size >> L`` full nodes of that level."""

    __slots__ = ("_hasher", "_levels", "_size")

    def __init__(self, hasher: TreeHash, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._hasher = _check_hasher(hasher)
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @property
    def hasher(self) -> TreeHash:
        return self._hasher

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaf hashes, then hash each level's newly completed pairs."""
        leaves = self._levels[0]
        try:
            for i, leaf in enumerate(leaf_hashes):
                leaves += _leaf_bytes(leaf, i)
            if len(leaves) // HASH_SIZE > MAX_TREE_SIZE:
                raise ValueError("the tree is full")
        except BaseException:
            del leaves[HASH_SIZE * self._size :]  # a refused batch leaves no trace
            raise
        self._size = len(leaves) // HASH_SIZE
        digest = self._hasher.digest
        level = 0
        while (self._size >> level) > 1:
            if len(self._levels) == level + 1:
                self._levels.append(bytearray())
            below, above = self._levels[level], self._levels[level + 1]
            for parent in range(len(above) // HASH_SIZE, (self._size >> level) // 2):
                pair = below[2 * HASH_SIZE * parent : 2 * HASH_SIZE * (parent + 1)]
                above += digest(_NODE_PREFIX + pair)
            level += 1

    def node(self, level: int, index: int) -> bytes:
        """The stored hash of the full subtree ``(level, index)``."""
        _check_count(level, "level")
        _check_count(index, "index")
        if level >= len(self._levels) or index >= (self._size >> level):
            raise IndexError(f"no full subtree ({level}, {index}) in a tree of {self._size}")
        start = HASH_SIZE * index
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def leaf_hash(self, index: int) -> bytes:
        return self.node(0, index)

    def _size_arg(self, size: int | None) -> int:
        if size is None:
            return self._size
        _check_count(size, "tree size")
        if size > self._size:
            raise ValueError(f"tree size {size} is beyond the current size {self._size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root of the first ``size`` leaves (default: all)."""
        return root_at(self._hasher, self._size_arg(size), self.node)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(self._hasher, index, self._size_arg(size), self.node)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(self._hasher, size1, self._size_arg(size2), self.node)

    def __repr__(self) -> str:
        return f"MerkleTree(hasher={self._hasher.name}, size={self._size})"
