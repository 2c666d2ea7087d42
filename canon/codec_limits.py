"""The limits and fixed numbers of canonical DAG-CBOR in the canon, shared by the encoder
(:mod:`n3xus.canon.codec`) and the exact decoder (:mod:`n3xus.canon._codec_exact`).
:mod:`n3xus.canon.codec` re-exports them; import them from there."""

from __future__ import annotations

from typing import Final

# Largest block we encode or decode. Every IPFS implementation exchanges blocks up to 1 MiB
# over Bitswap (kubo refuses to `block put` larger ones without --allow-big-block, as peers
# would not fetch them); a canon block must be fetchable by any peer. It also bounds the work
# one decode can cost.
MAX_BLOCK_SIZE: Final = 1 << 20

# Deepest nesting of arrays and maps (a top-level container is depth 1). Real documents are a
# few levels deep and link to deeper structure by CID; 128 keeps the recursive Python walkers
# far below the interpreter's recursion limit (1000) and cbor2's native stack (its encoder
# crashes the process somewhere between 1,000 and 10,000 levels, so we check before it runs).
MAX_NESTING_DEPTH: Final = 128

# The CBOR integer range (major types 0 and 1 carry a 64-bit argument).
INT_MIN: Final = -(1 << 64)
INT_MAX: Final = (1 << 64) - 1

# The only tag DAG-CBOR allows: a link (a byte string 0x00 + binary CID).
LINK_TAG: Final = 42
