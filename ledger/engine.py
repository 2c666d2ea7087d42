"""The canonical-order engine of ledger v2 (``specs/ledger.md`` §6–§10).

The ledger state is a pure function of the *set* of admitted transactions: replay them in
the canonical order (time, account, seq, id) from the empty state, running each through
:func:`apply_tx`. Arrival order only decides the node's log (what it received, when) and
how much work a batch costs:

* an arrival that sorts after everything processed (the common case) is applied at the end;
* an arrival that sorts before the end rolls the state back to its position with the undo
  log (each processed transaction recorded the previous values of the keys it wrote), then
  replays forward: O(k) for a position k entries back, not O(n);
* an equivocation (two transactions of one account at one seq) freezes the account from
  that seq: its transactions there and after are void, whatever arrived first; the state is
  rolled back to the first of them.

The engine works on a :class:`Batch`: the state plus the indexes of the set, inside one
write transaction (``store.py`` backs it with LMDB, ``memory.py`` with dicts). Everything
here is deterministic; the only outside input is ``now_ms`` for holding future-dated
entries, which changes when an entry is admitted, never what it does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Protocol

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode

from ._ingest_decode_py import check_network
from ._ingest_py import UNDO_ABSENT
from .errors import EquivocationError, FraudProofError, LedgerCorruptError, Reason, TxRejected
from .fraud import FraudProof, make_fraud_proof
from .genesis import Genesis
from .ingest import (
    Accepted,
    Held,
    Outcome,
    Pending,
    Rejected,
    admit,
    apply_in_order,
    verify_signature,
)
from .rules import FROZEN
from .tx import Tx, decode_tx

# Honest clocks (NTP) agree within seconds; an entry dated more than this ahead of the
# node's clock waits until the clock catches up, so it cannot sort after everything the
# network signs meanwhile and force a replay at each of those arrivals.
MAX_CLOCK_SKEW_MS: Final = 60_000
# Beyond this ahead of the clock an entry is refused outright (``too-early``): holding it
# would cost storage for longer than any honest clock error explains.
MAX_HOLD_MS: Final = 3_600_000
# Entries waiting for their time, per node: bounds the storage an attacker can fill with
# free keys and future-dated entries.
MAX_HELD_ENTRIES: Final = 10_000
# Transactions of one account waiting for their predecessor: gossip reorders within a few
# messages, and anti-entropy fetches what is missing in order, so a short queue suffices.
MAX_PENDING_PER_ACCOUNT: Final = 64
SEQ_BYTES: Final = 8
TIME_BYTES: Final = 8
ACCOUNT_BYTES: Final = 32
# Offset of the transaction id in an order key: time || account || seq || id.
ORDER_ID_OFFSET: Final = TIME_BYTES + ACCOUNT_BYTES + SEQ_BYTES


def order_key(time_ms: int, account: bytes, seq: int, tx_id: bytes) -> bytes:
    """A transaction's place in the canonical order (bytewise = numeric order)."""
    return (time_ms.to_bytes(TIME_BYTES, "big") + account + seq.to_bytes(SEQ_BYTES, "big")
            + tx_id)


def tx_order_key(tx: Tx) -> bytes:
    return order_key(tx.time, tx.account, tx.seq, tx.id)


def locator(index: int, part: int = 0) -> bytes:
    """Where a transaction's bytes are: log entry ``index`` (part 0), or the first/second
    transaction (part 1/2) of the fraud proof logged there."""
    raw = index.to_bytes(8, "big")
    return raw if part == 0 else raw + bytes((part,))


class Batch(Protocol):
    """One write transaction over the ledger (see ``store.py`` for the layout)."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> object: ...
    def delete(self, key: bytes) -> object: ...
    def locator(self, entry_id: bytes) -> bytes | None: ...
    def set_locator(self, entry_id: bytes, where: bytes) -> None: ...
    def append_log(self, entry: bytes) -> int: ...
    def log_entry(self, index: int) -> bytes: ...
    def index_tx(self, tx_id: bytes, account: bytes, seq: int, time_ms: int,
                 where: bytes) -> bytes:
        """A transaction joins the set: its locator (``set_locator``), its chain entry and
        its order entry (under :func:`order_key`) in one call; returns the order key."""
        ...
    def add_tx(self, tx: Tx) -> tuple[int, bytes]:
        """``append_log(tx.raw)``, then ``index_tx`` of it at ``locator(index)``; returns
        (the log index, the order key)."""
        ...
    def chain_ids(self, account: bytes, seq: int) -> list[bytes]: ...
    def chain_pair(self, account: bytes, seq: int) -> tuple[bool, list[bytes]]:
        """Whether the set holds a transaction of ``account`` at ``seq - 1`` (False for
        seq 0), and the ids it holds at ``seq``."""
        ...
    def chain_from(self, account: bytes, seq: int) -> Iterator[tuple[int, bytes, int]]: ...
    def order_from(self, key: bytes) -> Iterator[tuple[bytes, bytes]]: ...
    def undo_put(self, key: bytes, record: bytes) -> None: ...
    def undo_pop_from(self, key: bytes) -> list[bytes]: ...
    def pending_add(self, account: bytes, seq: int, tx_id: bytes, entry: bytes) -> bool: ...
    def pending_take(self, account: bytes, seq: int) -> list[bytes]: ...
    def held_add(self, release_ms: int, entry_id: bytes, entry: bytes) -> bool: ...


def load_tx_bytes(batch: Batch, where: bytes) -> bytes:
    """The envelope bytes a locator points at."""
    entry = batch.log_entry(int.from_bytes(where[:8], "big"))
    if len(where) == 8:
        return entry
    proof = decode(entry)
    return encode(proof["txs"][where[8] - 1])


def _restore(batch: Batch, record: bytes) -> None:
    at = 0
    while at < len(record):
        size = record[at]
        key = record[at + 1:at + 1 + size]
        at += 1 + size
        length = int.from_bytes(record[at:at + 2], "big")
        at += 2
        if length == UNDO_ABSENT:
            batch.delete(key)
        else:
            batch.put(key, record[at:at + length - 1])
            at += length - 1
    if at != len(record):
        raise LedgerCorruptError("an undo record is truncated")


def freeze_seq(batch: Batch, account: bytes) -> int | None:
    raw = batch.get(FROZEN + account)
    return None if raw is None else int.from_bytes(raw, "big")


def _entry_time(item: Tx | FraudProof) -> int:
    if isinstance(item, Tx):
        return item.time
    assert item.txs is not None
    return max(tx.time for tx in item.txs)


class Run:
    """One batch: admit entries in arrival order, then bring the state to the canonical
    replay of the grown set."""

    def __init__(self, batch: Batch, genesis: Genesis, verify: bool = True,
                 now_ms: int | None = None) -> None:
        self.batch = batch
        self.genesis = genesis
        self.verify = verify
        self.now_ms = now_ms
        self.start: bytes | None = None  # the smallest order key to (re)process
        self.new_txs: dict[bytes, Tx] = {}
        self.results: dict[bytes, TxRejected | None] = {}
        self.network_id = genesis.network_id
        self.replays = 0  # processed entries that sorted before the batch's new ones
        # account -> seq of its last transaction this run added to the set: the next seq
        # of that account needs no look-up of its predecessor.
        self._tips: dict[bytes, int] = {}

    # --- admission ------------------------------------------------------------------------

    def admit(self, entry: bytes | Tx) -> Outcome:
        """Admit one entry: its bytes, or a transaction decoded from them before (the
        node's verify-ahead path; its network is checked here all the same)."""
        if isinstance(entry, Tx):
            if entry.network != self.network_id:
                try:
                    check_network(self.genesis, entry)
                except TxRejected as exc:
                    return Rejected(exc)
            if self.verify or self.now_ms is not None:
                return self._admit(entry, entry.raw)
            return self._tx(entry)  # the node's ingest: checked ahead, no clock
        try:
            item = admit(self.genesis, entry, False)
        except TxRejected as exc:
            return Rejected(exc)
        return self._admit(item, entry)

    def _admit(self, item: Tx | FraudProof, entry: bytes) -> Outcome:
        if isinstance(item, Tx):
            # Drop copies of known transactions before the signature check, the expensive
            # part (gossip and sync deliver many copies).
            if self.batch.locator(item.id) is not None:
                return Rejected(TxRejected(Reason.REPLAY,
                                           f"transaction {item.cid} is already known"))
            if self.verify and not verify_signature(item):
                return Rejected(TxRejected(Reason.BAD_SIGNATURE,
                                           "the signature does not verify"))
        if self.now_ms is not None:
            when = _entry_time(item)
            if when > self.now_ms + MAX_HOLD_MS:
                return Rejected(TxRejected(Reason.TOO_EARLY, f"dated {when}, over "
                                           f"{MAX_HOLD_MS} ms ahead of this node's clock"))
            if when > self.now_ms + MAX_CLOCK_SKEW_MS:
                entry_id = item.id
                release = when - MAX_CLOCK_SKEW_MS
                if self.batch.held_add(release, entry_id, entry):
                    return Held(entry_id, release)
                return Rejected(TxRejected(Reason.TOO_EARLY, "dated ahead of this node's clock "
                                           "and its hold is full"))
        if isinstance(item, FraudProof):
            return self._proof(item)
        return self._place(item)  # its id was looked up above

    def _mark(self, key: bytes) -> None:
        if self.start is None or key < self.start:
            self.start = key

    def _store(self, tx: Tx, where: bytes) -> None:
        self.new_txs[tx.id] = tx
        self._mark(self.batch.index_tx(tx.id, tx.account, tx.seq, tx.time, where))

    def _freeze(self, account: bytes, seq: int) -> None:
        """Freeze from ``seq``: rolls back to the first transaction of the account there or
        after (they may have taken effect before this batch)."""
        self.batch.put(FROZEN + account, seq.to_bytes(SEQ_BYTES, "big"))
        for later_seq, tx_id, time_ms in self.batch.chain_from(account, seq):
            self._mark(order_key(time_ms, account, later_seq, tx_id))

    def _tx(self, tx: Tx) -> Outcome:
        """A transaction joins the set unless it is in it already (see :meth:`_place`)."""
        if self.batch.locator(tx.id) is not None:
            return Rejected(TxRejected(Reason.REPLAY, f"transaction {tx.cid} is already known"))
        return self._place(tx)

    def _place(self, tx: Tx) -> Outcome:
        """A transaction not in the set joins it (or waits for its predecessor, or reveals
        an equivocation)."""
        batch = self.batch
        account, seq = tx.account, tx.seq
        raw_frozen = batch.get(FROZEN + account)
        if raw_frozen is not None:
            frozen = int.from_bytes(raw_frozen, "big")
            if seq >= frozen:
                return Rejected(TxRejected(Reason.FROZEN,
                                           f"the account equivocated at seq {frozen}"))
        if seq and self._tips.get(account) == seq - 1:  # its predecessor joined this run
            previous, others = True, batch.chain_ids(account, seq)
        else:
            previous, others = batch.chain_pair(account, seq)
        if seq > 0 and not previous:
            if batch.pending_add(account, seq, tx.id, tx.raw):
                return Pending(tx.id, account, seq)
            return Rejected(TxRejected(Reason.BAD_SEQ, f"seq {seq} is ahead of the account's "
                                       f"chain and {MAX_PENDING_PER_ACCOUNT} already wait"))
        if others:
            return self._equivocation(tx, others[0])
        index, key = batch.add_tx(tx)
        tx_id = tx.id
        self.new_txs[tx_id] = tx
        if self.start is None or key < self.start:
            self.start = key
        self._tips[account] = seq
        outcome = Accepted(tx_id, index, tx)
        self._release_pending(account, seq + 1)
        return outcome

    def _release_pending(self, account: bytes, seq: int) -> None:
        for waiting in self.batch.pending_take(account, seq):
            # Verified when it was put aside; the outcome is reported by the store's
            # counters only (its sender was answered "pending" then).
            item = admit(self.genesis, waiting, False)
            if isinstance(item, Tx):
                self._tx(item)

    def _equivocation(self, tx: Tx, other_id: bytes) -> Outcome:
        batch = self.batch
        where = batch.locator(other_id)
        if where is None:
            raise LedgerCorruptError(f"transaction {CID(other_id)} is indexed but not stored")
        try:
            proof = make_fraud_proof(load_tx_bytes(batch, where), tx.raw)
        except FraudProofError as exc:  # both were verified when admitted: local damage
            raise LedgerCorruptError(f"cannot prove an equivocation: {exc}") from exc
        index = batch.append_log(proof)
        proof_id = bytes(cid_of(proof))
        batch.set_locator(proof_id, locator(index))
        part = 1 if tx.id < other_id else 2
        self._store(tx, locator(index, part))
        self._freeze(tx.account, tx.seq)
        error = EquivocationError(f"seq {tx.seq} of this account is already {CID(other_id)}; "
                                  "the account is frozen from there", proof, index)
        return Accepted(proof_id, index, tx, error, proof)

    def _proof(self, proof: FraudProof) -> Outcome:
        batch = self.batch
        if batch.locator(proof.id) is not None:
            return Rejected(TxRejected(Reason.REPLAY, f"fraud proof {proof.cid} is already known"))
        frozen = freeze_seq(batch, proof.account)
        if frozen is not None and frozen <= proof.seq:
            return Rejected(TxRejected(Reason.FROZEN, f"the account is already frozen from seq "
                                       f"{frozen}"))
        index = batch.append_log(proof.raw)
        batch.set_locator(proof.id, locator(index))
        assert proof.txs is not None
        for part, tx in enumerate(proof.txs, start=1):
            if batch.locator(tx.id) is None:
                self._store(tx, locator(index, part))
        self._freeze(proof.account, proof.seq)
        return Accepted(proof.id, index, None, None, proof.raw)

    # --- processing ---------------------------------------------------------------------

    def process(self) -> None:
        """Roll back to the smallest changed position and replay the order from there."""
        if self.start is None:
            return
        batch, genesis, new_txs, results = self.batch, self.genesis, self.new_txs, self.results
        for record in batch.undo_pop_from(self.start):
            _restore(batch, record)
        self.replays += apply_in_order(batch, genesis, batch.order_from(self.start),
                                       ORDER_ID_OFFSET, new_txs, results,
                                       lambda where: decode_tx(load_tx_bytes(batch, where)))

    def finish(self, outcomes: list[Outcome]) -> list[Outcome]:
        """The outcomes with each new transaction's result after processing."""
        done: list[Outcome] = []
        result_of = self.results.get
        for outcome in outcomes:
            if isinstance(outcome, Accepted):
                tx = outcome.tx
                if tx is not None and outcome.result is None:
                    result = result_of(tx.id)
                    if result is not None:  # else the outcome already says so
                        outcome = Accepted(outcome.entry_id, outcome.log_index, tx, result,
                                           outcome.proof)
            done.append(outcome)
        return done


def run_batch(batch: Batch, genesis: Genesis, entries: Iterable[bytes | Tx], *, verify: bool = True,
              now_ms: int | None = None) -> tuple[list[Outcome], Run]:
    """Admit ``entries`` in order, then process; the outcomes, one per entry, and the run."""
    run = Run(batch, genesis, verify, now_ms)
    outcomes = [run.admit(entry) for entry in entries]
    run.process()
    return run.finish(outcomes), run
