"""Ledger sync, sans network IO (``specs/ledger.md`` §14): what a node announces, what it
asks peers for, and what it answers. The node (or the simulation) owns the transport, the
clock and the peers; it feeds :meth:`LedgerSync.receive` and :meth:`LedgerSync.tick` and
sends the (peer, message) pairs they return.

Two mechanisms, because gossip is best effort:

* **Gossip.** Every entry a node appends to its log (a transaction, a fraud proof, an
  entry released from pending or held) is sent to every peer except the one it came from.
  Receivers drop bytes they have seen before ingesting, so a flood costs one hash per copy.
* **Anti-entropy.** On each tick the node sends a :class:`Query` of its fingerprint of the
  whole account set to one peer chosen at random. Range-based set reconciliation
  (``ranges.py``) narrows the difference one nibble of the account per round trip: the peer
  answers a :class:`Summary` that lists the rows of small differing ranges and splits large
  ones into 16 sub-range fingerprints, which the first node queries again where they
  differ. For each listed account whose summary differs, the first node pulls what the peer
  has beyond its own chain (:class:`Pull` -> :class:`Chain`) and pushes what it has beyond
  the peer's (:class:`Chain`). A node that missed messages, or was down for an hour,
  catches up this way without operator action, whatever the number of accounts.

The per-account summary hashes exactly what decides the state (§10): the account's
transactions below its freeze seq (an XOR of their hashes, so a new transaction costs O(1)
whatever the chain's length), and that seq. Two nodes with equal root fingerprints have
equal states; anti-entropy stops when they agree.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from blake3 import blake3

from n3xus.ledger.errors import LedgerCorruptError
from n3xus.ledger.fraud import FRAUD_PROOF_PREFIX, verify_fraud_proof
from n3xus.ledger.ingest import Outcome
from n3xus.ledger.tx import decode_tx

from .messages import (
    MAX_ENTRIES,
    MAX_PUSHES_PER_SUMMARY,
    ROOT,
    Chain,
    Gossip,
    Message,
    Pull,
    Query,
    Summary,
    SummaryRow,
    gossip_messages,
)
from .ranges import RangeIndex, answer, compare, item_of

ACCOUNT_DIGEST_TAG: Final = b"n3xus/ledger-sync/account/v1\x00"
_NO_FREEZE: Final = b"\xff" * 8
# Gossip hashes remembered, to drop copies before they are decoded: a few minutes of a busy
# network's traffic.
MAX_SEEN: Final = 200_000

Peer = Any  # whatever the caller uses to name a peer (hashable, orderable for determinism)
Send = tuple[Peer, Message]


class SyncLedger(Protocol):
    """What sync needs of a ledger (``LedgerStore`` and ``MemoryLedger`` both are one)."""

    def ingest(self, entries: Iterable[bytes], *, verify: bool = True,
               now_ms: int | None = None) -> list[Outcome]: ...
    def release(self, now_ms: int) -> list[Outcome]: ...
    def log_size(self) -> int: ...
    def iter_log(self, start: int = 0, end: int | None = None) -> Iterable[bytes]: ...
    def accounts(self) -> list[bytes]: ...
    def account_chain(self, account: bytes, from_seq: int = 0) -> list[tuple[int, bytes]]: ...
    def freeze_seq(self, account: bytes) -> int | None: ...
    def entry(self, entry_id: bytes) -> bytes | None: ...
    def fraud_proof(self, account: bytes) -> bytes | None: ...


class LedgerSync:
    """The sync state of one node over its ledger."""

    def __init__(self, ledger: SyncLedger, rng: random.Random | None = None) -> None:
        self.ledger = ledger
        self.rng = rng or random.Random()
        self.peers: dict[Peer, None] = {}
        self._seen: dict[bytes, None] = {}
        self._rows: dict[bytes, SummaryRow] = {}
        self._accumulators: dict[bytes, int] = {}
        self.index = RangeIndex()
        self._announced = ledger.log_size()
        self.counters: dict[str, int] = {"gossip_in": 0, "gossip_dup": 0, "pulled": 0,
                                         "pushed": 0, "queries": 0, "descents": 0}
        for account in ledger.accounts():
            self._refresh(account)

    # --- peers -------------------------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        self.peers[peer] = None

    def remove_peer(self, peer: Peer) -> None:
        self.peers.pop(peer, None)

    # --- summaries -----------------------------------------------------------------------

    def _summary(self, account: bytes) -> tuple[SummaryRow, int]:
        """The account's summary from its whole chain, and its XOR accumulator."""
        freeze = self.ledger.freeze_seq(account)
        accumulator = 0
        next_seq = 0
        for seq, tx_id in self.ledger.account_chain(account):
            if freeze is not None and seq >= freeze:
                break
            accumulator ^= _tx_hash(seq, tx_id)
            if seq == next_seq:
                next_seq += 1
        return _row(account, accumulator, next_seq, freeze), accumulator

    def _set_row(self, account: bytes, row: SummaryRow, accumulator: int) -> None:
        self._rows[account] = row
        self._accumulators[account] = accumulator
        self.index.put(account, item_of(account, row.digest))

    def _refresh(self, account: bytes) -> None:
        """Recompute an account's summary from its chain (start, fraud proofs)."""
        row, accumulator = self._summary(account)
        self._set_row(account, row, accumulator)

    def _add_tx(self, account: bytes, seq: int, tx_id: bytes) -> None:
        """Fold one newly admitted transaction into its account's summary: O(1) plus the
        stretch of chain it completes, however long the chain."""
        row = self._rows[account]
        if row.freeze is not None and seq >= row.freeze:
            return
        accumulator = self._accumulators[account] ^ _tx_hash(seq, tx_id)
        next_seq = row.next_seq
        if seq == next_seq:
            for present, _ in self.ledger.account_chain(account, next_seq):
                if present == next_seq:
                    next_seq += 1
                elif present > next_seq:
                    break
        self._set_row(account, _row(account, accumulator, next_seq, row.freeze), accumulator)

    def digest(self) -> bytes:
        """This node's fingerprint of its whole account set (equal: in sync)."""
        return self.index.fingerprint(ROOT)

    def root_query(self) -> Query:
        return self.index.root_query()

    def row(self, account: bytes) -> SummaryRow | None:
        return self._rows.get(account)

    # --- announcing ----------------------------------------------------------------------

    def announce(self, source: Peer | None = None) -> list[Send]:
        """Gossip every log entry appended since the last call (to all peers but
        ``source``), and bring the summaries of their accounts up to date. The node calls
        this after every ingest it does itself (a client's submit)."""
        size = self.ledger.log_size()
        if size <= self._announced:
            return []
        fresh = list(self.ledger.iter_log(self._announced, size))
        self._announced = size
        refresh: dict[bytes, None] = {}
        for entry in fresh:
            self._remember(entry)
            if entry.startswith(FRAUD_PROOF_PREFIX):
                refresh[verify_fraud_proof(entry).account] = None  # a freeze: recompute
                continue
            try:
                tx = decode_tx(entry)
            except ValueError:
                continue  # the genesis block
            if tx.account in refresh or tx.account not in self._rows:
                # A new account is summarised from its chain after the batch (which already
                # holds the batch's later transactions: folding them too would count twice).
                refresh[tx.account] = None
            else:
                self._add_tx(tx.account, tx.seq, tx.id)
        for account in refresh:
            self._refresh(account)
        sends: list[Send] = []
        for message in gossip_messages(fresh):
            sends += [(peer, message) for peer in self.peers if peer != source]
        return sends

    def _remember(self, entry: bytes) -> bool:
        """Mark ``entry`` seen; False if it was seen before."""
        mark = blake3(entry).digest()[:16]
        if mark in self._seen:
            return False
        self._seen[mark] = None
        if len(self._seen) > MAX_SEEN:
            del self._seen[next(iter(self._seen))]
        return True

    def _ingest(self, entries: Sequence[bytes], source: Peer, now_ms: int | None,
                filter_seen: bool) -> list[Send]:
        """Ingest ``entries``; gossip copies seen before are dropped unread (``filter_seen``),
        pulled ones are not: an entry seen earlier may have been refused then (its
        predecessor missing, a full pending queue) and be admissible now."""
        fresh = [entry for entry in entries if self._remember(entry)] if filter_seen else list(entries)
        self.counters["gossip_dup"] += len(entries) - len(fresh)
        if fresh:
            self.ledger.ingest(fresh, now_ms=now_ms)
        return self.announce(source)

    # --- the protocol ----------------------------------------------------------------------

    def tick(self, now_ms: int) -> list[Send]:
        """Periodic work: release held entries that are due; query one peer's root."""
        released = self.ledger.release(now_ms)
        sends = self.announce() if released else []
        if self.peers:
            peer = self.rng.choice(list(self.peers))
            self.counters["queries"] += 1
            sends.append((peer, self.root_query()))
        return sends

    def receive(self, peer: Peer, message: Message, now_ms: int | None = None) -> list[Send]:
        """Handle one message from ``peer``; returns what to send."""
        if isinstance(message, Gossip):
            self.counters["gossip_in"] += len(message.entries)
            return self._ingest(message.entries, peer, now_ms, True)
        if isinstance(message, Query):
            return [(peer, answer(self.index, self._rows.__getitem__, message))]
        if isinstance(message, Summary):
            return self.on_summary(peer, message)
        if isinstance(message, Pull):
            return [(peer, self._chain(message.account, message.from_seq))]
        assert isinstance(message, Chain)
        self.counters["pulled"] += len(message.entries)
        return self._ingest(message.entries, peer, now_ms, False)

    def on_summary(self, peer: Peer, message: Summary,
                    max_pushes: int = MAX_PUSHES_PER_SUMMARY) -> list[Send]:
        """Queries of the sub-ranges that still differ, then pulls and pushes (at most
        ``max_pushes`` chains) for the accounts of listed ranges whose summaries differ."""
        found = compare(self.index, message)
        sends: list[Send] = [(peer, query) for query in found.query_messages()]
        self.counters["descents"] += len(sends)  # queries of sub-ranges (the root was split)
        pushes = 0
        for where, rows in found.listed:
            if not rows and pushes >= max_pushes:
                continue  # the peer has none of these: only pushes, and none are left
            theirs = {row.account: row for row in rows}
            for account in sorted(theirs.keys() | set(self.index.accounts(where))):
                ours = self._rows.get(account) or SummaryRow(account, b"", 0, None)
                other = theirs.get(account) or SummaryRow(account, b"", 0, None)
                if ours.digest == other.digest:
                    continue
                made = self._reconcile(peer, ours, other, max_pushes - pushes)
                pushes += sum(isinstance(m, Chain) for _, m in made)
                sends += made
        return sends

    def _reconcile(self, peer: Peer, ours: SummaryRow, other: SummaryRow,
                   max_pushes: int) -> list[Send]:
        """Pull what the peer has beyond ``ours``, and push what we have beyond ``other``:
        at most ``max_pushes`` chains (the summary's budget; a later exchange pushes the
        rest), a chain longer than one message in successive chunks."""
        account = ours.account
        pull: int | None = None
        if other.freeze is not None and (ours.freeze is None or other.freeze < ours.freeze):
            pull = other.freeze
        elif other.next_seq > ours.next_seq:
            pull = ours.next_seq
        send_from: int | None = None
        if ours.freeze is not None and (other.freeze is None or ours.freeze < other.freeze):
            send_from = ours.freeze
        elif ours.next_seq > other.next_seq:
            send_from = other.next_seq
        if pull is None and send_from is None:
            pull = send_from = 0  # same lengths and freezes, different transactions: all
        sends: list[Send] = []
        if pull is not None:
            sends.append((peer, Pull(account, pull)))
        if send_from is not None and max_pushes > 0:
            chains = [self._chain(account, send_from)]
            start = send_from + MAX_ENTRIES
            # Below no freeze we hold one transaction per seq up to our next: chunk k of
            # the push starts at send_from + 64k (a frozen chain goes whole: its proof).
            while ours.freeze is None and start < ours.next_seq and len(chains) < max_pushes:
                chains.append(self._chain(account, start))
                start += MAX_ENTRIES
            self.counters["pushed"] += sum(len(chain.entries) for chain in chains)
            sends += [(peer, chain) for chain in chains]
        return sends

    def _chain(self, account: bytes, from_seq: int) -> Chain:
        """This node's entries of ``account`` from ``from_seq``: its fraud proof first when
        it is frozen, then its transactions below the freeze, by seq (at most MAX_ENTRIES)."""
        freeze = self.ledger.freeze_seq(account)
        entries: list[bytes] = []
        if freeze is not None:
            proof = self.ledger.fraud_proof(account)
            if proof is None:
                raise LedgerCorruptError("a frozen account without its proof")
            entries.append(proof)
        for seq, tx_id in self.ledger.account_chain(account, from_seq):
            if len(entries) >= MAX_ENTRIES or (freeze is not None and seq >= freeze):
                break
            entry = self.ledger.entry(tx_id)
            if entry is not None:
                entries.append(entry)
        return Chain(account, tuple(entries))


def _tx_hash(seq: int, tx_id: bytes) -> int:
    return int.from_bytes(blake3(seq.to_bytes(8, "big") + tx_id).digest(), "big")


def _row(account: bytes, accumulator: int, next_seq: int, freeze: int | None) -> SummaryRow:
    digest = blake3(ACCOUNT_DIGEST_TAG + account
                    + (_NO_FREEZE if freeze is None else freeze.to_bytes(8, "big"))
                    + accumulator.to_bytes(32, "big")).digest()
    return SummaryRow(account, digest, next_seq, freeze)

