"""The LMDB ledger store: one write transaction per batch, rejections leave no trace,
rebuilding the state from the log gives the same root, reopening keeps everything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from ledger_support import ARTIFACT, SUPPLY_CAP, Net, account, key, make_genesis

from n3xus.canon.cid import cid_of
from n3xus.canon.codec import decode, encode
from n3xus.ledger.errors import LedgerCorruptError, Reason, TxRejected
from n3xus.ledger.fraud import verify_fraud_proof
from n3xus.ledger.genesis import MAX_AMOUNT, Genesis
from n3xus.ledger.ingest import Accepted, Outcome, Rejected
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.memory import replay_log as replay
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import TX_SIGNATURE_TAG, Op, decode_tx, encode_tx_map

GENESIS = make_genesis()


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=64, map_size=1 << 28)


def submit(store: LedgerStore, envelope: bytes) -> Outcome:
    """A client's submit (one LMDB batch, kept only if it takes effect) as an outcome."""
    try:
        return store.submit(envelope)
    except TxRejected as exc:
        return Rejected(exc)


class StoreNet(Net):
    """The test network, submitting through a LedgerStore (one LMDB batch per envelope)."""

    def __init__(self, store: LedgerStore) -> None:
        super().__init__(store.genesis)
        self.store = store

    def run(self, envelope: bytes) -> Outcome:
        return submit(self.store, envelope)

    def balance(self, name: str) -> int:
        return self.store.balance(account(name))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    environment = open_env(tmp_path / "ledger")
    yield environment
    environment.close()


@pytest.fixture
def net(env: lmdb.Environment) -> StoreNet:
    net = StoreNet(LedgerStore(env, GENESIS))
    net.fund("alice", 1_000)
    return net


def everything(store: LedgerStore) -> tuple[Any, ...]:
    return store.state_items(), list(store.iter_log()), store.state_root()


def test_accessors_after_a_small_history(net: StoreNet) -> None:
    store = net.store
    asset = net.mint("creator", editions=2, royalty_bps=500)
    listing = net.do("creator", Op.LIST, asset=asset, edition=2, price=400)
    buy = net.do("alice", Op.BUY, asset=asset, edition=2, listing=listing.cid, price=400)
    assert store.balance(account("alice")) == 600
    assert store.supply() == 1_000
    assert store.owner(asset, 2) == account("alice") and store.owner(asset, 1) == account("creator")
    assert store.listing(asset, 2) is None
    info = store.asset(asset)
    assert info is not None and (info.creator, info.editions, info.royalty_bps) == (
        account("creator"), 2, 500)
    assert info.artifact == ARTIFACT
    assert store.head(account("alice")) == (0, buy.cid)
    assert store.log_size() == 5 and store.log_entry(0) == GENESIS.block
    assert store.index_of(buy.cid) == buy.log_index == 4
    tx = store.tx(buy.cid)
    assert tx is not None and tx.op is Op.BUY and store.entry(buy.cid) == tx.raw
    assert list(store.iter_log(3, 4)) == [store.log_entry(3)]
    assert store.tx(cid_of(b"unknown")) is None
    with pytest.raises(IndexError):
        store.log_entry(99)


def test_every_rejection_leaves_state_and_log_unchanged(net: StoreNet) -> None:
    asset = net.mint("creator", editions=1)
    listing = net.do("creator", Op.LIST, asset=asset, edition=1, price=300).cid
    replayed = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=1)
    net.run(replayed)
    forged = bytearray(net.draft("alice", Op.TRANSFER, to=account("bob"), amount=1))
    forged[-5] ^= 0x20
    before = everything(net.store)
    cases = [
        (replayed, Reason.REPLAY),
        (bytes(forged), Reason.BAD_SIGNATURE),
        (net.draft("alice", Op.TRANSFER, to=account("bob"), amount=1_000), Reason.OVERDRAFT),
        (net.draft("issuer", Op.ISSUE, to=account("bob"), amount=SUPPLY_CAP), Reason.OVER_CAP),
        (net.draft("alice", Op.ISSUE, to=account("bob"), amount=1), Reason.NOT_ISSUER),
        (net.draft("alice", Op.TRANSFER_ASSET, to=account("bob"), asset=cid_of(b"?"),
                   edition=1), Reason.UNKNOWN_ASSET),
        (net.draft("alice", Op.BUY, asset=asset, edition=1, listing=listing, price=299),
         Reason.PRICE_MISMATCH),
        (b"\xa2\x62tx\xa0\x63sig\x40", Reason.MALFORMED),
    ]
    for envelope, reason in cases:
        outcome = net.run(envelope)
        assert isinstance(outcome, Rejected) and outcome.reason is reason, outcome
        assert everything(net.store) == before
    # A network batch mixing the inadmissible ones with a good transaction commits exactly
    # the good one. (A transaction that fails the rules is admitted on the network path: it
    # consumes its seq without effect, see test_a_failing_transaction_consumes_its_seq.)
    good = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=7)
    inadmissible = [cases[0][0], cases[1][0], cases[-1][0]]
    outcomes = net.store.ingest(inadmissible + [good])
    assert [type(o) for o in outcomes] == [Rejected] * 3 + [Accepted]
    assert net.store.log_size() == len(before[1]) + 1 and net.balance("bob") == 8


def test_a_failing_transaction_consumes_its_seq(net: StoreNet) -> None:
    """Network path (ledger v2 §8.0): an overdraft arriving from a peer is kept in the set;
    at its position it fails, changing nothing but the account's head, and its successor
    chains from it."""
    failing = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=5_000)
    after = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=5)
    outcomes = net.store.ingest([failing, after])
    assert isinstance(outcomes[0], Accepted) and outcomes[0].reason is Reason.OVERDRAFT
    assert isinstance(outcomes[1], Accepted) and outcomes[1].applied
    assert net.balance("bob") == 5 and net.store.head(account("alice")) == (1, outcomes[1].cid)


def test_integer_overflow_is_rejected_without_trace(net: StoreNet) -> None:
    chain = net.chain("alice")
    tx_map = encode_tx_map(network=GENESIS.cid, account=chain.account, seq=chain.seq,
                           prev=chain.prev, time_ms=1, op=Op.TRANSFER,
                           args={"to": account("bob"), "amount": MAX_AMOUNT + 1})
    envelope = encode({"tx": decode(tx_map),
                       "sig": key("alice").sign(TX_SIGNATURE_TAG + tx_map).signature})
    before = everything(net.store)
    with pytest.raises(TxRejected) as caught:
        net.store.submit(envelope)
    assert caught.value.reason is Reason.OVERFLOW
    assert everything(net.store) == before


def test_rebuild_gives_the_same_root_and_repairs_state(net: StoreNet) -> None:
    asset = net.mint("creator", editions=3)
    listing = net.do("creator", Op.LIST, asset=asset, edition=3, price=10).cid
    net.do("alice", Op.BUY, asset=asset, edition=3, listing=listing, price=10)
    net.do("alice", Op.TIP, to=account("creator"), ref=None, amount=33)
    chain = net.chain("alice")
    fork_a = chain.sign_at(chain.seq, chain.prev, Op.TRANSFER,
                           {"to": account("bob"), "amount": 1}, time_ms=1)
    fork_b = chain.sign_at(chain.seq, chain.prev, Op.TRANSFER,
                           {"to": account("carol"), "amount": 1}, time_ms=1)
    net.store.ingest([fork_a, fork_b])
    assert net.store.is_frozen(account("alice"))
    proof = net.store.fraud_proof(account("alice"))
    assert proof is not None and net.store.frozen_accounts() == [account("alice")]
    assert verify_fraud_proof(proof, GENESIS.cid).account == account("alice")
    assert net.store.tx(cid_of(proof)) is None and net.store.entry(cid_of(proof)) == proof
    root = net.store.state_root()
    items = net.store.state_items()
    assert net.store.rebuild_state() == root
    assert net.store.rebuild_state(verify=False) == root
    assert net.store.state_items() == items
    assert replay(net.store.iter_log(), genesis=GENESIS).state_root() == root
    # Damage the derived state behind the store's back; a rebuild restores it.
    with net.store.env.begin(write=True) as txn:
        txn.delete(b"B" + account("creator"), db=net.store.dbs.state)
        txn.put(b"B" + account("mallory"), (10**6).to_bytes(8, "big"), db=net.store.dbs.state)
    assert net.store.rebuild_state() == root
    assert net.store.state_root() == root


def test_reopen_keeps_everything_and_refuses_another_genesis(tmp_path: Path) -> None:
    env = open_env(tmp_path / "l")
    net = StoreNet(LedgerStore(env, GENESIS))
    net.fund("alice", 50)
    net.do("alice", Op.TRANSFER, to=account("bob"), amount=20)
    before = everything(net.store)
    env.close()
    env = open_env(tmp_path / "l")
    store = LedgerStore(env, Genesis.from_bytes(GENESIS.block))
    assert everything(store) == before
    with pytest.raises(LedgerCorruptError, match="another network"):
        LedgerStore(env, make_genesis(royalty_bps=1))
    env.close()


def test_commit_hooks_see_the_new_entries_and_can_abort(net: StoreNet) -> None:
    seen: list[tuple[int, int, list[bytes]]] = []

    def hook(txn: lmdb.Transaction, first: int, end: int) -> None:
        entries = [txn.get(i.to_bytes(8, "big"), db=net.store.dbs.log) for i in range(first, end)]
        seen.append((first, end, entries))

    net.store.add_commit_hook(hook)
    a = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=1)
    b = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=2)
    net.store.ingest([a, b, a])
    assert seen == [(2, 4, [a, b])]
    net.store.ingest([a])  # nothing appended: no call
    assert len(seen) == 1

    def failing(txn: lmdb.Transaction, first: int, end: int) -> None:
        raise RuntimeError("transparency log unavailable")

    net.store.add_commit_hook(failing)
    before = everything(net.store)
    with pytest.raises(RuntimeError):
        net.store.ingest([net.sign("alice", Op.TRANSFER, to=account("bob"), amount=3)])
    assert everything(net.store) == before


# --- the store behaves exactly like the in-memory view ------------------------------------------

NAMES = ["alice", "bob", "carol", "creator"]
step = st.tuples(st.sampled_from(["issue", "transfer", "tip", "mint", "list", "buy", "give"]),
                 st.sampled_from(NAMES), st.sampled_from(NAMES), st.integers(1, 300))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=25))
def test_store_and_memory_view_agree(tmp_path: Path, steps: list[tuple[str, str, str, int]]) -> None:
    path = tmp_path / f"s{abs(hash(tuple(steps)))}"
    env = open_env(path)
    try:
        store = LedgerStore(env, GENESIS)
        memory = MemoryLedger(GENESIS)
        net = Net(GENESIS)
        assets: list[Any] = []
        listings: dict[Any, Any] = {}
        for name in NAMES:  # everyone starts with some money
            funding = net.draft("issuer", Op.ISSUE, to=account(name), amount=500)
            submit(store, funding)
            net.view = memory
            assert isinstance(net.run(funding), Accepted)
            net.chain("issuer").seq += 1
            net.chain("issuer").prev = decode_tx(funding).cid
        for kind, who, other, amount in steps:
            args: dict[str, Any]
            honest = amount % 4 != 0  # a quarter of the steps are signed by a random account
            if kind == "issue":
                who, op, args = "issuer", Op.ISSUE, {"to": account(other), "amount": amount}
            elif kind in ("transfer", "tip"):
                op = Op.TRANSFER if kind == "transfer" else Op.TIP
                args = {"to": account(other), "amount": amount}
                if kind == "tip":
                    args["ref"] = None
            elif kind == "mint" or not assets:
                op, args = Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 2,
                                     "royalty_bps": amount % 5001, "creator_bps": 7000,
                                     "platform_bps": 3000}
            elif kind == "buy" and listings:
                (asset, edition), (listing, price) = sorted(listings.items(), key=str)[0]
                current = store.listing(asset, edition)
                if honest and current is not None and account(who) == current.seller:
                    who = next(name for name in NAMES if account(name) != current.seller)
                op, args = Op.BUY, {"asset": asset, "edition": edition, "listing": listing,
                                    "price": price if honest else price + 1}
            else:
                asset, edition = assets[amount % len(assets)], 1 + amount % 2
                owner = store.owner(asset, edition)
                if honest and owner is not None:
                    who = next(name for name in NAMES if account(name) == owner)
                if kind == "list":
                    op, args = Op.LIST, {"asset": asset, "edition": edition, "price": amount}
                else:
                    op, args = Op.TRANSFER_ASSET, {"to": account(other), "asset": asset,
                                                   "edition": edition}
            envelope = net.draft(who, op, **args)
            from_store = submit(store, envelope)
            net.view = memory
            from_memory = net.run(envelope)
            assert type(from_store) is type(from_memory)
            event(f"{op.value} {'accepted' if isinstance(from_store, Accepted) else 'rejected'}")
            if isinstance(from_store, Accepted):
                tx = decode_tx(envelope)
                chain = net.chain(who)
                chain.seq, chain.prev = tx.seq + 1, tx.cid
                if op is Op.MINT:
                    assets.append(tx.cid)
                elif op is Op.LIST:
                    listings[(args["asset"], args["edition"])] = (tx.cid, args["price"])
                elif op in (Op.BUY, Op.TRANSFER_ASSET):
                    listings.pop((args["asset"], args["edition"]), None)
            else:
                assert isinstance(from_memory, Rejected)
                assert from_store.reason is from_memory.reason
        assert store.state_items() == sorted(memory.state.items())
        assert store.state_root() == memory.state_root() == store.rebuild_state()
        assert list(store.iter_log()) == memory.log
    finally:
        env.close()


def test_dirty_keys_carry_their_values_for_the_tree(tmp_path: Path) -> None:
    """Each batch records its changed state keys with their values (01 || value, 00 when
    deleted) in the same transaction; the checkpoint reads them from there, still reads the
    empty marker of earlier stores from the state, and refuses anything else."""
    env = open_env(tmp_path / "l")
    store = LedgerStore(env, GENESIS)
    net = StoreNet(store)
    net.fund("alice", 50)
    net.do("alice", Op.TRANSFER, to=account("bob"), amount=20)
    net.do("bob", Op.TRANSFER, to=account("carol"), amount=20)  # bob's balance is deleted
    net.do("alice", Op.TRANSFER, to=account("carol"), amount=5)  # a key changed again
    with env.begin() as txn:
        dirty = dict(txn.cursor(db=store.dbs.dirty).iternext())
        state = dict(txn.cursor(db=store.dbs.state).iternext())
    assert dirty[b"B" + account("bob")] == b"\x00" and b"B" + account("bob") not in state
    assert dirty[b"B" + account("carol")] == b"\x01" + (25).to_bytes(8, "big")
    for state_key, marked in dirty.items():
        assert marked == (b"\x01" + state[state_key] if state_key in state else b"\x00")
    assert store.state_root() == replay(store.iter_log(), genesis=GENESIS).state_root()
    with env.begin() as txn:
        assert store.tree_is_current(txn)
    net.do("carol", Op.TRANSFER, to=account("bob"), amount=25)
    with env.begin(write=True) as txn:  # as a store written before values were kept
        for state_key in list(txn.cursor(db=store.dbs.dirty).iternext(values=False)):
            txn.put(state_key, b"", db=store.dbs.dirty)
    assert store.state_root() == replay(store.iter_log(), genesis=GENESIS).state_root()
    net.do("bob", Op.TRANSFER, to=account("alice"), amount=1)
    with env.begin(write=True) as txn:
        txn.put(b"B" + account("bob"), b"\x07", db=store.dbs.dirty)
    with pytest.raises(LedgerCorruptError, match="ledger/dirty"):
        store.state_root()
    env.close()
