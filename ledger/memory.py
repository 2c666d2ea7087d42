"""The ledger in memory: the same engine (``engine.py``) over dicts and sorted maps.

Used by auditors (``audit replay`` of an export), by the deterministic simulation (a
thousand ledgers in one process) and by tests. It admits, orders, rolls back and replays
exactly as the LMDB store does; its state root is computed from scratch with
:func:`smt.root_of`, which the store's incremental tree must equal (tested).

A batch that raises leaves the ledger as it was: every mutation of a batch is journaled
and undone in reverse order, as an aborted LMDB write transaction would be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from .engine import (
    MAX_HELD_ENTRIES,
    MAX_PENDING_PER_ACCOUNT,
    Run,
    load_tx_bytes,
    locator,
    order_key,
    run_batch,
)
from .errors import EquivocationError, LedgerCorruptError, TxRejected
from .fraud import make_fraud_proof
from .genesis import Genesis
from .ingest import VOID_REASONS, Accepted, Outcome, Rejected
from .rules import BALANCE, FROZEN, HEAD, u64
from .smt import root_of
from .tx import Tx, decode_tx


def _chain_key(account: bytes, seq: int, tx_id: bytes = b"") -> bytes:
    return account + seq.to_bytes(8, "big") + tx_id


class _MemoryBatch:
    """The engine's Batch over a :class:`MemoryLedger`, journaling for abort."""

    def __init__(self, ledger: MemoryLedger) -> None:
        self.ledger = ledger
        self.journal: list[Callable[[], object]] = []

    def _set(self, table: Any, key: Any, value: Any) -> None:
        if key in table:
            old = table[key]
            self.journal.append(lambda: table.__setitem__(key, old))
        else:
            self.journal.append(lambda: table.pop(key, None))
        table[key] = value

    def _pop(self, table: Any, key: Any) -> None:
        if key in table:
            old = table.pop(key)
            self.journal.append(lambda: table.__setitem__(key, old))

    def abort(self) -> None:
        for undo in reversed(self.journal):
            undo()
        self.journal.clear()

    # state
    def get(self, key: bytes) -> bytes | None:
        return self.ledger.state.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._set(self.ledger.state, key, value)

    def delete(self, key: bytes) -> None:
        self._pop(self.ledger.state, key)

    # the set and the log
    def locator(self, entry_id: bytes) -> bytes | None:
        return self.ledger.locators.get(entry_id)

    def set_locator(self, entry_id: bytes, where: bytes) -> None:
        self._set(self.ledger.locators, entry_id, where)

    def append_log(self, entry: bytes) -> int:
        log = self.ledger.log
        log.append(entry)
        self.journal.append(log.pop)
        return len(log) - 1

    def log_entry(self, index: int) -> bytes:
        return self.ledger.log[index]

    def chain_add(self, account: bytes, seq: int, tx_id: bytes, time_ms: int) -> None:
        self._set(self.ledger.chain, _chain_key(account, seq, tx_id), time_ms)

    def index_tx(self, tx_id: bytes, account: bytes, seq: int, time_ms: int,
                 where: bytes) -> bytes:
        self.set_locator(tx_id, where)
        self.chain_add(account, seq, tx_id, time_ms)
        key = order_key(time_ms, account, seq, tx_id)
        self.order_add(key, where)
        return key

    def add_tx(self, tx: Tx) -> tuple[int, bytes]:
        index = self.append_log(tx.raw)
        return index, self.index_tx(tx.id, tx.account, tx.seq, tx.time, locator(index))

    def chain_ids(self, account: bytes, seq: int) -> list[bytes]:
        prefix = _chain_key(account, seq)
        return [key[40:] for key in self.ledger.chain.irange(prefix, prefix + b"\xff" * 37)
                if key.startswith(prefix)]

    def chain_pair(self, account: bytes, seq: int) -> tuple[bool, list[bytes]]:
        return seq > 0 and bool(self.chain_ids(account, seq - 1)), self.chain_ids(account, seq)

    def chain_from(self, account: bytes, seq: int) -> Iterator[tuple[int, bytes, int]]:
        chain = self.ledger.chain
        found = [(int.from_bytes(key[32:40], "big"), key[40:], chain[key])
                 for key in chain.irange(_chain_key(account, seq), account + b"\xff" * 45)
                 if key[:32] == account]
        return iter(found)

    # order and undo
    def order_add(self, key: bytes, where: bytes) -> None:
        self._set(self.ledger.order, key, where)

    def order_from(self, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        order = self.ledger.order
        return iter([(found, order[found]) for found in order.irange(minimum=key)])

    def undo_put(self, key: bytes, record: bytes) -> None:
        self._set(self.ledger.undo, key, record)

    def undo_pop_from(self, key: bytes) -> list[bytes]:
        undo = self.ledger.undo
        keys = list(undo.irange(minimum=key, reverse=True))
        records = [undo[found] for found in keys]
        for found in keys:
            self._pop(undo, found)
        return records

    # waiting rooms
    def pending_add(self, account: bytes, seq: int, tx_id: bytes, entry: bytes) -> bool:
        pending = self.ledger.pending
        key = _chain_key(account, seq, tx_id)
        count = sum(1 for found in pending.irange(account, account + b"\xff" * 45)
                    if found[:32] == account)
        if key not in pending and count >= MAX_PENDING_PER_ACCOUNT:
            return False
        self._set(pending, key, entry)
        return True

    def pending_take(self, account: bytes, seq: int) -> list[bytes]:
        pending = self.ledger.pending
        prefix = _chain_key(account, seq)
        keys = [key for key in pending.irange(prefix, prefix + b"\xff" * 37)
                if key.startswith(prefix)]
        entries = [pending[key] for key in keys]
        for key in keys:
            self._pop(pending, key)
        return entries

    def held_add(self, release_ms: int, entry_id: bytes, entry: bytes) -> bool:
        held = self.ledger.held
        key = release_ms.to_bytes(8, "big") + entry_id
        if key not in held and len(held) >= MAX_HELD_ENTRIES:
            return False
        self._set(held, key, entry)
        return True


class MemoryLedger:
    """One network's ledger in memory, starting from its genesis (log entry 0)."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.state: dict[bytes, bytes] = {}
        self.log: list[bytes] = [genesis.block]
        self.locators: dict[bytes, bytes] = {genesis.network_id: (0).to_bytes(8, "big")}
        self.chain: SortedDict = SortedDict()  # account || seq || id -> time
        self.order: SortedDict = SortedDict()  # order key -> locator
        self.undo: SortedDict = SortedDict()  # order key -> undo record
        self.pending: SortedDict = SortedDict()  # account || seq || id -> entry
        self.held: SortedDict = SortedDict()  # release time || id -> entry
        self.replays = 0  # entries re-processed because an arrival sorted before them
        self._root: tuple[int, bytes] | None = None

    def ingest(self, entries: Iterable[bytes | Tx], *, verify: bool = True,
               now_ms: int | None = None) -> list[Outcome]:
        """Admit ``entries`` (arrival order) and bring the state to the canonical replay."""
        outcomes, _ = self._batch(entries, verify, now_ms, None)
        return outcomes

    def _batch(self, entries: Iterable[bytes | Tx], verify: bool, now_ms: int | None,
               check: Callable[[list[Outcome]], None] | None) -> tuple[list[Outcome], Run]:
        batch = _MemoryBatch(self)
        try:
            outcomes, run = run_batch(batch, self.genesis, entries, verify=verify, now_ms=now_ms)
            if check is not None:
                check(outcomes)
        except BaseException:
            batch.abort()
            raise
        self.replays += run.replays
        self._root = None
        return outcomes, run

    def submit(self, entry: bytes, *, now_ms: int | None = None) -> Accepted:
        """A client's transaction: kept only if it takes effect where it sorts (else
        TxRejected, nothing kept); an equivocation is kept (it freezes the account) and
        raised as EquivocationError."""
        outcomes, _ = self._batch([entry], True, now_ms, refuse_unless_applied)
        outcome = outcomes[0]
        assert isinstance(outcome, Accepted)
        if isinstance(outcome.result, EquivocationError):
            raise outcome.result
        return outcome

    def release(self, now_ms: int) -> list[Outcome]:
        """Admit the held entries whose time has come."""
        due = [key for key in self.held.irange(maximum=now_ms.to_bytes(8, "big") + b"\xff" * 40)]
        entries = [self.held.pop(key) for key in due]
        return self.ingest(entries, now_ms=now_ms) if entries else []

    # --- reading -------------------------------------------------------------------------

    def state_root(self) -> bytes:
        size = len(self.log)
        if self._root is None or self._root[0] != size:
            self._root = (size, root_of(self.state.items()))
        return self._root[1]

    def get(self, key: bytes) -> bytes | None:
        return self.state.get(key)

    def balance(self, account: bytes) -> int:
        return u64(self.state.get(BALANCE + account))

    def head(self, account: bytes) -> tuple[int, bytes] | None:
        value = self.state.get(HEAD + account)
        return None if value is None else (int.from_bytes(value[:8], "big"), value[8:])

    def freeze_seq(self, account: bytes) -> int | None:
        value = self.state.get(FROZEN + account)
        return None if value is None else int.from_bytes(value, "big")

    def has(self, entry_id: bytes) -> bool:
        return entry_id in self.locators

    def entry(self, entry_id: bytes) -> bytes | None:
        """The bytes of an entry of the set (a transaction known only from a fraud proof:
        its envelope as embedded there)."""
        where = self.locators.get(entry_id)
        return None if where is None else load_tx_bytes(_MemoryBatch(self), where)

    def fraud_proof(self, account: bytes) -> bytes | None:
        """A proof that froze ``account`` (of the two lowest ids at its freeze seq)."""
        seq = self.freeze_seq(account)
        if seq is None:
            return None
        ids = [tx_id for at, tx_id in self.account_chain(account, seq) if at == seq][:2]
        first, second = (self.entry(tx_id) for tx_id in ids)
        if first is None or second is None:
            raise LedgerCorruptError("a frozen account lacks its two transactions")
        return make_fraud_proof(first, second)

    def log_size(self) -> int:
        return len(self.log)

    def iter_log(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        return iter(self.log[start:end])

    def account_chain(self, account: bytes, from_seq: int = 0) -> list[tuple[int, bytes]]:
        """(seq, tx id) of the account's transactions in the set, by seq then id."""
        return [(seq, tx_id) for seq, tx_id, _ in _MemoryBatch(self).chain_from(account, from_seq)]

    def accounts(self) -> list[bytes]:
        """Accounts with a transaction in the set, ascending."""
        found: list[bytes] = []
        for key in self.chain:
            if not found or found[-1] != key[:32]:
                found.append(key[:32])
        return found


def refuse_unless_applied(outcomes: list[Outcome]) -> None:
    """The local-client policy of ``submit``: raise the reason unless the one entry took
    effect (an equivocation is kept: the freeze is the network's business)."""
    outcome = outcomes[0]
    if isinstance(outcome, Rejected):
        raise outcome.error
    if not isinstance(outcome, Accepted):
        raise TxRejected(*_not_now(outcome))
    if outcome.result is not None and not isinstance(outcome.result, EquivocationError):
        raise outcome.result


def _not_now(outcome: Outcome) -> tuple[Any, str]:
    from .errors import Reason
    from .ingest import Held, Pending

    if isinstance(outcome, Pending):
        return Reason.BAD_SEQ, f"seq {outcome.seq}: the account's previous transaction is unknown"
    assert isinstance(outcome, Held)
    return Reason.TOO_EARLY, f"dated ahead of this node's clock (held until {outcome.release_ms})"


def replay_log(entries: Iterable[bytes], genesis: Genesis | None = None,
               verify: bool = True) -> MemoryLedger:
    """Rebuild a ledger from a log (entry 0 is the genesis block): every entry must be
    admitted at its own index, else LedgerCorruptError names the first that is not."""
    iterator = iter(entries)
    first = next(iterator, None)
    if first is None:
        raise LedgerCorruptError("the log is empty (entry 0 must be the genesis block)")
    found = Genesis.from_bytes(first)
    if genesis is not None and found.block != genesis.block:
        raise LedgerCorruptError(f"the log is of network {found.cid}, not {genesis.cid}")
    ledger = MemoryLedger(found)
    for index, entry in enumerate(iterator, start=1):
        outcome = ledger.ingest([entry], verify=verify)[0]
        if not isinstance(outcome, Accepted) or outcome.log_index != index:
            raise LedgerCorruptError(f"log entry {index} is not admitted again: {outcome}")
    return ledger


def is_void(result: TxRejected | None) -> bool:
    return result is not None and result.reason in VOID_REASONS


def decode_entry_tx(entry: bytes) -> Tx:
    return decode_tx(entry)
