"""Equivocation fraud proofs: two validly signed transactions of one account at one ``seq``.

An account's transactions form one hash-linked chain; signing two different transactions at
the same position is the only way to fork it (to spend twice on two nodes). The two signed
envelopes together prove it, to anyone, with no other data: the proof is the DAG-CBOR map
(``specs/ledger.md`` §Fraud proofs)::

    {"v": 1, "txs": [envelope, envelope], "kind": "equivocation"}

with both envelopes embedded as maps, ordered by ascending transaction id, so one pair of
transactions gives exactly one proof (and one proof id: the CID of its bytes). A node that
holds a valid proof freezes the account: every later transaction of it is rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError

from .errors import FraudProofError, TxRejected
from .tx import MAX_TX_BYTES, Tx, decode_tx, verify_tx_signature

FRAUD_PROOF_VERSION: Final = 1
EQUIVOCATION: Final = "equivocation"
# Two envelopes and a few bytes of framing.
MAX_FRAUD_PROOF_BYTES: Final = 2 * MAX_TX_BYTES + 64
# Every proof starts {"v": 1, ... (3 entries); the ingest loop dispatches on this prefix.
FRAUD_PROOF_PREFIX: Final = b"\xa3\x61v\x01"
_FIELDS: Final = frozenset({"v", "txs", "kind"})


@dataclass(frozen=True)
class FraudProof:
    """A verified equivocation proof."""

    raw: bytes
    account: bytes
    seq: int
    network: bytes  # binary CID of the network the two transactions name
    tx_ids: tuple[bytes, bytes]  # binary CIDs, ascending
    txs: tuple[Tx, Tx] | None = None  # the two transactions, in the proof's order

    @property
    def id(self) -> bytes:
        """Binary CID of the proof bytes (the id under which the ledger log keeps it)."""
        return bytes(cid_of(self.raw))

    @property
    def cid(self) -> CID:
        return cid_of(self.raw)


def _conflict(first: Tx, second: Tx, network: bytes | None) -> None:
    if first.account != second.account:
        raise FraudProofError("the two transactions are of different accounts")
    if first.seq != second.seq:
        raise FraudProofError(f"the two transactions are at seq {first.seq} and {second.seq}")
    if first.network != second.network:
        raise FraudProofError("the two transactions name different networks")
    if network is not None and first.network != network:
        raise FraudProofError("the transactions are of another network")
    if first.id == second.id:
        raise FraudProofError("the two transactions are the same transaction")
    for which, tx in (("first", first), ("second", second)):
        if not verify_tx_signature(tx):
            raise FraudProofError(f"the {which} transaction's signature does not verify")


def make_fraud_proof(envelope_a: bytes, envelope_b: bytes) -> bytes:
    """The canonical proof bytes for two conflicting envelopes (in either order); raises
    FraudProofError unless they really are an equivocation."""
    try:
        txs = sorted((decode_tx(envelope_a), decode_tx(envelope_b)), key=lambda tx: tx.id)
    except TxRejected as exc:
        raise FraudProofError(f"not a valid transaction: {exc}") from exc
    _conflict(txs[0], txs[1], None)
    return encode({"v": FRAUD_PROOF_VERSION, "txs": [decode(tx.raw) for tx in txs],
                   "kind": EQUIVOCATION})


def verify_fraud_proof(data: bytes, network: bytes | CID | None = None) -> FraudProof:
    """Check a proof offline; ``network`` (when given) must be the network both transactions
    name. Raises FraudProofError naming the first fault."""
    data = bytes(data)
    if len(data) > MAX_FRAUD_PROOF_BYTES:
        raise FraudProofError(f"proof of {len(data)} bytes is over {MAX_FRAUD_PROOF_BYTES}")
    try:
        proof = decode(data)
    except CanonError as exc:
        raise FraudProofError(f"not canonical DAG-CBOR: {exc}") from None
    if type(proof) is not dict or proof.keys() != _FIELDS:
        raise FraudProofError(f"a fraud proof is a map with exactly the keys {sorted(_FIELDS)}")
    if type(proof["v"]) is not int or proof["v"] != FRAUD_PROOF_VERSION:
        raise FraudProofError(f"unsupported fraud proof version {proof['v']!r}")
    if proof["kind"] != EQUIVOCATION:
        raise FraudProofError(f"unknown fraud proof kind {proof['kind']!r}")
    envelopes = proof["txs"]
    if type(envelopes) is not list or len(envelopes) != 2:
        raise FraudProofError('"txs" must list exactly two envelopes')
    txs: list[Tx] = []
    for which, envelope in zip(("first", "second"), envelopes, strict=True):
        try:
            txs.append(decode_tx(encode(envelope)))
        except (TxRejected, CanonError) as exc:
            raise FraudProofError(f"the {which} envelope is not a valid transaction: {exc}") from None
    first, second = txs
    if first.id > second.id:
        raise FraudProofError("the envelopes are not in ascending transaction-id order")
    _conflict(first, second, None if network is None else bytes(network))
    return FraudProof(data, first.account, first.seq, first.network, (first.id, second.id),
                      (first, second))
