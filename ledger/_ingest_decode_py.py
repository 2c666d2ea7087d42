"""Admission of an entry on its own (``specs/ledger.md`` §6.1) and the verify-ahead triage:
:func:`decode_envelope`, :func:`admit` (decode, network, signature; a fraud proof verifies)
and :func:`prepare_entries`. Nothing here depends on the ledger's state.

Pure-Python twin of :mod:`n3xus.ledger._ingest_decode_c` (same names, byte-identical
results); the selector is :mod:`n3xus.ledger.ingest`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from .errors import FraudProofError, Reason, TxRejected
from .fraud import FRAUD_PROOF_PREFIX, FraudProof, verify_fraud_proof
from .genesis import Genesis
from .tx import Tx, decode_tx, verify_tx_signature

__all__ = ["admit", "decode_envelope", "prepare_entries"]

_FRAUD_PREFIX_LEN: Final = len(FRAUD_PROOF_PREFIX)


def admit(genesis: Genesis, entry: bytes, verify: bool = True) -> Tx | FraudProof:
    """Check an entry on its own (§6.1); raises :class:`TxRejected` with its reason.

    ``verify=False`` skips the transaction signature check: only for entries this node
    verified before (a replay of its own log). Fraud proofs are always checked in full."""
    if entry[:_FRAUD_PREFIX_LEN] == FRAUD_PROOF_PREFIX:
        try:
            return verify_fraud_proof(entry, genesis.network_id)
        except FraudProofError as exc:
            raise TxRejected(Reason.BAD_PROOF, str(exc)) from None
    tx = decode_tx(entry)
    check_network(genesis, tx)
    if verify and not verify_tx_signature(tx):
        raise TxRejected(Reason.BAD_SIGNATURE, "the signature does not verify")
    return tx


def check_network(genesis: Genesis, tx: Tx) -> None:
    """Raise ``wrong-network`` unless ``tx`` names ``genesis``'s network (part of
    :func:`admit`, for a transaction decoded before)."""
    if tx.network != genesis.network_id:
        raise TxRejected(Reason.WRONG_NETWORK, f"the transaction is for network {tx.network_cid}")


def prepare_entries(entries: Iterable[bytes], network_id: bytes | None,
                    known: Callable[[bytes], object] | None) -> list[tuple[bytes, Tx | None, bool]]:
    """What the ledger's verify-ahead path needs of each entry, before any signature check:
    ``(order key, the Tx, whether its signature needs checking)``. Fraud proofs and bytes
    that do not decode: ``(b"", None, False)`` (admission judges them); a transaction of
    another network than ``network_id`` (None: any): ``(key, None, False)``; one that
    ``known(id)`` finds: ``(key, tx, False)`` (a replay, whatever its signature)."""
    found: list[tuple[bytes, Tx | None, bool]] = []
    for entry in entries:
        if entry[:_FRAUD_PREFIX_LEN] == FRAUD_PROOF_PREFIX:
            found.append((b"", None, False))
            continue
        try:
            tx = decode_tx(entry)
        except (ValueError, TxRejected):
            found.append((b"", None, False))
            continue
        key = (tx.time.to_bytes(8, "big") + tx.account + tx.seq.to_bytes(8, "big") + tx.id)
        if network_id is not None and tx.network != network_id:
            found.append((key, None, False))
        elif known is not None and known(tx.id) is not None:
            found.append((key, tx, False))
        else:
            found.append((key, tx, True))
    return found


def decode_envelope(entry: bytes) -> Tx:
    """:func:`tx.decode_tx` (the compiled twin matches the common layouts in C)."""
    return decode_tx(entry)

