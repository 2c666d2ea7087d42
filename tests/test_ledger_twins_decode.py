"""The admission and decoder twins (compiled ``_ingest_decode_c``, pure ``_ingest_decode_py``)
give identical results: :func:`admit` returns the same transactions and reasons, entries
that are not bytes and unverified replays go through the engine alike, the compiled
transfer decoder agrees with ``decode_tx`` (every fast layout, integer forms, mutations),
and :func:`prepare_entries` triages alike.

"compiled" is skipped only when the extension is not built (never under
``N3XUS_REQUIRE_COMPILED=1``, where a missing extension fails the test).
"""

from __future__ import annotations

import random
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_twin_support import (
    DECODE_C,
    IMPLEMENTATIONS,
    error_fields,
    fork,
    load_impl,
    reason_of,
    scripted_history,
    summary,
    tx_fields,
    using,
)
from ledger_support import ARTIFACT, account, key, make_genesis

from n3xus.canon.cid import CID, cid_of
from n3xus.ledger import _ingest_py, engine
from n3xus.ledger.errors import LedgerCorruptError, Reason, TxRejected
from n3xus.ledger.fraud import FraudProof, make_fraud_proof
from n3xus.ledger.genesis import MAX_AMOUNT
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.tx import (
    TX_SIGNATURE_TAG,
    TXID_PREFIX,
    AccountChain,
    Op,
    Tx,
    decode_tx,
    encode_tx_map,
)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl(request.param)


@pytest.fixture
def compiled() -> ModuleType:
    return load_impl("compiled")


@pytest.fixture
def decoder() -> ModuleType:
    return load_impl("compiled", DECODE_C)


@pytest.mark.parametrize("verify", [True, False])
def test_entries_that_are_not_bytes_and_unverified_replays(compiled: ModuleType,
                                                           verify: bool) -> None:
    genesis, entries = scripted_history()
    mixed: list[Any] = [bytearray(entry) if n % 3 == 0 else entry
                        for n, entry in enumerate(entries)]
    results = []
    for module in (compiled, _ingest_py):
        ledger = MemoryLedger(genesis)
        outcomes: list[Any] = []
        with using(module):
            try:
                for entry in mixed:
                    outcomes += [summary(o) for o in ledger.ingest([entry], verify=verify)]
            except LedgerCorruptError as exc:
                # Without signature checks a forged transaction gets in, and proving a
                # later equivocation finds it unprovable: why verify=False is only for
                # the node's own log.
                outcomes.append(("corrupt", str(exc)))
        results.append((outcomes, ledger.state, ledger.log))
    assert results[0] == results[1]
    reasons = {reason_of(o) for o in results[0][0] if o[0] != "corrupt"}
    assert (Reason.BAD_SIGNATURE in reasons) == verify


def test_admit_is_identical(compiled: ModuleType) -> None:
    genesis, entries = scripted_history()
    for entry in entries:
        results = []
        for module in (compiled, _ingest_py):
            for verify in (True, False):
                try:
                    item = module.admit(genesis, entry, verify)
                    results.append(("tx", tx_fields(item)) if isinstance(item, Tx)
                                   else ("proof", item.raw, item.id))
                except TxRejected as exc:
                    results.append(error_fields(exc))
        assert results[0] == results[2] and results[1] == results[3]
    assert isinstance(compiled.admit(genesis, make_fraud_proof(*fork(genesis))), FraudProof)



# ------------------------------------------------------------ the compiled decoder


def _envelope(op: Op, args: dict[str, Any], seq: int = 3, time_ms: int = 9,
              prev: CID | None = None, signer: str = "alice") -> bytes:
    genesis = make_genesis()
    if seq and prev is None:
        prev = CID(TXID_PREFIX + b"\x07" * 32)
    tx_map = encode_tx_map(network=genesis.cid, account=account(signer), seq=seq, prev=prev,
                           time_ms=time_ms, op=op, args=args)
    return b"\xa2\x62tx" + tx_map + b"\x63sig\x58\x40" + key(signer).sign(
        TX_SIGNATURE_TAG + tx_map).signature


LINK = CID(TXID_PREFIX + b"\x09" * 32)
FAST_SAMPLES: dict[Op, dict[str, Any]] = {
    Op.ISSUE: {"to": account("bob"), "amount": 1},
    Op.TRANSFER: {"to": account("bob"), "amount": 24},
    Op.TIP: {"to": account("bob"), "ref": None, "amount": 256},
    Op.TRANSFER_ASSET: {"to": account("bob"), "asset": LINK, "edition": 65_536},
    Op.LIST: {"asset": LINK, "price": 2**32, "edition": 2**32 - 1},
    Op.DELIST: {"asset": LINK, "edition": 23},
    Op.BUY: {"asset": LINK, "price": MAX_AMOUNT, "edition": 1, "listing": LINK},
}


def assert_decoder_agrees(compiled_module: ModuleType, data: bytes) -> Tx | None:
    """Where the C decoder accepts, decode_tx must return the very same transaction."""
    ours = compiled_module._c_decode_fast(data)
    if ours is not None:
        assert tx_fields(ours) == tx_fields(decode_tx(data))
    return ours


def test_decoder_accepts_every_fast_operation(decoder: ModuleType) -> None:
    for op, args in FAST_SAMPLES.items():
        for seq, time_ms in ((0, 0), (23, 24), (2**63 - 1, 2**63 - 1)):
            data = _envelope(op, args, seq=seq, time_ms=time_ms)
            assert assert_decoder_agrees(decoder, data) is not None, (op, seq)
    tip_with_ref = _envelope(Op.TIP, {"to": account("bob"), "ref": LINK, "amount": 5})
    assert assert_decoder_agrees(decoder, tip_with_ref) is not None
    mint = _envelope(Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 1,
                               "royalty_bps": 0, "creator_bps": 8000, "platform_bps": 2000})
    assert decoder._c_decode_fast(mint) is None  # not a fast layout: decode_tx decides


def test_decoder_declines_what_decode_tx_rejects(decoder: ModuleType) -> None:
    good = _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 5})
    amount_at = good.index(b"\x66amount") + 7
    assert good[amount_at] == 5
    non_minimal = good[:amount_at] + b"\x18\x05" + good[amount_at + 1:]
    declined = [
        non_minimal,  # an integer not in its shortest form
        good + b"\x00",  # trailing bytes
        good[:-1],  # short signature
        _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 0}),  # out of range
        _envelope(Op.TRANSFER, {"to": account("bob"), "amount": MAX_AMOUNT + 1}),
        _envelope(Op.DELIST, {"asset": LINK, "edition": 2**32}),
        _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 5}, seq=2**63),
        _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 5}, time_ms=2**63),
        _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 5}, seq=0, prev=LINK),
        _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 5}, prev=cid_of(b"x", codec="raw")),
    ]
    for data in declined:
        assert decoder._c_decode_fast(data) is None, data.hex()


def _cbor_uint(value: int, width: int) -> bytes:
    """``value`` as a CBOR unsigned integer with a ``width``-byte argument (0: inline)."""
    if width == 0:
        return bytes((value,))
    return bytes(({1: 0x18, 2: 0x19, 4: 0x1A, 8: 0x1B}[width],)) + value.to_bytes(width, "big")


@pytest.mark.parametrize("value", [0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**32 - 1, 2**32,
                                   MAX_AMOUNT, MAX_AMOUNT + 1, 2**64 - 1])
def test_decoder_integer_forms(decoder: ModuleType, value: int) -> None:
    """Every width of every boundary value, as an amount: the C decoder takes exactly the
    shortest form of an in-range value (and then agrees with decode_tx)."""
    template = _envelope(Op.TRANSFER, {"to": account("bob"), "amount": 77})
    at = template.index(b"\x66amount") + 7
    assert template[at:at + 2] == b"\x18\x4d"
    fits = [width for width in (0, 1, 2, 4, 8)
            if (value <= 23 if width == 0 else value < 256**width)]
    for width in fits:
        data = template[:at] + _cbor_uint(value, width) + template[at + 2:]
        ours = assert_decoder_agrees(decoder, data)
        assert (ours is not None) == (width == fits[0] and 0 < value <= MAX_AMOUNT), width


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(sorted(FAST_SAMPLES)), seed=st.integers(0, 2**32 - 1),
       flips=st.integers(1, 3), cut=st.integers(0, 8))
def test_decoder_never_disagrees_on_mutations(op: Op, seed: int, flips: int, cut: int) -> None:
    decoder = load_impl("compiled", DECODE_C)
    rng = random.Random(seed)
    data = bytearray(_envelope(op, FAST_SAMPLES[op], seq=rng.choice([0, 5, 300, 70_000])))
    for _ in range(flips):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    assert_decoder_agrees(decoder, bytes(data[:len(data) - cut]))



def test_prepare_entries_is_identical(compiled: ModuleType) -> None:
    """The verify-ahead triage: order keys, decoded transactions, what needs a signature
    check; fraud proofs, undecodable bytes, another network and known ids included."""
    genesis, entries = scripted_history()
    alice = AccountChain(key("alice"), genesis.cid)
    first = alice.sign(Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=2**40)
    twin_chain = AccountChain(key("alice"), genesis.cid)
    proof = make_fraud_proof(first, twin_chain.sign(Op.TRANSFER, {"to": account("bob"),
                                                                  "amount": 2}, time_ms=5))
    known_id = decode_tx(entries[3]).id
    mixed: list[Any] = [*entries, first, proof, b"", b"\xa0", bytearray(entries[4])]
    for network, known in ((genesis.network_id, {known_id: b"x"}.get), (None, None)):
        results = []
        for module in (compiled, _ingest_py):
            found = module.prepare_entries(mixed, network, known)
            results.append([(key, tx_fields(tx), verify) for key, tx, verify in found])
        assert results[0] == results[1]
        if known is not None:  # the known id needs no check; another network is not handed on
            assert results[0][3][1:] == (tx_fields(decode_tx(entries[3])), False)
            assert any(key and tx is None for key, tx, _ in results[0])
    rows = results[0]
    assert all(row[2] for row in rows if row[1] is not None)  # nothing known without a lookup
    decoded = [decode_tx(first)]
    assert rows[len(entries)][0] == engine.tx_order_key(decoded[0])
    assert rows[len(entries) + 1] == (b"", None, False)


