# The node store of the compiled state tree, textually included by _smt_c.pyx (one
# compilation unit: see _smt_changes.pxi for why not a cimport). _TreeNodes holds the slots
# of inner nodes and leaves in C arrays, the leaves' keys in one arena, and the hashing of
# the inner nodes the descent lists; MemoryTree (in _smt_c.pyx) is the descent over them.
#
# A reference is a uint32: 0 is an empty subtree, 2 i + 1 the leaf in slot i, 2 i + 2 the
# inner node in slot i (as in the pure twin, _smt_py.py).

cdef enum:
    # Nodes hashed per n3x_nodes call: a level of a bulk build can hold half a million
    # nodes; gathering them in chunks keeps the scratch buffers in cache (256 KiB). A whole
    # number of 16-lane batches, so the padded call in _rehash stays inside the buffers.
    HASH_CHUNK = 4096
    # Slot chains end here; also caps the slots (a reference is 2 * slot + 2 in 32 bits).
    NO_SLOT = 0x7FFFFFFF
    # The place of the root's hash (no inner node's child slot: those are 2 * slot + side
    # with slot < NO_SLOT).
    ROOT_TARGET = 0xFFFFFFFF
    # Arrays this large are mapped with transparent huge pages where the kernel offers
    # them: the update's descent touches one node per level at random places of a tree of
    # ~100 MiB at a million entries, and 4 KiB pages would make most of those a TLB miss.
    HUGE_ARRAY_BYTES = 4 << 20
    # Listed nodes are hashed once this many wait: they were just visited, so they are
    # still cached, and a level of the batch still fills the SIMD lanes.
    FLUSH_NODES = 2048
    # The widest SIMD batch of n3x_nodes (16 lanes with AVX-512); a power of two.
    MAX_LANES = 16
    # The key arena grows by at least this much, so new short keys do not reallocate it
    # one at a time.
    ARENA_SLACK = 4096

# A free leaf slot's key place (no key is 2**56 bytes into the arena with length 255).
cdef uint64_t FREE_KEY = 0xFFFFFFFFFFFFFFFF


ctypedef struct Inner:
    # The references first: a descent reads only them, so only the first cache line.
    uint32_t children[2]    # the children's references
    uint8_t hashes[2][32]   # the children's hashes (the node's own is in its parent)


ctypedef struct Pending:
    uint32_t slot           # an inner node to hash
    uint32_t target         # where its hash goes: 2 * parent slot + side, or ROOT_TARGET


ctypedef struct Level:
    Pending *slots
    size_t count
    size_t capacity


# --- memory --------------------------------------------------------------------------------

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


cdef class _TreeNodes:
    """The node store: inner and leaf slots (freed ones chained for reuse), the leaves' keys,
    the root, and the inner nodes listed for hashing, per depth."""

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
    cdef size_t listed            # nodes listed for hashing

    def __cinit__(self):
        self.inner = NULL
        self.leaf_hashes = NULL
        self.leaf_keys = NULL
        self.arena = NULL
        self.arena_capacity = 0
        self.leaf_capacity = 0
        self.listed = 0
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

    cdef int64_t _new_leaf(self, const Entry *entry, const uint8_t *key) except -1:
        """A leaf for a new key (``entry.key_length`` bytes at ``key``, copied into the
        arena). No pointer into the arena may be held across this call: it may move it."""
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
                if capacity < self.arena_used + length + ARENA_SLACK:
                    capacity = self.arena_used + length + ARENA_SLACK
                self._grow_arena(capacity)
        memcpy(self.arena + self.arena_used, key, length)
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

    # --- hashing the listed nodes --------------------------------------------------------

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
                # A whole number of MAX_LANES batches (HASH_CHUNK is one too): the lanes
                # past n hash whatever the buffer holds and are not copied out, which is
                # cheaper than the scalar hashing n3x_nodes would do for a remainder.
                n3x_nodes(N3X_KIND_BLAKE3, self.gathered,
                          (n + MAX_LANES - 1) & ~(<size_t>MAX_LANES - 1), self.hashed, MAX_LANES)
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
