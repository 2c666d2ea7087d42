"""Transaction format: signing, strict decoding, the fast path against the general path,
the genesis document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_support import ARTIFACT, account, key, make_genesis

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.ledger import tx as txmod
from n3xus.ledger.errors import GenesisError, MalformedTxError, Reason, TxRejected
from n3xus.ledger.genesis import MAX_AMOUNT, Genesis
from n3xus.ledger.tx import (
    MAX_TX_BYTES,
    TX_SIGNATURE_TAG,
    AccountChain,
    Op,
    Tx,
    decode_tx,
    decode_tx_general,
    encode_tx_map,
    sign_tx,
    verify_tx_signature,
)

GENESIS = make_genesis()
NETWORK = GENESIS.cid


def fields(tx: Tx) -> tuple[Any, ...]:
    return (tx.raw, tx.signed, tx.sig, tx.id, tx.network, tx.account, tx.seq, tx.prev, tx.time,
            tx.op, tx.args)


def raw_envelope(tx_map: dict[str, Any], signer: str = "alice") -> bytes:
    """Sign an arbitrary tx map (bypassing sign_tx's own validation)."""
    signed = encode(tx_map)
    return encode({"tx": tx_map, "sig": key(signer).sign(TX_SIGNATURE_TAG + signed).signature})


def base_map(**changes: Any) -> dict[str, Any]:
    tx_map: dict[str, Any] = {"v": 1, "op": "transfer", "seq": 0,
                              "args": {"to": account("bob"), "amount": 5}, "prev": None,
                              "time": 1, "account": account("alice"), "network": NETWORK}
    tx_map.update(changes)
    return tx_map


def test_sign_decode_round_trip_and_identity() -> None:
    chain = AccountChain(key("alice"), NETWORK)
    first = chain.sign(Op.TRANSFER, {"to": account("bob"), "amount": 5}, time_ms=10)
    second = chain.sign(Op.TRANSFER, {"to": account("bob"), "amount": 6}, time_ms=11)
    a, b = decode_tx(first), decode_tx(second)
    assert (a.seq, a.prev, a.op, a.args) == (0, None, Op.TRANSFER,
                                             {"to": account("bob"), "amount": 5})
    assert b.prev == a.id and b.prev_cid == a.cid and b.seq == 1
    # The id is the CID of the signed tx map, independent of the signature.
    assert a.cid == cid_of(encode(decode(first)["tx"]))
    assert a.network_cid == NETWORK and a.account == account("alice")
    assert verify_tx_signature(a) and verify_tx_signature(b)
    assert a.to_json()["args"] == {"to": account("bob").hex(), "amount": 5}
    assert "alice" not in repr(chain) and key("alice").encode().hex() not in repr(chain)


def test_signature_covers_the_domain_tag() -> None:
    signed = encode(base_map())
    untagged = encode({"tx": base_map(), "sig": key("alice").sign(signed).signature})
    assert not verify_tx_signature(decode_tx(untagged))
    assert verify_tx_signature(decode_tx(raw_envelope(base_map())))


ENVELOPE_CASES: list[tuple[str, Any, Reason]] = [
    ("float amount", base_map(args={"to": account("bob"), "amount": 5.0}), Reason.MALFORMED),
    ("float time", base_map(time=1.5), Reason.MALFORMED),
    ("bool amount", base_map(args={"to": account("bob"), "amount": True}), Reason.MALFORMED),
    ("zero amount", base_map(args={"to": account("bob"), "amount": 0}), Reason.BAD_AMOUNT),
    ("negative", base_map(args={"to": account("bob"), "amount": -1}), Reason.BAD_AMOUNT),
    ("too large", base_map(args={"to": account("bob"), "amount": MAX_AMOUNT + 1}),
     Reason.OVERFLOW),
    ("unknown op", base_map(op="burn"), Reason.UNKNOWN_OP),
    ("version 2", base_map(v=2), Reason.UNSUPPORTED_VERSION),
    ("version missing", {k: v for k, v in base_map().items() if k != "v"}, Reason.MALFORMED),
    ("extra field", base_map(memo="hi"), Reason.MALFORMED),
    ("extra arg", base_map(args={"to": account("bob"), "amount": 5, "memo": ""}),
     Reason.MALFORMED),
    ("short key", base_map(account=b"\x01" * 31), Reason.MALFORMED),
    ("short recipient", base_map(args={"to": b"\x01" * 31, "amount": 5}), Reason.MALFORMED),
    ("seq 0 with prev", base_map(prev=cid_of(b"x")), Reason.MALFORMED),
    ("seq 1 without prev", base_map(seq=1), Reason.MALFORMED),
    ("negative seq", base_map(seq=-1), Reason.MALFORMED),
    ("seq over 2**63-1", base_map(seq=2**63, prev=cid_of(b"x")), Reason.MALFORMED),
    ("network not a link", base_map(network=bytes(NETWORK)), Reason.MALFORMED),
    ("args not a map", base_map(args=[account("bob"), 5]), Reason.MALFORMED),
    ("edition 0", base_map(op="delist", args={"asset": cid_of(b"a"), "edition": 0}),
     Reason.MALFORMED),
    ("float in metadata", base_map(op="mint", args={
        "artifact": ARTIFACT, "metadata": {"nested": [{"x": 0.5}]}, "editions": 1,
        "royalty_bps": 0, "creator_bps": 10_000, "platform_bps": 0}), Reason.MALFORMED),
    ("bps over 10000", base_map(op="mint", args={
        "artifact": ARTIFACT, "metadata": {}, "editions": 1, "royalty_bps": 10_001,
        "creator_bps": 10_000, "platform_bps": 0}), Reason.MALFORMED),
]


@pytest.mark.parametrize(("name", "tx_map", "reason"), ENVELOPE_CASES,
                         ids=[case[0] for case in ENVELOPE_CASES])
def test_bad_transactions_are_rejected_with_their_reason(name: str, tx_map: Any,
                                                         reason: Reason) -> None:
    envelope = raw_envelope(tx_map)
    with pytest.raises(MalformedTxError) as caught:
        decode_tx(envelope)
    assert caught.value.reason is reason
    assert isinstance(caught.value, ValueError)


def test_non_canonical_and_malformed_envelopes() -> None:
    good = raw_envelope(base_map())
    # The amount 5 written with a two-byte argument: same value, not canonical.
    assert b"\x66amount\x05" in good
    lax = good.replace(b"\x66amount\x05", b"\x66amount\x19\x00\x05")
    bad_inputs = [
        lax,
        good[:-1],  # truncated signature
        good + b"\x00",  # trailing byte
        encode({"tx": base_map(), "sig": b"\x00" * 63}),
        encode({"tx": base_map(), "sig": b"\x00" * 64, "extra": 1}),
        encode([base_map(), b"\x00" * 64]),
        b"",
        b"\xff" * 10,
        encode({"tx": base_map(), "sig": b"\x00" * 64})[:-64] + b"\x00" * (MAX_TX_BYTES + 1),
    ]
    for data in bad_inputs:
        with pytest.raises(MalformedTxError) as caught:
            decode_tx(data)
        assert caught.value.reason is Reason.MALFORMED


def test_metadata_size_limit() -> None:
    big = base_map(op="mint", args={"artifact": ARTIFACT, "metadata": {"d": "x" * 9000},
                                    "editions": 1, "royalty_bps": 0, "creator_bps": 10_000,
                                    "platform_bps": 0})
    with pytest.raises(MalformedTxError, match="over 8192"):
        decode_tx(raw_envelope(big))


def test_sign_tx_refuses_to_build_invalid_transactions() -> None:
    with pytest.raises(TxRejected):
        sign_tx(key("alice"), network=NETWORK, seq=0, prev=None, time_ms=0, op=Op.TRANSFER,
                args={"to": account("bob"), "amount": 0})


# --- the fast path agrees with the general path ------------------------------------------------

accounts = st.binary(min_size=32, max_size=32)
amounts = st.integers(min_value=1, max_value=MAX_AMOUNT)
editions = st.integers(min_value=1, max_value=2**32 - 1)
links = st.one_of(st.binary(min_size=1, max_size=64).map(cid_of),
                  st.binary(min_size=1, max_size=8).map(lambda b: cid_of(b, hash="sha2-256")))


@st.composite
def transactions(draw: st.DrawFn) -> bytes:
    op = draw(st.sampled_from(list(Op)))
    arg_values = {
        "to": draw(accounts), "amount": draw(amounts), "price": draw(amounts),
        "asset": draw(links), "listing": draw(links), "edition": draw(editions),
        "ref": draw(st.one_of(st.none(), links)), "artifact": draw(links),
        "metadata": draw(st.dictionaries(st.text(max_size=5), st.integers(-2**64, 2**64 - 1) | st.text(),
                                         max_size=3)),
        "editions": draw(editions), "royalty_bps": draw(st.integers(0, 10_000)),
        "creator_bps": draw(st.integers(0, 10_000)), "platform_bps": draw(st.integers(0, 10_000)),
    }
    args = {name: arg_values[name] for name, _ in txmod.ARG_FIELDS[op]}
    seq = draw(st.integers(min_value=0, max_value=2**63 - 1))
    prev = None if seq == 0 else draw(links)
    network = draw(st.sampled_from([NETWORK, cid_of(b"other", hash="sha2-256")]))
    chain = AccountChain(key(draw(st.sampled_from(["alice", "bob"]))), network)
    return chain.sign_at(seq, prev, op, args, time_ms=draw(st.integers(0, 2**63 - 1)))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(transactions())
def test_fast_and_general_paths_agree_on_valid_transactions(envelope: bytes) -> None:
    general = decode_tx_general(envelope)
    assert fields(decode_tx(envelope)) == fields(general)
    assert verify_tx_signature(general)
    assert encode(decode(envelope)) == envelope


def test_fast_path_is_taken_for_common_operations() -> None:
    chain = AccountChain(key("alice"), NETWORK, 3, cid_of(b"head"))
    asset = cid_of(b"asset")
    for op, args in [(Op.TRANSFER, {"to": account("bob"), "amount": 2**40}),
                     (Op.ISSUE, {"to": account("bob"), "amount": 24}),
                     (Op.TIP, {"to": account("bob"), "ref": None, "amount": 255}),
                     (Op.TIP, {"to": account("bob"), "ref": asset, "amount": 256}),
                     (Op.BUY, {"asset": asset, "edition": 70_000, "listing": asset, "price": 1}),
                     (Op.LIST, {"asset": asset, "edition": 1, "price": 2**63 - 1}),
                     (Op.DELIST, {"asset": asset, "edition": 23}),
                     (Op.TRANSFER_ASSET, {"to": account("bob"), "asset": asset, "edition": 2})]:
        envelope = chain.sign_at(chain.seq, chain.prev, op, args, time_ms=2**32)
        assert fields(txmod._decode_fast(envelope)) == fields(decode_tx_general(envelope))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(transactions(), st.data())
def test_mutated_envelopes_decode_the_same_on_both_paths(envelope: bytes,
                                                         data: st.DataObject) -> None:
    mutated = bytearray(envelope)
    action = data.draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
    position = data.draw(st.integers(0, len(mutated) - 1))
    if action == "flip":
        mutated[position] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "set":
        mutated[position] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        del mutated[position:]
    elif action == "insert":
        mutated.insert(position, data.draw(st.integers(0, 255)))
    else:
        del mutated[position]
    results = []
    for decoder in (decode_tx, decode_tx_general):
        try:
            results.append(fields(decoder(bytes(mutated))))
        except MalformedTxError as exc:
            results.append(exc.reason)
    assert results[0] == results[1]
    if not isinstance(results[0], Reason):
        # Whatever decodes is canonical DAG-CBOR.
        assert encode(decode(bytes(mutated))) == bytes(mutated)


# --- genesis ------------------------------------------------------------------------------------


def test_genesis_round_trip_and_network_id() -> None:
    again = Genesis.from_bytes(bytes(GENESIS))
    assert again == GENESIS and again.cid == GENESIS.cid == cid_of(bytes(GENESIS))
    assert decode(bytes(GENESIS))["issuers"] == sorted([account("issuer"), account("issuer2")])
    assert GENESIS.creator_bps == 8000 and GENESIS.platform_bps == 2000
    assert make_genesis(royalty_bps=500).cid != GENESIS.cid


@pytest.mark.parametrize("change", [
    {"issuers": []},
    {"issuers": [b"\x02" * 32, b"\x01" * 32]},
    {"issuers": [b"\x01" * 32, b"\x01" * 32]},
    {"supply_cap": 0},
    {"supply_cap": 2**63},
    {"creator_bps": 7000},
    {"royalty_bps": 6000},
    {"max_editions": 10_001},
    {"name": "has space"},
    {"platform": b"\x00" * 31},
    {"v": 2},
    {"extra": 1},
    {"supply_cap": 1.0},
])
def test_invalid_genesis_documents_are_refused(change: dict[str, Any]) -> None:
    doc = GENESIS.to_document()
    doc.update(change)
    with pytest.raises(GenesisError):
        Genesis.from_bytes(encode(doc))


def test_links_in_args_are_cids() -> None:
    chain = AccountChain(key("alice"), NETWORK)
    envelope = chain.sign(Op.DELIST, {"asset": cid_of(b"a"), "edition": 1}, time_ms=0)
    assert isinstance(decode_tx(envelope).args["asset"], CID)
    tx_map = encode_tx_map(network=NETWORK, account=account("alice"), seq=0, prev=None,
                           time_ms=0, op=Op.DELIST, args={"asset": cid_of(b"a"), "edition": 1})
    assert decode_tx(envelope).signed == tx_map


# --- the worked example of specs/ledger.md, Appendix A ------------------------------------------

SPEC = Path(__file__).resolve().parents[1] / "specs" / "ledger.md"


def test_spec_example_is_what_the_code_produces() -> None:
    from nacl.signing import SigningKey

    from n3xus.ledger.ingest import Accepted
    from n3xus.ledger.memory import MemoryLedger

    issuer, platform, alice, bob = (SigningKey(bytes([n]) * 32) for n in (1, 2, 3, 4))
    genesis = Genesis.create("n3xus-example", [bytes(issuer.verify_key)], 1_000_000,
                             bytes(platform.verify_key))
    first = AccountChain(issuer, genesis.cid).sign(
        Op.ISSUE, {"to": bytes(alice.verify_key), "amount": 1000}, time_ms=1_700_000_000_000)
    second = AccountChain(alice, genesis.cid).sign(
        Op.TRANSFER, {"to": bytes(bob.verify_key), "amount": 250}, time_ms=1_700_000_000_001)
    view = MemoryLedger(genesis)
    assert all(isinstance(o, Accepted) and o.applied for o in view.ingest([first, second]))
    spec = "".join(SPEC.read_text().split())  # the spec wraps long hex over several lines
    for text in (genesis.block.hex(), str(genesis.cid), first.hex(), second.hex(),
                 str(decode_tx(first).cid), str(decode_tx(second).cid),
                 view.state_root().hex(), TX_SIGNATURE_TAG.hex()):
        assert text in spec
