# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, annotation_typing=False
"""Compiled twin of :mod:`n3xus.ledger._ingest_py`: same names, byte-identical results.

What is compiled is the per-transaction work around the signature check, which is what
limits ingest once the check itself is as fast as libsodium makes it:

* **Signature verification calls libsodium directly.** PyNaCl carries libsodium inside
  ``nacl/_sodium.abi3.so`` but its cffi module does not expose
  ``crypto_sign_verify_detached``; the symbol is exported by that shared object, so at
  import the address is looked up once through ``ctypes`` on the already loaded file (the
  same library instance PyNaCl initialised with ``sodium_init``) and called through a C
  function pointer: no Python call, no ``sig || message`` concatenation, no output buffer
  (``crypto_sign_open`` as the pure twin uses it performs exactly this verification and then
  copies the message out). The GIL is released during the check, as cffi does for the pure
  twin. **Fail closed:** a signature counts as valid only when the call returns 0; if the
  symbol cannot be found, or a self-test at import (a known good signature must verify, the
  same signature over a changed message must not) fails, the module raises ImportError and
  the selector uses the pure twin (or refuses, under ``N3XUS_REQUIRE_COMPILED=1``).
* **Transfers are decoded in C** (:func:`_decode_transfer`): the canonical envelope layout
  of a transfer is fixed (every header, key and length), so the bytes are matched directly,
  accepting exactly what the fast path of ``tx.decode_tx`` accepts; anything else (other
  operations, any deviation) goes to ``decode_tx`` itself, so every rejection reason still
  comes from one place.
* **The transfer transition, the chain checks and the head/log writes are typed code:**
  state values are read and written as big-endian u64 in C, keys are built with one
  allocation each, the view's methods are bound once per batch.

The rare paths (fraud-proof entries, replays and equivocations) and the other operations'
transitions are the pure ones, called from here.
"""

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.long cimport PyLong_FromUnsignedLongLong
from libc.stdint cimport uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy

import ctypes

import nacl._sodium
import nacl.bindings
from blake3 import blake3
from nacl.signing import SigningKey

from n3xus.canon.cid import CID

from . import _ingest_py
from ._ingest_py import (
    Accepted,
    LedgerView,
    MemoryView,
    Outcome,
    Rejected,
    _conflicting,
    _ingest_proof,
    replay_with,
)
from .errors import LedgerCorruptError, Reason, TxRejected
from .fraud import FRAUD_PROOF_PREFIX
from .genesis import MAX_AMOUNT
from .rules import BALANCE, FROZEN, HANDLERS, HEAD
from .tx import (
    MAX_SEQ,
    MAX_TIME_MS,
    MAX_TX_BYTES,
    TX_SIGNATURE_TAG,
    TXID_PREFIX,
    Op,
    Tx,
    decode_tx,
    verify_tx_signature,
)

__all__ = [
    "Accepted",
    "LedgerView",
    "MemoryView",
    "Outcome",
    "Rejected",
    "ingest",
    "ingest_entry",
    "replay",
]

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
    TXID_BYTES = 36  # binary CIDv1 dag-cbor BLAKE3-256 (tx.TXID_BYTES)
    SEQ_BYTES = 8  # u64 big-endian in head records and chain keys

cdef VerifyDetached _verify_detached = NULL
cdef unsigned char _tag[TAG_CAPACITY]
cdef Py_ssize_t _tag_length = 0
cdef uint64_t _MAX_AMOUNT = MAX_AMOUNT
cdef uint64_t _MAX_SEQ = MAX_SEQ
cdef uint64_t _MAX_TIME = MAX_TIME_MS
cdef bytes _FRAUD_PREFIX = FRAUD_PROOF_PREFIX
cdef bytes _BALANCE = BALANCE
cdef bytes _FROZEN = FROZEN
cdef bytes _HEAD = HEAD
cdef object _TRANSFER = Op.TRANSFER
cdef object _pure_ingest_entry = _ingest_py.ingest_entry
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
    bad = _verify_raw(signature, message[:-1] + b"\x01", public)
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


# ------------------------------------------------------------------ byte helpers


cdef inline uint64_t _be64(const unsigned char *p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


cdef inline void _put_be64(unsigned char *p, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(7, -1, -1):
        p[i] = <unsigned char>(value & 0xFF)
        value >>= 8


cdef object _u64_value(object raw):
    """``int.from_bytes(raw, "big")`` (in C for the usual 8 bytes)."""
    if PyBytes_CheckExact(raw) and PyBytes_GET_SIZE(raw) == 8:
        return PyLong_FromUnsignedLongLong(_be64(<const unsigned char*>PyBytes_AS_STRING(raw)))
    return int.from_bytes(raw, "big")


cdef bytes _u64_bytes(uint64_t value):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 8)
    _put_be64(<unsigned char*>PyBytes_AS_STRING(out), value)
    return out


cdef bytes _concat(bytes a, bytes b):
    """``a + b`` (kept explicit so the hot keys are built with one allocation)."""
    cdef Py_ssize_t la = PyBytes_GET_SIZE(a), lb = PyBytes_GET_SIZE(b)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, la + lb)
    cdef char *p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(a), la)
    memcpy(p + la, PyBytes_AS_STRING(b), lb)
    return out


cdef bytes _with_seq(bytes head, uint64_t seq, bytes tail):
    """``head || seq u64 || tail`` in one allocation."""
    cdef Py_ssize_t lh = PyBytes_GET_SIZE(head), lt = PyBytes_GET_SIZE(tail)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, lh + SEQ_BYTES + lt)
    cdef unsigned char *p = <unsigned char*>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), lh)
    _put_be64(p + lh, seq)
    memcpy(p + lh + SEQ_BYTES, PyBytes_AS_STRING(tail), lt)
    return out
