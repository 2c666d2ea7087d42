# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, annotation_typing=False
"""Compiled twin of :mod:`n3xus.ledger._ingest_verify_py` (same names, same verdicts): the
transactions' signature checks, one at a time or a batch split over native threads.

* **Signature verification calls libsodium directly.** PyNaCl carries libsodium inside
  ``nacl/_sodium.abi3.so`` but its cffi module does not expose
  ``crypto_sign_verify_detached``; the symbol is exported by that shared object, so at
  import the address is looked up once through ``ctypes`` on the already loaded file (the
  same library instance PyNaCl initialised with ``sodium_init``; with a PyNaCl linked to a
  system libsodium, ``dlsym`` finds it in that dependency) and called through a C
  function pointer: no Python call, no ``sig || message`` concatenation, no output buffer
  (``crypto_sign_open`` as the pure twin uses it performs exactly this verification and then
  copies the message out). The GIL is released during the check, as cffi does for the pure
  twin. **Fail closed:** a signature counts as valid only when the call returns 0; if the
  symbol cannot be found, or a self-test at import (a known good signature must verify, the
  same signature over a changed message must not) fails, the module raises ImportError and
  the selector uses the pure twin (or refuses, under ``N3XUS_REQUIRE_COMPILED=1``).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.pythread cimport (
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_start_new_thread,
    PyThread_type_lock,
)
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import ctypes

import nacl._sodium
import nacl.bindings
from nacl.signing import SigningKey

from .tx import TX_SIGNATURE_TAG, verify_tx_signature

__all__ = ["PendingSignatures", "verify_signature", "verify_signatures", "verify_signatures_async"]

ctypedef int (*VerifyDetached)(const unsigned char *sig, const unsigned char *message,
                               unsigned long long length,
                               const unsigned char *public_key) noexcept nogil

cdef enum:
    SIG_BYTES = 64  # crypto_sign_BYTES
    KEY_BYTES = 32  # crypto_sign_PUBLICKEYBYTES, also the account id
    # Room for TX_SIGNATURE_TAG plus the largest signed tx map (MAX_TX_BYTES bounds the whole
    # envelope); a longer input (impossible after decode_tx) takes the pure check instead.
    MESSAGE_CAPACITY = 16 * 1024 + 256
    TAG_CAPACITY = 64  # the domain-separation tag is 19 bytes today
    MAX_VERIFY_THREADS = 64  # threads per signature batch: more cores than any node has

cdef VerifyDetached _verify_detached = NULL
cdef unsigned char _tag[TAG_CAPACITY]
cdef Py_ssize_t _tag_length = 0
# Keeps the ctypes handle (and so the mapping of the function pointer) alive.
cdef object _libsodium = None


# --------------------------------------------------------------- libsodium access


def _load_verifier():
    """Find crypto_sign_verify_detached in PyNaCl's libsodium, check it, and install it."""
    global _verify_detached, _libsodium, _tag_length
    if len(TX_SIGNATURE_TAG) > TAG_CAPACITY:
        raise ImportError(f"TX_SIGNATURE_TAG is longer than {TAG_CAPACITY} bytes")
    _tag_length = len(TX_SIGNATURE_TAG)
    memcpy(_tag, PyBytes_AS_STRING(TX_SIGNATURE_TAG), _tag_length)
    nacl.bindings.sodium_init()  # idempotent; PyNaCl already ran it on import
    try:
        handle = ctypes.CDLL(nacl._sodium.__file__)
        address = ctypes.cast(handle.crypto_sign_verify_detached, ctypes.c_void_p).value
    except (OSError, AttributeError) as exc:
        raise ImportError(f"libsodium's crypto_sign_verify_detached is not reachable in "
                          f"{nacl._sodium.__file__}: {exc}") from exc
    if not address:
        raise ImportError("libsodium's crypto_sign_verify_detached resolved to NULL")
    _libsodium = handle
    _verify_detached = <VerifyDetached><uintptr_t>address
    # Self-test, so a wrong symbol or calling convention can only ever refuse to load.
    key = SigningKey(b"\x5a" * KEY_BYTES)
    message = b"n3xus/ledger-ingest-selftest/v1\x00"
    signature = key.sign(message).signature
    public = bytes(key.verify_key)
    good = _verify_raw(signature, message, public)
    bad = _verify_raw(signature, message[:len(message) - 1] + b"\x01", public)
    if good != 0 or bad == 0:
        _verify_detached = NULL
        _libsodium = None
        raise ImportError(f"libsodium self-test failed (good={good}, tampered={bad})")


cdef int _verify_raw(bytes signature, bytes message, bytes public_key):
    return _verify_detached(<const unsigned char*>PyBytes_AS_STRING(signature),
                            <const unsigned char*>PyBytes_AS_STRING(message),
                            <unsigned long long>PyBytes_GET_SIZE(message),
                            <const unsigned char*>PyBytes_AS_STRING(public_key))


cdef bint _signature_ok(object tx) except -1:
    """:func:`tx.verify_tx_signature`, through the function pointer."""
    cdef object sig = tx.sig
    cdef object signed = tx.signed
    cdef object account = tx.account
    cdef unsigned char message[MESSAGE_CAPACITY]
    cdef Py_ssize_t length
    cdef int rc = -1
    if not (PyBytes_CheckExact(sig) and PyBytes_CheckExact(signed)
            and PyBytes_CheckExact(account) and _verify_detached != NULL):
        return verify_tx_signature(tx)
    length = PyBytes_GET_SIZE(signed)
    if (PyBytes_GET_SIZE(sig) != SIG_BYTES or PyBytes_GET_SIZE(account) != KEY_BYTES
            or length > MESSAGE_CAPACITY - _tag_length):
        return verify_tx_signature(tx)
    memcpy(message, _tag, _tag_length)
    memcpy(message + _tag_length, PyBytes_AS_STRING(signed), length)
    cdef const unsigned char *sig_p = <const unsigned char*>PyBytes_AS_STRING(sig)
    cdef const unsigned char *key_p = <const unsigned char*>PyBytes_AS_STRING(account)
    cdef unsigned long long total = <unsigned long long>(_tag_length + length)
    with nogil:
        rc = _verify_detached(sig_p, message, total, key_p)
    return rc == 0


_load_verifier()

def verify_signature(tx):
    """The transaction's signature check alone (§4.2), through libsodium directly."""
    return bool(_signature_ok(tx))


cdef struct _VerifySlice:
    const unsigned char **sigs
    const unsigned char **keys
    const unsigned char *messages
    Py_ssize_t *offsets
    unsigned long long *lengths
    int *codes
    Py_ssize_t start
    Py_ssize_t end
    PyThread_type_lock done  # held from the start until the slice is verified


cdef void _verify_slice(void *arg) noexcept nogil:
    """A native thread's work: C data only, never the GIL."""
    cdef _VerifySlice *job = <_VerifySlice*>arg
    cdef Py_ssize_t j
    for j in range(job.start, job.end):
        job.codes[j] = _verify_detached(job.sigs[j], job.messages + job.offsets[j],
                                        job.lengths[j], job.keys[j])
    PyThread_release_lock(job.done)


cdef class PendingSignatures:
    """Signature checks under way (:func:`verify_signatures_async`); :meth:`wait` returns
    the verdicts. The checks run on native threads that never take the GIL: the ordered
    apply holds it for long stretches, and CPython hands it to a waiting thread only after
    a 5 ms switch interval, which would stall any Python-level verify worker."""

    cdef list _items  # keeps the bytes the threads read alive (immutable)
    cdef list _results
    cdef list _simple  # indexes of the transactions checked in C
    cdef const unsigned char **_sigs
    cdef const unsigned char **_keys
    cdef unsigned char *_messages
    cdef Py_ssize_t *_offsets
    cdef unsigned long long *_lengths
    cdef int *_codes
    cdef _VerifySlice *_jobs
    cdef int _started  # slices whose lock is held (running, or run inline)
    cdef bint _done

    def __cinit__(self):
        self._started = 0
        self._done = True

    cdef int _prepare(self, object txs) except -1:
        cdef list items = list(txs)
        cdef Py_ssize_t n = len(items), i, j, m, total = 0, at = 0
        cdef object sig, signed, account
        self._items = items
        self._results = [None] * n
        self._simple = []
        for i in range(n):
            tx = items[i]
            sig, signed, account = tx.sig, tx.signed, tx.account
            if (_verify_detached != NULL and PyBytes_CheckExact(sig)
                    and PyBytes_CheckExact(signed) and PyBytes_CheckExact(account)
                    and PyBytes_GET_SIZE(sig) == SIG_BYTES
                    and PyBytes_GET_SIZE(account) == KEY_BYTES):
                self._simple.append(i)
                total += _tag_length + PyBytes_GET_SIZE(signed)
            else:  # the single check decides (and raises) as verify_signature does
                self._results[i] = bool(_signature_ok(tx))
        m = len(self._simple)
        if m == 0:
            return 0
        self._sigs = <const unsigned char **>malloc(m * sizeof(void*))
        self._keys = <const unsigned char **>malloc(m * sizeof(void*))
        self._offsets = <Py_ssize_t *>malloc(m * sizeof(Py_ssize_t))
        self._lengths = <unsigned long long *>malloc(m * sizeof(unsigned long long))
        self._codes = <int *>malloc(m * sizeof(int))
        self._messages = <unsigned char *>malloc(total if total > 0 else 1)
        if (self._sigs == NULL or self._keys == NULL or self._offsets == NULL
                or self._lengths == NULL or self._codes == NULL or self._messages == NULL):
            raise MemoryError("cannot allocate the signature batch")
        for j in range(m):
            tx = items[<Py_ssize_t>self._simple[j]]
            sig, signed, account = tx.sig, tx.signed, tx.account
            self._sigs[j] = <const unsigned char*>PyBytes_AS_STRING(sig)
            self._keys[j] = <const unsigned char*>PyBytes_AS_STRING(account)
            self._offsets[j] = at
            memcpy(self._messages + at, _tag, _tag_length)
            memcpy(self._messages + at + _tag_length, PyBytes_AS_STRING(signed),
                   PyBytes_GET_SIZE(signed))
            self._lengths[j] = <unsigned long long>(_tag_length + PyBytes_GET_SIZE(signed))
            at += _tag_length + PyBytes_GET_SIZE(signed)
            self._codes[j] = -1  # fail closed until checked
        return 0

    cdef int _start(self, int threads) except -1:
        """Split the C-checked transactions over ``threads`` native threads (0: check them
        here, without the GIL, before returning)."""
        cdef Py_ssize_t m = len(self._simple), size, start
        cdef int count, k
        cdef _VerifySlice *job
        self._done = False
        if m == 0:
            return 0
        count = 1 if threads < 1 else min(threads, MAX_VERIFY_THREADS, <int>m)
        self._jobs = <_VerifySlice *>malloc(count * sizeof(_VerifySlice))
        if self._jobs == NULL:
            raise MemoryError("cannot allocate the signature batch")
        size = (m + count - 1) // count
        for k in range(count):
            start = k * size
            job = &self._jobs[k]
            job.sigs, job.keys, job.messages = self._sigs, self._keys, self._messages
            job.offsets, job.lengths, job.codes = self._offsets, self._lengths, self._codes
            job.start, job.end = start, min(m, start + size)
            job.done = PyThread_allocate_lock()
            if job.done == NULL:
                raise MemoryError("cannot allocate a lock for the signature batch")
            PyThread_acquire_lock(job.done, WAIT_LOCK)
            self._started = k + 1
            if threads < 1 or PyThread_start_new_thread(_verify_slice, <void*>job) == -1:
                with nogil:  # no thread (or none could start): check here
                    _verify_slice(<void*>job)
        return 0

    cdef void _join(self) noexcept:
        cdef int k
        for k in range(self._started):
            with nogil:
                PyThread_acquire_lock(self._jobs[k].done, WAIT_LOCK)
            PyThread_release_lock(self._jobs[k].done)
            PyThread_free_lock(self._jobs[k].done)
        self._started = 0

    cdef void _free(self) noexcept:
        free(self._jobs)
        free(self._sigs)
        free(self._keys)
        free(self._offsets)
        free(self._lengths)
        free(self._codes)
        free(self._messages)
        self._jobs = NULL
        self._sigs = self._keys = NULL
        self._offsets = NULL
        self._lengths = NULL
        self._codes = NULL
        self._messages = NULL

    def wait(self):
        """The verdicts, one per transaction, in order (waits for the threads)."""
        cdef Py_ssize_t j
        if not self._done:
            self._join()
            for j in range(len(self._simple)):
                # fail closed: only 0 is a valid signature
                self._results[<Py_ssize_t>self._simple[j]] = self._codes[j] == 0
            self._done = True
            self._free()
            self._items = None
        return list(self._results)

    def __dealloc__(self):
        # Never free what a running thread reads: join first.
        self._join()
        self._free()


def verify_signatures_async(txs, threads):
    """Start :func:`verify_signature` of each transaction on ``threads`` native threads
    (0: here, GIL released, before returning); ``.wait()`` gives the verdicts."""
    cdef PendingSignatures pending = PendingSignatures()
    pending._prepare(txs)
    pending._start(threads)
    return pending


def verify_signatures(txs):
    """:func:`verify_signature` of each transaction, as a list of bools, with the GIL
    released once for the whole list."""
    return verify_signatures_async(txs, 0).wait()

