"""The validation loop: decode → check the chain → verify the signature → apply → append.

Pure-Python twin of :mod:`n3xus.ledger._ingest_c`; import :mod:`n3xus.ledger.ingest`, which
picks one of the two. A pure function of (ledger view, entry bytes): no IO of its own, no
clock. The view is the state plus the log's indexes; ``store.py`` backs it with one LMDB
write transaction per batch, :class:`MemoryView` with dicts (tests, offline replay by
auditors). Public names: :func:`ingest`, :func:`ingest_entry`, :func:`replay`,
:class:`Accepted`, :class:`Rejected`, :data:`Outcome`, :class:`LedgerView`,
:class:`MemoryView`; the compiled twin defines the first three again and shares the rest
(so ``isinstance`` checks hold whichever twin produced an outcome).

Each entry of a batch is either a transaction envelope or a fraud proof (the two are told
apart by their first bytes). The order of the checks is normative (``specs/ledger.md``
§Validation), because it decides which reason a bad transaction is rejected with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from n3xus.canon.cid import CID, cid_of

from .errors import (
    EquivocationError,
    FraudProofError,
    LedgerCorruptError,
    Reason,
    TxRejected,
)
from .fraud import FRAUD_PROOF_PREFIX, make_fraud_proof, verify_fraud_proof
from .genesis import Genesis
from .rules import FROZEN, HANDLERS, HEAD, StateView, state_root
from .tx import Tx, decode_tx, verify_tx_signature

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

_FRAUD_PREFIX_LEN: Final = len(FRAUD_PROOF_PREFIX)


class LedgerView(StateView, Protocol):
    """The state (``get/put/delete``) plus what the loop needs of the log."""

    def chain_id(self, account: bytes, seq: int) -> bytes | None:
        """Id of the accepted transaction of ``account`` at ``seq``, if any."""
        ...

    def entry_by_id(self, entry_id: bytes) -> bytes | None:
        """The logged bytes of an accepted entry."""
        ...

    def append(self, entry: bytes, entry_id: bytes, chain_key: bytes | None) -> int:
        """Append an accepted entry to the log; returns its index. ``chain_key`` is
        ``account || seq u64`` for a transaction, None for a fraud proof."""
        ...


class Accepted(NamedTuple):
    """An entry that is now in the log at ``log_index``; ``tx`` is None for a fraud proof."""

    entry_id: bytes
    log_index: int
    tx: Tx | None

    @property
    def cid(self) -> CID:
        return CID(self.entry_id)


class Rejected(NamedTuple):
    """An entry that changed nothing. For an equivocation, ``error`` is an
    :class:`EquivocationError` and the proof it revealed was appended to the log."""

    error: TxRejected

    @property
    def reason(self) -> Reason:
        return self.error.reason


Outcome = Accepted | Rejected

IngestEntry = Callable[[LedgerView, Genesis, bytes, bool], Accepted]
"""The signature of :func:`ingest_entry` (either twin's)."""


def _seq_key(account: bytes, seq: int) -> bytes:
    return account + seq.to_bytes(8, "big")


def _conflicting(view: LedgerView, tx: Tx, accepted_id: bytes | None) -> None:
    """``tx`` sits at a position already taken: a replay, or proof of equivocation."""
    if accepted_id is None:
        raise LedgerCorruptError(f"no chain index entry for seq {tx.seq} below the head")
    if accepted_id == tx.id:
        raise TxRejected(Reason.REPLAY, f"transaction {tx.cid} was already accepted")
    # Checked even when replaying without signature checks: a proof must never be built
    # from an unverified transaction.
    if not verify_tx_signature(tx):
        raise TxRejected(Reason.BAD_SIGNATURE, "the signature does not verify")
    accepted = view.entry_by_id(accepted_id)
    if accepted is None:
        raise LedgerCorruptError(f"accepted transaction {CID(accepted_id)} is not in the log")
    try:
        proof = make_fraud_proof(accepted, tx.raw)
    except FraudProofError as exc:  # the accepted one no longer verifies: local corruption
        raise LedgerCorruptError(f"cannot prove the equivocation: {exc}") from exc
    proof_id = bytes(cid_of(proof))  # make_fraud_proof verified both signatures
    index = view.append(proof, proof_id, None)
    view.put(FROZEN + tx.account, proof_id)
    raise EquivocationError(
        f"seq {tx.seq} of this account is already {CID(accepted_id)}; the account is frozen",
        proof, index)


def _ingest_proof(view: LedgerView, genesis: Genesis, entry: bytes) -> Accepted:
    try:
        proof = verify_fraud_proof(entry, genesis.network_id)
    except FraudProofError as exc:
        raise TxRejected(Reason.BAD_PROOF, str(exc)) from None
    if view.get(FROZEN + proof.account) is not None:
        raise TxRejected(Reason.FROZEN, "the account is already frozen by an earlier proof")
    proof_id = proof.id
    index = view.append(proof.raw, proof_id, None)
    view.put(FROZEN + proof.account, proof_id)
    return Accepted(proof_id, index, None)


def ingest_entry(view: LedgerView, genesis: Genesis, entry: bytes,
                 verify: bool = True) -> Accepted:
    """Validate one entry against ``view`` and apply it; raises :class:`TxRejected` (the view
    unchanged, except that an :class:`EquivocationError` has appended its proof).

    ``verify=False`` skips transaction signature checks: only for replaying a log this node
    already verified (fraud proofs are always checked in full)."""
    if entry[:_FRAUD_PREFIX_LEN] == FRAUD_PROOF_PREFIX:
        return _ingest_proof(view, genesis, entry)
    tx = decode_tx(entry)
    if tx.network != genesis.network_id:
        raise TxRejected(Reason.WRONG_NETWORK, f"the transaction is for network {tx.network_cid}")
    account = tx.account
    if view.get(FROZEN + account) is not None:
        raise TxRejected(Reason.FROZEN, "the account is frozen (it equivocated)")
    head = view.get(HEAD + account)
    if head is None:
        next_seq = 0
        head_id = None
    else:
        next_seq = int.from_bytes(head[:8], "big") + 1
        head_id = head[8:]
    seq = tx.seq
    if seq != next_seq:
        if seq > next_seq:
            raise TxRejected(Reason.BAD_SEQ, f"seq {seq}, the account's next is {next_seq}")
        accepted = head_id if seq == next_seq - 1 else view.chain_id(account, seq)
        _conflicting(view, tx, accepted)
    if tx.prev != head_id:
        raise TxRejected(Reason.BAD_PREV, "prev is not the account's last transaction")
    if verify and not verify_tx_signature(tx):
        raise TxRejected(Reason.BAD_SIGNATURE, "the signature does not verify")
    HANDLERS[tx.op](view, genesis, tx)
    seq_bytes = seq.to_bytes(8, "big")
    view.put(HEAD + account, seq_bytes + tx.id)
    return Accepted(tx.id, view.append(tx.raw, tx.id, account + seq_bytes), tx)


def ingest(view: LedgerView, genesis: Genesis, entries: Iterable[bytes],
           verify: bool = True) -> list[Outcome]:
    """Run every entry through :func:`ingest_entry`, in order; one outcome per entry."""
    outcomes: list[Outcome] = []
    add = outcomes.append
    for entry in entries:
        try:
            add(ingest_entry(view, genesis, entry, verify))
        except TxRejected as exc:
            add(Rejected(exc))
    return outcomes


class MemoryView:
    """A :class:`LedgerView` in dicts, starting from the genesis (log entry 0)."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.state: dict[bytes, bytes] = {}
        self.log: list[bytes] = [genesis.block]
        self.ids: dict[bytes, int] = {genesis.network_id: 0}
        self.chain: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.state.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.state[key] = value

    def delete(self, key: bytes) -> None:
        self.state.pop(key, None)

    def chain_id(self, account: bytes, seq: int) -> bytes | None:
        return self.chain.get(_seq_key(account, seq))

    def entry_by_id(self, entry_id: bytes) -> bytes | None:
        index = self.ids.get(entry_id)
        return None if index is None else self.log[index]

    def append(self, entry: bytes, entry_id: bytes, chain_key: bytes | None) -> int:
        index = len(self.log)
        self.log.append(entry)
        self.ids[entry_id] = index
        if chain_key is not None:
            self.chain[chain_key] = entry_id
        return index

    def state_root(self) -> bytes:
        return state_root(sorted(self.state.items()))


def replay(entries: Iterable[bytes], verify: bool = True,
           genesis: Genesis | None = None) -> MemoryView:
    """Rebuild a ledger from its log (entry 0 is the genesis block); every entry must be
    accepted at its own index, else LedgerCorruptError names the first that is not.
    ``genesis``, when given, must equal entry 0."""
    return replay_with(ingest_entry, entries, verify, genesis)


def replay_with(step: IngestEntry, entries: Iterable[bytes], verify: bool = True,
                genesis: Genesis | None = None) -> MemoryView:
    """:func:`replay` running each entry through ``step`` (the compiled twin passes its own
    :func:`ingest_entry`)."""
    iterator = iter(entries)
    first = next(iterator, None)
    if first is None:
        raise LedgerCorruptError("the log is empty (entry 0 must be the genesis block)")
    found = Genesis.from_bytes(first)
    if genesis is not None and found.block != genesis.block:
        raise LedgerCorruptError(f"the log is of network {found.cid}, not {genesis.cid}")
    view = MemoryView(found)
    for index, entry in enumerate(iterator, start=1):
        try:
            accepted = step(view, found, entry, verify)
        except TxRejected as exc:
            raise LedgerCorruptError(f"log entry {index} does not replay: {exc}") from exc
        if accepted.log_index != index:
            raise LedgerCorruptError(f"log entry {index} replayed at index {accepted.log_index}")
    return view
