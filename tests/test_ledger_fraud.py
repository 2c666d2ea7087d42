"""Equivocation fraud proofs: built, verified offline, tamper-evident, freezing accounts
and handed on to other nodes."""

from __future__ import annotations

import pytest
from ledger_support import Net, account, key, make_genesis

from n3xus.canon.cid import cid_of
from n3xus.canon.codec import decode, encode
from n3xus.ledger.errors import EquivocationError, FraudProofError, Reason
from n3xus.ledger.fraud import make_fraud_proof, verify_fraud_proof
from n3xus.ledger.ingest import Accepted, Rejected
from n3xus.ledger.memory import MemoryLedger, replay_log
from n3xus.ledger.tx import AccountChain, Op, decode_tx

GENESIS = make_genesis()
LATER = 1_800_000_000_000


def fork(seq: int = 0) -> tuple[bytes, bytes]:
    """Two different transactions of alice at the same position."""
    chain = AccountChain(key("alice"), GENESIS.cid)
    prev = None if seq == 0 else cid_of(b"some head")
    # Dated after the test network's clock: canonical order sorts by time (ledger v2).
    a = chain.sign_at(seq, prev, Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=LATER)
    b = chain.sign_at(seq, prev, Op.TRANSFER, {"to": account("carol"), "amount": 1},
                      time_ms=LATER)
    return a, b


def test_a_proof_verifies_offline_and_is_canonical() -> None:
    a, b = fork(seq=7)
    proof = make_fraud_proof(a, b)
    assert proof == make_fraud_proof(b, a)  # one pair, one proof
    checked = verify_fraud_proof(proof, GENESIS.cid)
    assert (checked.account, checked.seq, checked.network) == (account("alice"), 7,
                                                               GENESIS.network_id)
    assert set(checked.tx_ids) == {decode_tx(a).id, decode_tx(b).id}
    assert checked.tx_ids[0] < checked.tx_ids[1]
    assert checked.cid == cid_of(proof)
    assert verify_fraud_proof(proof).account == account("alice")  # no network given


def test_every_byte_of_a_proof_is_protected() -> None:
    proof = make_fraud_proof(*fork())
    for position in range(len(proof)):
        tampered = bytearray(proof)
        tampered[position] ^= 0x01
        with pytest.raises(FraudProofError):
            verify_fraud_proof(bytes(tampered))
    with pytest.raises(FraudProofError):
        verify_fraud_proof(proof[:-1])


def test_non_proofs_are_refused() -> None:
    a, b = fork()
    chain = AccountChain(key("alice"), GENESIS.cid)
    later = chain.sign_at(1, cid_of(b"h"), Op.TRANSFER, {"to": account("bob"), "amount": 1},
                          time_ms=1)
    other_account = AccountChain(key("mallory"), GENESIS.cid).sign_at(
        0, None, Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=1)
    other_network = AccountChain(key("alice"), make_genesis(royalty_bps=1).cid).sign_at(
        0, None, Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=1)
    forged = bytearray(b)
    forged[-1] ^= 1
    for first, second, words in [(a, a, "same transaction"), (a, later, "seq"),
                                 (a, other_account, "different accounts"),
                                 (a, other_network, "different networks"),
                                 (a, bytes(forged), "signature")]:
        with pytest.raises(FraudProofError, match=words):
            make_fraud_proof(first, second)
    proof = make_fraud_proof(a, b)
    with pytest.raises(FraudProofError, match="another network"):
        verify_fraud_proof(proof, make_genesis(royalty_bps=1).cid)
    # The right envelopes in the wrong order are not the canonical proof.
    body = decode(proof)
    body["txs"].reverse()
    with pytest.raises(FraudProofError, match="order"):
        verify_fraud_proof(encode(body))
    body["txs"] = body["txs"][:1]
    with pytest.raises(FraudProofError, match="exactly two"):
        verify_fraud_proof(encode(body))


def test_equivocation_freezes_the_account_and_is_handed_on() -> None:
    net = Net(GENESIS)
    net.fund("alice", 100)
    a, b = fork()
    assert isinstance(net.run(a), Accepted)
    assert net.balance("bob") == 1
    outcome = net.run(b)
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.EQUIVOCATION
    error = outcome.error
    assert isinstance(error, EquivocationError)
    view = net.view
    assert view.log[error.proof_index] == error.proof
    # Frozen from seq 0 (ledger v2, specs/ledger.md §9): both transactions are void, so
    # the transfer that had reached bob is undone, whichever node saw which first.
    assert view.get(b"F" + account("alice")) == (0).to_bytes(8, "big")
    assert net.balance("bob") == 0 and net.balance("carol") == 0 and net.balance("alice") == 100
    # Frozen: the next transaction in alice's own chain is refused too.
    net.chain("alice").seq, net.chain("alice").prev = 1, decode_tx(a).cid
    assert net.reject("alice", Op.TRANSFER, to=account("bob"), amount=1).reason is Reason.FROZEN
    # Receiving still works: a credit needs no signature from the frozen account.
    net.do("issuer", Op.ISSUE, to=account("alice"), amount=5)
    # Another node, which saw only the first transaction, accepts the proof and freezes too.
    other = MemoryLedger(GENESIS)
    outcomes = other.ingest([view.log[1], a, error.proof, error.proof])
    assert [type(o).__name__ for o in outcomes] == ["Accepted", "Accepted", "Accepted",
                                                    "Rejected"]
    assert outcomes[3].reason is Reason.REPLAY  # type: ignore[union-attr]
    assert other.get(b"F" + account("alice")) == view.get(b"F" + account("alice"))
    assert other.balance(account("bob")) == 0
    # The log replays to the same state, proof included.
    assert replay_log(view.log).state_root() == view.state_root()


def test_a_frozen_sellers_earlier_listing_can_still_be_bought() -> None:
    """Ledger v2: the freeze voids the account's transactions from the forked seq on; a
    listing made before it stands, and its sale credits the (frozen) seller. (v1 refused
    such buys; that check read the freeze, a set-level fact, at the buy's position.)"""
    net = Net(GENESIS)
    net.fund("bob", 100)
    net.fund("alice", 1)
    asset = net.mint("alice", editions=1)
    listing = net.do("alice", Op.LIST, asset=asset, edition=1, price=10).cid
    chain = net.chain("alice")
    give = chain.sign_at(chain.seq, chain.prev, Op.TRANSFER_ASSET,
                         {"to": account("carol"), "asset": asset, "edition": 1}, time_ms=LATER)
    pay = chain.sign_at(chain.seq, chain.prev, Op.TRANSFER, {"to": account("carol"),
                                                             "amount": 1}, time_ms=LATER)
    assert isinstance(net.run(pay), Accepted)
    assert net.run(give).reason is Reason.EQUIVOCATION  # type: ignore[union-attr]
    assert net.balance("carol") == 0  # the forked transactions are void
    net.do("bob", Op.BUY, asset=asset, edition=1, listing=listing, price=10)
    assert net.view.get(b"O" + bytes(asset) + (1).to_bytes(4, "big")) == account("bob")
    assert net.balance("bob") == 90 and net.balance("alice") > 1


def test_bad_proofs_are_rejected_as_entries() -> None:
    view = MemoryLedger(GENESIS)
    proof = make_fraud_proof(*fork())
    tampered = bytearray(proof)
    tampered[-3] ^= 0x40
    other_net = make_genesis(royalty_bps=1)
    chain = AccountChain(key("alice"), other_net.cid)
    foreign = make_fraud_proof(
        chain.sign_at(0, None, Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=1),
        chain.sign_at(0, None, Op.TRANSFER, {"to": account("bob"), "amount": 2}, time_ms=1))
    outcomes = view.ingest([bytes(tampered), foreign])
    assert [o.reason for o in outcomes] == [Reason.BAD_PROOF, Reason.BAD_PROOF]  # type: ignore[union-attr]
    assert view.state == {} and len(view.log) == 1
