"""The ledger in LMDB: the log of accepted entries, its indexes and the derived state, all
changed in one write transaction per batch, so a crash never leaves them apart.

Named databases of the node's LMDB environment::

    ledger/log    u64 index (big-endian) -> entry bytes (0: the genesis block; then accepted
                  transaction envelopes and fraud proofs, in acceptance order)
    ledger/ids    binary CID of an entry -> u64 index    (transaction id, proof id, genesis)
    ledger/chain  account(32) || seq u64 -> transaction id (for replays and equivocations)
    ledger/state  the state entries of rules.py (balances, heads, supply, assets, ...)

``ledger/state`` is a pure function of ``ledger/log``: :meth:`LedgerStore.rebuild_state`
replays the log from genesis into fresh state and returns the same state root. The state
root is not maintained per transaction (that would cost more than the signature check); it
is computed when asked for, once per log size, normally at checkpoint time.

A batch (:meth:`LedgerStore.ingest`) is one LMDB write transaction: when it returns, every
accepted entry of it is durable, and a crash before that loses the whole batch and nothing
else. Commit hooks (:meth:`LedgerStore.add_commit_hook`) run inside that transaction, so a
transparency log built on top stays in step with the ledger log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, cast

import lmdb

from n3xus.canon.cid import CID

from .errors import LedgerCorruptError, TxRejected
from .fraud import FRAUD_PROOF_PREFIX
from .genesis import Genesis
from .ingest import Accepted, Outcome, ingest, ingest_entry
from .rules import (
    ASSET,
    BALANCE,
    FROZEN,
    HEAD,
    LISTING,
    OWNER,
    SUPPLY,
    Asset,
    Listing,
    edition_key,
    parse_head,
    state_root,
    u64,
)
from .tx import Tx, decode_tx

LOG_DB: Final = b"ledger/log"
IDS_DB: Final = b"ledger/ids"
CHAIN_DB: Final = b"ledger/chain"
STATE_DB: Final = b"ledger/state"

# Rebuilding writes the index entries in chunks of this many log entries, bounding the
# buffers' memory however long the log is.
REPLAY_FLUSH_ENTRIES: Final = 10_000

CommitHook = Callable[[lmdb.Transaction, int, int], None]
"""``hook(txn, first, end)``: log entries ``[first, end)`` were appended in ``txn``."""


def _index_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


@dataclass(frozen=True)
class LedgerDatabases:
    """Handles of the ledger's named databases (for components that read them in their own
    transactions, e.g. the transparency log and state proofs)."""

    log: Any
    ids: Any
    chain: Any
    state: Any


class _LmdbView:
    """The LedgerView of one write transaction.

    State reads and writes go straight to the transaction. Log appends and their index
    entries are buffered and written by :meth:`flush` with one ``putmulti`` per database:
    one C loop instead of three Python-level puts per transaction (the index keys are
    random, so sorted bulk insertion also touches fewer pages). Lookups see the buffers.

    In replay mode the log already holds the entries: ``append`` checks that the entry is
    the one at that index instead of writing it."""

    __slots__ = ("_txn", "_dbs", "first_index", "next_index", "_replay", "_log", "_ids",
                 "_chain", "get", "put", "delete")

    get: Callable[[bytes], bytes | None]
    put: Callable[[bytes, bytes], object]
    delete: Callable[[bytes], object]

    def __init__(self, txn: lmdb.Transaction, dbs: LedgerDatabases, next_index: int,
                 replay: bool = False) -> None:
        self._txn = txn
        self._dbs = dbs
        self.first_index = next_index
        self.next_index = next_index
        self._replay = replay
        self._log: list[tuple[bytes, bytes]] = []
        self._ids: dict[bytes, bytes] = {}
        self._chain: dict[bytes, bytes] = {}
        # The state accessors are the transaction's own methods bound to the state database
        # (partial objects are called in C): they run several times per transaction.
        self.get = cast(Callable[[bytes], bytes | None], partial(txn.get, db=dbs.state))
        self.put = partial(txn.put, db=dbs.state)
        self.delete = partial(txn.delete, db=dbs.state)

    def chain_id(self, account: bytes, seq: int) -> bytes | None:
        key = account + seq.to_bytes(8, "big")
        found = self._chain.get(key)
        if found is None:
            found = cast(bytes | None, self._txn.get(key, db=self._dbs.chain))
        return found

    def entry_by_id(self, entry_id: bytes) -> bytes | None:
        index = self._ids.get(entry_id)
        if index is None:
            index = cast(bytes | None, self._txn.get(entry_id, db=self._dbs.ids))
            if index is None:
                return None
        position = int.from_bytes(index, "big") - self.first_index
        if 0 <= position < len(self._log):
            return self._log[position][1]
        return cast(bytes | None, self._txn.get(index, db=self._dbs.log))

    def append(self, entry: bytes, entry_id: bytes, chain_key: bytes | None) -> int:
        index = self.next_index
        key = _index_key(index)
        if self._replay:
            if self._txn.get(key, db=self._dbs.log) != entry:
                raise LedgerCorruptError(f"replay of log entry {index} produced another entry")
        self._log.append((key, entry))
        self._ids[entry_id] = key
        if chain_key is not None:
            self._chain[chain_key] = entry_id
        self.next_index = index + 1
        return index

    def __len__(self) -> int:
        """Entries appended and not yet flushed."""
        return len(self._log)

    def flush(self) -> None:
        """Write the buffered log entries and index entries into the transaction."""
        txn, dbs = self._txn, self._dbs
        if not self._replay and self._log:
            txn.cursor(db=dbs.log).putmulti(self._log, append=True)
        for db, items in ((dbs.ids, self._ids), (dbs.chain, self._chain)):
            if items:
                _, added = txn.cursor(db=db).putmulti(sorted(items.items()), overwrite=False)
                if added != len(items):
                    raise LedgerCorruptError("an entry id or chain position was already indexed")
        self._log.clear()
        self._ids.clear()
        self._chain.clear()
        self.first_index = self.next_index


class LedgerStore:
    """The ledger of one network in an LMDB environment the node owns.

    The first open writes the genesis block as log entry 0; a later open with a different
    genesis raises LedgerCorruptError (one environment holds one network's ledger)."""

    def __init__(self, env: lmdb.Environment, genesis: Genesis) -> None:
        self._env = env
        self.genesis = genesis
        self.dbs = LedgerDatabases(
            log=env.open_db(LOG_DB), ids=env.open_db(IDS_DB), chain=env.open_db(CHAIN_DB),
            state=env.open_db(STATE_DB),
        )
        self._hooks: list[CommitHook] = []
        self._root_cache: tuple[int, bytes] | None = None
        with env.begin(write=True) as txn:
            stored = txn.get(_index_key(0), db=self.dbs.log)
            if stored is None:
                txn.put(_index_key(0), genesis.block, db=self.dbs.log)
                txn.put(genesis.network_id, _index_key(0), db=self.dbs.ids)
            elif stored != genesis.block:
                raise LedgerCorruptError(
                    f"this store holds the ledger of another network, not {genesis.cid}")

    @property
    def env(self) -> lmdb.Environment:
        return self._env

    def add_commit_hook(self, hook: CommitHook) -> None:
        """Run ``hook(txn, first, end)`` inside every write transaction that appended log
        entries ``[first, end)``, before it commits; an exception aborts the batch."""
        self._hooks.append(hook)

    # --- writing ---------------------------------------------------------------------------

    def _next_index(self, txn: lmdb.Transaction) -> int:
        cursor = txn.cursor(db=self.dbs.log)
        if not cursor.last():
            raise LedgerCorruptError("the ledger log lost its genesis entry")
        return int.from_bytes(cursor.key(), "big") + 1

    def ingest(self, entries: Iterable[bytes], *, verify: bool = True) -> list[Outcome]:
        """Validate and apply a batch in one write transaction; one outcome per entry, in
        order. Rejected entries change nothing; accepted ones are durable on return."""
        with self._env.begin(write=True) as txn:
            first = self._next_index(txn)
            view = _LmdbView(txn, self.dbs, first)
            outcomes = ingest(view, self.genesis, entries, verify)
            view.flush()
            if view.next_index != first:
                for hook in self._hooks:
                    hook(txn, first, view.next_index)
        return outcomes

    def submit(self, entry: bytes) -> Accepted:
        """Ingest one entry; raises its TxRejected if it is rejected."""
        outcome = self.ingest([entry])[0]
        if isinstance(outcome, Accepted):
            return outcome
        raise outcome.error

    def rebuild_state(self, *, verify: bool = True) -> bytes:
        """Drop the derived state and indexes, replay the whole log from genesis into fresh
        ones (one write transaction), and return the state root."""
        with self._env.begin(write=True) as txn:
            dbs = self.dbs
            for db in (dbs.state, dbs.chain, dbs.ids):
                txn.drop(db, delete=False)
            txn.put(self.genesis.network_id, _index_key(0), db=dbs.ids)
            view = _LmdbView(txn, dbs, 1, replay=True)
            cursor = txn.cursor(db=dbs.log)
            logged = cursor.iternext() if cursor.set_range(_index_key(1)) else iter(())
            for key, entry in logged:
                index = int.from_bytes(key, "big")
                if index != view.next_index:
                    raise LedgerCorruptError(f"log index {view.next_index} is missing")
                try:
                    ingest_entry(view, self.genesis, entry, verify)
                except TxRejected as exc:
                    raise LedgerCorruptError(f"log entry {index} does not replay: {exc}") from exc
                if len(view) >= REPLAY_FLUSH_ENTRIES:
                    view.flush()
            view.flush()
            root = state_root(txn.cursor(db=dbs.state).iternext())
            size = view.next_index
        self._root_cache = (size, root)
        return root

    # --- reading ---------------------------------------------------------------------------

    def state_root(self) -> bytes:
        """The root over the current state (cached per log size)."""
        with self._env.begin() as txn:
            size = self._next_index(txn)
            cached = self._root_cache
            if cached is not None and cached[0] == size:
                return cached[1]
            root = state_root(txn.cursor(db=self.dbs.state).iternext())
        self._root_cache = (size, root)
        return root

    def _get(self, key: bytes, db: Any = None) -> bytes | None:
        with self._env.begin() as txn:
            value: bytes | None = txn.get(key, db=self.dbs.state if db is None else db)
        return value

    def log_size(self) -> int:
        with self._env.begin() as txn:
            return self._next_index(txn)

    def log_entry(self, index: int) -> bytes:
        value = self._get(_index_key(index), self.dbs.log)
        if value is None:
            raise IndexError(f"the ledger log has no entry {index}")
        return value

    def iter_log(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Log entries ``[start, end)`` from one read snapshot."""
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self.dbs.log)
            if not cursor.set_range(_index_key(start)):
                return
            for key, value in cursor.iternext():
                if end is not None and int.from_bytes(key, "big") >= end:
                    return
                yield value

    def index_of(self, entry_id: CID | bytes) -> int | None:
        value = self._get(bytes(entry_id), self.dbs.ids)
        return None if value is None else int.from_bytes(value, "big")

    def entry(self, entry_id: CID | bytes) -> bytes | None:
        """The logged bytes of an entry (transaction envelope or fraud proof) by its id."""
        with self._env.begin() as txn:
            index = txn.get(bytes(entry_id), db=self.dbs.ids)
            value: bytes | None = None if index is None else txn.get(index, db=self.dbs.log)
        return value

    def tx(self, tx_id: CID | bytes) -> Tx | None:
        """The accepted transaction with this id (None for unknown ids, the genesis and
        fraud proofs)."""
        data = self.entry(tx_id)
        if (data is None or bytes(tx_id) == self.genesis.network_id
                or data.startswith(FRAUD_PROOF_PREFIX)):
            return None
        return decode_tx(data)

    def balance(self, account: bytes) -> int:
        return u64(self._get(BALANCE + account))

    def supply(self) -> int:
        return u64(self._get(SUPPLY))

    def head(self, account: bytes) -> tuple[int, CID] | None:
        """(seq, id) of the account's last accepted transaction."""
        value = self._get(HEAD + account)
        if value is None:
            return None
        seq, tx_id = parse_head(value)
        return seq, CID(tx_id)

    def is_frozen(self, account: bytes) -> bool:
        return self._get(FROZEN + account) is not None

    def fraud_proof(self, account: bytes) -> bytes | None:
        """The proof that froze ``account`` (to hand on to other nodes), if any."""
        proof_id = self._get(FROZEN + account)
        return None if proof_id is None else self.entry(proof_id)

    def frozen_accounts(self) -> list[bytes]:
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self.dbs.state)
            found: list[bytes] = []
            if cursor.set_range(FROZEN):
                for key in cursor.iternext(values=False):
                    if not key.startswith(FROZEN):
                        break
                    found.append(key[len(FROZEN):])
        return found

    def asset(self, asset: CID) -> Asset | None:
        value = self._get(ASSET + bytes(asset))
        return None if value is None else Asset.from_bytes(value)

    def owner(self, asset: CID, edition: int) -> bytes | None:
        return self._get(edition_key(OWNER, bytes(asset), edition))

    def listing(self, asset: CID, edition: int) -> Listing | None:
        value = self._get(edition_key(LISTING, bytes(asset), edition))
        return None if value is None else Listing.from_bytes(value)

    def state_items(self) -> list[tuple[bytes, bytes]]:
        """Every state entry in key order, from one snapshot (tests and small tools)."""
        with self._env.begin() as txn:
            return list(txn.cursor(db=self.dbs.state).iternext())
