"""Witnessing peer logs and offline split-view proofs, with real trees and signatures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_support import key, peer, signed_checkpoint

from n3xus.canon import merkle
from n3xus.canon.checkpoint import Checkpoint
from n3xus.canon.note import make_vkey
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import EvidenceError, RemoteProtocolError
from n3xus.protocol.identity import canon_origin
from n3xus.protocol.witness import (
    CheckpointWitness,
    SplitViewKind,
    SplitViewProof,
    Verdict,
    fork_path_from_proof,
    fork_path_roots,
    verify_split_view,
)

H = merkle.BLAKE3
ORIGIN = canon_origin(peer(1))


def tree(size: int, salt: bytes = b"") -> merkle.MerkleTree:
    return merkle.MerkleTree(H, [H.leaf_hash(b"leaf %d" % i + salt) for i in range(size)])


def test_an_honest_log_advances_with_consistency_proofs() -> None:
    witness = CheckpointWitness(ORIGIN)
    assert witness.observe(signed_checkpoint(1, 5)).verdict is Verdict.FIRST
    assert witness.observe(signed_checkpoint(1, 5)).verdict is Verdict.UNCHANGED
    need = witness.observe(signed_checkpoint(1, 9))
    assert need.verdict is Verdict.NEED_PROOF and need.proof_sizes == (5, 9)
    proof = tree(9).consistency_proof(5, 9)
    assert witness.observe(signed_checkpoint(1, 9), proof).verdict is Verdict.ADVANCED
    assert witness.checkpoint is not None and witness.checkpoint.size == 9
    older = witness.observe(signed_checkpoint(1, 5), tree(9).consistency_proof(5, 9))
    assert older.verdict is Verdict.OLDER and witness.checkpoint.size == 9


def test_a_checkpoint_signed_by_another_key_is_a_bad_checkpoint() -> None:
    witness = CheckpointWitness(ORIGIN)
    with pytest.raises(RemoteProtocolError) as caught:
        witness.observe(signed_checkpoint(2, 5))  # peer 2's log, not peer 1's
    assert caught.value.code is ErrorCode.BAD_CHECKPOINT


def test_two_roots_at_one_size_are_a_split_view_anyone_can_verify() -> None:
    witness = CheckpointWitness(ORIGIN, signed_checkpoint(1, 5))
    seen = witness.observe(signed_checkpoint(1, 5, salt=b"fork"))
    assert seen.verdict is Verdict.SPLIT_VIEW and seen.evidence is not None
    data = seen.evidence.to_bytes()
    result = verify_split_view(data)
    assert result.kind is SplitViewKind.SAME_SIZE and result.origin == ORIGIN
    assert verify_split_view(data, key=make_vkey(ORIGIN, key(1).verify_key)).kind is SplitViewKind.SAME_SIZE
    with pytest.raises(EvidenceError):
        verify_split_view(data, key=make_vkey(ORIGIN, key(2).verify_key))


@pytest.mark.parametrize(("small", "large"), [(5, 9), (3, 4), (4, 9), (8, 13), (1, 2), (6, 7)])
def test_a_forked_log_is_caught_by_a_proof_from_its_current_tree(small: int, large: int) -> None:
    """The log signed ``small`` on one history, then serves a consistency proof computed on
    another history of ``large``: the proof itself convicts it."""
    witness = CheckpointWitness(ORIGIN, signed_checkpoint(1, small))
    forked = tree(large, salt=b"other history")
    new_note = signed_checkpoint(1, large, salt=b"other history")
    proof = forked.consistency_proof(small, large)
    seen = witness.observe(new_note, proof, seed=forked.root(small))
    assert seen.verdict is Verdict.SPLIT_VIEW and seen.evidence is not None
    verified = verify_split_view(seen.evidence.to_bytes())
    assert verified.kind is SplitViewKind.INCONSISTENT
    assert (verified.first.size, verified.second.size) == (small, large)


def test_a_garbage_proof_is_an_inconsistent_proof_not_evidence() -> None:
    witness = CheckpointWitness(ORIGIN, signed_checkpoint(1, 5))
    with pytest.raises(RemoteProtocolError) as caught:
        witness.observe(signed_checkpoint(1, 9), [b"\x00" * 32] * 4)
    assert caught.value.code is ErrorCode.INCONSISTENT_PROOF


def test_proofs_that_prove_nothing_are_refused() -> None:
    a, b = signed_checkpoint(1, 5), signed_checkpoint(1, 9)
    honest = tuple(tree(9).consistency_proof(5, 9))
    for proof in (SplitViewProof(a, a), SplitViewProof(a, b, honest), SplitViewProof(b, a),
                  SplitViewProof(a, signed_checkpoint(2, 5)), SplitViewProof(a, b)):
        with pytest.raises(EvidenceError):
            verify_split_view(proof)
    for junk in (b"", b"\xa0", SplitViewProof(a, b).to_bytes()[:-1]):
        with pytest.raises(EvidenceError):
            verify_split_view(junk)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.integers(min_value=1, max_value=70))
def test_fork_paths_compute_both_roots_of_one_tree(size1: int, extra: int) -> None:
    size2 = size1 + extra
    full = tree(size2)
    path = fork_path_from_proof(size1, full.consistency_proof(size1, size2), full.root(size1))
    assert fork_path_roots(size1, size2, path) == (full.root(size1), full.root(size2))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_are_never_evidence(data: bytes) -> None:
    with pytest.raises(EvidenceError):
        verify_split_view(data)


def test_checkpoint_open_is_what_the_witness_uses() -> None:
    checkpoint, _ = Checkpoint.open(signed_checkpoint(1, 5), make_vkey(ORIGIN, key(1).verify_key))
    assert checkpoint.size == 5
