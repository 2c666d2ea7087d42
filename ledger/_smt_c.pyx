# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled twin of :mod:`n3xus.ledger._smt_py` (read that module for the tree's shape and
the two passes of an update): the same names, roots, walks and errors.

What is compiled, and why a checkpoint on a million entries costs a few milliseconds:

* **The tree lives in C arrays.** An inner node is its two child references and its two
  children's hashes (72 bytes; its own hash is in its parent), so a descent reads one cache
  line per level and hashing a node reads only the node. A leaf is its hash (32 bytes) and
  its state key's place in one byte arena (proofs that end at another key's leaf show it).
  Freed slots are chained through the arrays. Arrays over 4 MiB are mapped with huge pages
  where the kernel allows it (fewer TLB misses on a ~140 MiB tree).
* **Memory latency is hidden.** The changes are sorted by path, which is the order the
  descent reaches them; a few dozen changes ahead of it, their paths are walked sixteen at
  a time with prefetches, so the descent finds its nodes cached instead of waiting for ten
  dependent loads per path. Nodes are hashed in flushes of FLUSH_NODES while still cached.
* **BLAKE3 runs across SIMD lanes** (canon/_merkle_hash.h and _smt_hash.h: 16 lanes with
  AVX-512, 8 with AVX2, 4 with SSE2): the inner nodes of a level of a flush at once, and
  the paths and leaf hashes of the changes (messages of one 64-byte block) at once.
* **The descent is C recursion over a C array of changes** sorted with ``qsort``.

One extension module in three files, by role (textually included, so one compilation unit,
as fast as one file): ``_smt_changes.pxi`` turns the (key, value) changes into entries
sorted by path; ``_smt_nodes.pxi`` is the node store (slots, key arena, hashing the listed
nodes); this file is the descent over them (build, update with its prefetching, walk).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memset

from .errors import LedgerCorruptError

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    void *MAP_FAILED
    enum:
        PROT_READ
        PROT_WRITE
        MAP_PRIVATE
        MAP_ANONYMOUS
        MADV_HUGEPAGE

cdef extern from *:
    void __builtin_prefetch(const void *address) nogil

cdef extern from "../canon/_merkle_hash.h":
    enum: N3X_KIND_BLAKE3
    void n3x_blake3(const uint8_t *inp, size_t length, uint8_t *out) nogil
    void n3x_nodes(int kind, const uint8_t *children, size_t count, uint8_t *out,
                   int max_lanes) nogil
    int n3x_vector_lanes() nogil

cdef extern from "_smt_hash.h":
    void n3x_smt_blocks(const uint8_t *blocks, const uint32_t *lens, size_t count,
                        uint8_t *out) nogil


# The same public names as the pure twin (tests/test_ledger_smt.py checks it).
__all__ = ["EMPTY", "HASH_BYTES", "MAX_DEPTH", "MAX_KEY_BYTES", "MemoryTree"]

HASH_BYTES = 32
EMPTY = bytes(32)
# The same limits as the pure twin (its comments give their reasons).
MAX_DEPTH = 255
MAX_KEY_BYTES = 255

cdef enum:
    # The two limits above, as C constants (array sizes, comparisons without objects).
    C_MAX_DEPTH = 255
    C_MAX_KEY_BYTES = 255
    # Paths walked side by side by the prefetching pass: enough loads in flight to cover a
    # memory latency with the work of the other walks, few enough for their state to stay
    # in registers and L1.
    WALKS_IN_FLIGHT = 16
    # The update prefetches the paths of the next PREFETCH_AHEAD changes (in sorted order,
    # the order the descent reaches them), topping up when half of them are used: near
    # enough that the lines are still cached when the descent arrives (~64 paths of ~20
    # nodes is ~160 KiB), far enough that their loads overlap.
    PREFETCH_AHEAD = 64
    # A prefetching walk that has reached its leaf. Never a reference: the largest is
    # 2 * (NO_SLOT - 1) + 2 (NO_SLOT itself is one, the leaf in slot 2**30 - 1).
    WALK_DONE = 0xFFFFFFFF


# A change being applied, or a leaf that stays where the descent rebuilds a subtree.
ctypedef struct Entry:
    uint8_t path[32]
    uint8_t hash[32]     # the leaf hash (unused for a removal, or a resident leaf)
    size_t key_at        # where its key's bytes are in the changes' key buffer
    uint32_t key_length
    int64_t slot         # the resident leaf's slot, or -1
    int has_value        # 0: a removal


include "_smt_nodes.pxi"
include "_smt_changes.pxi"


cdef class MemoryTree(_TreeNodes):
    """The state tree in memory: :meth:`build` from all entries, :meth:`update` by changes,
    :meth:`root`, :meth:`walk` (a proof's path)."""

    # The descent's state during one build or update (merged is scratch, kept for reuse):
    cdef Entry *merged            # where the descent meets a leaf: the leaf and the changes
    cdef Py_ssize_t merged_capacity
    cdef const uint8_t *change_keys   # the key buffer of the changes being applied
    cdef const Entry *ahead       # the update's changes, prefetched up to ahead_done
    cdef Py_ssize_t ahead_done
    cdef Py_ssize_t ahead_count

    def __cinit__(self):
        self.merged = NULL
        self.merged_capacity = 0
        self.ahead = NULL
        self.change_keys = NULL
        self.ahead_done = 0
        self.ahead_count = 0

    def __dealloc__(self):
        free(self.merged)

    # --- building and updating ---------------------------------------------------------

    cdef int64_t _build(self, const Entry *entries, int depth, Py_ssize_t lo,
                        Py_ssize_t hi) except -1:
        """The subtree of entries[lo:hi] (all kept) at `depth`; its new inner nodes are
        placed (the caller places the subtree itself)."""
        cdef Py_ssize_t split
        cdef int64_t left, right, slot
        if hi <= lo:
            return 0
        if hi - lo == 1:
            if entries[lo].slot >= 0:
                return 2 * entries[lo].slot + 1
            return self._new_leaf(&entries[lo], self.change_keys + entries[lo].key_at)
        if depth >= C_MAX_DEPTH:
            raise LedgerCorruptError("two state keys share a 255-bit path")
        split = _split(entries, depth, lo, hi)
        left = self._build(entries, depth + 1, lo, split)
        right = self._build(entries, depth + 1, split, hi)
        slot = self._new_inner()
        self.inner[slot].children[0] = <uint32_t>left
        self.inner[slot].children[1] = <uint32_t>right
        self._place(<uint32_t>left, depth + 1, 2 * <uint32_t>slot)
        self._place(<uint32_t>right, depth + 1, 2 * <uint32_t>slot + 1)
        return 2 * slot + 2

    cdef int _merge(self, Py_ssize_t at, const uint8_t *path, const Entry *change,
                    int64_t slot) except -1:
        """Add an entry to the merged list: a ``change`` (no slot) or the resident leaf
        (its ``slot``, no change: its key is not copied again)."""
        cdef Entry *entry
        if at == self.merged_capacity:
            self.merged_capacity = self.merged_capacity * 2 if self.merged_capacity else 64
            self.merged = <Entry *>_grow(self.merged, self.merged_capacity, sizeof(Entry))
        entry = &self.merged[at]
        memcpy(entry.path, path, 32)
        if change != NULL:
            entry.key_at = change.key_at
            entry.key_length = change.key_length
        entry.slot = slot
        entry.has_value = 1
        return 0

    cdef int64_t _settle(self, uint32_t ref, int depth, _Changes changes, Py_ssize_t lo,
                         Py_ssize_t hi) except -1:
        """Where the descent meets an empty subtree or a leaf: the leaf (unless changed)
        and the changes [lo, hi) that set a value, built into a subtree."""
        cdef int64_t resident = (ref >> 1) if ref != 0 else -1
        cdef uint8_t resident_path[32]
        cdef const uint8_t *resident_key
        cdef size_t resident_length
        cdef Py_ssize_t i, count = 0
        cdef Entry *entry
        cdef int order
        if self.ahead_done < self.ahead_count and self.ahead_done - hi < PREFETCH_AHEAD // 2:
            self._prefetch_paths(self.ahead, self.ahead_done,
                                 min(self.ahead_count, hi + PREFETCH_AHEAD))
            self.ahead_done = min(self.ahead_count, hi + PREFETCH_AHEAD)
        if resident >= 0:
            resident_key = self._key(<uint32_t>resident)
            resident_length = self._key_length(<uint32_t>resident)
            entry = &changes.entries[lo]
            if (hi - lo == 1 and entry.key_length == resident_length
                    and memcmp(self.change_keys + entry.key_at, resident_key,
                               resident_length) == 0):
                # The common case: one key changed where it already is (no path needed).
                if not entry.has_value:
                    self._free_leaf(<uint32_t>resident)
                    return 0
                memcpy(self.leaf_hashes + 32 * <size_t>resident, entry.hash, 32)
                return ref
            n3x_blake3(resident_key, resident_length, resident_path)
        for i in range(lo, hi):
            entry = &changes.entries[i]
            if resident >= 0:
                order = memcmp(resident_path, entry.path, 32)
                if order < 0:
                    self._merge(count, resident_path, NULL, resident)
                    count += 1
                    resident = -1
                elif order == 0:
                    if not entry.has_value:
                        self._free_leaf(<uint32_t>resident)
                    else:  # the same key with a new value: its slot is kept
                        memcpy(self.leaf_hashes + 32 * <size_t>resident, entry.hash, 32)
                        self._merge(count, entry.path, NULL, resident)
                        count += 1
                    resident = -1
                    continue
            if entry.has_value:
                self._merge(count, entry.path, entry, -1)
                memcpy(self.merged[count].hash, entry.hash, 32)
                count += 1
        if resident >= 0:
            self._merge(count, resident_path, NULL, resident)
            count += 1
        return self._build(self.merged, depth, 0, count)

    cdef int64_t _update(self, uint32_t ref, int depth, _Changes changes, Py_ssize_t lo,
                         Py_ssize_t hi) except -1:
        cdef uint32_t slot, left, right
        cdef Py_ssize_t split
        if ref == 0 or ref & 1:
            return self._settle(ref, depth, changes, lo, hi)
        slot = (ref >> 1) - 1
        split = _split(changes.entries, depth, lo, hi)
        left = self.inner[slot].children[0]
        right = self.inner[slot].children[1]
        if split > lo:
            left = <uint32_t>self._update(left, depth + 1, changes, lo, split)
        if hi > split:
            right = <uint32_t>self._update(right, depth + 1, changes, split, hi)
        if (left == 0 and (right == 0 or right & 1)) or (right == 0 and left & 1):
            # At most one leaf is left below: it moves up here and this node goes.
            self._free_inner(slot)
            return left | right
        # (self.inner may have moved while the subtrees grew: index it afresh.)
        self.inner[slot].children[0] = left
        self.inner[slot].children[1] = right
        if split > lo:
            self._place(left, depth + 1, 2 * slot)
        if hi > split:
            self._place(right, depth + 1, 2 * slot + 1)
        return ref

    def build(self, items):
        """Replace the tree by the one over ``items`` ((key, value), keys distinct);
        returns the root."""
        cdef _Changes entries = _sorted_changes(items)
        self._clear()
        self._forget_levels()
        self._reserve(entries.count, entries.key_bytes)
        self.change_keys = entries.key_buffer
        try:
            self.root_ref = <uint32_t>self._build(entries.entries, 0, 0, entries.count)
        finally:
            self.change_keys = NULL
        self._place(self.root_ref, 0, ROOT_TARGET)
        self._rehash()
        return self.root()

    cdef void _prefetch_paths(self, const Entry *entries, Py_ssize_t start,
                              Py_ssize_t end) noexcept:
        """Bring the nodes on the paths of changes [start, end) into the cache before the
        descent needs them.

        At a million entries the tree is ~140 MiB and each changed path crosses about ten
        levels that are in no cache; walked one after the other those are ten dependent
        memory loads per path, each a full memory latency. Here WALKS_IN_FLIGHT paths are
        walked in turns, each step prefetching the next node, so their loads overlap; the
        descent then finds its nodes (and the changed leaves' hashes and keys) cached."""
        cdef uint32_t refs[WALKS_IN_FLIGHT]
        cdef int depths[WALKS_IN_FLIGHT]
        cdef Py_ssize_t leaf_slots[WALKS_IN_FLIGHT]
        cdef Py_ssize_t base, i, n, walking, slot
        cdef uint32_t ref, next_ref
        for base in range(start, end, WALKS_IN_FLIGHT):
            n = end - base
            if n > WALKS_IN_FLIGHT:
                n = WALKS_IN_FLIGHT
            for i in range(n):
                refs[i] = self.root_ref
                depths[i] = 0
                leaf_slots[i] = -1
            walking = n
            while walking:
                walking = 0
                for i in range(n):
                    ref = refs[i]
                    if ref == 0 or ref == WALK_DONE:
                        continue
                    if ref & 1:
                        slot = ref >> 1
                        __builtin_prefetch(self.leaf_hashes + 32 * <size_t>slot)
                        __builtin_prefetch(&self.leaf_keys[slot])
                        leaf_slots[i] = slot
                        refs[i] = WALK_DONE
                        continue
                    slot = (ref >> 1) - 1
                    next_ref = self.inner[slot].children[
                        (entries[base + i].path[depths[i] >> 3] >> (7 - (depths[i] & 7))) & 1]
                    depths[i] += 1
                    if next_ref != 0 and not (next_ref & 1):
                        __builtin_prefetch(&self.inner[(next_ref >> 1) - 1])
                        __builtin_prefetch(<const uint8_t *>&self.inner[(next_ref >> 1) - 1] + 64)
                    refs[i] = next_ref
                    walking += 1
            # The keys of the leaves reached (where they are was prefetched above).
            for i in range(n):
                if leaf_slots[i] >= 0:
                    __builtin_prefetch(self._key(<uint32_t>leaf_slots[i]))

    def update(self, changes):
        """Set (a value) or remove (None) keys, each at most once; returns the new root."""
        cdef _Changes entries = _sorted_changes(changes)
        if entries.count:
            self._forget_levels()
            self.ahead = entries.entries
            self.ahead_count = entries.count
            self.ahead_done = 0
            self.change_keys = entries.key_buffer
            try:
                self.root_ref = <uint32_t>self._update(self.root_ref, 0, entries, 0,
                                                       entries.count)
            finally:
                self.ahead = NULL
                self.ahead_count = 0
                self.change_keys = NULL
            self._place(self.root_ref, 0, ROOT_TARGET)
            self._rehash()
        return self.root()

    # --- reading -------------------------------------------------------------------------

    def root(self):
        return PyBytes_FromStringAndSize(<const char *>self.root_hash, 32)

    def walk(self, key):
        """Sibling hashes from the root down along ``key``'s path, and the leaf where the
        walk ends ((leaf hash, its state key): ``key``'s own or another's), or None at an
        empty subtree."""
        cdef uint8_t path[32]
        cdef uint32_t ref = self.root_ref
        cdef uint32_t slot
        cdef int depth = 0, bit
        cdef list siblings = []
        if not PyBytes_CheckExact(key):
            key = bytes(key)
        n3x_blake3(<const uint8_t *>PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), path)
        while ref != 0 and not (ref & 1):
            slot = (ref >> 1) - 1
            bit = (path[depth >> 3] >> (7 - (depth & 7))) & 1
            siblings.append(PyBytes_FromStringAndSize(
                <const char *>self.inner[slot].hashes[1 - bit], 32))
            ref = self.inner[slot].children[bit]
            depth += 1
        if ref == 0:
            return siblings, None
        return siblings, (PyBytes_FromStringAndSize(
            <const char *>(self.leaf_hashes + 32 * <size_t>(ref >> 1)), 32),
            PyBytes_FromStringAndSize(<const char *>self._key(ref >> 1),
                                      self._key_length(ref >> 1)))


def _c_vector_lanes():
    """Nodes hashed at once by this CPU (1, 4, 8 or 16); compiled only, like canon's."""
    return n3x_vector_lanes()
