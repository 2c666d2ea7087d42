"""Shared helpers of the transparency / audit tests: a ledger in LMDB with its transparency
log, a small history touching every kind of entry, and byte-flipping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
from blake3 import blake3
from ledger_support import Net, account
from nacl.signing import SigningKey

from n3xus.canon.cid import CID
from n3xus.ledger.errors import TxRejected
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Outcome, Rejected
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.transparency import TransparencyLog, ledger_origin
from n3xus.ledger.tx import Op

LOG_KEY = SigningKey(blake3(b"n3xus-tlog-test/log-key").digest())
OTHER_KEY = SigningKey(blake3(b"n3xus-tlog-test/other-key").digest())
NODE = "node-under-test"


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=64, map_size=1 << 28)


class LedgerNet(Net):
    """The test network ingesting through a LedgerStore with a TransparencyLog."""

    def __init__(self, env: lmdb.Environment, genesis: Genesis | None = None) -> None:
        super().__init__(genesis)
        self.env = env
        self.store = LedgerStore(env, self.genesis)
        self.tlog = TransparencyLog(env, self.store, ledger_origin(self.genesis.cid, NODE))
        self.vkey = self.tlog.vkey(LOG_KEY.verify_key)

    def run(self, envelope: bytes) -> Outcome:
        try:
            return self.store.submit(envelope)
        except TxRejected as exc:
            return Rejected(exc)

    def balance(self, name: str) -> int:
        return self.store.balance(account(name))


class History:
    """What :func:`build_history` did, for the tests to look up."""

    asset: CID
    fraud_index: int
    transfer_id: CID


def build_history(net: LedgerNet) -> History:
    """Issuance, transfers, a tip, a mint with a gift, a listing and a sale, and an
    equivocation (so the log holds a fraud proof)."""
    history = History()
    net.fund("alice", 1_000)
    net.fund("bob", 500)
    net.fund("eve", 50)
    history.transfer_id = net.do("alice", Op.TRANSFER, to=account("bob"), amount=250).cid
    net.do("bob", Op.TIP, to=account("carol"), ref=None, amount=99)
    history.asset = net.mint("carol", editions=3)
    net.do("carol", Op.TRANSFER_ASSET, to=account("dave"), asset=history.asset, edition=2)
    listing = net.do("carol", Op.LIST, asset=history.asset, price=120, edition=1)
    net.do("bob", Op.BUY, asset=history.asset, price=120, edition=1, listing=listing.cid)
    chain = net.chain("eve")
    net.do("eve", Op.TRANSFER, to=account("alice"), amount=5)
    fork = chain.sign_at(0, None, Op.TRANSFER, {"to": account("bob"), "amount": 6},
                         time_ms=net.clock + 1)
    outcome = net.run(fork)
    assert isinstance(outcome, Rejected) and outcome.reason == "equivocation"
    history.fraud_index = outcome.error.proof_index  # type: ignore[attr-defined]
    return history


def flips(data: bytes, masks: tuple[int, ...] = (0x01,), step: int = 1) -> Iterator[tuple[int, bytes]]:
    """``(position, data with that byte XOR-ed)`` for every ``step``-th byte and each mask."""
    for position in range(0, len(data), step):
        for mask in masks:
            changed = bytearray(data)
            changed[position] ^= mask
            yield position, bytes(changed)
