"""The two per-entry steps of ledger v2: *admission* and the *positional step*.

Pure-Python twin of :mod:`n3xus.ledger._ingest_c`; import :mod:`n3xus.ledger.ingest`, which
picks one of the two. Both are pure functions: no IO, no clock.

* :func:`admit` checks an entry on its own (``specs/ledger.md`` §6.1): a transaction
  envelope decodes, names this network and its signature verifies; a fraud proof verifies.
  Nothing here depends on the ledger's state, so it can run on any core, in any order.
* :func:`apply_tx` runs one admitted transaction at its place in the canonical order
  (§8): the freeze and chain checks against the account's head, then the operation's rules.
  It returns None when the transaction took effect, or the :class:`TxRejected` saying why it
  has none: a *void* transaction (``frozen``, ``bad-seq``, ``bad-prev``) leaves the state
  untouched; a *failed* one (any rule reason) consumes its sequence number (the head moves)
  and changes nothing else.

Admission and the verify-ahead triage live in ``_ingest_decode_py``, the signature checks in
``_ingest_verify_py`` (each with its compiled twin); this module re-exports them, so it has
every public name of the ingest step. The canonical-order engine that calls these lives in
``engine.py``. The outcome types of the
ledger (:class:`Accepted`, :class:`Rejected`, :class:`Pending`, :class:`Held`) are defined
here once and shared by both twins, so ``isinstance`` checks hold whichever twin ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from n3xus.canon.cid import CID

from ._ingest_decode_py import admit, decode_envelope, prepare_entries
from ._ingest_verify_py import verify_signature, verify_signatures, verify_signatures_async
from .errors import Reason, TxRejected
from .genesis import Genesis
from .rules import FROZEN, HANDLERS, HEAD, StateView
from .tx import Tx

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

# An undo record's absent-value marker (a u16 length field of 0 means "was absent").
UNDO_ABSENT: Final = 0
# Results of the positional step that leave the account's head where it was.
VOID_REASONS: Final = frozenset({Reason.FROZEN, Reason.BAD_SEQ, Reason.BAD_PREV})


class Accepted(NamedTuple):
    """An entry now in the node's set and log at ``log_index``; ``tx`` is None for a fraud
    proof. ``result`` is the transaction's result at its canonical position when the batch
    ended: None = it took effect, else why it has none (a later arrival that sorts before it
    can change this; the state is always the replay of the whole set). ``proof`` is the fraud
    proof an equivocating transaction revealed (logged in its place), for the node to hand on."""

    entry_id: bytes
    log_index: int
    tx: Tx | None
    result: TxRejected | None = None
    proof: bytes | None = None

    @property
    def cid(self) -> CID:
        return CID(self.entry_id)

    @property
    def applied(self) -> bool:
        return self.result is None

    @property
    def reason(self) -> Reason | None:
        return None if self.result is None else self.result.reason


class Rejected(NamedTuple):
    """An entry that is not in the set: it changed nothing."""

    error: TxRejected

    @property
    def reason(self) -> Reason:
        return self.error.reason


class Pending(NamedTuple):
    """A transaction waiting for its predecessor (``account``, ``seq - 1``): kept aside, not
    in the set, admitted automatically when the predecessor is."""

    entry_id: bytes
    account: bytes
    seq: int


class Held(NamedTuple):
    """An entry dated beyond the node's clock plus the allowed skew: kept aside until
    ``release_ms`` on the node's clock, then admitted."""

    entry_id: bytes
    release_ms: int


Outcome = Accepted | Rejected | Pending | Held


def apply_tx(view: StateView, genesis: Genesis, tx: Tx) -> TxRejected | None:
    """Run ``tx`` at its canonical position (§8.0): None if it took effect, else the reason
    it has none. Void results write nothing; failed ones write only the account's head."""
    account = tx.account
    frozen = view.get(FROZEN + account)
    if frozen is not None and tx.seq >= int.from_bytes(frozen, "big"):
        return TxRejected(Reason.FROZEN, "the account equivocated at or before this seq")
    head = view.get(HEAD + account)
    if head is None:
        next_seq = 0
        head_id = None
    else:
        next_seq = int.from_bytes(head[:8], "big") + 1
        head_id = head[8:]
    seq = tx.seq
    if seq != next_seq:
        return TxRejected(Reason.BAD_SEQ, f"seq {seq}, the account's next is {next_seq}")
    if tx.prev != head_id:
        return TxRejected(Reason.BAD_PREV, "prev is not the account's last transaction")
    result: TxRejected | None = None
    try:
        HANDLERS[tx.op](view, genesis, tx)
    except TxRejected as exc:
        result = exc
    view.put(HEAD + account, seq.to_bytes(8, "big") + tx.id)
    return result


class _Recorder:
    """The state view of one positional step: writes go through to ``batch``, and the
    first write of each key records the key's previous value for the undo log."""

    __slots__ = ("_batch", "get", "undo")

    def __init__(self, batch: StateView) -> None:
        self._batch = batch
        self.get = batch.get
        self.undo: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self.undo:
            self.undo[key] = self._batch.get(key)
        self._batch.put(key, value)

    def delete(self, key: bytes) -> None:
        if key not in self.undo:
            self.undo[key] = self._batch.get(key)
        self._batch.delete(key)

    def encode(self) -> bytes:
        return encode_undo(self.undo)


def encode_undo(undo: dict[bytes, bytes | None]) -> bytes:
    """The undo record of a step (this node's own, read back by ``engine._restore``): per
    written key, in first-write order, ``len(key) u8 || key || u16 (0 = was absent, else
    len(value) + 1) || value``; b"" when nothing was written."""
    parts: list[bytes] = []
    for key, value in undo.items():
        parts.append(bytes((len(key),)) + key)
        if value is None:
            parts.append(UNDO_ABSENT.to_bytes(2, "big"))
        else:
            parts.append((len(value) + 1).to_bytes(2, "big") + value)
    return b"".join(parts)


class UndoLog(StateView, Protocol):
    """A state view that also keeps undo records (the engine's Batch)."""

    def undo_put(self, key: bytes, record: bytes) -> None: ...


def apply_in_order(batch: UndoLog, genesis: Genesis, order: Iterable[tuple[bytes, bytes]],
                   id_offset: int, known: dict[bytes, Tx],
                   results: dict[bytes, TxRejected | None],
                   load: Callable[[bytes], Tx]) -> int:
    """The engine's replay loop: :func:`apply_step` each ``(order key, locator)`` of
    ``order`` (the transaction id is the key from ``id_offset``), taking the transaction
    from ``known`` (this batch's new ones) or ``load(locator)``; stores each result in
    ``results`` and each non-empty undo record under its order key. Returns how many
    transactions were loaded (processed before, replayed now)."""
    loaded = 0
    for key, where in order:
        tx_id = key[id_offset:]
        tx = known.get(tx_id)
        if tx is None:
            tx = load(where)
            loaded += 1
        results[tx_id], undo = apply_step(batch, genesis, tx)
        if undo:
            batch.undo_put(key, undo)
    return loaded


def apply_step(batch: StateView, genesis: Genesis, tx: Tx) -> tuple[TxRejected | None, bytes]:
    """:func:`apply_tx` on ``batch``, recording what it overwrote: (the result, the undo
    record, b"" when nothing was written). The engine's processing step."""
    recorder = _Recorder(batch)
    result = apply_tx(recorder, genesis, tx)
    return result, recorder.encode()


class StateCache:
    """The state of one write transaction behind a cache (the engine reads and writes the
    same few keys of an account many times in a batch: its freeze, head and balance).

    Reads are answered from the cache, else from ``get``. Writes stay in the cache until
    :meth:`flush` writes the last value of each changed key once, in key order (``put_many``
    for values, ``delete`` for removed keys); every changed key is also added to ``dirty``.
    Every state read and write of the transaction must come through here, and the owner
    flushes before anything reads the state around it."""

    __slots__ = ("_cache", "_delete", "_get", "_put_many", "_unflushed", "dirty")

    def __init__(self, get: Callable[[bytes], bytes | None],
                 put_many: Callable[[list[tuple[bytes, bytes]]], object],
                 delete: Callable[[bytes], object]) -> None:
        self._get = get
        self._put_many = put_many
        self._delete = delete
        self._cache: dict[bytes, bytes | None] = {}
        self._unflushed: set[bytes] = set()
        self.dirty: set[bytes] = set()

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = self._get(key)
            return value

    def put(self, key: bytes, value: bytes) -> None:
        self._cache[key] = value
        self._unflushed.add(key)
        self.dirty.add(key)

    def delete(self, key: bytes) -> None:
        self._cache[key] = None
        self._unflushed.add(key)
        self.dirty.add(key)

    def flush(self, forget: bool = False) -> None:
        """Write the changes since the last flush; ``forget`` also empties the cache (bounds
        its memory over a long replay)."""
        values: list[tuple[bytes, bytes]] = []
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


class MemoryView:
    """A bare state in a dict (the positional step's view in tests and tools)."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.state.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.state[key] = value

    def delete(self, key: bytes) -> None:
        self.state.pop(key, None)
