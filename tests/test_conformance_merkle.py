"""transparency-dev/merkle's RFC 6962 proof vectors, run against both Merkle twins.

Every ``inclusion/**.json`` and ``consistency/**.json`` under
``<conformance>/merkle`` is its own test: vectors with ``wantErr: false`` must verify
with SHA-256, the others must be rejected with :class:`VerificationError`. The vectors'
happy paths are proofs over the RFC 6962 reference tree (entries below), so our prover
must also reproduce those proofs byte for byte. (The ``subtree*`` folders hold proofs
for arbitrary subtrees, which this module does not implement.)
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from test_canon_merkle import REFERENCE_ENTRIES, load_impl

from n3xus.canon.errors import VerificationError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(
    os.environ.get("N3XUS_CONFORMANCE_DIR", REPO_ROOT.parent / "shared" / "conformance")
)
VECTORS = CONFORMANCE / "merkle"

# The vectors were generated from the RFC 6962 test tree of transparency-dev/merkle,
# REFERENCE_ENTRIES (imported above).


def _vector_params(kind: str) -> list[Any]:
    folder = VECTORS / kind
    if not folder.is_dir():
        return [
            pytest.param(
                None,
                marks=pytest.mark.skip(
                    reason=f"conformance vectors not found at {folder} (set N3XUS_CONFORMANCE_DIR)"
                ),
            )
        ]
    return [
        pytest.param(path, id=path.relative_to(VECTORS).as_posix())
        for path in sorted(folder.rglob("*.json"))
    ]


@pytest.fixture(params=["compiled", "pure"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl(request.param)


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b64(item) for item in vector["proof"] or []]


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    assert isinstance(vector["wantErr"], bool)
    return vector


@pytest.mark.parametrize("path", _vector_params("inclusion"))
def test_inclusion_vector(impl: ModuleType, path: Path) -> None:
    v = _load(path)
    args = (
        impl.SHA256,
        v["leafIdx"],
        v["treeSize"],
        _b64(v["leafHash"]),
        _proof(v),
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(VerificationError):
            impl.verify_inclusion(*args)
    else:
        impl.verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_params("consistency"))
def test_consistency_vector(impl: ModuleType, path: Path) -> None:
    v = _load(path)
    args = (impl.SHA256, v["size1"], v["size2"], _proof(v), _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(VerificationError):
            impl.verify_consistency(*args)
    else:
        impl.verify_consistency(*args)


def test_prover_reproduces_the_vectors_proofs(impl: ModuleType) -> None:
    if not VECTORS.is_dir():
        pytest.skip(f"conformance vectors not found at {VECTORS}")
    leaves = [impl.SHA256.leaf_hash(e) for e in REFERENCE_ENTRIES]
    tree = impl.MerkleTree(impl.SHA256, leaves)
    inclusion_checked = consistency_checked = 0
    for path in sorted((VECTORS / "inclusion").rglob("*.json")):
        v = _load(path)
        index, size = v["leafIdx"], v["treeSize"]
        if v["wantErr"] or not 0 <= index < size <= len(leaves):
            continue
        if _b64(v["leafHash"]) != leaves[index] or _b64(v["root"]) != tree.root(size):
            continue  # not a proof over the reference tree
        assert tree.inclusion_proof(index, size) == _proof(v), path
        inclusion_checked += 1
    for path in sorted((VECTORS / "consistency").rglob("*.json")):
        v = _load(path)
        size1, size2 = v["size1"], v["size2"]
        if v["wantErr"] or not 0 < size1 <= size2 <= len(leaves):
            continue
        if _b64(v["root1"]) != tree.root(size1) or _b64(v["root2"]) != tree.root(size2):
            continue
        assert tree.consistency_proof(size1, size2) == _proof(v), path
        consistency_checked += 1
    # Every happy path of the numbered folders is over the reference tree.
    assert inclusion_checked >= 5 and consistency_checked >= 5, (
        inclusion_checked,
        consistency_checked,
    )
