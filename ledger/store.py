"""The ledger in LMDB: the node's log of admitted entries, the indexes of the set, the
derived state with its undo log and its state tree, all changed in one write transaction
per batch, so a crash never leaves them apart.

Named databases of the node's LMDB environment::

    ledger/log      u64 index (big-endian) -> entry bytes (0: the genesis block; then
                    admitted transaction envelopes and fraud proofs, in arrival order)
    ledger/ids      binary CID of an entry -> locator (engine.locator: u64 log index, plus
                    one byte 1/2 for a transaction known from the fraud proof logged there)
    ledger/chain    account(32) || seq u64 || tx id -> time u64   (the set, per account)
    ledger/order    time u64 || account || seq u64 || tx id -> locator (canonical order)
    ledger/undo     order key -> previous values of the state keys that entry wrote
    ledger/state    the state entries of rules.py (balances, heads, supply, assets, ...)
    ledger/smt      the state tree's committed root (smt.py; the tree itself is in memory)
    ledger/dirty    state key changed since the tree was last brought up to date -> its value
                    now: 01 || value, or 00 when the key is gone (the empty marker of
                    earlier stores means "read ledger/state"), so a checkpoint reads the
                    changes with one scan of this database
    ledger/pending  account || seq u64 || tx id -> envelope waiting for its predecessor
    ledger/held     release time u64 || entry id -> entry dated ahead of the clock

``ledger/state`` is a pure function of the set of admitted transactions (``engine.py``):
:meth:`LedgerStore.rebuild_state` replays the log into fresh state and returns the same
root. The tree is brought up to date lazily (:meth:`LedgerStore.state_root`, checkpoints):
a key changed many times between two checkpoints is hashed once.

A batch (:meth:`LedgerStore.ingest`) is one LMDB write transaction: when it returns, every
admitted entry of it is durable, and a crash before that loses the whole batch and nothing
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

from .engine import (
    MAX_HELD_ENTRIES,
    MAX_PENDING_PER_ACCOUNT,
    load_tx_bytes,
    run_batch,
)
from .errors import EquivocationError, LedgerCorruptError
from .fraud import FRAUD_PROOF_PREFIX, make_fraud_proof
from .genesis import Genesis
from .ingest import Accepted, Outcome, StateCache
from .memory import refuse_unless_applied
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
    u64,
)
from .smt import StateTree, TreeView
from .tx import Tx, decode_tx

LOG_DB: Final = b"ledger/log"
IDS_DB: Final = b"ledger/ids"
CHAIN_DB: Final = b"ledger/chain"
ORDER_DB: Final = b"ledger/order"
UNDO_DB: Final = b"ledger/undo"
STATE_DB: Final = b"ledger/state"
SMT_DB: Final = b"ledger/smt"
DIRTY_DB: Final = b"ledger/dirty"
PENDING_DB: Final = b"ledger/pending"
HELD_DB: Final = b"ledger/held"

# A ledger/dirty value: the key's value now follows (01), or the key was deleted (00). The
# empty value, written by stores before values were kept here, is still read (from the state).
DIRTY_PRESENT: Final = b"\x01"
DIRTY_DELETED: Final = b"\x00"

# Rebuilding replays the log in chunks of this many entries per engine batch, bounding the
# batch's memory however long the log is.
REPLAY_CHUNK_ENTRIES: Final = 10_000

CommitHook = Callable[[lmdb.Transaction, int, int], None]
"""``hook(txn, first, end)``: log entries ``[first, end)`` were appended in ``txn``."""


def _items(cursor: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    return cast(Iterator[tuple[bytes, bytes]], cursor.iternext())


def _index_key(index: int) -> bytes:
    return index.to_bytes(8, "big")


@dataclass(frozen=True)
class LedgerDatabases:
    """Handles of the ledger's named databases (for components that read them in their own
    transactions, e.g. the transparency log and state proofs)."""

    log: Any
    ids: Any
    chain: Any
    order: Any
    undo: Any
    state: Any
    smt: Any
    dirty: Any
    pending: Any
    held: Any


def _prefix_items(cursor: lmdb.Cursor, low: bytes, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Items from ``low`` on while their keys start with ``prefix`` (bytes: no environment
    opens buffers=True)."""
    if not cursor.set_range(low):
        return
    for key, value in cast(Iterator[tuple[bytes, bytes]], cursor.iternext()):
        if not key.startswith(prefix):
            return
        yield key, value


class _LmdbBatch:
    """The engine's Batch over one write transaction. ``replay`` re-admits the entries of
    the log (rebuilding): appending checks the entry is already there at that index."""

    def __init__(self, txn: lmdb.Transaction, dbs: LedgerDatabases, next_index: int,
                 replay: bool = False) -> None:
        self._txn = txn
        self._dbs = dbs
        self.first_index = next_index
        self.next_index = next_index
        self._replay = replay
        self._chain_cursor = txn.cursor(db=dbs.chain)
        # Most batches find the waiting room empty: skip its scans then.
        self._pending = txn.stat(dbs.pending)["entries"] > 0
        # Every state read and write of the batch goes through one cache (the twins'
        # StateCache): a key written many times in a batch is written to LMDB once, at
        # flush_dirty, and the cache collects the keys the tree must hash again.
        state = StateCache(cast(Callable[[bytes], bytes | None], partial(txn.get, db=dbs.state)),
                           lambda items: txn.cursor(db=dbs.state).putmulti(items),
                           partial(txn.delete, db=dbs.state))
        self._state = state
        self.get = state.get
        self.put = state.put
        self.delete = state.delete
        self.dirty = state.dirty
        self.locator = cast(Callable[[bytes], bytes | None], partial(txn.get, db=dbs.ids))
        self._put_ids = partial(txn.put, db=dbs.ids)
        self._put_log = partial(txn.put, db=dbs.log)
        self._put_chain = partial(txn.put, db=dbs.chain)
        self._put_order = partial(txn.put, db=dbs.order)
        self.undo_put = cast(Callable[[bytes, bytes], None], partial(txn.put, db=dbs.undo))

    def set_locator(self, entry_id: bytes, where: bytes) -> None:
        self._txn.put(entry_id, where, db=self._dbs.ids)

    def append_log(self, entry: bytes) -> int:
        return self._append_log(entry)[0]

    def _append_log(self, entry: bytes) -> tuple[int, bytes]:
        """``append_log``, also returning the entry's locator."""
        index = self.next_index
        where = _index_key(index)
        if self._replay:
            if self._txn.get(where, db=self._dbs.log) != entry:
                raise LedgerCorruptError(f"replay of log entry {index} produced another entry")
        elif not self._put_log(where, entry, append=True):
            raise LedgerCorruptError(f"log entry {index} exists already")
        self.next_index = index + 1
        return index, where

    def log_entry(self, index: int) -> bytes:
        entry = self._txn.get(_index_key(index), db=self._dbs.log)
        if entry is None:
            raise LedgerCorruptError(f"log entry {index} is missing")
        return cast(bytes, entry)

    def index_tx(self, tx_id: bytes, account: bytes, seq: int, time_ms: int,
                 where: bytes) -> bytes:
        """A transaction joins the set: its locator, chain and order entries (the admission
        hot path: the keys built once, the puts bound to their databases once per batch)."""
        at = account + seq.to_bytes(8, "big") + tx_id
        time_bytes = time_ms.to_bytes(8, "big")
        key = time_bytes + at
        self._put_ids(tx_id, where)
        self._put_chain(at, time_bytes)
        self._put_order(key, where)
        return key

    def add_tx(self, tx: Tx) -> tuple[int, bytes]:
        """``append_log`` + ``index_tx`` in one call (the admission hot path)."""
        index, where = self._append_log(tx.raw)
        return index, self.index_tx(tx.id, tx.account, tx.seq, tx.time, where)

    def chain_ids(self, account: bytes, seq: int) -> list[bytes]:
        prefix = account + seq.to_bytes(8, "big")
        cursor = self._chain_cursor  # the hot path: one positioned cursor, no generator
        found: list[bytes] = []
        if not cursor.set_range(prefix):
            return found
        key = cast(bytes, cursor.key())
        while key[:40] == prefix:
            found.append(key[40:])
            if not cursor.next():
                break
            key = cast(bytes, cursor.key())
        return found

    def chain_pair(self, account: bytes, seq: int) -> tuple[bool, list[bytes]]:
        """One positioned scan from ``seq - 1`` (the hot path of admission)."""
        cursor = self._chain_cursor
        at = account + seq.to_bytes(8, "big")
        start = account + (seq - 1).to_bytes(8, "big") if seq else at
        if not cursor.set_range(start):
            return False, []
        key = cast(bytes, cursor.key())
        previous = False
        if seq and key[:40] == start:
            previous = True
            while key[:40] == start:  # more than one only after an equivocation
                if not cursor.next():
                    return previous, []
                key = cast(bytes, cursor.key())
        found: list[bytes] = []
        while key[:40] == at:
            found.append(key[40:])
            if not cursor.next():
                break
            key = cast(bytes, cursor.key())
        return previous, found

    def chain_from(self, account: bytes, seq: int) -> Iterator[tuple[int, bytes, int]]:
        cursor = self._txn.cursor(db=self._dbs.chain)
        found = [(int.from_bytes(key[32:40], "big"), key[40:], int.from_bytes(value, "big"))
                 for key, value in _prefix_items(cursor, account + seq.to_bytes(8, "big"),
                                                 account)]
        return iter(found)

    def order_from(self, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor(db=self._dbs.order)
        if not cursor.set_range(key):
            return iter(())
        return cast(Iterator[tuple[bytes, bytes]], cursor.iternext())

    def undo_pop_from(self, key: bytes) -> list[bytes]:
        cursor = self._txn.cursor(db=self._dbs.undo)
        records: list[bytes] = []
        while cursor.last() and cast(bytes, cursor.key()) >= key:
            records.append(cast(bytes, cursor.value()))
            cursor.delete()
        return records

    def pending_add(self, account: bytes, seq: int, tx_id: bytes, entry: bytes) -> bool:
        cursor = self._txn.cursor(db=self._dbs.pending)
        waiting = sum(1 for _ in _prefix_items(cursor, account, account))
        if waiting >= MAX_PENDING_PER_ACCOUNT:
            return False
        self._txn.put(account + seq.to_bytes(8, "big") + tx_id, entry, db=self._dbs.pending)
        self._pending = True
        return True

    def pending_take(self, account: bytes, seq: int) -> list[bytes]:
        if not self._pending:
            return []
        prefix = account + seq.to_bytes(8, "big")
        cursor = self._txn.cursor(db=self._dbs.pending)
        found = list(_prefix_items(cursor, prefix, prefix))
        for key, _ in found:
            self._txn.delete(key, db=self._dbs.pending)
        return [value for _, value in found]

    def held_add(self, release_ms: int, entry_id: bytes, entry: bytes) -> bool:
        if self._txn.stat(self._dbs.held)["entries"] >= MAX_HELD_ENTRIES:
            return False
        self._txn.put(release_ms.to_bytes(8, "big") + entry_id, entry, db=self._dbs.held)
        return True

    def flush_state(self, forget: bool = False) -> None:
        """Write the batch's state changes to LMDB (``forget``: and empty the cache)."""
        self._state.flush(forget)

    def flush_dirty(self) -> None:
        """Write the state changes, and the changed keys with their values for the tree (in
        the same write transaction: a crash keeps or loses both; a later batch's value of a
        key overwrites this one)."""
        self._state.flush()
        if self.dirty:
            get = self._state.get  # the cache's value, or LMDB's after the flush above
            items = []
            for key in sorted(self.dirty):
                value = get(key)
                items.append((key, DIRTY_DELETED if value is None else DIRTY_PRESENT + value))
            self._txn.cursor(db=self._dbs.dirty).putmulti(items)
            self.dirty.clear()


class LedgerStore:
    """The ledger of one network in an LMDB environment the node owns.

    The first open writes the genesis block as log entry 0; a later open with a different
    genesis raises LedgerCorruptError (one environment holds one network's ledger)."""

    def __init__(self, env: lmdb.Environment, genesis: Genesis) -> None:
        self._env = env
        self.genesis = genesis
        self.dbs = LedgerDatabases(
            log=env.open_db(LOG_DB), ids=env.open_db(IDS_DB), chain=env.open_db(CHAIN_DB),
            order=env.open_db(ORDER_DB), undo=env.open_db(UNDO_DB), state=env.open_db(STATE_DB),
            smt=env.open_db(SMT_DB), dirty=env.open_db(DIRTY_DB),
            pending=env.open_db(PENDING_DB), held=env.open_db(HELD_DB),
        )
        self._hooks: list[CommitHook] = []
        self._state_tree = StateTree()  # the state tree in memory, checked per transaction
        self.replays = 0  # entries re-processed because an arrival sorted before them
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

    def _run(self, entries: Iterable[bytes | Tx], verify: bool, now_ms: int | None,
             check: Callable[[list[Outcome]], None] | None) -> list[Outcome]:
        with self._env.begin(write=True) as txn:
            first = self._next_index(txn)
            batch = _LmdbBatch(txn, self.dbs, first)
            outcomes, run = run_batch(batch, self.genesis, entries, verify=verify, now_ms=now_ms)
            if check is not None:
                check(outcomes)
            batch.flush_dirty()
            if batch.next_index != first:
                for hook in self._hooks:
                    hook(txn, first, batch.next_index)
        self.replays += run.replays
        return outcomes

    def ingest(self, entries: Iterable[bytes | Tx], *, verify: bool = True,
               now_ms: int | None = None) -> list[Outcome]:
        """Admit a batch (arrival order) in one write transaction and bring the state to the
        canonical replay of the grown set; one outcome per entry. ``now_ms`` (the node's
        clock) holds entries dated ahead of it; None admits them as they are. An entry may
        be a :class:`Tx` decoded from its bytes (``decode_envelope``), saving a decode."""
        return self._run(entries, verify, now_ms, None)

    def submit(self, entry: bytes, *, now_ms: int | None = None) -> Accepted:
        """A local client's transaction: kept only if it takes effect where it sorts, else
        its TxRejected is raised and nothing is kept. An equivocation is kept (the account
        is frozen) and raised as EquivocationError."""
        outcome = self._run([entry], True, now_ms, refuse_unless_applied)[0]
        assert isinstance(outcome, Accepted)
        if isinstance(outcome.result, EquivocationError):
            raise outcome.result
        return outcome

    def release(self, now_ms: int) -> list[Outcome]:
        """Admit the held entries whose release time has come (the node calls this as its
        clock advances)."""
        with self._env.begin(write=True) as txn:
            cursor = txn.cursor(db=self.dbs.held)
            due: list[bytes] = []
            if cursor.first():
                for key, value in cursor.iternext():
                    if int.from_bytes(key[:8], "big") > now_ms:
                        break
                    due.append(value)
            if not due:
                return []
            for _ in range(len(due)):
                cursor.first()
                cursor.delete()
        return self.ingest(due, now_ms=now_ms)

    def rebuild_state(self, *, verify: bool = True) -> bytes:
        """Drop the derived state, indexes, undo log and tree, re-admit the whole log from
        genesis into fresh ones (one write transaction), and return the state root."""
        with self._env.begin(write=True) as txn:
            dbs = self.dbs
            for db in (dbs.state, dbs.chain, dbs.ids, dbs.order, dbs.undo, dbs.smt, dbs.dirty):
                txn.drop(db, delete=False)
            txn.put(self.genesis.network_id, _index_key(0), db=dbs.ids)
            size = self._next_index(txn)
            batch = _LmdbBatch(txn, dbs, 1, replay=True)
            for start in range(1, size, REPLAY_CHUNK_ENTRIES):
                cursor = txn.cursor(db=dbs.log)
                cursor.set_key(_index_key(start))
                chunk = [item[1] for _, item in zip(range(REPLAY_CHUNK_ENTRIES), cursor.iternext(),
                                                    strict=False)]
                outcomes, _ = run_batch(batch, self.genesis, chunk, verify=verify)
                batch.flush_state(forget=True)  # the cache holds one chunk's keys at most
                for offset, outcome in enumerate(outcomes):
                    if not isinstance(outcome, Accepted):
                        raise LedgerCorruptError(f"log entry {start + offset} is not admitted "
                                                 f"again: {outcome}")
            if batch.next_index != size:
                raise LedgerCorruptError(f"the log replayed to {batch.next_index} entries, not {size}")
            batch.dirty.clear()
            tree = self._tree(txn)
            root, nodes = tree.bulk_load(_items(txn.cursor(db=dbs.state)))
            txn.cursor(db=dbs.smt).putmulti(nodes, append=True)
        return root

    # --- the state tree --------------------------------------------------------------------

    def _tree(self, txn: lmdb.Transaction) -> TreeView:
        return self._state_tree.view(txn, self.dbs.state, self.dbs.smt)

    def update_tree(self, txn: lmdb.Transaction) -> tuple[int, bytes]:
        """Bring the state tree up to date inside a write transaction: (leaves, root)."""
        dbs = self.dbs
        changes: list[tuple[bytes, bytes | None]] = []
        for key, marked in _items(txn.cursor(db=dbs.dirty)):
            if marked[:1] == DIRTY_PRESENT:
                changes.append((key, marked[1:]))
            elif marked == DIRTY_DELETED:
                changes.append((key, None))
            elif not marked:  # an earlier store's marker: the value is in the state
                changes.append((key, cast(bytes | None, txn.get(key, db=dbs.state))))
            else:
                raise LedgerCorruptError(f"ledger/dirty holds {marked[:8].hex()} for a key")
        if changes:
            txn.drop(dbs.dirty, delete=False)
        # Called with no change too: that records the root where none is yet (a store of
        # an earlier tree layout), so reads find it instead of rebuilding the tree.
        return txn.stat(dbs.state)["entries"], self._tree(txn).update(changes)

    def tree_is_current(self, txn: lmdb.Transaction) -> bool:
        return txn.stat(self.dbs.dirty)["entries"] == 0

    def prove(self, txn: lmdb.Transaction, key: bytes) -> tuple[list[bytes], tuple[bytes, bytes] | None]:
        """Siblings and the leaf (key, value) where ``key``'s path ends, in ``txn`` (whose
        tree must be current)."""
        siblings, content = self._tree(txn).walk(key)
        if content is None:
            return siblings, None
        leaf_key = content[1]
        assert leaf_key is not None
        value = txn.get(leaf_key, db=self.dbs.state)
        if value is None:
            raise LedgerCorruptError("the state tree has a leaf for a key not in the state")
        return siblings, (leaf_key, cast(bytes, value))

    def state_root(self) -> bytes:
        """The root over the current state (brings the tree up to date first)."""
        with self._env.begin() as txn:
            if self.tree_is_current(txn):
                return self._tree(txn).root()
        with self._env.begin(write=True) as txn:
            return self.update_tree(txn)[1]

    # --- reading ---------------------------------------------------------------------------

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
        """The log index of an entry (for a transaction known from a fraud proof: the
        proof's)."""
        value = self._get(bytes(entry_id), self.dbs.ids)
        return None if value is None else int.from_bytes(value[:8], "big")

    def has(self, entry_id: CID | bytes) -> bool:
        return self._get(bytes(entry_id), self.dbs.ids) is not None

    def entry(self, entry_id: CID | bytes) -> bytes | None:
        """The bytes of an entry of the set (transaction envelope or fraud proof) by id."""
        with self._env.begin() as txn:
            where = txn.get(bytes(entry_id), db=self.dbs.ids)
            if where is None:
                return None
            return load_tx_bytes(_LmdbBatch(txn, self.dbs, 0), bytes(where))

    def tx(self, tx_id: CID | bytes) -> Tx | None:
        """The transaction with this id in the set (None for unknown ids, the genesis and
        fraud proofs)."""
        data = self.entry(tx_id)
        if (data is None or bytes(tx_id) == self.genesis.network_id
                or data.startswith(FRAUD_PROOF_PREFIX)):
            return None
        return decode_tx(data)

    def account_chain(self, account: bytes, from_seq: int = 0) -> list[tuple[int, bytes]]:
        """(seq, tx id) of the account's transactions in the set, by seq then id."""
        with self._env.begin() as txn:
            return [(seq, tx_id) for seq, tx_id, _ in
                    _LmdbBatch(txn, self.dbs, 0).chain_from(account, from_seq)]

    def accounts(self, after: bytes = b"", limit: int = 1 << 62) -> list[bytes]:
        """Accounts with a transaction in the set, ascending, after ``after``."""
        found: list[bytes] = []
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self.dbs.chain)
            key = after + b"\xff" * 44 if after else b""
            while len(found) < limit and cursor.set_range(key):
                account = bytes(cursor.key()[:32])
                found.append(account)
                key = account + b"\xff" * 44
        return found

    def balance(self, account: bytes) -> int:
        return u64(self._get(BALANCE + account))

    def supply(self) -> int:
        return u64(self._get(SUPPLY))

    def head(self, account: bytes) -> tuple[int, CID] | None:
        """(seq, id) of the account's last transaction that took its place in the chain."""
        value = self._get(HEAD + account)
        if value is None:
            return None
        seq, tx_id = parse_head(value)
        return seq, CID(tx_id)

    def freeze_seq(self, account: bytes) -> int | None:
        value = self._get(FROZEN + account)
        return None if value is None else int.from_bytes(value, "big")

    def is_frozen(self, account: bytes) -> bool:
        return self._get(FROZEN + account) is not None

    def fraud_proof(self, account: bytes) -> bytes | None:
        """A proof that froze ``account`` (of the two lowest ids at its freeze seq), to hand
        on to other nodes."""
        seq = self.freeze_seq(account)
        if seq is None:
            return None
        ids = [tx_id for at, tx_id in self.account_chain(account, seq) if at == seq][:2]
        if len(ids) != 2:
            raise LedgerCorruptError("a frozen account lacks its two transactions")
        first, second = (self.entry(tx_id) for tx_id in ids)
        assert first is not None and second is not None
        return make_fraud_proof(first, second)

    def frozen_accounts(self) -> list[bytes]:
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self.dbs.state)
            return [bytes(key[1:]) for key, _ in _prefix_items(cursor, FROZEN, FROZEN)]

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
