"""The ingest twins (compiled ``_ingest_c`` and its parts, pure ``_ingest_py`` and its parts)
give identical results, here for the positional step and the engine over it: the same
outcomes and reasons (codes and messages), the same writes, state, log bytes and state
root, on scripted histories that hit every reason, on random histories (client and network
paths, any batching), in memory and in LMDB; the batch's state cache. The admission and
decoder twins: test_ledger_twins_decode.py; the signature checks: test_ledger_twins_verify.py.

"compiled" is skipped only when the extension is not built (never under
``N3XUS_REQUIRE_COMPILED=1``, where a missing extension fails the test).
"""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_twin_support import (
    DECODE_C,
    IMPLEMENTATIONS,
    PUBLIC_NAMES,
    VERIFY_C,
    RecordingNet,
    admitted_txs,
    error_fields,
    load_impl,
    prev_of,
    reason_of,
    run_both,
    run_network,
    scripted_history,
    summary,
    using,
)
from ledger_support import ARTIFACT, SUPPLY_CAP, account, key, make_genesis

from n3xus.canon.cid import CID
from n3xus.ledger import _ingest_py
from n3xus.ledger import ingest as selector
from n3xus.ledger.errors import LedgerCorruptError, Reason, TxRejected
from n3xus.ledger.genesis import MAX_AMOUNT, Genesis
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import (
    AccountChain,
    Op,
    Tx,
    decode_tx,
)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl(request.param)


@pytest.fixture
def compiled() -> ModuleType:
    return load_impl("compiled")


# ----------------------------------------------------------------------------- tests


def test_public_names_and_shared_types(compiled: ModuleType) -> None:
    assert set(_ingest_py.__all__) == PUBLIC_NAMES
    assert set(compiled.__all__) == PUBLIC_NAMES
    assert set(selector.__all__) == PUBLIC_NAMES | {"IMPLEMENTATION"}
    chosen = load_impl(selector.IMPLEMENTATION)
    for name in PUBLIC_NAMES:
        assert getattr(selector, name) is getattr(chosen, name)
    # Outcome types are shared, so isinstance checks hold whichever twin produced them.
    for name in ("Accepted", "Rejected", "Pending", "Held", "MemoryView", "VOID_REASONS"):
        assert getattr(compiled, name) is getattr(_ingest_py, name)
    assert compiled.admit is not _ingest_py.admit
    assert compiled.apply_tx is not _ingest_py.apply_tx
    assert compiled.apply_step is not _ingest_py.apply_step
    assert compiled.decode_envelope is not _ingest_py.decode_envelope
    assert compiled.verify_signatures is not _ingest_py.verify_signatures
    assert compiled.apply_in_order is not _ingest_py.apply_in_order
    assert compiled.prepare_entries is not _ingest_py.prepare_entries
    assert compiled.verify_signature is not _ingest_py.verify_signature


def test_scripted_history_hits_every_reason_identically(compiled: ModuleType) -> None:
    genesis, entries = scripted_history()
    client, network = run_both(compiled, genesis, entries)
    seen = {reason_of(row) for row in client[0]} | {reason_of(row) for row in network[0]}
    # too-early needs a clock (tests of holding); every other reason occurs.
    assert set(Reason) - {Reason.TOO_EARLY} <= seen, set(Reason) - seen
    state = client[1]
    assert b"B" + account("dave") not in state and b"B" + account("erin") in state

@pytest.mark.parametrize("compiled_name, pure_name", [
    (VERIFY_C, "n3xus.ledger._ingest_verify_py"),
    (DECODE_C, "n3xus.ledger._ingest_decode_py"),
])
def test_each_compiled_part_has_its_pure_twin(compiled_name: str, pure_name: str) -> None:
    """Every compiled module has a pure twin with the same public names, and the apply
    module re-exports the compiled parts (so importing it needs every one of them)."""
    part = load_impl("compiled", compiled_name)
    pure = importlib.import_module(pure_name)
    ingest_c = load_impl("compiled")
    assert set(part.__all__) == set(pure.__all__)
    for name in pure.__all__:
        assert getattr(part, name) is not getattr(pure, name)
        if name in PUBLIC_NAMES:
            assert getattr(ingest_c, name) is getattr(part, name)
            assert getattr(_ingest_py, name) is getattr(pure, name)


def test_apply_tx_is_identical_on_corrupt_state(compiled: ModuleType) -> None:
    genesis = make_genesis()
    alice = AccountChain(key("alice"), genesis.cid)
    first = decode_tx(alice.sign(Op.TRANSFER, {"to": account("bob"), "amount": 5}, time_ms=2))
    second = decode_tx(alice.sign(Op.TRANSFER, {"to": account("bob"), "amount": 7}, time_ms=3))
    base = {b"B" + alice.account: (1_000).to_bytes(8, "big")}
    tweaks: list[dict[bytes, bytes]] = [
        # The first credit reaches MAX_AMOUNT exactly, the second would pass it.
        {b"B" + account("bob"): (MAX_AMOUNT - 5).to_bytes(8, "big")},
        {b"B" + account("bob"): (MAX_AMOUNT - 4).to_bytes(8, "big")},
        {b"B" + account("bob"): b"\x01\x00"},  # values of other lengths
        {b"B" + account("bob"): (2**64 + 5).to_bytes(9, "big")},
        {b"H" + alice.account: b"\x00\x01"},  # a short head record
        {b"H" + alice.account: b"\xff" * 8 + bytes(36)},  # a head at the largest u64
        {b"H" + alice.account: (0).to_bytes(8, "big") + b"\x01\x71"},  # a short head id
        {b"F" + alice.account: (1).to_bytes(8, "big")},  # frozen from seq 1
        {b"F" + alice.account: b"\x00"},  # frozen, odd length
    ]
    seen = []
    for tweak in tweaks:
        results = []
        for module in (compiled, _ingest_py):
            view = module.MemoryView()
            view.state.update(base)
            view.state.update(tweak)
            outcomes: list[Any] = []
            for tx in (first, second):
                try:
                    outcomes.append(error_fields(module.apply_tx(view, genesis, tx)))
                except (LedgerCorruptError, ValueError) as exc:  # CID errors are ValueErrors
                    outcomes.append(("raised", type(exc).__name__, str(exc)))
            results.append((outcomes, view.state))
        assert results[0] == results[1], tweak
        seen.append(results[0])
    assert seen[0][0][0] is None and seen[0][1][b"B" + account("bob")] == MAX_AMOUNT.to_bytes(8, "big")
    assert seen[1][0][0][:2] == ("raised", "LedgerCorruptError")
    assert seen[7][0] == [None, error_fields(TxRejected(Reason.FROZEN,
                                                        "the account equivocated at or before this seq"))]


def _random_history(seed: int, steps: int) -> tuple[Genesis, list[bytes]]:
    rng = random.Random(seed)
    net = RecordingNet()
    names = ["alice", "bob", "carol", "dave", "erin"]
    for name in names[:3]:
        net.fund(name, rng.randrange(1, 2_000))
    assets: list[CID] = []
    listings: dict[tuple[CID, int], tuple[CID, int]] = {}
    for _ in range(steps):
        who = rng.choice(names)
        other = account(rng.choice(names))
        choice = rng.random()
        if choice < 0.30:
            net.attempt(who, Op.TRANSFER, to=other, amount=rng.randrange(1, 1_500))
        elif choice < 0.36:
            net.attempt(rng.choice(["issuer", who]), Op.ISSUE, to=other,
                        amount=rng.randrange(1, 5_000))
        elif choice < 0.42:
            net.attempt(who, Op.TIP, to=other, ref=None, amount=rng.randrange(1, 300))
        elif choice < 0.47:
            outcome = net.attempt(who, Op.MINT, artifact=ARTIFACT, metadata={"n": len(assets)},
                                  editions=rng.randrange(1, 4), royalty_bps=rng.choice([0, 750]),
                                  creator_bps=8000, platform_bps=2000)
            if isinstance(outcome, _ingest_py.Accepted):
                assets.append(outcome.cid)
        elif choice < 0.57 and assets:
            asset, edition = rng.choice(assets), rng.randrange(1, 5)
            outcome = net.attempt(who, Op.LIST, asset=asset, edition=edition,
                                  price=rng.randrange(1, 400))
            if isinstance(outcome, _ingest_py.Accepted):
                assert outcome.tx is not None
                listings[(asset, edition)] = (outcome.cid, outcome.tx.args["price"])
        elif choice < 0.67 and listings:
            (asset, edition), (listing, price) = rng.choice(sorted(listings.items(), key=str))
            net.attempt(who, Op.BUY, asset=asset, edition=edition, listing=listing,
                        price=price + rng.choice([0, 0, 0, 1]))
        elif choice < 0.72 and assets:
            asset, edition = rng.choice(assets), rng.randrange(1, 4)
            if rng.random() < 0.5:
                net.attempt(who, Op.TRANSFER_ASSET, to=other, asset=asset, edition=edition)
            else:
                net.attempt(who, Op.DELIST, asset=asset, edition=edition)
        elif choice < 0.80 and net.entries:
            net.run(rng.choice(net.entries))  # a replay of anything seen
        elif choice < 0.97:
            draft = bytearray(net.draft(who, Op.TRANSFER, to=other, amount=1))
            for _ in range(rng.randrange(1, 3)):
                draft[rng.randrange(len(draft))] ^= 1 << rng.randrange(8)
            net.run(bytes(draft))
        else:
            chain = net.chain(who)
            if chain.seq:  # fork the last accepted position: equivocation (or frozen)
                net.run(chain.sign_at(chain.seq - 1, prev_of(net, who, chain.seq - 1),
                                      Op.TRANSFER, {"to": other, "amount": 1},
                                      time_ms=rng.randrange(10**6)))
    return net.genesis, net.entries


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_are_identical(compiled: ModuleType, seed: int) -> None:
    genesis, entries = _random_history(seed, 140)
    client, network = run_both(compiled, genesis, entries)
    accepted = sum(1 for outcome in client[0] if outcome[0] == "accepted")
    assert 0 < accepted < len(entries)
    assert len({reason_of(o) for o in client[0]}) >= 6
    # Any arrival order of the same entries gives the same state (convergence).
    shuffled = entries[:]
    random.Random(seed).shuffle(shuffled)
    assert run_network(compiled, genesis, shuffled, 5)[-1] == network[-1]


def test_lmdb_store_is_identical_with_either_twin(compiled: ModuleType, tmp_path: Path) -> None:
    genesis, entries = scripted_history()
    results = []
    for name, module in (("compiled", compiled), ("pure", _ingest_py)):
        environment = lmdb.open(str(tmp_path / name), max_dbs=64, map_size=1 << 28)
        with using(module):
            store = LedgerStore(environment, genesis)
            outcomes = []
            for start in range(0, len(entries), 5):
                outcomes += [summary(o) for o in store.ingest(entries[start:start + 5])]
            root = store.state_root()
            results.append((outcomes, list(store.iter_log()), store.state_items(), root))
            assert store.rebuild_state() == root
        environment.close()
    assert results[0] == results[1]
    memory = run_network(_ingest_py, genesis, entries, 5)
    assert results[0][1] == memory[2] and results[0][3] == memory[-1]


def test_apply_step_records_the_same_undo(impl: ModuleType) -> None:
    """Transfers that empty a balance (a delete), go to the sender itself, overdraw, or
    carry a bad seq: the same result, undo record and state as the pure step."""
    genesis = make_genesis()
    alice = AccountChain(key("alice"), genesis.cid)
    steps = [decode_tx(alice.sign(Op.TRANSFER, {"to": to, "amount": amount}, time_ms=n))
             for n, (to, amount) in enumerate([(alice.account, 4), (account("bob"), 10),
                                               (account("bob"), 1)])]
    stale = decode_tx(AccountChain(key("alice"), genesis.cid).sign(
        Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=9))
    results = []
    for module in (impl, _ingest_py):
        view = _ingest_py.MemoryView()
        view.state[b"B" + alice.account] = (10).to_bytes(8, "big")
        view.state[b"B" + account("bob")] = (3).to_bytes(8, "big")
        rows = []
        for tx in [*steps, stale]:
            result, undo = module.apply_step(view, genesis, tx)
            rows.append((error_fields(result), undo, dict(view.state)))
        results.append(rows)
    assert results[0] == results[1]
    rows = results[0]
    assert rows[0][0] is None and rows[1][0] is None  # to self; then the whole balance
    assert b"B" + alice.account not in rows[1][2]
    assert rows[2][0] is not None and rows[2][0][1] == Reason.OVERDRAFT
    assert rows[3][0] is not None and rows[3][0][1] == Reason.BAD_SEQ and rows[3][1] == b""


def test_decoded_admission_without_checks_is_identical(compiled: ModuleType,
                                                      tmp_path: Path) -> None:
    """The engine's direct path for decoded transactions (this network, no signature check,
    no clock: the node's verify-ahead ingest) on either twin, in memory and in LMDB, one by
    one and as one batch: replays, another network, predecessors missing (pending, then
    released), equivocations and frozen accounts, entries given as bytes."""
    genesis, entries = scripted_history()
    good: list[Any] = admitted_txs(genesis, entries, True)
    other = Genesis.create("another", [account("issuer")], SUPPLY_CAP, account("platform"))
    foreign = decode_tx(AccountChain(key("alice"), other.cid).sign(
        Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=3))
    shuffled = good[:]
    random.Random(5).shuffle(shuffled)
    histories = [[*good, *good[:5], foreign, entries[0]], [foreign, *shuffled, *shuffled[:3]]]
    seen: set[Any] = set()
    for number, history in enumerate(histories):
        for size in (1, len(history)):
            results = []
            for module in (compiled, _ingest_py):
                with using(module):
                    memory = MemoryLedger(genesis)
                    env = lmdb.open(str(tmp_path / f"h{number}-{size}-{len(results)}"),
                                    map_size=1 << 26, max_dbs=16)
                    store = LedgerStore(env, genesis)
                    outcomes: list[Any] = []
                    stored: list[Any] = []
                    for start in range(0, len(history), size):
                        part = history[start:start + size]
                        outcomes += [summary(o) for o in memory.ingest(part, verify=False)]
                        stored += [summary(o) for o in store.ingest(part, verify=False)]
                    results.append((outcomes, stored, memory.state, store.state_items(),
                                    memory.state_root(), store.state_root()))
                    env.close()
            assert results[0] == results[1], (number, size)
            seen |= {row[0] if row[0] != "rejected" else row[2] for row in results[0][0]}
    assert {"accepted", "Pending", Reason.REPLAY, Reason.WRONG_NETWORK, Reason.FROZEN} <= seen, seen


def test_decoded_entries_are_admitted_like_their_bytes(impl: ModuleType, tmp_path: Path) -> None:
    """A transaction handed to ingest decoded (the verify-ahead path) gives the outcomes
    and state its bytes give; one of another network is refused all the same."""
    genesis, entries = scripted_history()
    other = Genesis.create("another", [account("issuer")], SUPPLY_CAP, account("platform"))
    foreign = AccountChain(key("alice"), other.cid).sign(
        Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=3)
    entries = [*entries, foreign]
    decoded: list[Any] = []
    for entry in entries:
        try:
            decoded.append(impl.decode_envelope(entry))
        except (ValueError, TxRejected):
            decoded.append(entry)
    assert sum(isinstance(item, Tx) for item in decoded) > len(entries) // 2
    results = []
    for items in (entries, decoded):
        with using(impl):
            memory = MemoryLedger(genesis)
            outcomes = [summary(o) for o in memory.ingest(items)]
            env = lmdb.open(str(tmp_path / f"s{len(results)}"), map_size=1 << 26, max_dbs=16)
            store = LedgerStore(env, genesis)
            stored = [summary(o) for o in store.ingest(items)]
            results.append((outcomes, stored, memory.state, store.state_items(),
                            memory.state_root(), store.state_root()))
            env.close()
    assert results[0] == results[1]
    assert results[0][0][-1][:3] == ("rejected", "TxRejected", Reason.WRONG_NETWORK)



@given(st.lists(st.tuples(st.sampled_from(["get", "put", "delete", "flush", "forget"]),
                          st.sampled_from([b"a", b"b", b"c"]), st.binary(max_size=3)),
                max_size=30))
@settings(max_examples=60, deadline=None)
def test_state_cache_reads_what_the_store_would_hold(ops: list[tuple[str, bytes, bytes]]) -> None:
    """The batch's cached state answers every read as the store would after the writes so
    far, writes each changed key once at a flush (in key order), and collects the changed
    keys, in both twins."""
    compiled_module = load_impl("compiled")
    results = []
    for module in (compiled_module, _ingest_py):
        store: dict[bytes, bytes] = {b"b": b"\x01"}
        model = dict(store)
        written: list[list[bytes]] = []
        cache = module.StateCache(
            store.get, lambda items, store=store, written=written: (
                written.append([key_ for key_, _ in items]), store.update(items)),
            lambda key_, store=store: store.pop(key_, None))
        reads = []
        for op, key_, value in ops:
            if op == "get":
                reads.append(cache.get(key_))
                assert reads[-1] == model.get(key_)
            elif op == "put":
                cache.put(key_, value)
                model[key_] = value
            elif op == "delete":
                cache.delete(key_)
                model.pop(key_, None)
            else:
                cache.flush(forget=op == "forget")
                assert store == model
        cache.flush()
        assert store == model
        assert all(keys == sorted(set(keys)) for keys in written)
        results.append((reads, dict(store), set(cache.dirty), written))
    assert results[0] == results[1]
    assert results[0][2] == {key_ for op, key_, _ in ops if op in ("put", "delete")}
