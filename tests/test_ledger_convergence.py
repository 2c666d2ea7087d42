"""Convergence (ledger v2, specs/ledger.md §10): ledgers that received the same set of
entries have the same state root, whatever the arrival order and batching, with conflicting
transactions (double spends, two buyers of one edition, equivocations, fraud proofs) among
them. Real LMDB stores in temporary directories, real signatures; the in-memory ledger and
the LMDB store agree on every set. Also: late arrivals roll back with the undo log, pending
and held entries, and the conflict vectors of specs/vectors/ledger-convergence-*.json."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_support import ARTIFACT, account, key, make_genesis

from n3xus.ledger.engine import MAX_CLOCK_SKEW_MS, MAX_HOLD_MS, MAX_PENDING_PER_ACCOUNT
from n3xus.ledger.errors import Reason
from n3xus.ledger.fraud import FraudProof, make_fraud_proof
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Accepted, Held, MemoryView, Pending, Rejected, admit, apply_tx
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import AccountChain, Op

VECTORS = Path(__file__).resolve().parents[1] / "specs" / "vectors"
GENESIS = make_genesis()
T0 = 1_700_000_000_000
USERS = ["alice", "bob", "carol", "dave"]


def open_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=64, map_size=1 << 28)


def workload(seed: int, steps: int) -> list[bytes]:
    """Funding, a mint and a listing, then random transfers, buys of the one listing by
    several buyers, and equivocations (one account signing two transactions at one seq),
    some handed on as fraud proofs. Every entry is validly signed; times move forward with
    ties."""
    rng = random.Random(seed)
    issuer = AccountChain(key("issuer"), GENESIS.cid)
    chains = {name: AccountChain(key(name), GENESIS.cid) for name in USERS}
    when = T0
    entries: list[bytes] = []
    for name in USERS:
        when += 1
        entries.append(issuer.sign(Op.ISSUE, {"to": account(name), "amount": 100 + rng.randrange(50)},
                                   time_ms=when))
    creator = chains["dave"]
    mint = creator.sign(Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 1,
                                  "royalty_bps": 1000, "creator_bps": 8000,
                                  "platform_bps": 2000}, time_ms=when + 1)
    entries.append(mint)
    asset = creator.prev
    listing_tx = creator.sign(Op.LIST, {"asset": asset, "price": 40, "edition": 1}, time_ms=when + 2)
    entries.append(listing_tx)
    listing = creator.prev
    when += 3
    for _ in range(steps):
        when += rng.choice([0, 0, 1, 2])
        name = rng.choice(USERS[:3])
        chain = chains[name]
        choice = rng.random()
        if choice < 0.2:  # a buy of the one listing: only the first in canonical order wins
            entries.append(chain.sign(Op.BUY, {"asset": asset, "price": 40, "edition": 1,
                                               "listing": listing}, time_ms=when))
        elif choice < 0.3:  # equivocation: two transactions at one seq
            seq, prev = chain.seq, chain.prev
            first = chain.sign_at(seq, prev, Op.TRANSFER, {"to": account("bob"), "amount": 3},
                                  time_ms=when)
            second = chain.sign(Op.TRANSFER, {"to": account("carol"), "amount": 5}, time_ms=when)
            entries += [first, second]
            if rng.random() < 0.5:
                entries.append(make_fraud_proof(first, second))
        else:  # a transfer, sometimes an overdraft (fails at its position)
            entries.append(chain.sign(Op.TRANSFER, {"to": account(rng.choice(USERS)),
                                                    "amount": rng.randrange(1, 120)},
                                      time_ms=when))
    return entries


def reference_state(genesis: Genesis, entries: list[bytes]) -> dict[bytes, bytes]:
    """The state of specs/ledger.md §10 computed directly, without the engine's admission
    order, undo log or rollbacks: collect the set (transactions, and the two of every fraud
    proof), F from the set, then every transaction through the positional step in canonical
    order. (Valid here because every workload transaction's predecessor is in the set.)"""
    txs: dict[bytes, Any] = {}
    for entry in entries:
        item = admit(genesis, entry)
        for tx in (item.txs if isinstance(item, FraudProof) else (item,)):  # type: ignore[union-attr]
            txs[tx.id] = tx
    freeze: dict[bytes, int] = {}
    seen: dict[tuple[bytes, int], bytes] = {}
    for tx in txs.values():
        other = seen.setdefault((tx.account, tx.seq), tx.id)
        if other != tx.id:
            freeze[tx.account] = min(freeze.get(tx.account, tx.seq), tx.seq)
    view = MemoryView()
    for frozen, seq in freeze.items():
        view.put(b"F" + frozen, seq.to_bytes(8, "big"))
    for tx in sorted(txs.values(), key=lambda t: (t.time, t.account, t.seq, t.id)):
        apply_tx(view, genesis, tx)
    return view.state


def deliver(ledger: Any, entries: list[bytes], rng: random.Random) -> None:
    """Deliver in random batches, with duplicates."""
    at = 0
    while at < len(entries):
        size = rng.randint(1, 6)
        batch = entries[at:at + size]
        if rng.random() < 0.2:
            batch = batch + [rng.choice(entries)]
        ledger.ingest(batch)
        at += size


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[list[LedgerStore]]:
    envs = [open_env(tmp_path / f"node{n}") for n in range(4)]
    yield [LedgerStore(env, GENESIS) for env in envs]
    for env in envs:
        env.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(5, 30))
def test_any_order_gives_one_root(tmp_path: Path, seed: int, steps: int) -> None:
    entries = workload(seed, steps)
    rng = random.Random(seed)
    roots = set()
    states = []
    for node in range(3):
        order = entries[:]
        if node:
            rng.shuffle(order)
        memory = MemoryLedger(GENESIS)
        deliver(memory, order, rng)
        env = open_env(tmp_path / f"s{seed}-{steps}-{node}")
        try:
            store = LedgerStore(env, GENESIS)
            deliver(store, order, rng)
            roots |= {memory.state_root(), store.state_root()}
            states.append(store.state_items())
            assert store.state_items() == sorted(memory.state.items())
            assert store.rebuild_state() == memory.state_root()
        finally:
            env.close()
    assert len(roots) == 1
    assert all(state == states[0] for state in states)
    assert states[0] == sorted(reference_state(GENESIS, entries).items())


def test_two_buyers_one_winner_everywhere(stores: list[LedgerStore]) -> None:
    """Two buyers of one edition on two nodes: the earlier in canonical order wins on
    every node, the other fails with unknown-listing (its seq consumed, no money moved)."""
    creator, bob, carol = (AccountChain(key(n), GENESIS.cid) for n in ("dave", "bob", "carol"))
    issuer = AccountChain(key("issuer"), GENESIS.cid)
    setup = [issuer.sign(Op.ISSUE, {"to": c.account, "amount": 100}, time_ms=T0 + n)
             for n, c in enumerate((bob, carol))]
    setup.append(creator.sign(Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 1,
                                        "royalty_bps": 0, "creator_bps": 8000,
                                        "platform_bps": 2000}, time_ms=T0 + 5))
    asset = creator.prev
    setup.append(creator.sign(Op.LIST, {"asset": asset, "price": 30, "edition": 1},
                              time_ms=T0 + 6))
    args = {"asset": asset, "price": 30, "edition": 1, "listing": creator.prev}
    by_bob = bob.sign(Op.BUY, args, time_ms=T0 + 20)
    by_carol = carol.sign(Op.BUY, args, time_ms=T0 + 19)  # signed later elsewhere, dated earlier
    a, b, *_ = stores
    a.ingest(setup + [by_bob])
    b.ingest(setup + [by_carol])
    assert a.owner(asset, 1) == bob.account and b.owner(asset, 1) == carol.account
    late = a.ingest([by_carol])[0]  # sorts before bob's buy: rolled back and replayed
    b.ingest([by_bob])
    assert isinstance(late, Accepted) and late.applied
    for store in (a, b):
        assert store.owner(asset, 1) == carol.account
        assert store.balance(bob.account) == 100 and store.balance(carol.account) == 70
        assert store.head(bob.account) is not None  # the failed buy consumed bob's seq
    assert a.state_root() == b.state_root() and a.replays > 0


def test_late_arrival_replays_only_what_sorts_after_it(stores: list[LedgerStore]) -> None:
    users = [AccountChain(key(f"u{n}"), GENESIS.cid) for n in range(40)]
    entries = [u.sign(Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=T0 + n)
               for n, u in enumerate(users)]  # forty chains (all overdrafts: no funds)
    store = stores[0]
    store.ingest(entries[:10] + entries[11:])
    replays = store.replays
    store.ingest([entries[10]])
    # The late one sorts 29 positions from the end: those 29 are replayed, not all 40.
    assert store.replays - replays == 29
    fresh = MemoryLedger(GENESIS)
    fresh.ingest(entries)
    assert store.state_root() == fresh.state_root()


def test_pending_until_the_predecessor_arrives(stores: list[LedgerStore]) -> None:
    alice = AccountChain(key("alice"), GENESIS.cid)
    issue = AccountChain(key("issuer"), GENESIS.cid).sign(
        Op.ISSUE, {"to": alice.account, "amount": 50}, time_ms=T0)
    txs = [alice.sign(Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=T0 + n)
           for n in range(1, 4)]
    store = stores[0]
    outcomes = store.ingest([issue, txs[2], txs[1]])
    assert [type(o) for o in outcomes] == [Accepted, Pending, Pending]
    assert store.balance(account("bob")) == 0
    first = store.ingest([txs[0]])[0]
    assert isinstance(first, Accepted)
    assert store.balance(account("bob")) == 3 and store.head(alice.account) is not None
    assert store.log_size() == 5  # the two waiting ones logged when admitted
    # A queue bound per account: the rest is refused (sync fetches it later).
    far = [alice.sign_at(10 + n, alice.prev, Op.TRANSFER,
                         {"to": account("bob"), "amount": 1}, time_ms=T0 + 10) for n in range(
        MAX_PENDING_PER_ACCOUNT + 1)]
    outcomes = store.ingest(far)
    assert sum(isinstance(o, Pending) for o in outcomes) == MAX_PENDING_PER_ACCOUNT
    assert outcomes[-1].reason is Reason.BAD_SEQ  # type: ignore[union-attr]


def test_future_entries_are_held_until_the_clock_reaches_them(stores: list[LedgerStore]) -> None:
    issuer = AccountChain(key("issuer"), GENESIS.cid)
    now = T0
    soon = issuer.sign(Op.ISSUE, {"to": account("alice"), "amount": 5},
                       time_ms=now + MAX_CLOCK_SKEW_MS + 1_000)
    never = AccountChain(key("bob"), GENESIS.cid).sign(
        Op.TRANSFER, {"to": account("alice"), "amount": 1}, time_ms=now + MAX_HOLD_MS + 1)
    store = stores[0]
    held, refused = store.ingest([soon, never], now_ms=now)
    assert isinstance(held, Held) and held.release_ms == now + 1_000
    assert isinstance(refused, Rejected) and refused.reason is Reason.TOO_EARLY
    assert store.log_size() == 1 and store.release(now + 999) == []
    released = store.release(now + 1_000)
    assert [type(o) for o in released] == [Accepted]
    assert store.balance(account("alice")) == 5


def test_a_frozen_account_voids_everything_from_its_fork(stores: list[LedgerStore]) -> None:
    """The same freeze whichever of the two conflicting transactions arrived first, and
    whether the node saw the transactions or only a proof."""
    alice = AccountChain(key("alice"), GENESIS.cid)
    fund = AccountChain(key("issuer"), GENESIS.cid).sign(
        Op.ISSUE, {"to": alice.account, "amount": 100}, time_ms=T0)
    kept = alice.sign(Op.TRANSFER, {"to": account("bob"), "amount": 10}, time_ms=T0 + 1)
    seq, prev = alice.seq, alice.prev
    one = alice.sign_at(seq, prev, Op.TRANSFER, {"to": account("bob"), "amount": 20}, time_ms=T0 + 2)
    two = alice.sign_at(seq, prev, Op.TRANSFER, {"to": account("carol"), "amount": 30},
                        time_ms=T0 + 3)
    after = alice.sign(Op.TRANSFER, {"to": account("carol"), "amount": 1}, time_ms=T0 + 4)
    a, b, c, _ = stores
    a.ingest([fund, kept, one, after, two])
    b.ingest([fund, kept, two, one])
    c.ingest([fund, kept, make_fraud_proof(one, two)])
    for store in (a, b, c):
        assert store.freeze_seq(alice.account) == seq
        assert store.balance(account("bob")) == 10 and store.balance(account("carol")) == 0
    assert a.state_root() == b.state_root() == c.state_root()


def _vector_entries(vector: dict[str, Any]) -> tuple[Genesis, list[bytes]]:
    genesis = Genesis.from_bytes(bytes.fromhex(vector["genesis"]))
    return genesis, [bytes.fromhex(entry) for entry in vector["entries"]]


@pytest.mark.parametrize("path", sorted(VECTORS.glob("ledger-convergence-*.json")),
                         ids=lambda p: p.stem)
def test_convergence_vectors(path: Path, tmp_path: Path) -> None:
    vector = json.loads(path.read_text())
    genesis, entries = _vector_entries(vector)
    for order in vector["orders"]:
        env = open_env(tmp_path / f"v{len(list(tmp_path.iterdir()))}")
        try:
            store = LedgerStore(env, genesis)
            for index in order:
                store.ingest([entries[index]])
            assert store.state_root().hex() == vector["state_root"]
            for key_hex, value_hex in vector["expect"].items():
                found = dict(store.state_items()).get(bytes.fromhex(key_hex))
                assert (found.hex() if found is not None else None) == value_hex, key_hex
        finally:
            env.close()
