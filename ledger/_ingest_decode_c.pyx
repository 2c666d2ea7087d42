# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, annotation_typing=False
"""Compiled twin of :mod:`n3xus.ledger._ingest_decode_py` (same names, byte-identical
results): :func:`decode_envelope`, :func:`admit` (decode, network, signature) and
:func:`prepare_entries` (the verify-ahead triage: decode, order key, network, replay).

* **Envelopes are decoded in C** (:func:`_decode_fast`) for every operation whose
  arguments are all of simple kinds (all but mint): their canonical layout is fixed (every
  header, key and length), so the bytes are matched directly, accepting exactly what the
  fast path of ``tx.decode_tx`` accepts (the layouts are built from ``tx.ARG_FIELDS`` and
  checked against ``decode_tx`` at import, which refuses to load on any difference); any
  other input goes to ``decode_tx`` itself, so every rejection reason comes from one place.
"""

from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_FromUnsignedLongLong
from libc.stdint cimport uint64_t
from libc.string cimport memcmp

include "_ingest_bytes.pxi"

from n3xus.canon.cid import CID

from . import _ingest_decode_py
from ._ingest_verify_c import verify_signature
from .errors import FraudProofError, Reason, TxRejected
from .fraud import FRAUD_PROOF_PREFIX, verify_fraud_proof
from .genesis import MAX_AMOUNT
from .tx import (
    ARG_FIELDS,
    MAX_EDITION,
    MAX_SEQ,
    MAX_TIME_MS,
    MAX_TX_BYTES,
    TXID_PREFIX,
    Kind,
    Op,
    Tx,
    decode_tx,
    encode_tx_map,
)

__all__ = ["admit", "decode_envelope", "prepare_entries"]

cdef enum:
    SIG_BYTES = 64  # crypto_sign_BYTES
    KEY_BYTES = 32  # the account id (an ed25519 public key)
    TXID_BYTES = 36  # binary CIDv1 dag-cbor BLAKE3-256 (tx.TXID_BYTES)

cdef uint64_t _MAX_AMOUNT = MAX_AMOUNT
cdef uint64_t _MAX_SEQ = MAX_SEQ
cdef uint64_t _MAX_TIME = MAX_TIME_MS
cdef bytes _FRAUD_PREFIX = FRAUD_PROOF_PREFIX
cdef object _TRANSFER = Op.TRANSFER
cdef object _pure_admit = _ingest_decode_py.admit
cdef object _signature_ok = verify_signature  # the compiled check, one call per admission


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
cdef uint64_t _MAX_EDITION = MAX_EDITION


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
    if c.end - c.p < 2 + KEY_BYTES or not _literal(c, _ACCOUNT_HEAD):
        return None
    cdef bytes key = PyBytes_FromStringAndSize(<const char*>c.p, KEY_BYTES)
    c.p += KEY_BYTES
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

