"""The ledger's transparency log: every log entry is a leaf of an RFC 9162 Merkle tree
(BLAKE3), the node signs C2SP checkpoints of it that also commit the ledger state, and it
serves offline proofs (``specs/ledger.md`` §13).

Leaf ``i`` is log entry ``i`` of :class:`LedgerStore` (0: the genesis block; then accepted
envelopes and fraud proofs), hashed as ``BLAKE3(0x00 || exact entry bytes)``. Named
databases of the node's LMDB environment::

    ledger/tlog/tree  u8 level || u64 BE index -> 32-byte hash of that full subtree
    ledger/tlog/meta  b"size" -> u64 BE leaves; b"checkpoint" -> last signed note (UTF-8)

The tree is written by a commit hook inside the write transaction that appends the
entries, so a crash never leaves the log and its tree apart; roots and proofs read
O(log n) stored nodes (``canon.merkle``), as the canon log does.

Checkpoints carry one extension line ``n3xus-state <leaves> <base64 root>``: the number of
state entries and the root of the state tree (``smt.py``) after exactly ``size`` entries,
under the same signature as (size, root). The node never signs two inconsistent
checkpoints: in the write transaction that records a checkpoint it checks that the log has
not shrunk below the last signed size and that the tree there still has the signed root
(and, at equal size, the signed state). The state tree lives in LMDB and is brought up to
date in that same write transaction (O(k log n) for k changed keys), so a checkpoint costs
what changed. State proofs are walks of that tree at the current head: they are served
against a checkpoint of the current log size (the state is a function of the log, so equal
sizes mean equal states), signing one first when the log has moved.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, cast

import lmdb
from nacl.signing import SigningKey, VerifyKey

from n3xus.canon import merkle
from n3xus.canon.checkpoint import MAX_EXTRA_BYTES, Checkpoint
from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonError
from n3xus.canon.note import make_vkey, parse_note
from n3xus.canon.stored_tree import StoredTree, check_size

from .audit import (
    HASHER,
    ORIGIN_PREFIX,
    ConsistencyBundle,
    StateCommitment,
    StateProofBundle,
    make_inclusion_bundle,
    parse_state_line,
)
from .errors import AuditError, CheckpointRefusedError, LedgerCorruptError, ProofUnavailableError
from .rules import BALANCE, OWNER, edition_key
from .store import LedgerStore

TREE_DB: Final = b"ledger/tlog/tree"
META_DB: Final = b"ledger/tlog/meta"
_META_SIZE: Final = b"size"
_META_CHECKPOINT: Final = b"checkpoint"
_U64: Final = struct.Struct(">Q")
# An ed25519 public key's length, for checking the origin is a usable note key name.
_PUBLIC_KEY_BYTES: Final = 32
# Bytes of an account key (a balance proof's target).
_ACCOUNT_BYTES: Final = 32


def ledger_origin(network: CID, node: str) -> str:
    """``n3xus.net/ledger/<network id>/<node>``: the checkpoint origin (and note key name)
    of one node's ledger log; ``node`` is its peer id or key id."""
    return f"{ORIGIN_PREFIX}{network}/{node}"


def balance_key(account: bytes) -> bytes:
    return BALANCE + account


def owner_key(asset: CID | bytes, edition: int) -> bytes:
    return edition_key(OWNER, bytes(asset), edition)


StateTarget = bytes | tuple[CID | bytes, int]
"""An account (its balance), ``(asset, edition)`` (its owner), or a raw state key."""


def state_key(target: StateTarget) -> bytes:
    if isinstance(target, tuple):
        asset, edition = target
        return owner_key(asset, edition)
    if len(target) == _ACCOUNT_BYTES:
        return balance_key(target)
    return bytes(target)


@dataclass(frozen=True)
class _Signed:
    """The last signed checkpoint, parsed."""

    note: str
    checkpoint: Checkpoint
    state: StateCommitment

    @property
    def size(self) -> int:
        return self.checkpoint.size


def _items(cursor: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    """A cursor's items from its position (bytes: no environment opens buffers=True)."""
    return cast(Iterator[tuple[bytes, bytes]], cursor.iternext())


def _parse_signed(raw: bytes | memoryview) -> _Signed:
    note = bytes(raw).decode("utf-8")
    try:
        checkpoint = Checkpoint.parse(parse_note(note).text)
        return _Signed(note, checkpoint, parse_state_line(checkpoint))
    except (CanonError, AuditError, ValueError) as exc:
        raise LedgerCorruptError(f"the stored last checkpoint is unreadable: {exc}") from exc


class TransparencyLog:
    """The Merkle log over one :class:`LedgerStore`'s log, in the same LMDB environment.

    Construct it right after the store: it catches up with entries appended without it
    (the genesis entry, or a store used before) and hooks itself into every later commit.
    ``origin`` names the log in checkpoints (see :func:`ledger_origin`)."""

    def __init__(self, env: lmdb.Environment, store: LedgerStore, origin: str) -> None:
        make_vkey(origin, bytes(_PUBLIC_KEY_BYTES))  # fail now on a name notes refuse
        self.env = env
        self.store = store
        self.origin = origin
        self._tree = StoredTree(env.open_db(TREE_DB), HASHER, "transparency",
                                LedgerCorruptError)
        self._meta = env.open_db(META_DB)
        # Checkpoints are signed by one caller at a time; RLock because a state proof may
        # sign a checkpoint on the way.
        self._lock = threading.RLock()
        with env.begin(write=True) as txn:
            size, log_size = self._size(txn), self._log_size(txn)
            if size > log_size:
                raise LedgerCorruptError(f"the transparency log has {size} leaves, the ledger "
                                         f"log only {log_size} entries")
            self._append(txn, size, log_size)
        store.add_commit_hook(self._on_commit)

    # --- the tree ---------------------------------------------------------------------------

    def _size(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(_META_SIZE, db=self._meta)
        return 0 if raw is None else int(_U64.unpack(raw)[0])

    def _log_size(self, txn: lmdb.Transaction) -> int:
        cursor = txn.cursor(db=self.store.dbs.log)
        return int.from_bytes(cursor.key(), "big") + 1 if cursor.last() else 0

    def _on_commit(self, txn: lmdb.Transaction, first: int, end: int) -> None:
        size = self._size(txn)
        if size == end:
            return  # another instance over the same store appended them in this transaction
        if size > first:
            raise LedgerCorruptError(f"the transparency log has {size} leaves, but the batch "
                                     f"appends from entry {first}")
        self._append(txn, size, end)

    def _append(self, txn: lmdb.Transaction, size: int, end: int) -> None:
        """Add log entries ``[size, end)`` as leaves, inside ``txn``."""
        if size >= end:
            return
        leaves: list[bytes] = []
        cursor = txn.cursor(db=self.store.dbs.log)
        expected = size
        if cursor.set_key(_U64.pack(size)):
            for key, entry in _items(cursor):
                if expected == end or int.from_bytes(key, "big") != expected:
                    break
                leaves.append(HASHER.leaf_hash(entry))
                expected += 1
        if expected != end:
            raise LedgerCorruptError(f"ledger log entry {expected} is missing")
        self._tree.append(txn, size, leaves)
        txn.put(_META_SIZE, _U64.pack(end), db=self._meta)

    def size(self) -> int:
        with self.env.begin() as txn:
            return self._size(txn)

    def root(self, size: int | None = None) -> bytes:
        with self.env.begin() as txn:
            return self._tree.root(txn, check_size(size, self._size(txn)))

    def leaf_hash(self, index: int) -> bytes:
        with self.env.begin() as txn:
            return self._tree.node(txn, 0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        with self.env.begin() as txn:
            return self._tree.inclusion_proof(txn, index, check_size(size, self._size(txn)))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``old_size`` (>= 1) to ``new_size`` entries."""
        with self.env.begin() as txn:
            new_size = check_size(new_size, self._size(txn))
            return self._tree.consistency_proof(txn, old_size, new_size)

    def verify_tree(self) -> int:
        """Recompute the tree from the ledger log in one snapshot and compare every stored
        node, the size and the last checkpoint's root; returns the size. Raises
        LedgerCorruptError naming the first fault."""
        with self.env.begin() as txn:
            size, log_size = self._size(txn), self._log_size(txn)
            if size != log_size:
                raise LedgerCorruptError(f"the transparency log has {size} leaves, the ledger "
                                         f"log {log_size} entries")
            frontier = merkle.Frontier(HASHER)
            for entry in self.store.iter_log(0, size):
                for level, index, digest in frontier.append(HASHER.leaf_hash(entry)):
                    if self._tree.stored(txn, level, index) != digest:
                        raise LedgerCorruptError(f"transparency tree node ({level}, {index}) "
                                                 "is wrong")
            last = self._last(txn)
            if last is not None and (last.size > size or self._tree.root(
                    txn, last.size) != last.checkpoint.root_hash):
                raise LedgerCorruptError("the last signed checkpoint is not a state of this log")
        return size

    # --- checkpoints ------------------------------------------------------------------------

    def _last(self, txn: lmdb.Transaction) -> _Signed | None:
        raw = txn.get(_META_CHECKPOINT, db=self._meta)
        return None if raw is None else _parse_signed(raw)

    def last_checkpoint(self) -> str | None:
        """The last signed checkpoint note, if any."""
        with self.env.begin() as txn:
            raw = txn.get(_META_CHECKPOINT, db=self._meta)
        return None if raw is None else bytes(raw).decode("utf-8")

    def vkey(self, verify_key: VerifyKey | bytes) -> str:
        """The C2SP verifier key auditors pass to ``n3xus audit`` (name = origin)."""
        return make_vkey(self.origin, verify_key)

    def _refuse_inconsistent(self, txn: lmdb.Transaction, last: _Signed | None) -> None:
        if last is None:
            return
        size = self._size(txn)
        if size < last.size:
            raise CheckpointRefusedError(f"the log has {size} entries, fewer than its last "
                                         f"signed checkpoint of size {last.size}")
        if self._tree.root(txn, last.size) != last.checkpoint.root_hash:
            raise CheckpointRefusedError(f"the log no longer has the root it signed at size "
                                         f"{last.size}")

    def checkpoint(self, signing_key: SigningKey) -> str:
        """Sign a checkpoint of the whole log (and its state) as a C2SP note named after the
        origin, unless the last one already covers the whole log (then that one is
        returned). Raises CheckpointRefusedError rather than sign an inconsistent one. One
        write transaction: the state tree is brought up to date, so (size, root, state)
        belong together."""
        with self._lock, self.env.begin(write=True) as txn:
            size = self._size(txn)
            if size != self._log_size(txn):
                raise LedgerCorruptError("the transparency log is out of step with the log")
            last = self._last(txn)
            self._refuse_inconsistent(txn, last)
            leaves, state_root = self.store.update_tree(txn)
            state = StateCommitment(leaves, state_root)
            root = self._tree.root(txn, size)
            if last is not None and last.size == size:
                if (last.checkpoint.root_hash, last.state) != (root, state):
                    raise CheckpointRefusedError(f"a checkpoint of size {size} with another "
                                                 "root or state was signed before")
                return last.note
            checkpoint = Checkpoint(self.origin, size, root, (state.to_line(),))
            note = checkpoint.sign(self.origin, signing_key)
            txn.put(_META_CHECKPOINT, note.encode("utf-8"), db=self._meta)
            return note

    def _covering(self, note: str | None) -> _Signed:
        """``note`` (default: the last signed checkpoint), checked to be of this log."""
        if note is None:
            note = self.last_checkpoint()
            if note is None:
                raise ProofUnavailableError("no checkpoint has been signed yet")
        signed = _parse_signed(note.encode("utf-8"))
        if signed.checkpoint.origin != self.origin:
            raise ProofUnavailableError(f"checkpoint of another log: {signed.checkpoint.origin}")
        if signed.size > self.size() or self.root(signed.size) != signed.checkpoint.root_hash:
            raise ProofUnavailableError(f"checkpoint of size {signed.size} is not a state of this log")
        return signed

    # --- proofs -----------------------------------------------------------------------------

    def index_of(self, entry: int | CID | bytes) -> int:
        if isinstance(entry, int):
            return entry
        index = self.store.index_of(entry)
        if index is None:
            raise ProofUnavailableError(f"no entry {CID(bytes(entry))} in the ledger log")
        return index

    def inclusion_bundle(self, entry: int | CID | bytes, note: str | None = None) -> str:
        """An offline inclusion proof (``c2sp.org/tlog-proof@v1`` whose ``extra`` is the
        entry) of a log entry, by index or id (transaction, fraud proof, network id),
        against ``note`` (default: the last signed checkpoint)."""
        index = self.index_of(entry)
        signed = self._covering(note)
        if not 0 <= index < signed.size:
            raise ProofUnavailableError(f"entry {index} is not covered by the checkpoint of size "
                                        f"{signed.size}; sign a new checkpoint")
        data = self.store.log_entry(index)
        if len(data) > MAX_EXTRA_BYTES:
            raise ProofUnavailableError(f"entry {index} ({len(data)} bytes) is over the "
                                        f"{MAX_EXTRA_BYTES}-byte tlog-proof extra limit")
        return make_inclusion_bundle(index, self.inclusion_proof(index, signed.size),
                                     signed.note, data)

    def consistency_bundle(self, old_size: int, note: str | None = None) -> str:
        """The proof that the log of ``note`` (default: the last checkpoint) extends the
        log of ``old_size`` entries, as a ``n3xus.net/ledger-consistency/v1`` bundle."""
        signed = self._covering(note)
        if not 1 <= old_size <= signed.size:
            raise ProofUnavailableError(f"old size {old_size} is not in 1..{signed.size}")
        proof = self.consistency_proof(old_size, signed.size) if old_size < signed.size else []
        return ConsistencyBundle(old_size, tuple(proof), signed.note).to_text()

    def state_proof_bundle(self, target: StateTarget, *,
                           signing_key: SigningKey | None = None) -> str:
        """A state proof bundle at the last checkpoint: an account's balance, an edition's
        owner (``(asset, edition)``), or any raw state key; present with its value, or
        absent (zero balance, no owner). When the log has moved since the last checkpoint,
        ``signing_key`` lets it sign a new one first."""
        key = state_key(target)
        if not 1 <= len(key) <= 255:
            raise ValueError("a state key is 1..255 bytes")
        with self._lock:
            if signing_key is not None:
                self.checkpoint(signing_key)  # returns the last one if the log has not moved
            with self.env.begin(write=True) as txn:
                last = self._last(txn)
                if last is None or last.size != self._size(txn):
                    raise ProofUnavailableError(
                        "the state has changed since the last checkpoint (or none was signed); "
                        "sign a checkpoint first")
                leaves, root = self.store.update_tree(txn)
                if StateCommitment(leaves, root) != last.state:
                    raise LedgerCorruptError(f"the state at size {last.size} no longer has the "
                                             "root the checkpoint signed")
                siblings, leaf = self.store.prove(txn, key)
        value = leaf[1] if leaf is not None and leaf[0] == key else None
        other = leaf if leaf is not None and leaf[0] != key else None
        return StateProofBundle(key, value, other, tuple(siblings), last.note).to_text()
