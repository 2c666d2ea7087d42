"""C2SP transparency-log checkpoints and offline proofs.

* :class:`Checkpoint` — the note text of https://c2sp.org/tlog-checkpoint: the origin
  line, the decimal tree size, the base64 root hash, then optional extension lines. It is
  published as a C2SP signed note (:mod:`n3xus.canon.note`).
* :class:`ProofBundle` — https://c2sp.org/tlog-proof: ``c2sp.org/tlog-proof@v1``, an
  optional ``extra <base64>`` line, ``index <n>``, the inclusion proof hashes, a blank
  line and the signed checkpoint verbatim: everything needed to check offline that an
  entry is in the log.

The root hash is the RFC 9162 root with the log's hash (:data:`merkle.BLAKE3` for n3xus
logs, :data:`merkle.SHA256` for RFC 6962 logs); the format itself does not say which, so
verifiers pass the hasher. Malformed text raises :class:`CanonDecodeError` (or
:class:`LimitExceededError` when over a size limit), failed checks
:class:`VerificationError`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from nacl.signing import SigningKey

from . import merkle
from .errors import CanonDecodeError, LimitExceededError, VerificationError
from .note import (
    MAX_NOTE_BYTES,
    NoteVerifier,
    _b64decode_strict,
    _decode_text,
    open_note_verified,
    parse_note,
    parse_vkey,
    sign_note,
)

__all__ = [
    "MAX_CHECKPOINT_TEXT_BYTES",
    "MAX_EXTRA_BYTES",
    "MAX_PROOF_BUNDLE_BYTES",
    "MAX_PROOF_HASHES",
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "ProofBundle",
]

MAX_CHECKPOINT_TEXT_BYTES = 16 * 1024
"""Largest checkpoint body: origin, size and root take well under 1 KiB; the rest leaves
room for a few extension lines (which the spec discourages) and bounds parsing."""

MAX_PROOF_HASHES = 64
"""Most hashes in a tlog-proof: an inclusion proof in a tree of at most 2**64 - 1 leaves
never needs more than 64."""

MAX_EXTRA_BYTES = 48 * 1024
"""Largest tlog-proof extra data (before base64). The ledger's inclusion bundles carry the
log entry here, and its largest entry is a fraud proof of up to 32,832 bytes (two
maximal transactions); 48 KiB holds that with room to spare and still bounds parsing."""

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"

MAX_PROOF_BUNDLE_BYTES = (
    len(TLOG_PROOF_HEADER)
    + 1
    + len("extra \n")
    + 4 * ((MAX_EXTRA_BYTES + 2) // 3)
    + len("index 18446744073709551615\n")
    + MAX_PROOF_HASHES * 45  # 44 base64 characters and a newline per hash
    + 1
    + MAX_NOTE_BYTES
)
"""Largest tlog-proof text: every part at its own limit."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # ASCII digits, no sign, no leading zero
_HASH_SIZE = 32  # both n3xus tree hashes (BLAKE3-256, SHA-256) are 32 bytes


def _parse_decimal(value: str, what: str) -> int:
    if not _DECIMAL.fullmatch(value):
        raise CanonDecodeError(f"{what} {value[:32]!r} is not a decimal without leading zeros")
    number = int(value)
    if number > merkle.MAX_TREE_SIZE:
        raise CanonDecodeError(f"{what} {value[:32]} does not fit in 64 bits")
    return number


def _check_line(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if "\n" in value or re.search(r"[\x00-\x1f]", value):
        raise ValueError(f"{what} must be one line without control characters")
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's ``origin``, the tree ``size`` and its ``root_hash``."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise TypeError("size must be an int")
        if not 0 <= self.size <= merkle.MAX_TREE_SIZE:
            raise ValueError(f"size {self.size} is outside 0..2**64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_SIZE:
            raise ValueError(f"root_hash must be {_HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise TypeError("extensions must be a tuple of lines")
        for line in self.extensions:
            _check_line(line, "extension line")
        if len(self.to_text().encode("utf-8")) > MAX_CHECKPOINT_TEXT_BYTES:
            raise LimitExceededError(f"checkpoint over {MAX_CHECKPOINT_TEXT_BYTES} bytes")

    def to_text(self) -> str:
        """The note text: one line each for origin, size, root, extensions."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parse a checkpoint note text (not the signed note; see :meth:`open`)."""
        body = _decode_text(text, "checkpoint", MAX_CHECKPOINT_TEXT_BYTES)
        if not body.endswith("\n"):
            raise CanonDecodeError("checkpoint must end with a newline")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise CanonDecodeError("checkpoint needs origin, size and root hash lines")
        origin, size_line, root_line, *extensions = lines
        if not origin:
            raise CanonDecodeError("checkpoint origin is empty")
        size = _parse_decimal(size_line, "checkpoint size")
        root = _b64decode_strict(root_line, "checkpoint root hash")
        if len(root) != _HASH_SIZE:
            raise CanonDecodeError(f"checkpoint root hash has {len(root)} bytes, want 32")
        if any(not line for line in extensions):
            raise CanonDecodeError("checkpoint extension lines must not be empty")
        return cls(origin, size, root, tuple(extensions))

    def sign(self, name: str, signing_key: SigningKey) -> str:
        """The checkpoint as a signed note; ``name`` should be the origin."""
        return sign_note(self.to_text(), name, signing_key)

    @classmethod
    def open(
        cls,
        note: str | bytes,
        log_key: str | NoteVerifier,
        *,
        origin: str | None = None,
        cosigner_keys: Iterable[str | NoteVerifier] = (),
    ) -> tuple[Checkpoint, tuple[str, ...]]:
        """Verify a signed checkpoint: the log's key must have signed it and its origin
        must be ``origin`` (by default the log key's name, as the spec recommends).

        Answers the checkpoint and the names of every key whose signature verified (the
        log's first), for a cosigner policy to count. A failing signature by any given
        key rejects the note.
        """
        log = log_key if isinstance(log_key, NoteVerifier) else parse_vkey(log_key)
        cosigners = [k if isinstance(k, NoteVerifier) else parse_vkey(k) for k in cosigner_keys]
        text, verified = open_note_verified(note, [log, *cosigners])
        if (log.name, log.key_id) not in verified:
            raise VerificationError(f"checkpoint is not signed by the log key {log.name}")
        checkpoint = cls.parse(text)
        expected = log.name if origin is None else origin
        if checkpoint.origin != expected:
            raise VerificationError(
                f"checkpoint origin {checkpoint.origin!r} is not the expected {expected!r}"
            )
        names = [log.name] + [name for name, _ in verified if name != log.name]
        return checkpoint, tuple(dict.fromkeys(names))


def _check_signed_checkpoint(note: str) -> Checkpoint:
    """Structure of a signed checkpoint, nothing verified."""
    return Checkpoint.parse(parse_note(note).text)


@dataclass(frozen=True)
class ProofBundle:
    """An offline proof (c2sp.org/tlog-proof) that an entry is leaf ``index`` of the
    tree in ``signed_checkpoint``. ``extra`` is opaque and unauthenticated."""

    index: int
    proof: tuple[bytes, ...]
    signed_checkpoint: str
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or isinstance(self.index, bool):
            raise TypeError("index must be an int")
        if not 0 <= self.index <= merkle.MAX_TREE_SIZE:
            raise ValueError(f"index {self.index} is outside 0..2**64-1")
        if not isinstance(self.proof, tuple):
            raise TypeError("proof must be a tuple of hashes")
        if len(self.proof) > MAX_PROOF_HASHES:
            raise LimitExceededError(f"proof has more than {MAX_PROOF_HASHES} hashes")
        if any(not isinstance(h, bytes) or len(h) != _HASH_SIZE for h in self.proof):
            raise ValueError(f"proof hashes must be {_HASH_SIZE} bytes each")
        if self.extra is not None:
            if not isinstance(self.extra, bytes):
                raise TypeError("extra must be bytes or None")
            if len(self.extra) > MAX_EXTRA_BYTES:
                raise LimitExceededError(f"extra data over {MAX_EXTRA_BYTES} bytes")
        if not isinstance(self.signed_checkpoint, str):
            raise TypeError("signed_checkpoint must be the signed note text")
        _check_signed_checkpoint(self.signed_checkpoint)

    def to_text(self) -> str:
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.signed_checkpoint

    @classmethod
    def parse(cls, text: str | bytes) -> ProofBundle:
        body = _decode_text(text, "tlog proof", MAX_PROOF_BUNDLE_BYTES)
        head, separator, signed_checkpoint = body.partition("\n\n")
        if not separator:
            raise CanonDecodeError("tlog proof has no blank line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != TLOG_PROOF_HEADER:
            raise CanonDecodeError(f"tlog proof does not start with {TLOG_PROOF_HEADER}")
        position = 1
        extra: bytes | None = None
        if position < len(lines) and lines[position].startswith("extra "):
            extra = _b64decode_strict(lines[position][len("extra ") :], "tlog proof extra")
            if len(extra) > MAX_EXTRA_BYTES:
                raise LimitExceededError(f"tlog proof extra data over {MAX_EXTRA_BYTES} bytes")
            position += 1
        if position >= len(lines) or not lines[position].startswith("index "):
            raise CanonDecodeError("tlog proof has no index line")
        index = _parse_decimal(lines[position][len("index ") :], "tlog proof index")
        hash_lines = lines[position + 1 :]
        if len(hash_lines) > MAX_PROOF_HASHES:
            raise LimitExceededError(f"tlog proof has more than {MAX_PROOF_HASHES} hashes")
        proof = []
        for number, line in enumerate(hash_lines):
            digest = _b64decode_strict(line, f"tlog proof hash {number}")
            if len(digest) != _HASH_SIZE:
                raise CanonDecodeError(f"tlog proof hash {number} has {len(digest)} bytes")
            proof.append(digest)
        try:
            return cls(index, tuple(proof), signed_checkpoint, extra)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, CanonDecodeError | LimitExceededError):
                raise
            raise CanonDecodeError(f"tlog proof is malformed: {exc}") from exc

    def verify(
        self,
        log_key: str | NoteVerifier,
        hasher: merkle.TreeHash,
        *,
        entry: bytes | None = None,
        leaf_hash: bytes | None = None,
        origin: str | None = None,
        cosigner_keys: Iterable[str | NoteVerifier] = (),
        min_cosigners: int = 0,
    ) -> Checkpoint:
        """Check the bundle for ``entry`` (hashed as an RFC 9162 leaf) or its
        ``leaf_hash``: the log signed the checkpoint (see :meth:`Checkpoint.open`), at
        least ``min_cosigners`` of ``cosigner_keys`` cosigned it, and the proof leads
        from the leaf to its root. Answers the verified checkpoint."""
        if entry is not None and leaf_hash is None:
            leaf = hasher.leaf_hash(bytes(entry))
        elif leaf_hash is not None and entry is None:
            leaf = leaf_hash
        else:
            raise TypeError("give exactly one of entry and leaf_hash")
        cosigners = [k if isinstance(k, NoteVerifier) else parse_vkey(k) for k in cosigner_keys]
        log = log_key if isinstance(log_key, NoteVerifier) else parse_vkey(log_key)
        checkpoint, names = Checkpoint.open(
            self.signed_checkpoint, log, origin=origin, cosigner_keys=cosigners
        )
        cosigned = {c.name for c in cosigners if c.name != log.name} & set(names)
        if len(cosigned) < min_cosigners:
            raise VerificationError(
                f"checkpoint has {len(cosigned)} cosignatures, the policy wants {min_cosigners}"
            )
        merkle.verify_inclusion(
            hasher, self.index, checkpoint.size, leaf, list(self.proof), checkpoint.root_hash
        )
        return checkpoint
