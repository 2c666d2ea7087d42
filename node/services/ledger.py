"""The node's ledger: the LMDB-backed store of the configured network, and JSON views
of its transactions, accounts and assets for the API.

Submissions arrive as signed envelopes (signed by wallets, never by the node on a
user's behalf). Each submit is one LMDB write transaction: state, log and the
transparency tree change together or not at all, and an acknowledged transaction is
on disk (LMDB ``sync=True``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import lmdb
from nacl.signing import SigningKey

from n3xus.canon.cid import CID
from n3xus.ledger.errors import EquivocationError, TxRejected
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Accepted
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.transparency import StateTarget, TransparencyLog, ledger_origin
from n3xus.ledger.tx import Tx, decode_tx


def _view(value: Any) -> Any:
    """JSON view of ledger values: accounts (32 bytes) and other bytes as hex, CIDs as
    text."""
    if isinstance(value, CID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _view(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_view(v) for v in value]
    return value


def tx_view(tx: Tx) -> dict[str, Any]:
    return {
        "id": str(CID(tx.id)), "op": str(tx.op), "account": tx.account.hex(), "seq": tx.seq,
        "prev": None if tx.prev is None else str(CID(tx.prev)), "time": tx.time,
        "network": str(CID(tx.network)), "args": _view(tx.args),
    }


def genesis_view(genesis: Genesis) -> dict[str, Any]:
    doc = _view(genesis.to_document())
    doc["cid"] = str(genesis.cid)
    return doc


class LedgerService:
    """``key`` signs the transparency log's checkpoints (the node's identity key; the
    origin names the network and this node, so auditors know whose log it is)."""

    def __init__(self, env: lmdb.Environment, genesis: Genesis, key: SigningKey,
                 node_name: str) -> None:
        self.genesis = genesis
        self.store = LedgerStore(env, genesis)
        self.tlog = TransparencyLog(env, self.store, ledger_origin(genesis.cid, node_name))
        self._key = key
        # Submissions seen by this node, for the metrics: accepted, and rejected by
        # reason code. Submits run in worker threads, hence the lock.
        self._counts_lock = threading.Lock()
        self._accepted = 0
        self._rejected: Counter[str] = Counter()
        # Called (in the submitting thread) after every submit that appended to the log:
        # ledger federation announces the new entries (node/services/ledger_federation.py).
        self.listeners: list[Callable[[], None]] = []

    # -- transparency ------------------------------------------------------------------
    def vkey(self) -> str:
        return self.tlog.vkey(self._key.verify_key)

    def checkpoint(self, fresh: bool) -> str:
        """The last signed checkpoint; a new one first if ``fresh`` and the log grew
        (or none was ever signed). Signing is refused, never forced, if it would be
        inconsistent with an earlier checkpoint."""
        last = self.tlog.last_checkpoint()
        if last is None or (fresh and self._covered() < self.tlog.size()):
            return self.tlog.checkpoint(self._key)
        return last

    def _covered(self) -> int:
        last = self.tlog.last_checkpoint()
        return 0 if last is None else int(last.split("\n")[1])

    def checkpoint_size(self) -> int:
        """Tree size of the last signed checkpoint (0 if none was signed)."""
        return self._covered()

    def submit_counts(self) -> tuple[int, dict[str, int]]:
        """(accepted, {reason: rejected}) since the node started."""
        with self._counts_lock:
            return self._accepted, dict(self._rejected)

    def inclusion_bundle(self, tx_id: CID) -> str:
        self.checkpoint(fresh=True)  # proofs are always against an up-to-date checkpoint
        return self.tlog.inclusion_bundle(tx_id)

    def state_proof(self, target: StateTarget) -> str:
        self.checkpoint(fresh=True)
        return self.tlog.state_proof_bundle(target, signing_key=self._key)

    def consistency_bundle(self, old_size: int) -> str:
        self.checkpoint(fresh=True)
        return self.tlog.consistency_bundle(old_size)

    def submit(self, envelope: bytes) -> Accepted:
        """Validate and apply one signed envelope; raises TxRejected (with a reason)."""
        try:
            # The node's clock: an entry dated far ahead is held, never sorted after
            # everything the network signs meanwhile (specs/ledger.md §6.2).
            accepted = self.store.submit(envelope, now_ms=time.time_ns() // 1_000_000)
        except TxRejected as rejected:
            with self._counts_lock:
                self._rejected[str(rejected.reason)] += 1
            if isinstance(rejected, EquivocationError):  # kept: the freeze must spread
                self._notify()
            raise
        with self._counts_lock:
            self._accepted += 1
        self._notify()
        return accepted

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener()

    def account(self, account: bytes) -> dict[str, Any]:
        """The account's state. ``next_seq``/``prev`` continue its head (the last
        transaction that took its place, failed ones included); ``head_time`` is that
        transaction's time: a wallet signs its next one with ``time >= head_time``, or it
        sorts before its predecessor and is void (specs/ledger.md §8.0)."""
        head = self.store.head(account)
        head_tx = None if head is None else self.store.tx(head[1])
        return {
            "account": account.hex(),
            "balance": self.store.balance(account),
            "next_seq": 0 if head is None else head[0] + 1,
            "prev": None if head is None else str(head[1]),
            "head_time": None if head_tx is None else head_tx.time,
            "frozen": self.store.is_frozen(account),
        }

    def tx(self, tx_id: CID) -> dict[str, Any] | None:
        tx = self.store.tx(tx_id)
        if tx is None:
            return None
        view = tx_view(tx)
        view["log_index"] = self.store.index_of(tx_id)
        return view

    def asset(self, asset_id: CID) -> dict[str, Any] | None:
        asset = self.store.asset(asset_id)
        if asset is None:
            return None
        editions = []
        for edition in range(1, asset.editions + 1):
            owner = self.store.owner(asset_id, edition)
            listing = self.store.listing(asset_id, edition)
            editions.append({
                "edition": edition,
                "owner": None if owner is None else owner.hex(),
                "listing": None if listing is None else {
                    "seller": listing.seller.hex(), "price": listing.price,
                    "listing": str(CID(listing.listing_id))},
            })
        return {"asset": str(asset_id), "creator": asset.creator.hex(),
                "artifact": str(asset.artifact), "royalty_bps": asset.royalty_bps,
                "creator_bps": asset.creator_bps, "platform_bps": asset.platform_bps,
                "editions": editions}

    def log(self, start: int, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        end = min(self.store.log_size(), start + limit)
        for index, entry in enumerate(self.store.iter_log(start, end), start):
            if index == 0:
                rows.append({"index": 0, "kind": "genesis", "id": str(self.genesis.cid)})
                continue
            try:
                tx = decode_tx(entry)
            except ValueError:  # not a transaction: a fraud proof
                rows.append({"index": index, "kind": "fraud-proof"})
                continue
            rows.append({"index": index, "kind": "tx", **tx_view(tx)})
        return rows

    def status(self) -> dict[str, Any]:
        return {"network": str(self.genesis.cid), "name": self.genesis.name,
                "log_size": self.store.log_size(), "supply": self.store.supply(),
                "supply_cap": self.genesis.supply_cap,
                "state_root": self.store.state_root().hex(),
                "frozen_accounts": [a.hex() for a in self.store.frozen_accounts()]}
