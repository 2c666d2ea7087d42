"""Shared by the ingest twin tests (test_ledger_twins*.py): loading a twin, running the
engine on one twin's steps, comparable summaries of outcomes and state, and the histories
both twins replay (scripted to hit every reason, forks)."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from ledger_support import ARTIFACT, SUPPLY_CAP, Net, account, key, make_genesis

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.ledger import _ingest_py, engine
from n3xus.ledger.errors import Reason, TxRejected
from n3xus.ledger.fraud import make_fraud_proof
from n3xus.ledger.genesis import MAX_AMOUNT, Genesis
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.tx import (
    TX_SIGNATURE_TAG,
    AccountChain,
    Op,
    Tx,
    encode_tx_map,
)

IMPLEMENTATIONS = ["compiled", "pure"]
PUBLIC_NAMES = {"VOID_REASONS", "Accepted", "Held", "MemoryView", "Outcome", "Pending",
                "Rejected", "StateCache", "admit", "apply_in_order", "apply_step", "apply_tx",
                "decode_envelope", "prepare_entries", "verify_signature", "verify_signatures",
                "verify_signatures_async"}
TX_FIELDS = ("raw", "signed", "sig", "id", "network", "account", "seq", "prev", "time", "op",
             "args")
# The group order of ed25519: S + L is the same scalar, encoded non-canonically.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


INGEST_C = "n3xus.ledger._ingest_c"  # the apply module; re-exports the other compiled parts
DECODE_C = "n3xus.ledger._ingest_decode_c"
VERIFY_C = "n3xus.ledger._ingest_verify_c"


def load_impl(name: str, compiled_module: str = INGEST_C) -> ModuleType:
    """``_ingest_py`` for "pure"; else the compiled module (skipped only when it is not built
    and ``N3XUS_REQUIRE_COMPILED`` is not set)."""
    if name == "pure":
        return _ingest_py
    try:
        return importlib.import_module(compiled_module)
    except ImportError as exc:
        if os.environ.get("N3XUS_REQUIRE_COMPILED") == "1":
            pytest.fail(f"N3XUS_REQUIRE_COMPILED=1 but the compiled ingest twin is missing: {exc}")
        pytest.skip(f"compiled ingest twin not built ({exc}); "
                    "run `python setup.py build_ext --inplace` to test it")


@contextlib.contextmanager
def using(module: ModuleType) -> Iterator[None]:
    """Run the engine (memory and LMDB alike) on ``module``'s steps."""
    saved = engine.admit, engine.apply_in_order, engine.verify_signature
    engine.admit, engine.apply_in_order, engine.verify_signature = (  # type: ignore[attr-defined]
        module.admit, module.apply_in_order, module.verify_signature)
    try:
        yield
    finally:
        engine.admit, engine.apply_in_order, engine.verify_signature = saved  # type: ignore[attr-defined]


# ------------------------------------------------------------------------ comparison


def tx_fields(tx: Tx | None) -> tuple[Any, ...] | None:
    return None if tx is None else tuple(getattr(tx, name) for name in TX_FIELDS)


def error_fields(error: TxRejected | None) -> tuple[Any, ...] | None:
    if error is None:
        return None
    return (type(error).__name__, error.reason, error.message, str(error),
            getattr(error, "proof", None), getattr(error, "proof_index", None))


def summary(outcome: Any) -> tuple[Any, ...]:
    if isinstance(outcome, _ingest_py.Accepted):
        return ("accepted", outcome.entry_id, outcome.log_index, tx_fields(outcome.tx),
                error_fields(outcome.result), outcome.proof)
    if isinstance(outcome, _ingest_py.Rejected):
        return ("rejected", *error_fields(outcome.error))  # type: ignore[misc]
    return (type(outcome).__name__, *outcome)


def reason_of(row: tuple[Any, ...]) -> Reason | None:
    if row[0] == "rejected":
        return row[2]  # type: ignore[no-any-return]
    if row[0] == "accepted" and row[4] is not None:
        return row[4][1]  # type: ignore[no-any-return]
    return None


def observe(ledger: MemoryLedger) -> tuple[Any, ...]:
    return (ledger.state, ledger.log, dict(ledger.locators), dict(ledger.chain),
            dict(ledger.order), dict(ledger.undo), dict(ledger.pending), ledger.state_root())


def run_network(module: ModuleType, genesis: Genesis, entries: list[Any],
                batch: int = 1) -> tuple[Any, ...]:
    """Everything observable after ingesting ``entries`` (network path, in batches)."""
    ledger = MemoryLedger(genesis)
    outcomes: list[tuple[Any, ...]] = []
    with using(module):
        for start in range(0, len(entries), batch):
            outcomes += [summary(o) for o in ledger.ingest(entries[start:start + batch])]
    return (outcomes, *observe(ledger))


def run_client(module: ModuleType, genesis: Genesis, entries: list[Any]) -> tuple[Any, ...]:
    """The same, each entry a client's submit (kept only when it takes effect)."""
    ledger = MemoryLedger(genesis)
    outcomes: list[tuple[Any, ...]] = []
    with using(module):
        for entry in entries:
            try:
                outcomes.append(summary(ledger.submit(entry)))
            except TxRejected as exc:
                outcomes.append(summary(_ingest_py.Rejected(exc)))
    return (outcomes, *observe(ledger))


def run_both(compiled_module: ModuleType, genesis: Genesis,
             entries: list[bytes]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Both twins on both paths, the network one in batches of several sizes; every run must
    agree with the pure one. Returns (client result, network result)."""
    client = run_client(_ingest_py, genesis, entries)
    assert run_client(compiled_module, genesis, entries) == client
    network = run_network(_ingest_py, genesis, entries)
    for batch in (1, 7, len(entries) or 1):
        result = run_network(compiled_module, genesis, entries, batch)
        if batch == 1:
            assert result == network
        # Batching changes which entries share a write, never the state or its root.
        assert (result[1], result[-1]) == (network[1], network[-1])
    return client, network


class RecordingNet(Net):
    """A Net that records every entry it submits (the history to replay on both twins)."""

    def __init__(self, genesis: Genesis | None = None) -> None:
        super().__init__(genesis)
        self.entries: list[bytes] = []

    def run(self, envelope: bytes) -> Any:
        self.entries.append(envelope)
        return super().run(envelope)


def hand_signed(net: Net, name: str, **changes: Any) -> bytes:
    """The next transfer of ``name`` with fields of the tx map replaced, signed by hand (for
    inputs sign_tx refuses to build)."""
    chain = net.chain(name)
    tx_map = decode(encode_tx_map(network=net.genesis.cid, account=chain.account, seq=chain.seq,
                                  prev=chain.prev, time_ms=1, op=Op.TRANSFER,
                                  args={"to": account("bob"), "amount": 5}))
    tx_map.update(changes)
    signed = encode(tx_map)
    return encode({"tx": tx_map, "sig": key(name).sign(TX_SIGNATURE_TAG + signed).signature})


def with_signature(envelope: bytes, signature: bytes) -> bytes:
    return envelope[:-64] + signature


def scripted_history() -> tuple[Genesis, list[bytes]]:
    """A history that produces every rejection reason (the test asserts it does)."""
    net = RecordingNet()
    alice, bob = account("alice"), account("bob")
    net.fund("alice", 1_000)
    net.fund("bob", 500)
    first = net.sign("alice", Op.TRANSFER, to=bob, amount=10)
    net.run(first)
    net.do("alice", Op.TRANSFER, to=alice, amount=3)  # to itself
    net.fund("dave", 50)
    net.do("dave", Op.TRANSFER, to=alice, amount=50)  # the whole balance: its key goes
    net.fund("erin", 40)
    net.do("erin", Op.TRANSFER, to=account("erin"), amount=40)  # the whole balance, to itself
    net.reject("alice", Op.TRANSFER, to=bob, amount=10_000)  # overdraft
    net.reject("alice", Op.ISSUE, to=alice, amount=1)  # not an issuer
    net.reject("issuer", Op.ISSUE, to=alice, amount=SUPPLY_CAP)  # over the cap
    other = make_genesis(royalty_bps=500)
    net.run(AccountChain(key("alice"), other.cid).sign(Op.TRANSFER, {"to": bob, "amount": 1},
                                                       time_ms=1))  # wrong network
    chain = net.chain("alice")
    net.run(chain.sign_at(chain.seq + 1, chain.prev, Op.TRANSFER, {"to": bob, "amount": 1},
                          time_ms=net.clock + 1))  # bad seq
    net.run(chain.sign_at(chain.seq, cid_of(b"not the head"), Op.TRANSFER,
                          {"to": bob, "amount": 1}, time_ms=net.clock + 1))  # bad prev
    net.run(first)  # replay of an older transaction (through the chain index)
    draft = net.draft("alice", Op.TRANSFER, to=bob, amount=1)
    net.run(draft[:-1] + bytes((draft[-1] ^ 1,)))  # forged signature
    signature = draft[-64:]
    s_plus_l = (int.from_bytes(signature[32:], "little") + ED25519_L).to_bytes(32, "little")
    net.run(with_signature(draft, signature[:32] + s_plus_l))  # malleated (non-canonical S)
    net.run(with_signature(draft, bytes(64)))
    zero_key = decode(encode_tx_map(network=net.genesis.cid, account=bytes(32), seq=0, prev=None,
                                    time_ms=1, op=Op.TRANSFER, args={"to": bob, "amount": 1}))
    net.run(encode({"tx": zero_key, "sig": bytes(64)}))  # small-order key
    net.run(b"\x00 not an envelope")  # malformed
    net.run(draft[:-3])  # truncated
    net.run(hand_signed(net, "alice", v=2))  # unsupported version
    net.run(hand_signed(net, "alice", op="burn"))  # unknown op
    net.run(hand_signed(net, "alice", args={"to": bob, "amount": 0}))  # bad amount
    net.run(hand_signed(net, "alice", args={"to": bob, "amount": MAX_AMOUNT + 1}))  # overflow
    net.run(hand_signed(net, "alice", args={"to": bob, "amount": 2**64 - 1}))  # overflow
    # Assets.
    asset = net.mint("creator", editions=3)
    net.reject("creator", Op.MINT, artifact=ARTIFACT, metadata={}, editions=10**4,
               royalty_bps=1000, creator_bps=8000, platform_bps=2000)  # bad params
    unknown = cid_of(b"no such asset")
    net.reject("alice", Op.LIST, asset=unknown, edition=1, price=5)  # unknown asset
    net.reject("alice", Op.LIST, asset=asset, edition=1, price=5)  # not the owner
    net.reject("creator", Op.DELIST, asset=asset, edition=1)  # unknown listing
    listing = net.do("creator", Op.LIST, asset=asset, edition=1, price=100).cid
    net.reject("alice", Op.BUY, asset=asset, edition=1, listing=listing, price=99)  # price
    net.reject("creator", Op.BUY, asset=asset, edition=1, listing=listing, price=100)  # own
    net.do("alice", Op.BUY, asset=asset, edition=1, listing=listing, price=100)
    net.do("alice", Op.TRANSFER_ASSET, to=bob, asset=asset, edition=1)
    net.do("bob", Op.LIST, asset=asset, edition=1, price=7)
    net.do("bob", Op.DELIST, asset=asset, edition=1)
    net.do("alice", Op.TIP, to=account("creator"), ref=None, amount=99)
    net.do("alice", Op.TIP, to=account("creator"), ref=listing, amount=1)
    # Equivocation by bob (a second transaction at an accepted position), then frozen.
    bob_chain = net.chain("bob")
    net.run(bob_chain.sign_at(bob_chain.seq - 1, prev_of(net, "bob", bob_chain.seq - 1),
                              Op.TRANSFER, {"to": alice, "amount": 2}, time_ms=5))
    net.reject("bob", Op.TRANSFER, to=alice, amount=1)  # frozen
    # A fraud proof from elsewhere: carol forked before any of it reached this node.
    carol = AccountChain(key("carol"), net.genesis.cid)
    fork = [carol.sign_at(0, None, Op.TRANSFER, {"to": bob, "amount": n}, time_ms=1)
            for n in (1, 2)]
    proof = make_fraud_proof(*fork)
    net.run(proof[:-1] + bytes((proof[-1] ^ 1,)))  # tampered proof
    net.run(proof)
    net.run(proof)  # the account is already frozen
    net.run(fork[0])  # frozen
    net.do("alice", Op.TRANSFER, to=bob, amount=1)  # and the ledger goes on
    return net.genesis, net.entries


def admitted_txs(genesis: Genesis, entries: list[bytes], verify: bool) -> list[Tx]:
    """The transactions the pure twin's :func:`admit` decodes from ``entries`` (rejected
    entries and other admissions left out)."""
    txs: list[Tx] = []
    for entry in entries:
        try:
            item = _ingest_py.admit(genesis, entry, verify)
        except TxRejected:
            continue
        if isinstance(item, Tx):
            txs.append(item)
    return txs


def prev_of(net: Net, name: str, seq: int) -> CID | None:
    """The prev link of ``name``'s transaction at ``seq`` (from the ledger's chain)."""
    if seq == 0:
        return None
    ledger = net.view
    ids = [tx_id for at, tx_id in ledger.account_chain(account(name), seq - 1) if at == seq - 1]
    return CID(ids[0])


def fork(genesis: Genesis) -> list[bytes]:
    carol = AccountChain(key("carol"), genesis.cid)
    return [carol.sign_at(0, None, Op.TRANSFER, {"to": account("bob"), "amount": n},
                          time_ms=1) for n in (1, 2)]
