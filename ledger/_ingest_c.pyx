# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, annotation_typing=False
"""Compiled twin of :mod:`n3xus.ledger._ingest_py`: same names, byte-identical results.

:func:`admit` (decode, network, signature) and :func:`apply_tx` (one transaction at its
canonical position) are compiled; the canonical-order engine (``engine.py``) calls them.
What is compiled is the per-transaction work around the signature check, which is what
limits ingest once the check itself is as fast as libsodium makes it:

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
* **Envelopes are decoded in C** (:func:`_decode_fast`) for every operation whose
  arguments are all of simple kinds (all but mint): their canonical layout is fixed (every
  header, key and length), so the bytes are matched directly, accepting exactly what the
  fast path of ``tx.decode_tx`` accepts (the layouts are built from ``tx.ARG_FIELDS`` and
  checked against ``decode_tx`` at import, which refuses to load on any difference); any
  other input goes to ``decode_tx`` itself, so every rejection reason comes from one place.
* **The transfer transition, the chain checks and the head write are typed code:**
  state values are read and written as big-endian u64 in C, keys are built with one
  allocation each.

The rare paths (fraud-proof entries) and the other operations' transitions are the pure
ones, called from here.
"""

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_FromUnsignedLongLong
from cpython.pythread cimport (
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_release_lock,
    PyThread_start_new_thread,
    PyThread_type_lock,
)
from libc.stdint cimport uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

import ctypes

import nacl._sodium
import nacl.bindings
from nacl.signing import SigningKey

from n3xus.canon.cid import CID

from . import _ingest_py
from ._ingest_py import (
    VOID_REASONS,
    Accepted,
    Held,
    MemoryView,
    Outcome,
    Pending,
    Rejected,
)
from .errors import FraudProofError, LedgerCorruptError, Reason, TxRejected
from .fraud import FRAUD_PROOF_PREFIX, verify_fraud_proof
from .genesis import MAX_AMOUNT
from .rules import BALANCE, FROZEN, HANDLERS, HEAD
from .tx import (
    ARG_FIELDS,
    MAX_SEQ,
    MAX_TIME_MS,
    MAX_TX_BYTES,
    TX_SIGNATURE_TAG,
    TXID_PREFIX,
    Kind,
    Op,
    Tx,
    decode_tx,
    encode_tx_map,
    verify_tx_signature,
)

__all__ = [
    "VOID_REASONS",
    "Accepted",
    "Held",
    "MemoryView",
    "Outcome",
    "Pending",
    "Rejected",
    "StateCache",
    "admit",
    "apply_in_order",
    "apply_step",
    "apply_tx",
    "decode_envelope",
    "prepare_entries",
    "verify_signature",
    "verify_signatures",
    "verify_signatures_async",
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
    MAX_VERIFY_THREADS = 64  # threads per signature batch: more cores than any node has
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
cdef object _pure_admit = _ingest_py.admit
cdef object _pure_apply_tx = _ingest_py.apply_tx
cdef object _pure_encode_undo = _ingest_py.encode_undo
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


# ---------------------------------------------------------------- fast decoding
#
# The canonical layout of an envelope whose arguments are all of simple kinds (the layout
# tx.py's fast path spells out as a regular expression):
#
#   a2 62 "tx" a8 61 "v" 01 62 "op" <op text> 63 "seq" <uint> 64 "args" <a0+n>
#   { <key> <value> } * n (canonical key order) 64 "prev" (f6 | <link>) 64 "time" <uint>
#   67 "account" 58 20 <32> 67 "network" <link> 63 "sig" 58 40 <64>
#
# <uint> is a CBOR unsigned integer in its shortest form; <link> is tag 42 over the 37 bytes
# 00 || a binary CIDv1 dag-cbor BLAKE3-256 (01 71 1e 20 <32>). A mismatch anywhere returns
# None and decode_tx decides; the import-time self-check compares both on every layout.

cdef enum:
    # tx.Kind values of the argument kinds this decoder handles (checked at import).
    K_ACCOUNT = 1
    K_AMOUNT = 2
    K_EDITION = 3
    K_LINK = 4
    K_OPTIONAL_LINK = 5
    MAX_FAST_ARGS = 8  # more than any operation of ledger v1 has
    TX_MAP_START = 4  # the tx map follows a2 62 "tx"
    SIG_PART = 6 + SIG_BYTES  # 63 "sig" 58 40 <64>

cdef bytes _ENVELOPE_HEAD = b"\xa2\x62tx\xa8\x61v\x01\x62op"
cdef bytes _LINK_HEAD = b"\xd8\x2a\x58\x25\x00" + TXID_PREFIX  # then the 32-byte digest
cdef bytes _ACCOUNT_HEAD = b"\x58\x20"
cdef bytes _PREV_KEY = b"\x64prev"
cdef bytes _TIME_KEY = b"\x64time"
cdef bytes _ACCOUNT_KEY = b"\x67account"
cdef bytes _NETWORK_KEY = b"\x67network"
cdef bytes _SIG_HEAD = b"\x63sig\x58\x40"
cdef uint64_t _MAX_EDITION = 2**32 - 1  # tx.MAX_EDITION


cdef struct Cursor:
    const unsigned char *p
    const unsigned char *end


cdef inline bint _literal(Cursor *c, bytes literal) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(literal)
    if c.end - c.p < n or memcmp(c.p, PyBytes_AS_STRING(literal), n) != 0:
        return False
    c.p += n
    return True


cdef inline bint _uint(Cursor *c, uint64_t *out) noexcept:
    """A CBOR unsigned integer in its shortest form (what canonical DAG-CBOR allows)."""
    cdef const unsigned char *p = c.p
    cdef Py_ssize_t left = c.end - p
    cdef uint64_t value
    if left < 1:
        return False
    if p[0] < 0x18:
        out[0] = p[0]
        c.p += 1
        return True
    if p[0] == 0x18:
        if left < 2 or p[1] < 0x18:
            return False
        out[0] = p[1]
        c.p += 2
        return True
    if p[0] == 0x19:
        if left < 3:
            return False
        value = (<uint64_t>p[1] << 8) | p[2]
        if value < 0x100:
            return False
        c.p += 3
    elif p[0] == 0x1A:
        if left < 5:
            return False
        value = ((<uint64_t>p[1] << 24) | (<uint64_t>p[2] << 16) | (<uint64_t>p[3] << 8)
                 | p[4])
        if value < 0x10000:
            return False
        c.p += 5
    elif p[0] == 0x1B:
        if left < 9:
            return False
        value = _be64(p + 1)
        if value < 0x100000000:
            return False
        c.p += 9
    else:
        return False
    out[0] = value
    return True


cdef inline object _link(Cursor *c):
    """The 36-byte binary CID of a link, or None when there is none at the cursor."""
    cdef Py_ssize_t head = PyBytes_GET_SIZE(_LINK_HEAD)
    if c.end - c.p < head + 32 or memcmp(c.p, PyBytes_AS_STRING(_LINK_HEAD), head) != 0:
        return None
    cdef bytes cid = PyBytes_FromStringAndSize(<const char*>c.p + 5, TXID_BYTES)
    c.p += head + 32
    return cid


cdef inline object _account(Cursor *c):
    if c.end - c.p < 2 + KEY_BYTES or c.p[0] != 0x58 or c.p[1] != 0x20:
        return None
    cdef bytes key = PyBytes_FromStringAndSize(<const char*>c.p + 2, KEY_BYTES)
    c.p += 2 + KEY_BYTES
    return key


cdef class _Layout:
    """One operation's fast layout: the literal head up to the seq value, then the args."""

    cdef object op
    cdef bytes head  # envelope head, op text, 63 "seq"
    cdef bytes args_head  # 64 "args" a0+n
    cdef int count
    cdef int kinds[MAX_FAST_ARGS]
    cdef tuple names
    cdef tuple keys  # each argument's key as encoded text


cdef list _LAYOUTS = []


cdef bytes _text(str value):
    cdef bytes encoded = value.encode()
    if len(encoded) >= 24:
        raise ImportError(f"{value!r} does not have a one-byte text header")
    return bytes((0x60 + len(encoded),)) + encoded


cdef object _decode_fast(bytes data):
    """The Tx decode_tx returns for ``data``, or None to let decode_tx decide."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef Cursor c
    cdef _Layout layout = None
    cdef _Layout candidate
    cdef uint64_t seq, time_ms, value
    cdef int i, kind
    cdef dict args
    if n > MAX_TX_BYTES or n < TX_MAP_START + SIG_PART:
        return None
    c.p = <const unsigned char*>PyBytes_AS_STRING(data)
    c.end = c.p + n
    for candidate in _LAYOUTS:
        if _literal(&c, candidate.head):
            layout = candidate
            break
    if layout is None or not _uint(&c, &seq) or not _literal(&c, layout.args_head):
        return None
    args = {}
    for i in range(layout.count):
        if not _literal(&c, <bytes>layout.keys[i]):
            return None
        kind = layout.kinds[i]
        if kind == K_ACCOUNT:
            item = _account(&c)
            if item is None:
                return None
        elif kind == K_AMOUNT or kind == K_EDITION:
            if not _uint(&c, &value) or value == 0:
                return None
            if value > (_MAX_AMOUNT if kind == K_AMOUNT else _MAX_EDITION):
                return None
            item = PyLong_FromUnsignedLongLong(value)
        elif c.p < c.end and c.p[0] == 0xF6 and kind == K_OPTIONAL_LINK:
            c.p += 1
            item = None
        else:
            item = _link(&c)
            if item is None:
                return None
            item = CID(item)
        args[layout.names[i]] = item
    if not _literal(&c, _PREV_KEY):
        return None
    if c.p < c.end and c.p[0] == 0xF6:
        c.p += 1
        prev = None
    else:
        prev = _link(&c)
        if prev is None:
            return None
    if not _literal(&c, _TIME_KEY) or not _uint(&c, &time_ms):
        return None
    if not _literal(&c, _ACCOUNT_KEY):
        return None
    account = _account(&c)
    if account is None or not _literal(&c, _NETWORK_KEY):
        return None
    network = _link(&c)
    if network is None or not _literal(&c, _SIG_HEAD) or c.end - c.p != SIG_BYTES:
        return None
    if seq > _MAX_SEQ or time_ms > _MAX_TIME or (seq == 0) != (prev is None):
        return None
    return Tx(data, data[TX_MAP_START:n - SIG_PART], data[n - SIG_BYTES:], network, account,
              PyLong_FromUnsignedLongLong(seq), prev, PyLong_FromUnsignedLongLong(time_ms),
              layout.op, args)


cdef object _decode(object data):
    """decode_tx(data), through the C layouts when they apply."""
    cdef object tx
    if PyBytes_CheckExact(data):
        tx = _decode_fast(<bytes>data)
        if tx is not None:
            return tx
    return decode_tx(data)


def _c_decode_fast(data):
    """The C decoder alone (None where it declines); for differential tests."""
    return _decode_fast(bytes(data))


def _build_layouts():
    simple = {int(Kind.ACCOUNT): K_ACCOUNT, int(Kind.AMOUNT): K_AMOUNT,
              int(Kind.EDITION): K_EDITION, int(Kind.LINK): K_LINK,
              int(Kind.OPTIONAL_LINK): K_OPTIONAL_LINK}
    if simple != {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}:
        raise ImportError("tx.Kind numbering changed; the compiled decoder must follow it")
    cdef _Layout layout
    cdef int i
    for op, fields in ARG_FIELDS.items():
        if not all(int(kind) in simple for _, kind in fields) or len(fields) > MAX_FAST_ARGS:
            continue
        layout = _Layout()
        layout.op = op
        layout.head = _ENVELOPE_HEAD + _text(op.value) + _text("seq")
        layout.args_head = _text("args") + bytes((0xA0 + len(fields),))
        layout.count = len(fields)
        for i in range(len(fields)):
            layout.kinds[i] = simple[int(fields[i][1])]
        layout.names = tuple(name for name, _ in fields)
        layout.keys = tuple(_text(name) for name, _ in fields)
        _LAYOUTS.append(layout)
    # Transfers first: they are the bulk of any ledger.
    _LAYOUTS.sort(key=lambda item: (<_Layout>item).op is not _TRANSFER)


_TX_FIELDS = ("raw", "signed", "sig", "id", "network", "account", "seq", "prev", "time", "op",
              "args")


def _self_check_decoder():
    """Every fast layout must decode sample envelopes exactly as decode_tx does (and a
    changed layout in tx.py must not go unnoticed): else refuse to load."""
    samples = {int(Kind.ACCOUNT): b"\x11" * KEY_BYTES, int(Kind.AMOUNT): MAX_AMOUNT,
               int(Kind.EDITION): 70_000, int(Kind.LINK): CID(TXID_PREFIX + b"\x22" * 32),
               int(Kind.OPTIONAL_LINK): None}
    network = CID(TXID_PREFIX + b"\x33" * 32)
    cdef _Layout layout
    for layout in _LAYOUTS:
        args = {name: samples[int(kind)] for name, kind in ARG_FIELDS[layout.op]}
        for seq, prev, time_ms in ((0, None, 5), (2**40, network, 2**63 - 1)):
            signed = encode_tx_map(network=network, account=b"\x44" * KEY_BYTES, seq=seq,
                                   prev=prev, time_ms=time_ms, op=layout.op, args=args)
            envelope = b"\xa2\x62tx" + signed + _SIG_HEAD + b"\x55" * SIG_BYTES
            ours, reference = _decode_fast(envelope), decode_tx(envelope)
            if ours is None or any(getattr(ours, name) != getattr(reference, name)
                                   for name in _TX_FIELDS):
                raise ImportError(f"the compiled decoder disagrees with decode_tx on a "
                                  f"{layout.op.value} envelope")


_build_layouts()
_self_check_decoder()


# ------------------------------------------------------------------ the loop


cdef int _transfer(object get, object put, object delete, object tx) except -1:
    """rules._transfer (same view calls in the same order, same errors)."""
    args = tx.args
    amount = args["amount"]
    to = args["to"]
    cdef bytes source = _concat(_BALANCE, tx.account)
    raw = get(source)
    balance = 0 if raw is None else _u64_value(raw)
    if balance < amount:
        raise TxRejected(Reason.OVERDRAFT, f"balance {balance} is less than {amount}")
    if balance == amount:
        delete(source)
    else:
        put(source, _u64_bytes(balance - amount))
    cdef bytes target = _concat(_BALANCE, to)
    raw = get(target)
    credited = amount + (0 if raw is None else _u64_value(raw))
    if credited > MAX_AMOUNT:
        raise LedgerCorruptError(f"balance of {to.hex()} would exceed {MAX_AMOUNT}")
    put(target, _u64_bytes(credited))
    return 0


def admit(genesis, entry, verify=True):
    """Check an entry on its own (§6.1); raises :class:`TxRejected` with its reason.

    ``verify=False`` skips the transaction signature check: only for entries this node
    verified before (a replay of its own log). Fraud proofs are always checked in full."""
    cdef Py_ssize_t prefix = PyBytes_GET_SIZE(_FRAUD_PREFIX)
    if not PyBytes_CheckExact(entry):
        return _pure_admit(genesis, entry, verify)
    if (PyBytes_GET_SIZE(entry) >= prefix
            and memcmp(PyBytes_AS_STRING(entry), PyBytes_AS_STRING(_FRAUD_PREFIX), prefix) == 0):
        try:
            return verify_fraud_proof(entry, genesis.network_id)
        except FraudProofError as exc:
            raise TxRejected(Reason.BAD_PROOF, str(exc)) from None
    tx = _decode(entry)
    if tx.network != genesis.network_id:
        raise TxRejected(Reason.WRONG_NETWORK, f"the transaction is for network {tx.network_cid}")
    if verify and not _signature_ok(tx):
        raise TxRejected(Reason.BAD_SIGNATURE, "the signature does not verify")
    return tx


def decode_envelope(entry):
    """:func:`tx.decode_tx`, through the C layouts when they apply."""
    return _decode(entry)


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


def apply_tx(view, genesis, tx):
    """Run ``tx`` at its canonical position (§8.0): None if it took effect, else the reason
    it has none. Void results write nothing; failed ones write only the account's head."""
    return _apply(view, genesis, tx)


cdef class StateCache:
    """``_ingest_py.StateCache`` (the state of one write transaction behind a cache, writes
    kept until :meth:`flush`, changed keys in ``dirty``) with its methods in C."""

    cdef object _get
    cdef object _put_many
    cdef object _delete
    cdef dict _cache
    cdef set _unflushed
    cdef readonly set dirty

    def __cinit__(self, get, put_many, delete):
        self._get = get
        self._put_many = put_many
        self._delete = delete
        self._cache = {}
        self._unflushed = set()
        self.dirty = set()

    def get(self, key):
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            value = self._get(key)
            self._cache[key] = value
        return value

    def put(self, key, value):
        self._cache[key] = value
        self._unflushed.add(key)
        self.dirty.add(key)

    def delete(self, key):
        self._cache[key] = None
        self._unflushed.add(key)
        self.dirty.add(key)

    def flush(self, forget=False):
        """Write the changes since the last flush; ``forget`` also empties the cache."""
        cdef list values = []
        for key in sorted(self._unflushed):
            value = self._cache[key]
            if value is None:
                self._delete(key)
            else:
                values.append((key, value))
        if values:
            self._put_many(values)
        self._unflushed.clear()
        if forget:
            self._cache.clear()


cdef object _MISSING = object()


cdef class _Recorder:
    """The state view of one positional step (``_ingest_py._Recorder``): writes go through
    to the batch, and the first write of each key records its previous value for the undo
    log. The value a step read before writing a key *is* that previous value (only this
    step writes meanwhile), so it is kept instead of read again."""

    cdef object _get
    cdef object _put
    cdef object _delete
    cdef dict _read
    cdef dict undo

    def __cinit__(self, batch):
        self._get = batch.get
        self._put = batch.put
        self._delete = batch.delete
        self._read = {}
        self.undo = {}

    def get(self, key):
        value = self._get(key)
        self._read[key] = value
        return value

    cdef inline void _remember(self, object key) except *:
        if key not in self.undo:
            self.undo[key] = self._read[key] if key in self._read else self._get(key)

    def put(self, key, value):
        self._remember(key)
        self._put(key, value)

    def delete(self, key):
        self._remember(key)
        self._delete(key)


cdef bytes _encode_undo(dict undo):
    """``_ingest_py.encode_undo`` in one allocation (the pure one for any odd entry, so
    its errors are the same)."""
    cdef Py_ssize_t total = 0, size
    cdef object key, value
    for key, value in undo.items():
        if not PyBytes_CheckExact(key) or PyBytes_GET_SIZE(key) > 255:
            return _pure_encode_undo(undo)
        total += 1 + PyBytes_GET_SIZE(key) + 2
        if value is not None:
            if not PyBytes_CheckExact(value) or PyBytes_GET_SIZE(value) >= 0xFFFF:
                return _pure_encode_undo(undo)
            total += PyBytes_GET_SIZE(value)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char *p = <unsigned char*>PyBytes_AS_STRING(out)
    for key, value in undo.items():
        size = PyBytes_GET_SIZE(key)
        p[0] = <unsigned char>size
        memcpy(p + 1, PyBytes_AS_STRING(key), size)
        p += 1 + size
        if value is None:
            p[0] = 0
            p[1] = 0
            p += 2
        else:
            size = PyBytes_GET_SIZE(value)
            p[0] = <unsigned char>((size + 1) >> 8)
            p[1] = <unsigned char>((size + 1) & 0xFF)
            memcpy(p + 2, PyBytes_AS_STRING(value), size)
            p += 2 + size
    return out


def apply_in_order(batch, genesis, order, Py_ssize_t id_offset, dict known, dict results, load):
    """The engine's replay loop (``_ingest_py.apply_in_order``), each step in C."""
    cdef Py_ssize_t loaded = 0
    cdef _Recorder recorder
    cdef bytes undo
    undo_put = batch.undo_put
    for key, where in order:
        tx_id = key[id_offset:]
        tx = known.get(tx_id)
        if tx is None:
            tx = load(where)
            loaded += 1
        recorder = _Recorder(batch)
        results[tx_id] = _apply(recorder, genesis, tx)
        undo = _encode_undo(recorder.undo)
        if PyBytes_GET_SIZE(undo):
            undo_put(key, undo)
    return loaded


def prepare_entries(entries, network_id, known):
    """``_ingest_py.prepare_entries``: decode (C layouts), order key in one allocation,
    network and replay triage."""
    cdef list found = []
    cdef Py_ssize_t prefix = PyBytes_GET_SIZE(_FRAUD_PREFIX), size
    cdef bytes key, account, tx_id
    cdef unsigned char *p
    cdef uint64_t time_value, seq_value
    for entry in entries:
        if (PyBytes_CheckExact(entry) and PyBytes_GET_SIZE(entry) >= prefix
                and memcmp(PyBytes_AS_STRING(entry), PyBytes_AS_STRING(_FRAUD_PREFIX),
                           prefix) == 0) or (not PyBytes_CheckExact(entry)
                                              and entry[:prefix] == _FRAUD_PREFIX):
            found.append((b"", None, False))
            continue
        try:
            tx = _decode(entry)
        except (ValueError, TxRejected):
            found.append((b"", None, False))
            continue
        account, tx_id = tx.account, tx.id
        time_value = PyLong_AsUnsignedLongLong(tx.time)
        seq_value = PyLong_AsUnsignedLongLong(tx.seq)
        size = PyBytes_GET_SIZE(account) + PyBytes_GET_SIZE(tx_id)
        key = PyBytes_FromStringAndSize(NULL, 16 + size)
        p = <unsigned char*>PyBytes_AS_STRING(key)
        _put_be64(p, time_value)
        memcpy(p + 8, PyBytes_AS_STRING(account), PyBytes_GET_SIZE(account))
        _put_be64(p + 8 + PyBytes_GET_SIZE(account), seq_value)
        memcpy(p + 16 + PyBytes_GET_SIZE(account), PyBytes_AS_STRING(tx_id),
               PyBytes_GET_SIZE(tx_id))
        if network_id is not None and tx.network != network_id:
            found.append((key, None, False))
        elif known is not None and known(tx_id) is not None:
            found.append((key, tx, False))
        else:
            found.append((key, tx, True))
    return found


def apply_step(batch, genesis, tx):
    """:func:`apply_tx` on ``batch``, recording what it overwrote: (the result, the undo
    record, b"" when nothing was written). The engine's processing step."""
    cdef _Recorder recorder = _Recorder(batch)
    result = _apply(recorder, genesis, tx)
    return result, _encode_undo(recorder.undo)


cdef object _apply(object view, object genesis, object tx):
    cdef Py_ssize_t head_size
    cdef uint64_t seq_value
    account = tx.account
    seq = tx.seq
    prev = tx.prev
    if not (PyBytes_CheckExact(account) and (prev is None or PyBytes_CheckExact(prev))):
        return _pure_apply_tx(view, genesis, tx)
    get = view.get
    frozen = get(_concat(_FROZEN, account))
    if frozen is not None and seq >= _u64_value(frozen):
        return TxRejected(Reason.FROZEN, "the account equivocated at or before this seq")
    head = get(_concat(_HEAD, account))
    if head is None:
        next_seq = 0
        prev_matches = prev is None
    elif PyBytes_CheckExact(head) and PyBytes_GET_SIZE(head) >= SEQ_BYTES:
        next_seq = PyLong_FromUnsignedLongLong(
            _be64(<const unsigned char*>PyBytes_AS_STRING(head))) + 1
        head_size = PyBytes_GET_SIZE(head) - SEQ_BYTES
        prev_matches = (prev is not None and PyBytes_GET_SIZE(prev) == head_size
                        and memcmp(PyBytes_AS_STRING(prev), PyBytes_AS_STRING(head) + SEQ_BYTES,
                                   head_size) == 0)
    else:  # not a head record this ledger writes: the pure expressions decide
        next_seq = int.from_bytes(head[:SEQ_BYTES], "big") + 1
        prev_matches = prev == head[SEQ_BYTES:]
    if seq != next_seq:
        return TxRejected(Reason.BAD_SEQ, f"seq {seq}, the account's next is {next_seq}")
    if not prev_matches:
        return TxRejected(Reason.BAD_PREV, "prev is not the account's last transaction")
    result = None
    try:
        if tx.op is _TRANSFER:
            _transfer(get, view.put, view.delete, tx)
        else:
            HANDLERS[tx.op](view, genesis, tx)
    except TxRejected as exc:
        result = exc
    seq_value = seq
    view.put(_concat(_HEAD, account), _with_seq(b"", seq_value, tx.id))
    return result
