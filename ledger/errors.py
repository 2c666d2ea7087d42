"""Errors of the ledger, and the registry of rejection reason codes.

A rejected transaction raises :class:`TxRejected` carrying a :class:`Reason`: a stable,
machine-readable code (the HTTP API and the CLI print it, other implementations of
``specs/ledger.md`` return the same code for the same input). Decoding failures are also
:class:`ValueError` (as codec errors are everywhere in n3xus), so callers that only know
"bad input" can catch that.

Codes are never reused or renamed: a new failure gets a new code, and the registry in
``specs/ledger.md`` lists each one.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a ledger entry was rejected (the registry of ``specs/ledger.md`` §Reasons)."""

    # Decoding: the bytes are not a well-formed entry of this ledger version.
    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported-version"
    UNKNOWN_OP = "unknown-op"
    BAD_AMOUNT = "bad-amount"
    OVERFLOW = "overflow"
    # Envelope checks against the network and the account's chain.
    WRONG_NETWORK = "wrong-network"
    FROZEN = "frozen"
    BAD_SEQ = "bad-seq"
    BAD_PREV = "bad-prev"
    REPLAY = "replay"
    EQUIVOCATION = "equivocation"
    BAD_SIGNATURE = "bad-signature"
    # State transition rules.
    OVERDRAFT = "overdraft"
    OVER_CAP = "over-cap"
    NOT_ISSUER = "not-issuer"
    BAD_PARAMS = "bad-params"
    UNKNOWN_ASSET = "unknown-asset"
    NOT_OWNER = "not-owner"
    UNKNOWN_LISTING = "unknown-listing"
    PRICE_MISMATCH = "price-mismatch"
    OWN_LISTING = "own-listing"
    # A fraud proof entry that does not verify.
    BAD_PROOF = "bad-proof"
    # Ledger v2: dated too far beyond the node's clock to be held (specs/ledger.md §6.2).
    TOO_EARLY = "too-early"


class LedgerError(Exception):
    """Base of every error raised by ``n3xus.ledger``."""


class TxRejected(LedgerError):
    """An entry (transaction or fraud proof) the ledger refuses. Nothing of it was applied.

    ``reason`` is the machine-readable code, ``message`` the human explanation.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class EquivocationError(TxRejected):
    """The transaction conflicts with a known one at the same (account, seq): it proved
    fraud. ``proof`` (the fraud proof bytes) was appended to the log at ``proof_index`` in
    its place, and the account is frozen from that seq: both transactions and every later
    one of the account are void (``specs/ledger.md`` §9)."""

    def __init__(self, message: str, proof: bytes, proof_index: int) -> None:
        super().__init__(Reason.EQUIVOCATION, message)
        self.proof = proof
        self.proof_index = proof_index


class MalformedTxError(TxRejected, ValueError):
    """Bytes that do not decode to a valid entry: not canonical DAG-CBOR, the wrong shape,
    an unknown version or operation, a float, an amount out of range."""


class GenesisError(LedgerError, ValueError):
    """A genesis document that is malformed or violates its own constraints."""


class FraudProofError(LedgerError, ValueError):
    """A fraud proof that does not prove what it claims (tampered, unsigned, not a conflict)."""


class LedgerCorruptError(LedgerError):
    """The stored log or state contradicts itself: a logged entry fails to replay, the store
    was created for another network, or an invariant (supply >= every balance) broke.
    Never raised for bad input from the network, only for bad local data or a bug."""


class TransparencyError(LedgerError):
    """The node's transparency log cannot do what was asked (``ledger/transparency.py``)."""


class ProofUnavailableError(TransparencyError, LookupError):
    """No proof can be built for this request now: no checkpoint signed yet, an unknown
    entry, an entry the last checkpoint does not cover yet, or a state that has moved on
    since the last checkpoint. Signing a new checkpoint usually cures it."""


class CheckpointRefusedError(TransparencyError):
    """Signing would contradict a checkpoint this node signed before: the log has fewer
    entries than that checkpoint, or its tree (or state) at that size has another root.
    The node never signs it; the store needs investigation."""


class AuditPart(StrEnum):
    """Which part of a bundle, checkpoint or export failed verification (the registry of
    ``specs/ledger.md`` §13.8). Codes are never renamed or reused."""

    FORMAT = "format"  # not well-formed text / structure of its kind
    NOTE_SIGNATURE = "note-signature"  # the signed note does not verify with the key
    ORIGIN = "origin"  # the checkpoint's origin is not the key's / names another network
    CHECKPOINT = "checkpoint"  # the checkpoint body is malformed or lacks its state line
    PROOF_PATH = "proof-path"  # an inclusion proof does not lead to the checkpoint root
    ENTRY = "entry"  # a log entry's bytes are not a well-formed entry
    ENTRY_SIGNATURE = "entry-signature"  # a transaction's signature does not verify
    CHAIN_LINK = "chain-link"  # seq / prev does not continue the account's chain
    ENTRY_RULES = "entry-rules"  # the state transition rules reject the entry
    NETWORK = "network"  # an entry or checkpoint of another network
    STATE_PROOF = "state-proof"  # state leaves do not lead to the state root / prove the key
    STATE_ROOT = "state-root"  # a recomputed state root differs from the signed one
    LOG_ROOT = "log-root"  # a recomputed log root differs from the signed one
    CONSISTENCY = "consistency"  # two checkpoints are not consistent (a fork, a bad proof)
    CAR_FRAME = "car-frame"  # the export's CAR framing is broken
    BLOCK_HASH = "block-hash"  # an export block does not hash to its CID / the linked CID
    MANIFEST = "manifest"  # the export's manifest or pages contradict its content


class AuditError(LedgerError, ValueError):
    """A bundle, checkpoint or export that does not verify. ``part`` names what failed,
    ``index`` the log entry concerned (when one is)."""

    def __init__(self, part: AuditPart, message: str, index: int | None = None) -> None:
        where = "" if index is None else f" at index {index}"
        super().__init__(f"{part.value}{where}: {message}")
        self.part = part
        self.index = index
        self.message = message
