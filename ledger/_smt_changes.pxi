# The changes of one build or update of the compiled state tree, textually included by
# _smt_c.pyx (``include``: a relative ``cimport`` cannot resolve here, because the extension
# is named ``n3xus.ledger._smt_c`` while its sources sit in ``ledger/``; setup.py maps the
# namespace). One compilation unit, so the descent still calls these as before.
#
# A change is a state key and its new value (None: a removal), held as an Entry: its path
# BLAKE3(key), its leaf hash BLAKE3(0x00 || u8 len(key) || key || value) and where its key's
# bytes are. The descent needs them sorted by path: that is the order it reaches them.

cdef enum:
    # Short messages (paths, leaves) hashed together across SIMD lanes (16 KiB of blocks):
    # a multiple of the widest lane count (16), small enough to stay in L1 with its hashes.
    BLOCK_BATCH = 256
    # One BLAKE3 block: a message this short is one compression, so many of them can share
    # the SIMD lanes (n3x_smt_blocks); longer ones are hashed one at a time.
    ONE_BLOCK = 64
    # The key buffer grows by at least this much, so a batch of short keys reallocates it
    # a few times rather than once per key.
    KEY_BUFFER_SLACK = 4096


cdef int _by_path(const void *a, const void *b) noexcept nogil:
    return memcmp((<const Entry *>a).path, (<const Entry *>b).path, 32)


cdef inline Py_ssize_t _split(const Entry *entries, int depth, Py_ssize_t lo,
                              Py_ssize_t hi) noexcept nogil:
    """First index in [lo, hi) whose path has bit `depth` set (the entries are sorted by
    path and share the bits above `depth`, so that bit is 0s then 1s)."""
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


cdef class _Changes:
    """A C array of entries sorted by path, and a buffer holding their keys' bytes. The paths
    and leaf hashes of messages of at most ONE_BLOCK bytes are computed BLOCK_BATCH at a time."""

    cdef Entry *entries
    cdef Py_ssize_t count
    cdef Py_ssize_t capacity
    cdef uint8_t *key_buffer              # the keys' bytes, one after the other
    cdef size_t key_capacity
    cdef uint8_t *message
    cdef size_t message_capacity
    cdef uint8_t blocks[BLOCK_BATCH * ONE_BLOCK]
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
        """A zeroed block for a message of ``length`` <= ONE_BLOCK bytes whose hash goes to
        ``owner``; hashed with the others at the next flush."""
        cdef uint8_t *block
        if self.waiting == BLOCK_BATCH:
            self._flush()
        block = self.blocks + ONE_BLOCK * self.waiting
        memset(block, 0, ONE_BLOCK)
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
        if key_len <= ONE_BLOCK:
            memcpy(self._block(2 * self.count, key_len), PyBytes_AS_STRING(key), key_len)
        else:
            n3x_blake3(<const uint8_t *>PyBytes_AS_STRING(key), key_len, entry.path)
        entry.slot = -1
        entry.has_value = value is not None
        if entry.has_value:
            # The leaf hash: BLAKE3(0x00 || u8 len(key) || key || value).
            value_len = PyBytes_GET_SIZE(value)
            needed = 2 + key_len + value_len
            if needed <= ONE_BLOCK:
                block = self._block(2 * self.count + 1, needed)
                block[1] = <uint8_t>key_len
                memcpy(block + 2, PyBytes_AS_STRING(key), key_len)
                memcpy(block + 2 + key_len, PyBytes_AS_STRING(value), value_len)
            elif needed > self.message_capacity:
                self.message = <uint8_t *>_grow(self.message, needed, 1)
                self.message_capacity = needed
            if needed > ONE_BLOCK:
                self.message[0] = 0
                self.message[1] = <uint8_t>key_len
                memcpy(self.message + 2, PyBytes_AS_STRING(key), key_len)
                memcpy(self.message + 2 + key_len, PyBytes_AS_STRING(value), value_len)
                n3x_blake3(self.message, needed, entry.hash)
        # The key's bytes are copied, so the caller's objects (a million rows of a state
        # scan) are freed as the scan goes instead of living until the build ends.
        if self.key_bytes + key_len > self.key_capacity:
            self.key_capacity = max(2 * self.key_capacity, self.key_bytes + key_len + KEY_BUFFER_SLACK)
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
