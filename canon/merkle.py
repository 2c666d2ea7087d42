"""RFC 9162 Merkle trees for the canon log and the ledger's transparency log.

The hash is a parameter (:data:`BLAKE3` in production, :data:`SHA256` for RFC 6962 /
C2SP tooling); proofs verify exactly as the reference verifier (transparency-dev/merkle)
does. See :mod:`n3xus.canon._merkle_py` for the storage model: a :class:`Frontier`
appends leaves and answers the full-subtree hashes to store under ``(level, index)``, and
roots and proofs are computed from O(log n) of them through ``get_node(level, index)``.

Two implementations with the same names and byte-identical results: the compiled
``_merkle_c`` (Cython, C hashing) and the pure-Python ``_merkle_py``. The compiled one is
used when it is built. ``N3XUS_PURE_PYTHON=1`` forces the pure one;
``N3XUS_REQUIRE_COMPILED=1`` turns a missing extension into an ImportError, so a test run
cannot silently measure the slow path. :data:`IMPLEMENTATION` says which one is in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .twins import PURE_ENV as PURE_ENV
from .twins import REQUIRE_COMPILED_ENV as REQUIRE_COMPILED_ENV
from .twins import select_twin

__all__ = [
    "BLAKE3",
    "HASH_SIZE",
    "IMPLEMENTATION",
    "MAX_TREE_SIZE",
    "SHA256",
    "Frontier",
    "GetNode",
    "MerkleTree",
    "NodeID",
    "TreeHash",
    "consistency_proof",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
    "perfect_subtrees",
    "range_hash",
    "root_at",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

_COMPILED_MODULE = "n3xus.canon._merkle_c"
_PURE_MODULE = "n3xus.canon._merkle_py"

_impl, IMPLEMENTATION = select_twin(_COMPILED_MODULE, _PURE_MODULE, "Merkle")

if TYPE_CHECKING:
    # The pure twin is the typed contract; the compiled twin has the same names.
    from ._merkle_py import BLAKE3 as BLAKE3
    from ._merkle_py import HASH_SIZE as HASH_SIZE
    from ._merkle_py import MAX_TREE_SIZE as MAX_TREE_SIZE
    from ._merkle_py import SHA256 as SHA256
    from ._merkle_py import Frontier as Frontier
    from ._merkle_py import GetNode as GetNode
    from ._merkle_py import MerkleTree as MerkleTree
    from ._merkle_py import NodeID as NodeID
    from ._merkle_py import TreeHash as TreeHash
    from ._merkle_py import consistency_proof as consistency_proof
    from ._merkle_py import consistency_proof_ranges as consistency_proof_ranges
    from ._merkle_py import inclusion_proof as inclusion_proof
    from ._merkle_py import inclusion_proof_ranges as inclusion_proof_ranges
    from ._merkle_py import perfect_subtrees as perfect_subtrees
    from ._merkle_py import range_hash as range_hash
    from ._merkle_py import root_at as root_at
    from ._merkle_py import root_from_consistency_proof as root_from_consistency_proof
    from ._merkle_py import root_from_inclusion_proof as root_from_inclusion_proof
    from ._merkle_py import root_from_leaf_hashes as root_from_leaf_hashes
    from ._merkle_py import verify_consistency as verify_consistency
    from ._merkle_py import verify_inclusion as verify_inclusion
else:
    globals().update({name: getattr(_impl, name) for name in __all__ if name != "IMPLEMENTATION"})
