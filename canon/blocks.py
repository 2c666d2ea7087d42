"""A block by itself, before and apart from any store: which blocks the canon stores (size,
codec, hash), whether bytes match their CID, and the links a block holds. Pure functions on
bytes; :mod:`n3xus.canon.blockstore` (LMDB) and the wire protocols both check blocks here,
and the block store re-exports these names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import blake3

from . import cid as _cid
from .cid import CID
from .codec import MAX_BLOCK_SIZE as CODEC_MAX_BLOCK_SIZE
from .codec import decode
from .errors import CanonDecodeError, CorruptBlockError, LimitExceededError

# The largest block stored: the codec's own limit (1 MiB, what every IPFS peer exchanges
# over bitswap, so anything here can be exported as a CAR and fetched elsewhere). It also
# bounds what a single get, verify or CAR section can cost in memory.
MAX_BLOCK_SIZE = CODEC_MAX_BLOCK_SIZE

CODEC_RAW = _cid.RAW
CODEC_DAG_CBOR = _cid.DAG_CBOR
CODEC_DAG_PB = _cid.DAG_PB
HASH_IDENTITY = 0x00  # the "block" is inline in the CID: never stored, never missing
HASH_SHA2_256 = _cid.SHA2_256
HASH_BLAKE3 = _cid.BLAKE3

# Codecs a block may have here: dag-pb is accepted as opaque bytes (from CARs made by
# other tools); its links are not walked.
STORABLE_CODECS = frozenset({CODEC_RAW, CODEC_DAG_CBOR, CODEC_DAG_PB})

# The only digest length the store accepts. Multihash allows truncated (even empty)
# digests, and BLAKE3 is extendable-output: without this, the CID of an empty BLAKE3
# digest "matches" any bytes, and a CAR could store anything under it.
STORED_DIGEST_BYTES = 32


def digest_matches(cid: CID, data: bytes | memoryview) -> bool:
    """True if ``data`` hashes to the digest in ``cid`` (BLAKE3-256 or SHA2-256, full
    32-byte digests only: a truncated digest never matches)."""
    expected = cid.digest
    if len(expected) != STORED_DIGEST_BYTES:
        return False
    if cid.hash_code == HASH_BLAKE3:
        return bool(blake3.blake3(data).digest(len(expected)) == expected)
    if cid.hash_code == HASH_SHA2_256:
        return hashlib.sha256(data).digest() == expected
    return False


def check_block(cid: CID, data: bytes) -> None:
    """Raise unless ``data`` may be stored under ``cid``: size limit, a supported codec
    and hash, the digest, and for DAG-CBOR a strict decode."""
    if len(data) > MAX_BLOCK_SIZE:
        raise LimitExceededError(f"block {cid} is {len(data)} bytes; limit {MAX_BLOCK_SIZE}")
    if cid.codec not in STORABLE_CODECS:
        raise CanonDecodeError(f"block {cid}: codec 0x{cid.codec:x} is not storable here")
    if cid.hash_code not in (HASH_BLAKE3, HASH_SHA2_256):
        raise CanonDecodeError(f"block {cid}: hash 0x{cid.hash_code:x} is not supported")
    if not digest_matches(cid, data):
        raise CorruptBlockError(f"block {cid}: bytes do not hash to the CID")
    if cid.codec == CODEC_DAG_CBOR:
        decode(data)


def iter_links(value: Any) -> Iterator[CID]:
    """The CIDs inside a decoded DAG-CBOR value, in encoded order (depth-first)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, CID):
            yield item
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))


def block_links(cid: CID, data: bytes | memoryview) -> list[CID]:
    """Links of one block: DAG-CBOR blocks are decoded, other codecs have none."""
    if cid.codec != CODEC_DAG_CBOR:
        return []
    return list(iter_links(decode(bytes(data))))


