# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True, annotation_typing=False
"""Compiled twin of :mod:`n3xus.ledger._ingest_py`: same names, byte-identical results.

This module holds the positional step (:func:`apply_tx`, :func:`apply_step`, the engine's
replay loop :func:`apply_in_order`) and the batch's :class:`StateCache`; it re-exports the
other compiled parts, so it is the one module the selector (``ingest.py``) imports and it
fails to import when any of them is missing:

* ``_ingest_verify_c``: signature checks through libsodium directly, batches on native
  threads that never take the GIL;
* ``_ingest_decode_c``: envelopes decoded in C, :func:`admit`, :func:`prepare_entries`.

  other input goes to ``decode_tx`` itself, so every rejection reason comes from one place.
* **The transfer transition, the chain checks and the head write are typed code:**
  state values are read and written as big-endian u64 in C, keys are built with one
  allocation each.

The rare paths (fraud-proof entries) and the other operations' transitions are the pure
ones, called from here.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_FromUnsignedLongLong
from libc.stdint cimport uint64_t
from libc.string cimport memcmp, memcpy

include "_ingest_bytes.pxi"

from . import _ingest_py
from ._ingest_decode_c import admit, decode_envelope, prepare_entries
from ._ingest_py import (
    VOID_REASONS,
    Accepted,
    Held,
    MemoryView,
    Outcome,
    Pending,
    Rejected,
)
from ._ingest_verify_c import verify_signature, verify_signatures, verify_signatures_async
from .errors import LedgerCorruptError, Reason, TxRejected
from .genesis import MAX_AMOUNT
from .rules import BALANCE, FROZEN, HANDLERS, HEAD
from .tx import Op


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

cdef bytes _BALANCE = BALANCE
cdef bytes _FROZEN = FROZEN
cdef bytes _HEAD = HEAD
cdef object _TRANSFER = Op.TRANSFER
cdef object _pure_apply_tx = _ingest_py.apply_tx
cdef object _pure_encode_undo = _ingest_py.encode_undo


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
