"""Errors of the canon package.

Codec-level errors also subclass :class:`ValueError` (as msgpack's and cbor2's do), so
callers that only know "bad input" can catch that.
"""

from __future__ import annotations


class CanonError(Exception):
    """Base of every error raised by ``n3xus.canon``."""


class CanonDecodeError(CanonError, ValueError):
    """Bytes that are not what they claim to be: non-canonical or malformed DAG-CBOR,
    a malformed CID or multihash, a truncated or lying CAR, a malformed log entry."""


class CanonEncodeError(CanonError, ValueError):
    """A value that has no canonical DAG-CBOR form (NaN, a non-string map key, an
    unsupported type, an integer outside the CBOR range)."""


class LimitExceededError(CanonError, ValueError):
    """Input over one of the named size limits (a block, a value, a nesting depth)."""


class BlockNotFoundError(CanonError, KeyError):
    """The block store has no block with that CID."""


class CorruptBlockError(CanonError):
    """Stored bytes whose hash no longer matches their CID. The block is never
    returned as valid; the store reports it."""


class VerificationError(CanonError):
    """A signature, a Merkle proof, a checkpoint or a log link did not verify."""
