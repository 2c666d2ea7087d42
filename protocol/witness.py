"""Witnessing a peer's logs, and split-view proofs anyone can verify offline.

A node keeps, for each peer log it follows (the peer's canon log and ledger log, whose
checkpoints arrive in hellos and later announcements), the latest checkpoint it verified.
:class:`CheckpointWitness` checks every new one against it: same size, same checkpoint; a
larger one only with a consistency proof (RFC 9162, fetched from the peer) from the old
size. Two checkpoints that cannot both be true become a :class:`SplitViewProof`:

* ``same-size``: two signed checkpoints of one size whose texts differ (another root, or
  another state line for a ledger log), or
* ``inconsistent``: checkpoints of sizes m < n and a *fork path* computed on the larger
  tree: the hashes that, with RFC 9162's consistency algorithm, lead to the larger root and
  to a root at size m that is not the smaller checkpoint's root. Because the path reaches
  the signed larger root, its hashes are that tree's (BLAKE3 is collision resistant), so the
  log's tree at size m differs from the one it signed at m.

The proof file is DAG-CBOR (specs/protocol-hello.md §6) and :func:`verify_split_view`
checks it with no other input: the signing key comes from the origin's peer id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from n3xus.canon import merkle
from n3xus.canon.checkpoint import Checkpoint
from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError, VerificationError
from n3xus.canon.note import NoteVerifier, parse_note, parse_vkey

from .codes import ErrorCode
from .errors import EvidenceError, RemoteProtocolError
from .identity import origin_verifier

SPLIT_VIEW_TYPE: Final = "n3xus/split-view/v1"
HASHER: Final = merkle.BLAKE3
MAX_FORK_PATH_HASHES: Final = 130
"""Hashes in a fork path: a consistency proof between trees of at most 2**64 - 1 leaves has
at most 2 x 64 hashes, plus the explicit seed."""
MAX_SPLIT_VIEW_BYTES: Final = 2 * 16 * 1024 + MAX_FORK_PATH_HASHES * 34 + 256
"""Largest proof file: two notes at the hello's note limit and a full path."""


def _trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1


def fork_path_roots(size1: int, size2: int, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The roots at ``size1`` and ``size2`` implied by a fork path (0 < size1 < size2).

    A fork path is an RFC 9162 consistency proof from size1 to size2 whose first hash is
    always the seed: for size1 a power of two, the proof's implicit seed (the root at size1)
    is written out first; otherwise the proof is used as it is."""
    if not 0 < size1 < size2 <= merkle.MAX_TREE_SIZE:
        raise VerificationError(f"a fork path needs 0 < size1 < size2, not {size1}, {size2}")
    if not path or len(path) > MAX_FORK_PATH_HASHES or any(len(h) != 32 for h in path):
        raise VerificationError("a fork path is 1..130 hashes of 32 bytes")
    index = size1 - 1
    inner = (index ^ (size2 - 1)).bit_length()
    border = (index >> inner).bit_count()
    shift = _trailing_zeros(size1)
    inner -= shift
    seed, rest = path[0], path[1:]
    if len(rest) != inner + border:
        raise VerificationError(f"fork path has {len(path)} hashes, want {inner + border + 1}")
    node = HASHER.node_hash
    mask = index >> shift
    old = new = seed
    for i in range(inner):
        sibling = rest[i]
        if (mask >> i) & 1:
            old, new = node(sibling, old), node(sibling, new)
        else:
            new = node(new, sibling)
    for sibling in rest[inner:]:
        old, new = node(sibling, old), node(sibling, new)
    return old, new


def fork_path_from_proof(size1: int, proof: Sequence[bytes], seed: bytes | None = None) -> list[bytes]:
    """A fork path from an RFC 9162 consistency proof: as is, unless size1 is a power of two,
    whose proof leaves the seed (the larger tree's root at size1) implicit: give it."""
    if size1 & (size1 - 1) == 0:
        if seed is None:
            raise ValueError("size1 is a power of two: the larger tree's root at size1 is needed")
        return [seed, *proof]
    return list(proof)


@dataclass(frozen=True)
class SplitViewProof:
    """Two signed checkpoints of one log that cannot both be true (and the fork path)."""

    first: str
    second: str
    path: tuple[bytes, ...] = ()

    def to_bytes(self) -> bytes:
        return encode({"type": SPLIT_VIEW_TYPE, "first": self.first, "second": self.second,
                       "path": list(self.path)})

    @classmethod
    def from_bytes(cls, data: bytes) -> SplitViewProof:
        if len(data) > MAX_SPLIT_VIEW_BYTES:
            raise EvidenceError(f"split-view proof over {MAX_SPLIT_VIEW_BYTES} bytes")
        try:
            value = decode(data)
        except (CanonError, ValueError) as exc:
            raise EvidenceError(f"split-view proof is not canonical DAG-CBOR: {exc}") from None
        if type(value) is not dict or value.get("type") != SPLIT_VIEW_TYPE:
            raise EvidenceError(f"not a {SPLIT_VIEW_TYPE} proof")
        if set(value) != {"type", "first", "second", "path"}:
            raise EvidenceError("split-view proof needs exactly type, first, second, path")
        first, second, path = value["first"], value["second"], value["path"]
        if type(first) is not str or type(second) is not str:
            raise EvidenceError("first and second are signed checkpoint notes (text)")
        if type(path) is not list or len(path) > MAX_FORK_PATH_HASHES or any(
            type(h) is not bytes or len(h) != 32 for h in path
        ):
            raise EvidenceError("path is at most 130 hashes of 32 bytes")
        return cls(first, second, tuple(path))


class SplitViewKind(StrEnum):
    SAME_SIZE = "same-size"
    INCONSISTENT = "inconsistent"


@dataclass(frozen=True)
class SplitView:
    """What a verified proof establishes: the log, its key, and the two checkpoints."""

    origin: str
    key: NoteVerifier
    kind: SplitViewKind
    first: Checkpoint
    second: Checkpoint

    def to_json(self) -> dict[str, Any]:
        return {"proof": "split-view", "kind": self.kind.value, "origin": self.origin,
                "vkey": self.key.vkey,
                "first": {"size": self.first.size, "root": self.first.root_hash.hex()},
                "second": {"size": self.second.size, "root": self.second.root_hash.hex()}}


def _open(note: str, key: NoteVerifier | None, what: str) -> tuple[Checkpoint, NoteVerifier]:
    try:
        origin = Checkpoint.parse(parse_note(note).text).origin
        verifier = key if key is not None else origin_verifier(origin)
        checkpoint, _ = Checkpoint.open(note, verifier, origin=origin)
    except (CanonError, ValueError) as exc:
        raise EvidenceError(f"{what} checkpoint does not verify: {exc}") from None
    return checkpoint, verifier


def verify_split_view(data: bytes | SplitViewProof, *, key: str | NoteVerifier | None = None) -> SplitView:
    """Verify a split-view proof offline; raise :class:`EvidenceError` unless it proves
    that the log's key signed two checkpoints that cannot both be true. ``key`` (a vkey)
    pins the log key; by default it is derived from the origin (a n3xus log origin ends in
    the signer's peer id)."""
    proof = data if isinstance(data, SplitViewProof) else SplitViewProof.from_bytes(data)
    pinned = parse_vkey(key) if isinstance(key, str) else key
    first, verifier = _open(proof.first, pinned, "first")
    second, second_verifier = _open(proof.second, pinned, "second")
    if first.origin != second.origin or verifier != second_verifier:
        raise EvidenceError("the two checkpoints are of different logs")
    if first.size > second.size:
        raise EvidenceError("first must be the smaller checkpoint")
    if first.size == second.size:
        if proof.path:
            raise EvidenceError("a same-size proof has an empty path")
        if first == second:
            raise EvidenceError("the two checkpoints are the same: nothing contradicts")
        return SplitView(first.origin, verifier, SplitViewKind.SAME_SIZE, first, second)
    if first.size == 0:
        raise EvidenceError("every tree extends the empty tree: no contradiction")
    try:
        old, new = fork_path_roots(first.size, second.size, proof.path)
    except VerificationError as exc:
        raise EvidenceError(f"fork path: {exc}") from None
    if new != second.root_hash:
        raise EvidenceError("the fork path does not lead to the second checkpoint's root")
    if old == first.root_hash:
        raise EvidenceError("the fork path shows the two checkpoints are consistent")
    return SplitView(first.origin, verifier, SplitViewKind.INCONSISTENT, first, second)


# --- the witness of one peer log ----------------------------------------------------------


class Verdict(StrEnum):
    FIRST = "first"
    ADVANCED = "advanced"
    UNCHANGED = "unchanged"
    OLDER = "older"
    NEED_PROOF = "need-proof"
    SPLIT_VIEW = "split-view"


@dataclass(frozen=True)
class Observation:
    """The outcome of one checkpoint: the verdict, and a proof to keep and gossip when it is
    a split view, or the sizes of the consistency proof to fetch when it is ``need-proof``."""

    verdict: Verdict
    checkpoint: Checkpoint
    evidence: SplitViewProof | None = None
    proof_sizes: tuple[int, int] | None = None


class CheckpointWitness:
    """Follows one peer log (``origin``, signed by the origin's peer id's key): keeps the
    latest verified checkpoint note and checks each new one against it, sans-IO."""

    def __init__(self, origin: str, latest: str | None = None) -> None:
        self.origin = origin
        self.verifier = origin_verifier(origin)
        self.latest: str | None = None
        self.checkpoint: Checkpoint | None = None
        if latest is not None:
            self.checkpoint = self._open(latest)
            self.latest = latest

    def _open(self, note: str) -> Checkpoint:
        try:
            checkpoint, _ = Checkpoint.open(note, self.verifier)
        except (CanonError, ValueError) as exc:
            raise RemoteProtocolError(f"checkpoint of {self.origin}: {exc}",
                                      ErrorCode.BAD_CHECKPOINT) from None
        return checkpoint

    def observe(self, note: str, proof: Sequence[bytes] | None = None, *,
                seed: bytes | None = None) -> Observation:
        """Check ``note`` against the latest. ``proof`` is the RFC 9162 consistency proof
        between the two sizes (older to newer) and ``seed`` the newer tree's root at the
        older size (only needed when that size is a power of two, to build evidence).
        Raises RemoteProtocolError for a badly signed note (``bad-checkpoint``) or a proof
        that fails without proving a fork (``inconsistent-proof``)."""
        new = self._open(note)
        old, old_note = self.checkpoint, self.latest
        if old is None or old_note is None:
            self._keep(note, new)
            return Observation(Verdict.FIRST, new)
        if new.size == old.size:
            if new == old:
                return Observation(Verdict.UNCHANGED, new)
            return Observation(Verdict.SPLIT_VIEW, new, SplitViewProof(old_note, note))
        small, small_note, large, large_note = (old, old_note, new, note) if old.size < new.size \
            else (new, note, old, old_note)
        if small.size == 0:
            return self._accept(note, new, old)
        if proof is None:
            return Observation(Verdict.NEED_PROOF, new, proof_sizes=(small.size, large.size))
        try:
            merkle.verify_consistency(HASHER, small.size, large.size, list(proof),
                                      small.root_hash, large.root_hash)
        except VerificationError as exc:
            evidence = self._evidence(small, small_note, large, large_note, proof, seed)
            if evidence is not None:
                return Observation(Verdict.SPLIT_VIEW, new, evidence)
            raise RemoteProtocolError(f"consistency proof {small.size} -> {large.size} of "
                                      f"{self.origin}: {exc}", ErrorCode.INCONSISTENT_PROOF) from None
        return self._accept(note, new, old)

    def _accept(self, note: str, new: Checkpoint, old: Checkpoint) -> Observation:
        if new.size < old.size:
            return Observation(Verdict.OLDER, new)
        self._keep(note, new)
        return Observation(Verdict.ADVANCED, new)

    def _keep(self, note: str, checkpoint: Checkpoint) -> None:
        self.latest, self.checkpoint = note, checkpoint

    @staticmethod
    def _evidence(small: Checkpoint, small_note: str, large: Checkpoint, large_note: str,
                  proof: Sequence[bytes], seed: bytes | None) -> SplitViewProof | None:
        """A split-view proof if the failed proof is a fork path of the larger tree."""
        try:
            path = fork_path_from_proof(small.size, proof, seed)
            old, new = fork_path_roots(small.size, large.size, path)
        except (ValueError, VerificationError):
            return None
        if new != large.root_hash or old == small.root_hash:
            return None
        return SplitViewProof(small_note, large_note, tuple(path))
