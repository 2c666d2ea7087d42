# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, annotation_typing=False
"""Compiled twin of :mod:`n3xus.canon._merkle_py`: same names, byte-identical results.

The hot paths (roots over many leaves, proof verification, the in-memory tree and the
frontier) run in C. Node hashing for :data:`BLAKE3` and :data:`SHA256` uses the portable
C of ``_merkle_hash.h`` (calling the Python ``blake3`` object per node would cost more
than the hashing itself), hashing whole tree levels across SIMD lanes; any other
:class:`TreeHash` is called through its ``digest``. The planners and the ``get_node``
based functions, whose cost is the caller's lookups, are the pure ones re-exported.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Resize
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_Check,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from hashlib import sha256 as _sha256_new

from ._merkle_py import (
    BLAKE3,
    HASH_SIZE,
    MAX_TREE_SIZE,
    SHA256,
    GetNode,
    NodeID,
    TreeHash,
    consistency_proof,
    consistency_proof_ranges,
    inclusion_proof,
    inclusion_proof_ranges,
    perfect_subtrees,
    range_hash,
    root_at,
)
from .errors import VerificationError

cdef extern from "_merkle_hash.h":
    enum:
        N3X_KIND_BLAKE3  # the node hash kinds of n3x_node_hash / n3x_nodes
        N3X_KIND_SHA256
    void n3x_blake3(const uint8_t *inp, size_t length, uint8_t *out) nogil
    void n3x_sha256(const uint8_t *inp, size_t length, uint8_t *out) nogil
    void n3x_node_hash(int kind, const uint8_t *left, const uint8_t *right, uint8_t *out) nogil
    void n3x_nodes(int kind, const uint8_t *children, size_t count, uint8_t *out,
                   int max_lanes) nogil
    int n3x_vector_lanes() nogil
    int n3x_bit_length(uint64_t x) nogil
    int n3x_popcount(uint64_t x) nogil
    int n3x_trailing_zeros(uint64_t x) nogil

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

cdef enum:
    HSIZE = 32  # HASH_SIZE as a C constant, for stack buffers
    KIND_GENERIC = 0  # any other TreeHash: called through its digest
    MAX_LANES = 16  # the widest node batch n3x_nodes may use (AVX-512)
cdef uint64_t ONE = 1


# ----------------------------------------------------------------- test hooks


def _c_blake3(data):
    """BLAKE3-256 of ``data`` in C (_merkle_hash.h; for tests against the blake3 package)."""
    cdef bytes raw = bytes(data)
    cdef uint8_t out[HSIZE]
    n3x_blake3(<const uint8_t*>PyBytes_AS_STRING(raw), <size_t>PyBytes_GET_SIZE(raw), out)
    return PyBytes_FromStringAndSize(<char*>out, HSIZE)


def _c_sha256(data):
    """SHA-256 of ``data`` in C (_merkle_hash.h; for tests against hashlib)."""
    cdef bytes raw = bytes(data)
    cdef uint8_t out[HSIZE]
    n3x_sha256(<const uint8_t*>PyBytes_AS_STRING(raw), <size_t>PyBytes_GET_SIZE(raw), out)
    return PyBytes_FromStringAndSize(<char*>out, HSIZE)


def _c_vector_lanes():
    """How many nodes this CPU hashes at once in a tree level (1 = scalar C)."""
    return n3x_vector_lanes()


def _c_level_nodes(hasher, children, max_lanes):
    """Parents of the pairs in ``children`` (a multiple of 64 bytes), hashed at most
    ``max_lanes`` at a time: for tests comparing every lane width with the scalar path."""
    cdef int kind = _kind_of(hasher)
    if kind == KIND_GENERIC:
        raise ValueError("only BLAKE3 and SHA256 have C node hashing")
    cdef bytes raw = bytes(children)
    if len(raw) % (2 * HSIZE):
        raise ValueError("children must be whole pairs of hashes")
    cdef size_t count = len(raw) // (2 * HSIZE)
    cdef bytearray out = bytearray(count * HSIZE)
    n3x_nodes(kind, <const uint8_t*>PyBytes_AS_STRING(raw), count,
              <uint8_t*>PyByteArray_AS_STRING(out), max_lanes)
    return bytes(out)


# -------------------------------------------------------------------- helpers


cdef int _kind_of(object hasher) except -1:
    if hasher is BLAKE3:
        return N3X_KIND_BLAKE3
    if hasher is SHA256:
        return N3X_KIND_SHA256
    if not isinstance(hasher, TreeHash):
        raise TypeError(f"hasher must be a TreeHash, not {type(hasher).__name__}")
    return KIND_GENERIC


cdef int _node(object hasher, int kind, const uint8_t *left, const uint8_t *right,
               uint8_t *out) except -1:
    cdef bytes framed_sha
    cdef uint8_t *fp
    if kind == N3X_KIND_BLAKE3:
        n3x_node_hash(kind, left, right, out)
        return 0
    if kind == N3X_KIND_SHA256:
        # One SHA-256 node at a time: OpenSSL through hashlib (SHA-NI where the CPU has
        # it) beats portable C here even with the call overhead; whole levels use the
        # multi-lane C path instead.
        framed_sha = PyBytes_FromStringAndSize(NULL, 2 * HSIZE + 1)
        fp = <uint8_t*>PyBytes_AS_STRING(framed_sha)
        fp[0] = 1
        memcpy(fp + 1, left, HSIZE)
        memcpy(fp + 1 + HSIZE, right, HSIZE)
        memcpy(out, PyBytes_AS_STRING(_sha256_new(framed_sha).digest()), HSIZE)
        return 0
    framed = b"\x01" + PyBytes_FromStringAndSize(<const char*>left, HSIZE) \
        + PyBytes_FromStringAndSize(<const char*>right, HSIZE)
    result = hasher.digest(framed)
    if not PyBytes_Check(result) or PyBytes_GET_SIZE(result) != HSIZE:
        raise ValueError(f"{hasher!r} digest must answer {HSIZE} bytes")
    memcpy(out, PyBytes_AS_STRING(result), HSIZE)
    return 0


cdef int _level_nodes(object hasher, int kind, const uint8_t *children, size_t count,
                      uint8_t *out) except -1:
    # `count` parents of a tree level, whose children lie pairwise next to each other.
    cdef size_t k
    if kind != KIND_GENERIC:
        n3x_nodes(kind, children, count, out, MAX_LANES)
        return 0
    for k in range(count):
        _node(hasher, kind, children + 2 * HSIZE * k, children + 2 * HSIZE * k + HSIZE,
              out + HSIZE * k)
    return 0


cdef object _check_count(object value, str what):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ValueError(f"{what} {value} is outside 0..2**64-1")
    return value


cdef object _proof_u64(object value, str what):
    if not isinstance(value, int) or isinstance(value, bool):
        raise VerificationError(f"{what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise VerificationError(f"{what} {value} is outside 0..2**64-1")
    return value


cdef bytes _stored_bytes(object value, object what):
    cdef bytes data
    if PyBytes_Check(value):
        data = <bytes>value
    elif isinstance(value, (bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")
    if PyBytes_GET_SIZE(data) != HSIZE:
        raise ValueError(f"{what} must be {HSIZE} bytes, got {len(data)}")
    return data


cdef bytes _proof_hash(object value, object what):
    cdef bytes data
    if PyBytes_Check(value):
        data = <bytes>value
    elif isinstance(value, (bytearray, memoryview)):
        data = bytes(value)
    else:
        raise VerificationError(f"{what} must be bytes, not {type(value).__name__}")
    if PyBytes_GET_SIZE(data) != HSIZE:
        raise VerificationError(f"{what} has {len(data)} bytes, want {HSIZE}")
    return data


cdef list _proof_hashes(object proof):
    if isinstance(proof, (bytes, bytearray, memoryview, str)):
        raise VerificationError("proof must be a sequence of hashes, not one byte string")
    cdef list out = []
    cdef Py_ssize_t i = 0
    for item in proof:
        if not (PyBytes_Check(item) and PyBytes_GET_SIZE(item) == HSIZE):
            item = _proof_hash(item, f"proof[{i}]")
        out.append(item)
        i += 1
    return out


cdef bytes _root_bytes(object value, str what):
    if PyBytes_Check(value):
        return <bytes>value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise VerificationError(f"{what} must be bytes, not {type(value).__name__}")


cdef inline const uint8_t *_ptr(bytes data):
    return <const uint8_t*>PyBytes_AS_STRING(data)


# ------------------------------------------------------------------- roots


def root_from_leaf_hashes(hasher, leaf_hashes):
    """The root over a list of leaf hashes (see the pure twin)."""
    cdef int kind = _kind_of(hasher)
    cdef Py_ssize_t n = len(leaf_hashes), i, half, count
    if n == 0:
        return hasher.empty_root()
    cdef bytearray buf = bytearray(n * HSIZE)
    cdef uint8_t *p = <uint8_t*>PyByteArray_AS_STRING(buf)
    i = 0
    for leaf in leaf_hashes:
        if not (PyBytes_Check(leaf) and PyBytes_GET_SIZE(leaf) == HSIZE):
            leaf = _stored_bytes(leaf, f"leaf hash {i}")
        memcpy(p + HSIZE * i, PyBytes_AS_STRING(leaf), HSIZE)
        i += 1
    count = n
    while count > 1:
        # In place: parent j overwrites slot j, after slots 2j and 2j+1 were read.
        half = count // 2
        _level_nodes(hasher, kind, p, half, p)
        if count & 1:
            memcpy(p + HSIZE * half, p + HSIZE * (count - 1), HSIZE)
        count = half + (count & 1)
    return PyBytes_FromStringAndSize(<char*>p, HSIZE)


# ---------------------------------------------------------------- verifying


def root_from_inclusion_proof(hasher, index, size, leaf_hash, proof):
    """The root implied by an inclusion proof (see the pure twin)."""
    cdef int kind = _kind_of(hasher)
    cdef uint64_t idx = _proof_u64(index, "leaf index")
    cdef uint64_t sz = _proof_u64(size, "tree size")
    if idx >= sz:
        raise VerificationError(f"leaf index {index} is beyond tree size {size}")
    cdef bytes leaf = _proof_hash(leaf_hash, "leaf hash")
    cdef list hashes = _proof_hashes(proof)
    cdef int inner = n3x_bit_length(idx ^ (sz - 1))
    cdef int border = n3x_popcount(idx >> inner) if inner < 64 else 0
    if len(hashes) != inner + border:
        raise VerificationError(f"wrong proof length {len(hashes)}, want {inner + border}")
    cdef uint8_t acc[HSIZE]
    cdef int i
    cdef bytes sibling
    memcpy(acc, _ptr(leaf), HSIZE)
    for i in range(inner + border):
        sibling = <bytes>hashes[i]
        if i < inner and not ((idx >> i) & 1):
            _node(hasher, kind, acc, _ptr(sibling), acc)
        else:
            _node(hasher, kind, _ptr(sibling), acc, acc)
    return PyBytes_FromStringAndSize(<char*>acc, HSIZE)


def verify_inclusion(hasher, index, size, leaf_hash, proof, root):
    """Check an inclusion proof; raises VerificationError (see the pure twin)."""
    calculated = root_from_inclusion_proof(hasher, index, size, leaf_hash, proof)
    if calculated != _root_bytes(root, "root"):
        raise VerificationError("inclusion proof does not lead to the expected root")


def root_from_consistency_proof(hasher, size1, size2, proof, root1):
    """The size2 root implied by a consistency proof (see the pure twin)."""
    cdef int kind = _kind_of(hasher)
    cdef uint64_t s1 = _proof_u64(size1, "size1")
    cdef uint64_t s2 = _proof_u64(size2, "size2")
    cdef list hashes = _proof_hashes(proof)
    if s2 < s1:
        raise VerificationError(f"size2 ({size2}) < size1 ({size1})")
    if s1 == 0:
        raise VerificationError("a consistency proof from the empty tree is meaningless")
    if s1 == s2:
        if hashes:
            raise VerificationError("size1 == size2, but the proof is not empty")
        return _root_bytes(root1, "root1")
    if not hashes:
        raise VerificationError("empty consistency proof")
    cdef bytes old_root = _proof_hash(root1, "root1")

    cdef uint64_t index = s1 - 1
    cdef int inner = n3x_bit_length(index ^ (s2 - 1))
    cdef int border = n3x_popcount(index >> inner) if inner < 64 else 0
    cdef int shift = n3x_trailing_zeros(s1)
    cdef int start = 0 if s1 == (ONE << shift) else 1
    inner -= shift
    if len(hashes) != start + inner + border:
        raise VerificationError(
            f"wrong proof length {len(hashes)}, want {start + inner + border}")

    cdef uint8_t old_acc[HSIZE]
    cdef uint8_t new_acc[HSIZE]
    cdef uint64_t mask = index >> shift
    cdef int i
    cdef bytes sibling
    memcpy(old_acc, _ptr(old_root if start == 0 else <bytes>hashes[0]), HSIZE)
    memcpy(new_acc, old_acc, HSIZE)
    for i in range(inner + border):
        sibling = <bytes>hashes[start + i]
        if i < inner and not ((mask >> i) & 1):
            # A right sibling did not exist yet in the old tree: it only grows the new one.
            _node(hasher, kind, new_acc, _ptr(sibling), new_acc)
        else:
            _node(hasher, kind, _ptr(sibling), old_acc, old_acc)
            _node(hasher, kind, _ptr(sibling), new_acc, new_acc)
    if PyBytes_FromStringAndSize(<char*>old_acc, HSIZE) != old_root:
        raise VerificationError("consistency proof does not lead to root1")
    return PyBytes_FromStringAndSize(<char*>new_acc, HSIZE)


def verify_consistency(hasher, size1, size2, proof, root1, root2):
    """Check a consistency proof; raises VerificationError (see the pure twin)."""
    calculated = root_from_consistency_proof(hasher, size1, size2, proof, root1)
    if calculated != _root_bytes(root2, "root2"):
        raise VerificationError("consistency proof does not lead to root2")


# -------------------------------------------------------------- incremental trees


cdef class Frontier:
    """The right edge of an append-only tree (see the pure twin)."""

    cdef object _hasher
    cdef int _kind
    cdef list _hashes
    cdef uint64_t _size

    def __init__(self, hasher, size=0, hashes=()):
        self._kind = _kind_of(hasher)
        self._hasher = hasher
        self._size = _check_count(size, "tree size")
        self._hashes = [_stored_bytes(h, "frontier hash") for h in hashes]
        if len(self._hashes) != n3x_popcount(self._size):
            raise ValueError(
                f"a tree of size {size} has {n3x_popcount(self._size)} frontier hashes, "
                f"got {len(self._hashes)}"
            )

    @classmethod
    def from_nodes(cls, hasher, size, get_node):
        """Rebuild the frontier of the first ``size`` leaves from stored full nodes."""
        hashes = [get_node(level, index) for level, index in perfect_subtrees(0, size)]
        return cls(hasher, size, hashes)

    @property
    def hasher(self):
        return self._hasher

    @property
    def size(self):
        return self._size

    @property
    def hashes(self):
        return tuple(self._hashes)

    def append(self, leaf_hash):
        """Add one leaf; answer the full nodes completed by it, leaf first."""
        if self._size >= <uint64_t>MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        cdef bytes leaf = _stored_bytes(leaf_hash, "leaf hash")
        cdef uint64_t index = self._size
        cdef int level = 0
        cdef uint8_t acc[HSIZE]
        cdef bytes left
        cdef list completed = [(0, index, leaf)]
        memcpy(acc, _ptr(leaf), HSIZE)
        while index & 1:
            left = <bytes>self._hashes.pop()
            _node(self._hasher, self._kind, _ptr(left), acc, acc)
            index >>= 1
            level += 1
            completed.append((level, index, PyBytes_FromStringAndSize(<char*>acc, HSIZE)))
        self._hashes.append(completed[len(completed) - 1][2])
        self._size += 1
        return completed

    def root(self):
        """The root of the current tree."""
        cdef Py_ssize_t n = len(self._hashes), i
        if n == 0:
            return self._hasher.empty_root()
        cdef uint8_t acc[HSIZE]
        memcpy(acc, _ptr(<bytes>self._hashes[n - 1]), HSIZE)
        for i in range(n - 2, -1, -1):
            _node(self._hasher, self._kind, _ptr(<bytes>self._hashes[i]), acc, acc)
        return PyBytes_FromStringAndSize(<char*>acc, HSIZE)

    def __repr__(self):
        return f"Frontier(hasher={self._hasher.name}, size={self._size})"


cdef class MerkleTree:
    """An in-memory tree keeping every full-subtree hash (see the pure twin)."""

    cdef object _hasher
    cdef int _kind
    cdef list _levels
    cdef uint64_t _size

    def __init__(self, hasher, leaf_hashes=()):
        self._kind = _kind_of(hasher)
        self._hasher = hasher
        self._levels = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @property
    def hasher(self):
        return self._hasher

    @property
    def size(self):
        return self._size

    def append(self, leaf_hash):
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes):
        """Append leaf hashes, then hash each level's newly completed pairs."""
        cdef bytearray leaves = self._levels[0]
        cdef Py_ssize_t added = 0
        try:
            for leaf in leaf_hashes:
                if not (PyBytes_Check(leaf) and PyBytes_GET_SIZE(leaf) == HSIZE):
                    leaf = _stored_bytes(leaf, f"leaf hash {added}")
                leaves += <bytes>leaf
                added += 1
            if len(leaves) // HSIZE > MAX_TREE_SIZE:
                raise ValueError("the tree is full")
        except BaseException:
            del leaves[HSIZE * self._size:]  # a refused batch leaves no trace
            raise
        self._size = len(leaves) // HSIZE
        self._grow()

    cdef int _grow(self) except -1:
        cdef int level = 0
        cdef uint64_t have, want
        cdef bytearray below, above
        cdef const uint8_t *bp
        cdef uint8_t *ap
        while (self._size >> level) > 1:
            if len(self._levels) == level + 1:
                self._levels.append(bytearray())
            below = self._levels[level]
            above = self._levels[level + 1]
            have = len(above) // HSIZE
            want = (self._size >> level) // 2
            if want > have:
                PyByteArray_Resize(above, want * HSIZE)
                bp = <const uint8_t*>PyByteArray_AS_STRING(below)
                ap = <uint8_t*>PyByteArray_AS_STRING(above)
                _level_nodes(self._hasher, self._kind, bp + 2 * HSIZE * have, want - have,
                             ap + HSIZE * have)
            level += 1
        return 0

    cdef const uint8_t *_at(self, int level, uint64_t index):
        return <const uint8_t*>PyByteArray_AS_STRING(self._levels[level]) + HSIZE * index

    cdef int _range_hash(self, uint64_t begin, uint64_t end, uint8_t *out) except -1:
        # Cover [begin, end) with full subtrees, then fold them from the right.
        cdef int levels[130]
        cdef uint64_t indexes[130]
        cdef int count = 0, fit, level, k
        while begin < end:
            fit = n3x_bit_length(end - begin) - 1
            level = fit if begin == 0 else min(fit, n3x_trailing_zeros(begin))
            levels[count] = level
            indexes[count] = begin >> level
            count += 1
            begin += ONE << level
        memcpy(out, self._at(levels[count - 1], indexes[count - 1]), HSIZE)
        for k in range(count - 2, -1, -1):
            _node(self._hasher, self._kind, self._at(levels[k], indexes[k]), out, out)
        return 0

    cdef bytes _range_bytes(self, uint64_t begin, uint64_t end):
        cdef uint8_t out[HSIZE]
        self._range_hash(begin, end, out)
        return PyBytes_FromStringAndSize(<char*>out, HSIZE)

    def node(self, level, index):
        """The stored hash of the full subtree ``(level, index)``."""
        _check_count(level, "level")
        _check_count(index, "index")
        if level >= len(self._levels) or index >= (self._size >> level):
            raise IndexError(f"no full subtree ({level}, {index}) in a tree of {self._size}")
        return PyBytes_FromStringAndSize(<char*>self._at(level, index), HSIZE)

    def leaf_hash(self, index):
        return self.node(0, index)

    cdef uint64_t _size_arg(self, object size) except? 0:
        if size is None:
            return self._size
        _check_count(size, "tree size")
        if size > self._size:
            raise ValueError(f"tree size {size} is beyond the current size {self._size}")
        return size

    def root(self, size=None):
        """The root of the first ``size`` leaves (default: all)."""
        cdef uint64_t n = self._size_arg(size)
        if n == 0:
            return self._hasher.empty_root()
        return self._range_bytes(0, n)

    def inclusion_proof(self, index, size=None):
        """The RFC 9162 inclusion proof of leaf ``index`` in the first ``size`` leaves."""
        cdef uint64_t n = self._size_arg(size)
        _check_count(index, "leaf index")
        if index >= n:
            raise ValueError(f"leaf index {index} is beyond tree size {n}")
        return self._path(index, n, 0)

    def consistency_proof(self, size1, size2=None):
        """The RFC 9162 consistency proof between the first ``size1`` and ``size2`` leaves."""
        cdef uint64_t n2 = self._size_arg(size2)
        _check_count(size1, "size1")
        cdef uint64_t n1 = size1
        if not 0 < n1 <= n2:
            raise ValueError(f"no consistency proof from size {size1} to size {n2}")
        if n1 == n2:
            return []
        cdef int shift = n3x_trailing_zeros(n1)
        cdef list proof = []
        if n1 != (ONE << shift):
            proof.append(self._range_bytes(n1 - (ONE << shift), n1))
        proof.extend(self._path(n1 - 1, n2, shift))
        return proof

    cdef list _path(self, uint64_t index, uint64_t size, int start_level):
        cdef int inner = n3x_bit_length(index ^ (size - 1))
        cdef int level
        cdef uint64_t begin, end
        cdef list out = []
        for level in range(start_level, inner):
            begin = ((index >> level) ^ 1) << level
            end = begin + (ONE << level)
            out.append(self._range_bytes(begin, end if end < size else size))
        for level in range(inner, 64):
            if (index >> level) == 0:
                break
            if (index >> level) & 1:
                begin = ((index >> level) - 1) << level
                out.append(self._range_bytes(begin, begin + (ONE << level)))
        return out

    def __repr__(self):
        return f"MerkleTree(hasher={self._hasher.name}, size={self._size})"
