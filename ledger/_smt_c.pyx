# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled twin of :mod:`n3xus.ledger._smt_py` (read that module for the tree's shape and
the two passes of an update): the same names, roots, walks and errors.

What is compiled, and why a checkpoint on a million entries costs a few milliseconds:

* **The tree lives in C arrays.** An inner node is its two child references and its two
  children's hashes (72 bytes; its own hash is in its parent), so a descent reads one cache
  line per level and hashing a node reads only the node. A leaf is its hash (32 bytes) and
  its state key (a ``bytes`` in a list: proofs that end at another key's leaf show it).
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

HASH_BYTES = 32
EMPTY = bytes(32)
MAX_DEPTH = 255
MAX_KEY_BYTES = 255

cdef enum:
    C_MAX_DEPTH = 255
    C_MAX_KEY_BYTES = 255
    # Nodes hashed per n3x_nodes call: a level of a bulk build can hold half a million
    # nodes; gathering them in chunks keeps the scratch buffers in cache (256 KiB).
    HASH_CHUNK = 4096
    # Slot chains end here; also caps the slots (a reference is 2 * slot + 2 in 32 bits).
    NO_SLOT = 0x7FFFFFFF
    ROOT_TARGET = 0xFFFFFFFF
    # Arrays this large are mapped with transparent huge pages where the kernel offers
    # them: the update's descent touches one node per level at random places of a tree of
    # ~100 MiB at a million entries, and 4 KiB pages would make most of those a TLB miss.
    HUGE_ARRAY_BYTES = 4 << 20
    # Paths walked side by side by the prefetching pass: enough loads in flight to cover a
    # memory latency with the work of the other walks, few enough for their state to stay
    # in registers and L1.
    WALKS_IN_FLIGHT = 16
    # The update prefetches the paths of the next PREFETCH_AHEAD changes (in sorted order,
    # the order the descent reaches them), topping up when half of them are used: near
    # enough that the lines are still cached when the descent arrives (~64 paths of ~20
    # nodes is ~160 KiB), far enough that their loads overlap.
    PREFETCH_AHEAD = 64
    # Listed nodes are hashed once this many wait: they were just visited, so they are
    # still cached, and a level of the batch still fills the SIMD lanes.
    FLUSH_NODES = 2048
    # Short messages (paths, leaves) hashed together across SIMD lanes (16 KiB of blocks).
    BLOCK_BATCH = 256

cdef uint8_t ZERO_HASH[32]
memset(ZERO_HASH, 0, 32)

ctypedef struct Entry:
    uint8_t path[32]
    uint8_t hash[32]     # the leaf hash (unused for a removal, or a resident leaf)
    size_t key_at        # where its key's bytes are in the changes' key buffer
    uint32_t key_length
    int64_t slot         # the resident leaf's slot, or -1
    int has_value        # 0: a removal

ctypedef struct Pending:
    uint32_t slot           # an inner node to hash
    uint32_t target         # where its hash goes: 2 * parent slot + side, or ROOT_TARGET


ctypedef struct Level:
    Pending *slots
    size_t count
    size_t capacity


cdef int _by_path(const void *a, const void *b) noexcept nogil:
    return memcmp((<const Entry *>a).path, (<const Entry *>b).path, 32)


cdef inline Py_ssize_t _split(const Entry *entries, int depth, Py_ssize_t lo,
                              Py_ssize_t hi) noexcept nogil:
    """First index in [lo, hi) whose path has bit `depth` set."""
    cdef int byte = depth >> 3
    cdef uint8_t mask = 0x80 >> (depth & 7)
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if entries[mid].path[byte] & mask:
            hi = mid
        else:
            lo = mid + 1
    return lo


# A free leaf slot's key place.
cdef uint64_t FREE_KEY = 0xFFFFFFFFFFFFFFFF


cdef size_t _next_capacity(size_t capacity) noexcept:
    capacity = capacity * 2 if capacity else 1024
    return NO_SLOT if capacity > NO_SLOT else capacity


cdef void *_regrow(void *block, size_t old_bytes, size_t new_bytes) except NULL:
    """A node array of ``new_bytes`` holding the first ``old_bytes`` of ``block``: from
    malloc while small, else its own mapping advised for huge pages (copied on growth,
    which doubles, or happens once for a bulk build that reserves its size)."""
    cdef void *grown
    if new_bytes < HUGE_ARRAY_BYTES:
        if old_bytes >= HUGE_ARRAY_BYTES:
            raise MemoryError("a node array cannot shrink")
        return _grow(block, new_bytes, 1)
    grown = mmap(NULL, new_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if grown == MAP_FAILED:
        raise MemoryError()
    madvise(grown, new_bytes, MADV_HUGEPAGE)  # advice only: its failure changes nothing
    if old_bytes:
        memcpy(grown, block, old_bytes)
    _release(block, old_bytes)
    return grown


cdef void _release(void *block, size_t size) noexcept:
    if block == NULL:
        return
    if size >= HUGE_ARRAY_BYTES:
        munmap(block, size)
    else:
        free(block)


cdef void *_grow(void *block, size_t count, size_t size) except NULL:
    cdef void *grown = realloc(block, count * size if count else 1)
    if grown == NULL:
        raise MemoryError()
    return grown


cdef class _Changes:
    """A C array of entries sorted by path, with the key objects it borrows. The paths and
    leaf hashes of messages of at most one BLAKE3 block are computed BLOCK_BATCH at a time."""

    cdef Entry *entries
    cdef Py_ssize_t count
    cdef Py_ssize_t capacity
    cdef uint8_t *key_buffer              # the keys' bytes, one after the other
    cdef size_t key_capacity
    cdef uint8_t *message
    cdef size_t message_capacity
    cdef uint8_t blocks[BLOCK_BATCH * 64]
    cdef uint32_t lens[BLOCK_BATCH]
    cdef Py_ssize_t owners[BLOCK_BATCH]   # 2 * entry index + 0 (its path) or 1 (its hash)
    cdef uint8_t hashed[BLOCK_BATCH * 32]
    cdef size_t waiting
    cdef size_t key_bytes                 # the keys' lengths, summed (key_buffer used)

    def __cinit__(self):
        self.entries = NULL
        self.count = 0
        self.capacity = 0
        self.key_buffer = NULL
        self.key_capacity = 0
        self.message = NULL
        self.message_capacity = 0
        self.waiting = 0
        self.key_bytes = 0

    def __dealloc__(self):
        free(self.entries)
        free(self.message)
        free(self.key_buffer)

    cdef uint8_t *_block(self, Py_ssize_t owner, size_t length):
        """A zeroed block for a message of ``length`` <= 64 bytes whose hash goes to
        ``owner``; hashed with the others at the next flush."""
        cdef uint8_t *block
        if self.waiting == BLOCK_BATCH:
            self._flush()
        block = self.blocks + 64 * self.waiting
        memset(block, 0, 64)
        self.lens[self.waiting] = <uint32_t>length
        self.owners[self.waiting] = owner
        self.waiting += 1
        return block

    cdef void _flush(self) noexcept:
        cdef size_t k
        cdef Entry *entry
        n3x_smt_blocks(self.blocks, self.lens, self.waiting, self.hashed)
        for k in range(self.waiting):
            entry = &self.entries[self.owners[k] >> 1]
            if self.owners[k] & 1:
                memcpy(entry.hash, self.hashed + 32 * k, 32)
            else:
                memcpy(entry.path, self.hashed + 32 * k, 32)
        self.waiting = 0

    cdef int add(self, object key, object value) except -1:
        cdef Entry *entry
        cdef Py_ssize_t key_len, value_len
        cdef size_t needed
        cdef uint8_t *block
        if not PyBytes_CheckExact(key):
            key = bytes(key)
        key_len = PyBytes_GET_SIZE(key)
        if key_len > C_MAX_KEY_BYTES:
            raise ValueError(f"a state key is at most {MAX_KEY_BYTES} bytes")
        if value is not None and not PyBytes_CheckExact(value):
            value = bytes(value)
        if self.count == self.capacity:
            self.capacity = self.capacity * 2 if self.capacity else 64
            self.entries = <Entry *>_grow(self.entries, self.capacity, sizeof(Entry))
        entry = &self.entries[self.count]
        if key_len <= 64:
            memcpy(self._block(2 * self.count, key_len), PyBytes_AS_STRING(key), key_len)
        else:
            n3x_blake3(<const uint8_t *>PyBytes_AS_STRING(key), key_len, entry.path)
        entry.slot = -1
        entry.has_value = value is not None
        if entry.has_value:
            # The leaf hash: BLAKE3(0x00 || u8 len(key) || key || value).
            value_len = PyBytes_GET_SIZE(value)
            needed = 2 + key_len + value_len
            if needed <= 64:
                block = self._block(2 * self.count + 1, needed)
                block[1] = <uint8_t>key_len
                memcpy(block + 2, PyBytes_AS_STRING(key), key_len)
                memcpy(block + 2 + key_len, PyBytes_AS_STRING(value), value_len)
            elif needed > self.message_capacity:
                self.message = <uint8_t *>_grow(self.message, needed, 1)
                self.message_capacity = needed
            if needed > 64:
                self.message[0] = 0
                self.message[1] = <uint8_t>key_len
                memcpy(self.message + 2, PyBytes_AS_STRING(key), key_len)
                memcpy(self.message + 2 + key_len, PyBytes_AS_STRING(value), value_len)
                n3x_blake3(self.message, needed, entry.hash)
        # The key's bytes are copied, so the caller's objects (a million rows of a state
        # scan) are freed as the scan goes instead of living until the build ends.
        if self.key_bytes + key_len > self.key_capacity:
            self.key_capacity = max(2 * self.key_capacity, self.key_bytes + key_len + 4096)
            self.key_buffer = <uint8_t *>_grow(self.key_buffer, self.key_capacity, 1)
        memcpy(self.key_buffer + self.key_bytes, PyBytes_AS_STRING(key), key_len)
        entry.key_at = self.key_bytes
        entry.key_length = <uint32_t>key_len
        self.key_bytes += key_len
        self.count += 1
        return 0

    cdef int sort(self) except -1:
        cdef Py_ssize_t i
        self._flush()
        qsort(self.entries, self.count, sizeof(Entry), _by_path)
        for i in range(1, self.count):
            if memcmp(self.entries[i - 1].path, self.entries[i].path, 32) == 0:
                raise ValueError("a key is changed twice in one update")
        return 0


cdef _Changes _sorted_changes(object changes):
    cdef _Changes sorted_changes = _Changes()
    for key, value in changes:
        sorted_changes.add(key, value)
    sorted_changes.sort()
    return sorted_changes


ctypedef struct Inner:
    # The references first: a descent reads only them, so only the first cache line.
    uint32_t children[2]    # the children's references
    uint8_t hashes[2][32]   # the children's hashes (the node's own is in its parent)


cdef class MemoryTree:
    """The state tree in memory: :meth:`build` from all entries, :meth:`update` by changes,
    :meth:`root`, :meth:`walk` (a proof's path)."""

    cdef Inner *inner             # inner node slots
    cdef uint32_t inner_capacity
    cdef uint32_t inner_top       # slots below this were handed out once
    cdef uint32_t inner_free      # first free slot (chained through children[0])
    cdef uint8_t *leaf_hashes     # leaf slot i: leaf_hashes[32 i ..]
    cdef uint64_t *leaf_keys      # leaf slot i: its key in the arena, offset << 8 | length
    cdef uint32_t leaf_capacity
    cdef uint32_t leaf_top        # slots below this were handed out once
    cdef uint32_t leaf_free       # first free slot (chained through leaf_hashes[32 i])
    cdef uint8_t *arena           # the leaves' state keys, one after the other
    cdef size_t arena_used
    cdef size_t arena_capacity
    cdef size_t arena_garbage     # bytes of keys whose leaves are gone
    cdef uint32_t root_ref
    cdef uint8_t root_hash[32]
    cdef Py_ssize_t leaves
    cdef Level levels[C_MAX_DEPTH + 1]
    cdef uint8_t *gathered        # HASH_CHUNK nodes' children, 64 bytes each
    cdef uint8_t *hashed          # HASH_CHUNK nodes' hashes
    cdef Entry *merged            # where the descent meets a leaf: the leaf and the changes
    cdef Py_ssize_t merged_capacity
    cdef size_t listed            # nodes listed for hashing
    cdef const uint8_t *change_keys   # the key buffer of the changes being applied
    cdef const Entry *ahead       # the update's changes, prefetched up to ahead_done
    cdef Py_ssize_t ahead_done
    cdef Py_ssize_t ahead_count

    def __cinit__(self):
        self.inner = NULL
        self.leaf_hashes = NULL
        self.leaf_keys = NULL
        self.arena = NULL
        self.arena_capacity = 0
        self.leaf_capacity = 0
        self.merged = NULL
        self.merged_capacity = 0
        self.listed = 0
        self.ahead = NULL
        self.change_keys = NULL
        self.ahead_done = 0
        self.ahead_count = 0
        memset(self.levels, 0, sizeof(self.levels))
        self.gathered = <uint8_t *>calloc(HASH_CHUNK, 64)  # (padding lanes read it)
        self.hashed = <uint8_t *>malloc(32 * HASH_CHUNK)
        if self.gathered == NULL or self.hashed == NULL:
            raise MemoryError()
        self._clear()

    def __dealloc__(self):
        cdef int depth
        _release(self.inner, <size_t>self.inner_capacity * sizeof(Inner))
        _release(self.leaf_hashes, <size_t>self.leaf_capacity * 32)
        _release(self.leaf_keys, <size_t>self.leaf_capacity * 8)
        _release(self.arena, self.arena_capacity)
        free(self.merged)
        free(self.gathered)
        free(self.hashed)
        for depth in range(C_MAX_DEPTH + 1):
            free(self.levels[depth].slots)

    cdef void _clear(self):
        _release(self.inner, <size_t>self.inner_capacity * sizeof(Inner))
        _release(self.leaf_hashes, <size_t>self.leaf_capacity * 32)
        _release(self.leaf_keys, <size_t>self.leaf_capacity * 8)
        _release(self.arena, self.arena_capacity)
        self.inner = NULL
        self.leaf_hashes = NULL
        self.leaf_keys = NULL
        self.arena = NULL
        self.inner_capacity = 0
        self.inner_top = 0
        self.inner_free = NO_SLOT
        self.leaf_capacity = 0
        self.leaf_top = 0
        self.leaf_free = NO_SLOT
        self.arena_used = 0
        self.arena_capacity = 0
        self.arena_garbage = 0
        self.root_ref = 0
        memset(self.root_hash, 0, 32)
        self.leaves = 0

    def __len__(self):
        """The number of leaves (state entries)."""
        return self.leaves

    def memory_bytes(self):
        """Bytes reserved by the node arrays and the key arena (touched or not)."""
        return (<size_t>self.inner_capacity * sizeof(Inner)
                + <size_t>self.leaf_capacity * 40 + self.arena_capacity)

    # --- slots -------------------------------------------------------------------------

    cdef inline const uint8_t *_key(self, uint32_t slot) noexcept:
        return self.arena + (self.leaf_keys[slot] >> 8)

    cdef inline size_t _key_length(self, uint32_t slot) noexcept:
        return self.leaf_keys[slot] & 0xFF

    cdef int _grow_leaves(self, size_t capacity) except -1:
        self.leaf_hashes = <uint8_t *>_regrow(
            self.leaf_hashes, <size_t>self.leaf_capacity * 32, capacity * 32)
        self.leaf_keys = <uint64_t *>_regrow(
            self.leaf_keys, <size_t>self.leaf_capacity * 8, capacity * 8)
        self.leaf_capacity = <uint32_t>capacity
        return 0

    cdef int _grow_arena(self, size_t capacity) except -1:
        self.arena = <uint8_t *>_regrow(self.arena, self.arena_capacity, capacity)
        self.arena_capacity = capacity
        return 0

    cdef int _compact_arena(self) except -1:
        """Copy the live keys into a fresh arena (the freed ones' bytes are dropped)."""
        cdef size_t capacity = self.arena_capacity
        cdef uint8_t *fresh
        cdef size_t used = 0, length
        cdef uint32_t slot
        if capacity >= HUGE_ARRAY_BYTES:
            fresh = <uint8_t *>_regrow(NULL, 0, capacity)
        else:
            fresh = <uint8_t *>_grow(NULL, capacity, 1)
        for slot in range(self.leaf_top):
            if self.leaf_keys[slot] != FREE_KEY:
                length = self._key_length(slot)
                memcpy(fresh + used, self._key(slot), length)
                self.leaf_keys[slot] = (<uint64_t>used << 8) | length
                used += length
        _release(self.arena, self.arena_capacity)
        self.arena = fresh
        self.arena_used = used
        self.arena_garbage = 0
        return 0

    cdef int64_t _new_leaf(self, const Entry *entry) except -1:
        """A leaf for a new key (its bytes are copied into the arena). No pointer into the
        arena may be held across this call: it may move the arena."""
        cdef uint32_t slot
        cdef size_t capacity
        cdef size_t length = entry.key_length
        if self.leaf_free != NO_SLOT:
            slot = self.leaf_free
            memcpy(&self.leaf_free, self.leaf_hashes + 32 * <size_t>slot, 4)
        else:
            slot = self.leaf_top
            if slot >= NO_SLOT:
                raise MemoryError("the state tree holds at most 2**31 - 1 leaves")
            if slot == self.leaf_capacity:
                self._grow_leaves(_next_capacity(self.leaf_capacity))
            self.leaf_top += 1
        self.leaf_keys[slot] = FREE_KEY  # until its key is in (a compaction skips it)
        if self.arena_used + length > self.arena_capacity:
            # Keys of removed leaves are reclaimed once they are half of the arena.
            if self.arena_garbage * 2 > self.arena_used:
                self._compact_arena()
            if self.arena_used + length > self.arena_capacity:
                capacity = self.arena_capacity * 2
                if capacity < self.arena_used + length + 4096:
                    capacity = self.arena_used + length + 4096
                self._grow_arena(capacity)
        memcpy(self.arena + self.arena_used, self.change_keys + entry.key_at, length)
        self.leaf_keys[slot] = (<uint64_t>self.arena_used << 8) | length
        self.arena_used += length
        memcpy(self.leaf_hashes + 32 * <size_t>slot, entry.hash, 32)
        self.leaves += 1
        return 2 * <int64_t>slot + 1

    cdef int _free_leaf(self, uint32_t slot) except -1:
        self.leaves -= 1
        self.arena_garbage += self._key_length(slot)
        self.leaf_keys[slot] = FREE_KEY
        memcpy(self.leaf_hashes + 32 * <size_t>slot, &self.leaf_free, 4)
        self.leaf_free = slot
        return 0

    cdef int64_t _new_inner(self) except -1:
        cdef uint32_t slot
        cdef size_t capacity
        if self.inner_free != NO_SLOT:
            slot = self.inner_free
            self.inner_free = self.inner[slot].children[0]
        else:
            if self.inner_top == self.inner_capacity:
                capacity = _next_capacity(self.inner_capacity)
                if capacity == self.inner_capacity:
                    raise MemoryError("the state tree holds at most 2**31 - 1 inner nodes")
                self.inner = <Inner *>_regrow(self.inner,
                                              <size_t>self.inner_capacity * sizeof(Inner),
                                              capacity * sizeof(Inner))
                self.inner_capacity = <uint32_t>capacity
            slot = self.inner_top
            self.inner_top += 1
        return slot

    cdef void _free_inner(self, uint32_t slot) noexcept:
        self.inner[slot].children[0] = self.inner_free
        self.inner_free = slot

    cdef int _place(self, uint32_t ref, int depth, uint32_t target) except -1:
        """Give the subtree ``ref`` at ``depth`` its place at ``target`` (a child slot of an
        inner node, or the root): its hash now if known, else the node is listed."""
        cdef uint8_t *where
        cdef Level *level
        cdef size_t capacity
        if ref != 0 and not (ref & 1):
            level = &self.levels[depth]
            if level.count == level.capacity:
                capacity = level.capacity * 2 if level.capacity else 64
                level.slots = <Pending *>_grow(level.slots, capacity, sizeof(Pending))
                level.capacity = capacity
            level.slots[level.count].slot = (ref >> 1) - 1
            level.slots[level.count].target = target
            level.count += 1
            # A listed node is complete (its subtree will not change again in this update)
            # and so is every node listed before it, so the hashing may run at any time.
            self.listed += 1
            if self.listed >= FLUSH_NODES:
                self._rehash()
            return 0
        where = self._target(target)
        if ref == 0:
            memset(where, 0, 32)
        else:
            memcpy(where, self.leaf_hashes + 32 * <size_t>(ref >> 1), 32)
        return 0

    cdef inline uint8_t *_target(self, uint32_t target) noexcept:
        if target == ROOT_TARGET:
            return self.root_hash
        return self.inner[target >> 1].hashes[target & 1]

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
            return self._new_leaf(&entries[lo])
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

    cdef void _rehash(self) noexcept:
        """Hash the listed inner nodes, deepest level first (a node's hash goes into its
        parent, hashed at the level above), a chunk of a level at a time."""
        cdef int depth
        cdef size_t start, n, k
        cdef Level *level
        self.listed = 0
        for depth in range(C_MAX_DEPTH, -1, -1):
            level = &self.levels[depth]
            start = 0
            while start < level.count:
                n = level.count - start
                if n > HASH_CHUNK:
                    n = HASH_CHUNK
                for k in range(n):
                    memcpy(self.gathered + 64 * k,
                           self.inner[level.slots[start + k].slot].hashes, 64)
                # A whole number of 16-lane batches (HASH_CHUNK is one too): the lanes
                # past n hash whatever the buffer holds and are not copied out, which is
                # cheaper than the scalar hashing n3x_nodes would do for a remainder.
                n3x_nodes(N3X_KIND_BLAKE3, self.gathered, (n + 15) & ~(<size_t>15),
                          self.hashed, 16)
                for k in range(n):
                    memcpy(self._target(level.slots[start + k].target),
                           self.hashed + 32 * k, 32)
                start += n
            level.count = 0

    cdef void _forget_levels(self) noexcept:
        cdef int depth
        self.listed = 0
        for depth in range(C_MAX_DEPTH + 1):
            self.levels[depth].count = 0

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

    cdef int _reserve(self, Py_ssize_t count, size_t key_bytes) except -1:
        """Room for a bulk build of ``count`` leaves whose keys have ``key_bytes`` in all
        (about 1.44 inner nodes per leaf for uniformly random paths), and a quarter more,
        so the arrays are not copied while they grow, nor soon after by the first new keys."""
        cdef size_t leaves = <size_t>count + <size_t>count // 4
        cdef size_t arena = key_bytes + key_bytes // 4
        cdef size_t inner = <size_t>count * 2 - <size_t>count // 8
        if leaves > NO_SLOT:
            raise MemoryError("the state tree holds at most 2**31 - 1 leaves")
        if inner > NO_SLOT:
            inner = NO_SLOT
        if leaves > self.leaf_capacity:
            self._grow_leaves(leaves)
        if arena > self.arena_capacity:
            self._grow_arena(arena)
        if inner > self.inner_capacity:
            self.inner = <Inner *>_regrow(self.inner, <size_t>self.inner_capacity * sizeof(Inner),
                                          inner * sizeof(Inner))
            self.inner_capacity = <uint32_t>inner
        return 0

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
                    if ref == 0 or ref == NO_SLOT:
                        continue
                    if ref & 1:
                        slot = ref >> 1
                        __builtin_prefetch(self.leaf_hashes + 32 * <size_t>slot)
                        __builtin_prefetch(&self.leaf_keys[slot])
                        leaf_slots[i] = slot
                        refs[i] = NO_SLOT
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


def vector_lanes():
    """Nodes hashed at once by this CPU (1, 4, 8 or 16)."""
    return n3x_vector_lanes()
