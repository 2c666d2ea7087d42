"""RFC 9162 Merkle trees (n3xus.canon.merkle), run on both twins.

The reference below is RFC 9162 §2.1 written out literally (MTH, PATH, PROOF/SUBPROOF,
splitting at the largest power of two below n); the module's bottom-up, stored-node
algorithms must agree with it byte for byte, and its verifier must accept exactly
what the prover produces.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import struct
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import lmdb
import pytest
from blake3 import blake3
from hypothesis import given, settings
from hypothesis import strategies as st

from n3xus.canon import _merkle_py, merkle
from n3xus.canon.errors import VerificationError

IMPLEMENTATIONS = ["compiled", "pure"]


def load_impl(name: str) -> ModuleType:
    if name == "pure":
        return _merkle_py
    try:
        return importlib.import_module("n3xus.canon._merkle_c")
    except ImportError as exc:
        if os.environ.get("N3XUS_REQUIRE_COMPILED") == "1":
            pytest.fail(f"N3XUS_REQUIRE_COMPILED=1 but the compiled twin is missing: {exc}")
        pytest.skip(
            f"compiled Merkle twin not built ({exc}); "
            "run `python setup.py build_ext --inplace` to test it"
        )


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl(request.param)


@pytest.fixture
def compiled() -> ModuleType:
    return load_impl("compiled")


HASHERS = [_merkle_py.BLAKE3, _merkle_py.SHA256]
HASHER_IDS = ["blake3", "sha256"]


# ------------------------------------------------------------- RFC 9162, literally


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(h: _merkle_py.TreeHash, entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return h.digest(b"")
    if n == 1:
        return h.digest(b"\x00" + entries[0])
    k = _split(n)
    return h.digest(b"\x01" + rfc_mth(h, entries[:k]) + rfc_mth(h, entries[k:]))


def rfc_path(h: _merkle_py.TreeHash, m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return rfc_path(h, m, entries[:k]) + [rfc_mth(h, entries[k:])]
    return rfc_path(h, m - k, entries[k:]) + [rfc_mth(h, entries[:k])]


def rfc_subproof(h: _merkle_py.TreeHash, m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [rfc_mth(h, entries)]
    k = _split(n)
    if m <= k:
        return rfc_subproof(h, m, entries[:k], b) + [rfc_mth(h, entries[k:])]
    return rfc_subproof(h, m - k, entries[k:], False) + [rfc_mth(h, entries[:k])]


def entries_for(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]


# RFC 6962 test tree of transparency-dev/merkle and its SHA-256 roots for sizes 1..8.
REFERENCE_ENTRIES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# ------------------------------------------------------------------------ roots


def test_tree_hash_framing() -> None:
    for h, digest in (
        (merkle.BLAKE3, lambda d: blake3(d).digest()),
        (merkle.SHA256, lambda d: hashlib.sha256(d).digest()),
    ):
        assert h.leaf_hash(b"abc") == digest(b"\x00abc")
        assert h.node_hash(b"L" * 32, b"R" * 32) == digest(b"\x01" + b"L" * 32 + b"R" * 32)
        assert h.empty_root() == digest(b"")


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_empty_tree(impl: ModuleType, hasher: _merkle_py.TreeHash) -> None:
    assert impl.root_from_leaf_hashes(hasher, []) == hasher.digest(b"")
    assert impl.MerkleTree(hasher).root() == hasher.digest(b"")
    assert impl.Frontier(hasher).root() == hasher.digest(b"")
    assert impl.root_at(hasher, 0, lambda level, index: b"") == hasher.digest(b"")


def test_reference_tree_roots(impl: ModuleType) -> None:
    leaves = [impl.SHA256.leaf_hash(e) for e in REFERENCE_ENTRIES]
    tree = impl.MerkleTree(impl.SHA256, leaves)
    for size, want in enumerate(REFERENCE_ROOTS, start=1):
        assert tree.root(size).hex() == want
        assert impl.root_from_leaf_hashes(impl.SHA256, leaves[:size]).hex() == want


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_roots_follow_rfc_definition(impl: ModuleType, hasher: _merkle_py.TreeHash) -> None:
    entries = entries_for(70, seed=1)
    leaves = [hasher.leaf_hash(e) for e in entries]
    tree = impl.MerkleTree(hasher)
    frontier = impl.Frontier(hasher)
    for size in range(0, 71):
        want = rfc_mth(hasher, entries[:size])
        assert impl.root_from_leaf_hashes(hasher, leaves[:size]) == want
        assert tree.root() == want and frontier.root() == want
        if size < 70:
            tree.append(leaves[size])
            frontier.append(leaves[size])
    assert [tree.root(s) for s in range(71)] == [rfc_mth(hasher, entries[:s]) for s in range(71)]


# ----------------------------------------------------------------------- proofs


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_inclusion_proofs_follow_rfc_definition(
    impl: ModuleType, hasher: _merkle_py.TreeHash
) -> None:
    entries = entries_for(33, seed=2)
    leaves = [hasher.leaf_hash(e) for e in entries]
    tree = impl.MerkleTree(hasher, leaves)
    for size in range(1, 34):
        root = rfc_mth(hasher, entries[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == rfc_path(hasher, index, entries[:size]), (index, size)
            impl.verify_inclusion(hasher, index, size, leaves[index], proof, root)
            if size > 1:
                with pytest.raises(VerificationError):
                    impl.verify_inclusion(
                        hasher, (index + 1) % size, size, leaves[index], proof, root
                    )


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_consistency_proofs_follow_rfc_definition(
    impl: ModuleType, hasher: _merkle_py.TreeHash
) -> None:
    entries = entries_for(33, seed=3)
    tree = impl.MerkleTree(hasher, [hasher.leaf_hash(e) for e in entries])
    roots = [rfc_mth(hasher, entries[:s]) for s in range(34)]
    for size2 in range(1, 34):
        for size1 in range(1, size2 + 1):
            proof = tree.consistency_proof(size1, size2)
            assert proof == rfc_subproof(hasher, size1, entries[:size2], True), (size1, size2)
            impl.verify_consistency(hasher, size1, size2, proof, roots[size1], roots[size2])
            if size1 < size2:
                wrong_root1 = bytes([roots[size1][0] ^ 1]) + roots[size1][1:]
                with pytest.raises(VerificationError):
                    impl.verify_consistency(hasher, size1, size2, proof, wrong_root1, roots[size2])


def test_rfc9162_consistency_example() -> None:
    # RFC 9162 §2.1.5: PROOF(3, D[7]) = [c, d, g, l], PROOF(4, D[7]) = [l],
    # PROOF(6, D[7]) = [i, j, k]; as leaf ranges of the 7-leaf tree.
    assert merkle.consistency_proof_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert merkle.consistency_proof_ranges(4, 7) == [(4, 7)]
    assert merkle.consistency_proof_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]
    # Inclusion of d (index 3) in the 7-leaf tree: [c, g, l].
    assert merkle.inclusion_proof_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_prover_and_verifier_agree_on_random_trees(data: st.DataObject) -> None:
    for name in IMPLEMENTATIONS:
        impl = load_impl(name) if name == "pure" else _compiled_or_none()
        if impl is None:
            continue
        hasher = data.draw(st.sampled_from(HASHERS))
        size = data.draw(st.integers(1, 600))
        seed = data.draw(st.integers(0, 2**32))
        leaves = [hasher.leaf_hash(e) for e in entries_for(size, seed)]
        tree = impl.MerkleTree(hasher, leaves)
        index = data.draw(st.integers(0, size - 1))
        size1 = data.draw(st.integers(1, size))
        root, root1 = tree.root(), tree.root(size1)

        proof = tree.inclusion_proof(index)
        impl.verify_inclusion(hasher, index, size, leaves[index], proof, root)
        cproof = tree.consistency_proof(size1)
        impl.verify_consistency(hasher, size1, size, cproof, root1, root)

        if proof:
            spot = data.draw(st.integers(0, len(proof) - 1))
            bad = list(proof)
            bad[spot] = bytes([bad[spot][0] ^ 0x40]) + bad[spot][1:]
            with pytest.raises(VerificationError):
                impl.verify_inclusion(hasher, index, size, leaves[index], bad, root)
            with pytest.raises(VerificationError):
                impl.verify_inclusion(hasher, index, size, leaves[index], proof[:-1], root)
        with pytest.raises(VerificationError):
            impl.verify_inclusion(hasher, index, size, hasher.leaf_hash(b"other"), proof, root)
        if cproof:
            spot = data.draw(st.integers(0, len(cproof) - 1))
            bad = list(cproof)
            bad[spot] = bytes([bad[spot][0] ^ 0x10]) + bad[spot][1:]
            with pytest.raises(VerificationError):
                impl.verify_consistency(hasher, size1, size, bad, root1, root)


def _compiled_or_none() -> ModuleType | None:
    try:
        return importlib.import_module("n3xus.canon._merkle_c")
    except ImportError:
        return None


# ------------------------------------------------------- stored nodes and frontier


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_frontier_reports_the_full_nodes_to_store(
    impl: ModuleType, hasher: _merkle_py.TreeHash
) -> None:
    leaves = [hasher.leaf_hash(e) for e in entries_for(300, seed=4)]
    tree = impl.MerkleTree(hasher, leaves)
    frontier = impl.Frontier(hasher)
    stored: dict[tuple[int, int], bytes] = {}
    for size, leaf in enumerate(leaves, start=1):
        completed = frontier.append(leaf)
        assert completed[0] == (0, size - 1, leaf)
        for level, index, digest in completed:
            assert digest == tree.node(level, index)
            stored[(level, index)] = digest
        assert frontier.size == size and frontier.root() == tree.root(size)
    # Every full subtree was reported exactly once: 2n - popcount(n) of them.
    assert len(stored) == 2 * 300 - bin(300).count("1")
    rebuilt = impl.Frontier.from_nodes(hasher, 300, lambda lv, i: stored[(lv, i)])
    assert rebuilt.hashes == frontier.hashes and rebuilt.root() == tree.root()
    restored = impl.Frontier(hasher, 300, frontier.hashes)
    extra = hasher.leaf_hash(b"next")
    assert restored.append(extra) == frontier.append(extra)
    with pytest.raises(ValueError):
        impl.Frontier(hasher, 300, rebuilt.hashes[:-1])


def test_proofs_from_lmdb_need_logarithmic_lookups(impl: ModuleType, tmp_path: Path) -> None:
    hasher = impl.BLAKE3
    env = lmdb.open(str(tmp_path / "db"), max_dbs=4, map_size=64 << 20)
    nodes_db = env.open_db(b"test/merkle-nodes")
    size = 5000
    leaves = [hasher.leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    frontier = impl.Frontier(hasher)
    with env.begin(write=True, db=nodes_db) as txn:
        for leaf in leaves:
            for level, index, digest in frontier.append(leaf):
                txn.put(struct.pack(">BQ", level, index), digest)
    tree = impl.MerkleTree(hasher, leaves)
    lookups = 0

    def counting_getter(txn: lmdb.Transaction) -> Callable[[int, int], bytes]:
        def get_node(level: int, index: int) -> bytes:
            nonlocal lookups
            lookups += 1
            value = txn.get(struct.pack(">BQ", level, index), db=nodes_db)
            assert value is not None, (level, index)
            return bytes(value)

        return get_node

    rng = random.Random(5)
    with env.begin(db=nodes_db) as txn:
        get_node = counting_getter(txn)
        for _ in range(40):
            tree_size = rng.randrange(1, size + 1)
            index = rng.randrange(tree_size)
            old = rng.randrange(1, tree_size + 1)
            lookups = 0
            proof = impl.inclusion_proof(hasher, index, tree_size, get_node)
            assert lookups <= 2 * tree_size.bit_length() + 2
            assert proof == tree.inclusion_proof(index, tree_size)
            lookups = 0
            assert impl.consistency_proof(
                hasher, old, tree_size, get_node
            ) == tree.consistency_proof(old, tree_size)
            assert lookups <= 3 * tree_size.bit_length() + 2
            assert impl.root_at(hasher, tree_size, get_node) == tree.root(tree_size)
    env.close()


def test_planners() -> None:
    assert merkle.perfect_subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.perfect_subtrees(6, 13) == [(1, 3), (2, 2), (0, 12)]
    assert merkle.perfect_subtrees(5, 5) == []
    with pytest.raises(ValueError):
        merkle.range_hash(merkle.SHA256, 2, 5, lambda lv, i: b"\x00" * 32)  # not aligned
    with pytest.raises(ValueError):
        merkle.inclusion_proof_ranges(7, 7)
    with pytest.raises(ValueError):
        merkle.consistency_proof_ranges(0, 3)


# ----------------------------------------------------------------------- errors

H32 = b"\x11" * 32


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((0, 1, b"\x11" * 31, [], H32), "leaf hash has 31 bytes"),
        ((1, 1, H32, [], H32), "beyond tree size"),
        ((0, 0, H32, [], H32), "beyond tree size"),
        ((0, 2, H32, [], H32), "wrong proof length 0, want 1"),
        ((0, 2, H32, [H32, H32], H32), "wrong proof length 2, want 1"),
        ((0, 2, H32, [b"\x11" * 33], H32), r"proof\[0\] has 33 bytes"),
        ((0, 2, H32, H32, H32), "not one byte string"),
        ((True, 2, H32, [H32], H32), "must be an int"),
        ((-1, 2, H32, [H32], H32), "outside"),
        ((0, 2**64, H32, [H32], H32), "outside"),
        ((0, 2, H32, [H32], b"\x22" * 32), "does not lead to the expected root"),
        ((0, 1, H32, [], b"short"), "does not lead to the expected root"),
    ],
)
def test_inclusion_verification_errors(impl: ModuleType, args: tuple, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        impl.verify_inclusion(impl.SHA256, *args)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((0, 0, [], H32, H32), "from the empty tree is meaningless"),
        ((0, 5, [H32], H32, H32), "from the empty tree is meaningless"),
        ((3, 2, [], H32, H32), r"size2 \(2\) < size1 \(3\)"),
        ((4, 4, [H32], H32, H32), "proof is not empty"),
        ((4, 4, [], H32, b"\x22" * 32), "does not lead to root2"),
        ((2, 5, [], H32, H32), "empty consistency proof"),
        ((2, 5, [H32], H32, H32), "wrong proof length 1, want 2"),
        ((3, 5, [H32] * 2, H32, H32), "wrong proof length 2, want 4"),
        ((2, 5, [H32, b"x"], H32, H32), r"proof\[1\] has 1 bytes"),
        ((2, 5, [H32, H32], b"\x11" * 31, H32), "root1 has 31 bytes"),
        ((3, 5, [H32] * 4, H32, H32), "does not lead to root1"),
    ],
)
def test_consistency_verification_errors(impl: ModuleType, args: tuple, reason: str) -> None:
    with pytest.raises(VerificationError, match=reason):
        impl.verify_consistency(impl.SHA256, *args)


def test_equal_sizes_compare_roots_like_the_reference(impl: ModuleType) -> None:
    impl.verify_consistency(impl.SHA256, 7, 7, [], H32, H32)
    # The reference verifier only compares roots when the sizes are equal.
    impl.verify_consistency(impl.SHA256, 1, 1, [], b"don't care", b"don't care")


def test_misuse_is_reported(impl: ModuleType) -> None:
    tree = impl.MerkleTree(impl.SHA256, [H32] * 5)
    with pytest.raises(ValueError, match="beyond tree size"):
        tree.inclusion_proof(5)
    with pytest.raises(ValueError, match="beyond the current size"):
        tree.root(6)
    with pytest.raises(ValueError):
        tree.consistency_proof(0, 3)
    with pytest.raises(IndexError):
        tree.node(1, 2)
    with pytest.raises(ValueError, match="must be 32 bytes"):
        tree.append(b"\x00" * 31)
    with pytest.raises(TypeError):
        tree.extend([b"\x22" * 32, "not bytes"])
    assert tree.size == 5  # a refused batch leaves no trace
    tree.append(b"\x33" * 32)
    assert tree.root() == impl.MerkleTree(impl.SHA256, [H32] * 5 + [b"\x33" * 32]).root()
    with pytest.raises(TypeError):
        impl.MerkleTree("sha256")
    with pytest.raises(ValueError, match="must be 32 bytes"):
        impl.root_from_leaf_hashes(impl.SHA256, [H32, b"\x00"])
    frontier = impl.Frontier(impl.SHA256)
    with pytest.raises(TypeError):
        frontier.append("not bytes")
    full = impl.Frontier(impl.SHA256, 2**64 - 1, [H32] * 64)
    with pytest.raises(ValueError, match="full"):
        full.append(H32)


def test_extreme_sizes_agree_between_twins() -> None:
    compiled_impl = _compiled_or_none()
    twins = [_merkle_py] + ([compiled_impl] if compiled_impl else [])
    cases = [(0, 2**64 - 1, 64), (2**64 - 2, 2**64 - 1, 63), (2**63, 2**64 - 1, 64)]
    for index, size, length in cases:
        proof = [bytes([i]) * 32 for i in range(length)]
        roots = {
            impl.root_from_inclusion_proof(impl.BLAKE3, index, size, H32, proof) for impl in twins
        }
        assert len(roots) == 1
    cproof = [bytes([i]) * 32 for i in range(64)]
    results = set()
    for impl in twins:
        try:
            results.add(
                impl.root_from_consistency_proof(impl.SHA256, 2**63 + 1, 2**64 - 1, cproof, H32)
            )
        except VerificationError as exc:
            results.add(str(exc))
    assert len(results) == 1


# ---------------------------------------------------------------- twins and API


def test_twins_are_byte_identical(compiled: ModuleType) -> None:
    custom = _merkle_py.TreeHash("sha3-256", lambda d: hashlib.sha3_256(d).digest())
    rng = random.Random(6)
    for hasher in [*HASHERS, custom]:
        for size in [1, 2, 3, 15, 16, 17, 255, 1000]:
            leaves = [hasher.leaf_hash(rng.randbytes(9)) for _ in range(size)]
            pure_tree = _merkle_py.MerkleTree(hasher, leaves)
            fast_tree = compiled.MerkleTree(hasher, leaves)
            assert compiled.root_from_leaf_hashes(hasher, leaves) == pure_tree.root()
            for _ in range(20):
                s2 = rng.randrange(1, size + 1)
                s1 = rng.randrange(1, s2 + 1)
                index = rng.randrange(s2)
                assert fast_tree.root(s2) == pure_tree.root(s2)
                assert fast_tree.inclusion_proof(index, s2) == pure_tree.inclusion_proof(index, s2)
                assert fast_tree.consistency_proof(s1, s2) == pure_tree.consistency_proof(s1, s2)
            pf, cf = _merkle_py.Frontier(hasher), compiled.Frontier(hasher)
            for leaf in leaves:
                assert pf.append(leaf) == cf.append(leaf)
            assert pf.root() == cf.root() and pf.hashes == cf.hashes


def test_c_hashes_match_reference_libraries(compiled: ModuleType) -> None:
    rng = random.Random(7)
    sizes = list(range(0, 300)) + [
        511,
        512,
        513,
        1023,
        1024,
        1025,
        2047,
        2048,
        2049,
        3072,
        3073,
        4096,
        5000,
        8193,
        65536,
        100_001,
    ]
    for n in sizes:
        data = rng.randbytes(n)
        assert compiled._c_blake3(data) == blake3(data).digest(), n
        assert compiled._c_sha256(data) == hashlib.sha256(data).digest(), n


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=5000))
def test_c_hashes_match_on_random_input(data: bytes) -> None:
    compiled_impl = _compiled_or_none()
    if compiled_impl is None:
        return
    assert compiled_impl._c_blake3(data) == blake3(data).digest()
    assert compiled_impl._c_sha256(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("hasher", HASHERS, ids=HASHER_IDS)
def test_every_lane_width_hashes_levels_alike(
    compiled: ModuleType, hasher: _merkle_py.TreeHash
) -> None:
    rng = random.Random(8)
    for count in [0, 1, 3, 4, 7, 8, 15, 16, 17, 33, 100]:
        children = rng.randbytes(64 * count)
        want = b"".join(
            hasher.node_hash(children[i : i + 32], children[i + 32 : i + 64])
            for i in range(0, len(children), 64)
        )
        for lanes in [1, 4, 8, 16]:
            assert compiled._c_level_nodes(hasher, children, lanes) == want, (count, lanes)
    assert compiled._c_vector_lanes() in (1, 4, 8, 16)


def test_public_api_is_pinned() -> None:
    expected = {
        "BLAKE3",
        "HASH_SIZE",
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
    }
    assert set(_merkle_py.__all__) == expected
    assert set(merkle.__all__) == expected | {"IMPLEMENTATION"}
    chosen = load_impl(merkle.IMPLEMENTATION)
    for name in expected:
        assert getattr(merkle, name) is getattr(chosen, name)
    compiled_impl = _compiled_or_none()
    if compiled_impl is not None:
        assert set(compiled_impl.__all__) == expected
        assert all(hasattr(compiled_impl, name) for name in expected)
        assert compiled_impl.BLAKE3 is _merkle_py.BLAKE3  # shared, so identity dispatch works
