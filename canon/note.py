"""C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 keys.

A note is a text ending in a newline, a blank line, then one or more signature lines
``— <key name> base64(key ID || signature)``. The key ID is the first 4 bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)``. Keys travel as *vkeys*
``<name>+<hex key ID>+base64(0x01 || public key)``; signer keys use Go's
``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)`` form and are secrets.

Domain separation. Unlike n3xus's own signatures, the signature covers the note text and
nothing else: the format is fixed by the spec so that independent C2SP verifiers (Go's
``sumdb/note``, witnesses, auditors) accept our notes. What separates domains here is the
key itself: use a key only for one log's checkpoints, named after the log's origin.

Parsing is strict (UTF-8, no control characters but newline, canonical base64, valid key
names) and raises :class:`CanonDecodeError`; a note that does not verify raises
:class:`VerificationError`. Signatures from unknown keys are ignored, as the spec requires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .errors import CanonDecodeError, LimitExceededError, VerificationError

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_NOTE_SIGNATURES",
    "SIGNATURE_TYPE_ED25519",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "ParsedNote",
    "add_signature",
    "key_id",
    "make_vkey",
    "open_note",
    "open_note_verified",
    "parse_note",
    "parse_vkey",
    "sign_note",
    "sign_note_with",
]

SIGNATURE_TYPE_ED25519 = 0x01
"""Signature type byte of Ed25519 note signatures (C2SP signed-note §Signature types)."""

MAX_NOTE_BYTES = 128 * 1024
"""Largest note accepted: the spec asks verifiers to take at least 16 signatures and
warns that post-quantum ones reach ~5 kB, so 16 x 5 kB plus a checkpoint body fits with
room to spare, while a hostile peer cannot make us scan megabytes."""

MAX_NOTE_SIGNATURES = 100
"""Most signature lines in a note: Go's ``note.Open`` limit (the spec requires >= 16),
which bounds the signature checks one note can make us do."""

KEY_ID_SIZE = 4  # the uint32 key ID that starts every signature
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SEED_SIZE = 32
ED25519_SIGNATURE_SIZE = 64

_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_SEPARATOR = "\n\n"
_SKEY_PREFIX = "PRIVATE+KEY+"
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}")
# Every ASCII control character except newline (U+000A) is forbidden in a note.
_FORBIDDEN_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


# ------------------------------------------------------------------------ helpers


def _decode_text(note: str | bytes, what: str, limit: int) -> str:
    if isinstance(note, bytes | bytearray | memoryview):
        raw = bytes(note)
        if len(raw) > limit:
            raise LimitExceededError(f"{what} is {len(raw)} bytes, over the {limit}-byte limit")
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise CanonDecodeError(f"{what} is not valid UTF-8") from exc
    elif isinstance(note, str):
        text = note
        if len(text) > limit:  # cheap early refusal before encoding a huge string
            raise LimitExceededError(f"{what} is over the {limit}-byte limit")
        try:
            size = len(text.encode("utf-8", errors="strict"))
        except UnicodeEncodeError as exc:
            raise CanonDecodeError(f"{what} holds a lone surrogate (not UTF-8)") from exc
        if size > limit:
            raise LimitExceededError(f"{what} is {size} bytes, over the {limit}-byte limit")
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(note).__name__}")
    if _FORBIDDEN_CONTROL.search(text):
        raise CanonDecodeError(f"{what} holds a control character other than newline")
    return text


def _b64decode_strict(value: str, what: str) -> bytes:
    """Standard base64 with padding, and only its canonical spelling."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise CanonDecodeError(f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != value:
        raise CanonDecodeError(f"{what} is not canonical base64")
    return raw


def _is_valid_name(name: str) -> bool:
    # Non-empty, no Unicode space, no "+" (it separates the fields of a vkey), and
    # encodable as UTF-8 (a lone surrogate, e.g. from an undecodable argv, is not).
    if not name or "+" in name or any(ch.isspace() for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"key name must be str, not {type(name).__name__}")
    if not _is_valid_name(name) or _FORBIDDEN_CONTROL.search(name):
        raise ValueError(f"invalid key name {name!r}: empty, or holds a space, '+' or control")
    return name


def key_id(name: str, public_key: bytes, signature_type: int = SIGNATURE_TYPE_ED25519) -> int:
    """``SHA-256(name || 0x0A || signature type || public key)[:4]`` as a uint32."""
    digest = hashlib.sha256(
        name.encode("utf-8") + b"\n" + bytes([signature_type]) + bytes(public_key)
    ).digest()
    return int.from_bytes(digest[:KEY_ID_SIZE], "big")


# ---------------------------------------------------------------------- key types


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, key ID and 32-byte public key."""

    name: str
    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.public_key) != ED25519_PUBLIC_KEY_SIZE:
            raise ValueError(f"an Ed25519 public key has {ED25519_PUBLIC_KEY_SIZE} bytes")
        if self.key_id != key_id(self.name, self.public_key):
            raise ValueError("key ID does not match the key name and public key")

    @property
    def vkey(self) -> str:
        return make_vkey(self.name, self.public_key)

    def verifies(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != ED25519_SIGNATURE_SIZE:
            return False
        try:
            VerifyKey(self.public_key).verify(text, signature)
        except BadSignatureError:
            return False
        return True


class NoteSigner:
    """An Ed25519 note signing key with its name. The seed never appears in ``repr``."""

    __slots__ = ("_key", "key_id", "name")

    def __init__(self, name: str, signing_key: SigningKey) -> None:
        if not isinstance(signing_key, SigningKey):
            raise TypeError("signing_key must be a nacl.signing.SigningKey")
        self.name = _check_name(name)
        self._key = signing_key
        self.key_id = key_id(name, bytes(signing_key.verify_key))

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || seed)``."""
        if not isinstance(skey, str) or not skey.startswith(_SKEY_PREFIX):
            raise CanonDecodeError("a signer key starts with PRIVATE+KEY+")
        name, hex_id, material = _split_key(skey[len(_SKEY_PREFIX) :], "signer key")
        if material[0] != SIGNATURE_TYPE_ED25519 or len(material) != 1 + ED25519_SEED_SIZE:
            raise CanonDecodeError("signer key is not an Ed25519 seed")
        signer = cls(name, SigningKey(material[1:]))
        if signer.key_id != int(hex_id, 16):
            raise CanonDecodeError("signer key ID does not match its key")
        return signer

    def to_skey(self) -> str:
        """The secret signer key string (Go ``note.NewSigner`` format). Keep it secret."""
        material = bytes([SIGNATURE_TYPE_ED25519]) + bytes(self._key)
        encoded = base64.b64encode(material).decode("ascii")
        return f"{_SKEY_PREFIX}{self.name}+{self.key_id:08x}+{encoded}"

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.key_id, bytes(self._key.verify_key))

    @property
    def vkey(self) -> str:
        return self.verifier.vkey

    def sign(self, text: bytes) -> bytes:
        return self._key.sign(text).signature

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x})"


def _split_key(body: str, what: str) -> tuple[str, str, bytes]:
    # Split at the first two "+" only: the base64 key material may itself hold "+".
    parts = body.split("+", 2)
    if len(parts) != 3:
        raise CanonDecodeError(f"{what} needs <name>+<key ID>+<key>")
    name, hex_id, encoded = parts
    if not _is_valid_name(name) or _FORBIDDEN_CONTROL.search(name):
        raise CanonDecodeError(f"{what} has an invalid key name")
    if not _KEY_ID_HEX.fullmatch(hex_id):
        raise CanonDecodeError(f"{what} key ID must be 8 lowercase hex digits")
    material = _b64decode_strict(encoded, f"{what} key")
    if not material:
        raise CanonDecodeError(f"{what} has no key material")
    return name, hex_id, material


def make_vkey(name: str, verify_key: VerifyKey | bytes) -> str:
    """``<name>+<hex key ID>+base64(0x01 || public key)`` for an Ed25519 key."""
    _check_name(name)
    public_key = bytes(verify_key)
    if len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise ValueError(f"an Ed25519 public key has {ED25519_PUBLIC_KEY_SIZE} bytes")
    encoded = base64.b64encode(bytes([SIGNATURE_TYPE_ED25519]) + public_key).decode("ascii")
    return f"{name}+{key_id(name, public_key):08x}+{encoded}"


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse and check a verifier key; only Ed25519 (type 0x01) keys are supported."""
    if not isinstance(vkey, str):
        raise TypeError(f"vkey must be str, not {type(vkey).__name__}")
    name, hex_id, material = _split_key(vkey, "verifier key")
    if material[0] != SIGNATURE_TYPE_ED25519:
        raise CanonDecodeError(f"unsupported signature type 0x{material[0]:02x} in verifier key")
    if len(material) != 1 + ED25519_PUBLIC_KEY_SIZE:
        raise CanonDecodeError("verifier key does not hold a 32-byte Ed25519 public key")
    public_key = material[1:]
    if key_id(name, public_key) != int(hex_id, 16):
        raise CanonDecodeError("verifier key ID does not match its name and key")
    return NoteVerifier(name, int(hex_id, 16), public_key)


# -------------------------------------------------------------------------- notes


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID and the signature bytes after the ID."""

    name: str
    key_id: int
    signature: bytes

    def to_line(self) -> str:
        payload = self.key_id.to_bytes(KEY_ID_SIZE, "big") + self.signature
        return f"{_SIGNATURE_PREFIX}{self.name} {base64.b64encode(payload).decode('ascii')}\n"


@dataclass(frozen=True)
class ParsedNote:
    """A note split into its text (with the final newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_text(self) -> str:
        return self.text + "\n" + "".join(sig.to_line() for sig in self.signatures)


def parse_note(note: str | bytes) -> ParsedNote:
    """Split a signed note strictly, verifying nothing."""
    message = _decode_text(note, "note", MAX_NOTE_BYTES)
    split = message.rfind(_SEPARATOR)
    if split < 0:
        raise CanonDecodeError("note has no blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block or not block.endswith("\n"):
        raise CanonDecodeError("note signatures must be non-empty and end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_NOTE_SIGNATURES:
        raise LimitExceededError(
            f"note has {len(lines)} signatures, over the limit of {MAX_NOTE_SIGNATURES}"
        )
    return ParsedNote(text, tuple(_parse_signature_line(line) for line in lines))


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIGNATURE_PREFIX):
        raise CanonDecodeError("signature line does not start with an em dash and a space")
    name, space, encoded = line[len(_SIGNATURE_PREFIX) :].partition(" ")
    if not space or not _is_valid_name(name):
        raise CanonDecodeError("signature line has an invalid key name")
    payload = _b64decode_strict(encoded, "signature")
    if len(payload) <= KEY_ID_SIZE:
        raise CanonDecodeError("signature is too short to hold a key ID and a signature")
    return NoteSignature(name, int.from_bytes(payload[:KEY_ID_SIZE], "big"), payload[KEY_ID_SIZE:])


def _check_note_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"note text must be str, not {type(text).__name__}")
    if not text.endswith("\n"):
        raise ValueError("note text must end with a newline")
    try:
        return _decode_text(text, "note text", MAX_NOTE_BYTES)
    except CanonDecodeError as exc:
        raise ValueError(str(exc)) from exc


def sign_note(text: str, name: str, signing_key: SigningKey) -> str:
    """Sign ``text`` (which must end with a newline) as a one-signature note."""
    return sign_note_with(text, NoteSigner(name, signing_key))


def sign_note_with(text: str, *signers: NoteSigner) -> str:
    """Sign ``text`` with each signer, in order."""
    text = _check_note_text(text)
    if not signers:
        raise ValueError("a note needs at least one signature")
    raw = text.encode("utf-8")
    signatures = tuple(NoteSignature(s.name, s.key_id, s.sign(raw)) for s in signers)
    return ParsedNote(text, signatures).to_text()


def add_signature(note: str, name: str, signing_key: SigningKey) -> str:
    """Add a signature to a signed note (a cosignature), after the existing ones; an
    existing signature by the same key is replaced. The note is not verified."""
    parsed = parse_note(note)
    signer = NoteSigner(name, signing_key)
    kept = tuple(s for s in parsed.signatures if (s.name, s.key_id) != (signer.name, signer.key_id))
    fresh = NoteSignature(signer.name, signer.key_id, signer.sign(parsed.text.encode("utf-8")))
    return ParsedNote(parsed.text, (*kept, fresh)).to_text()


def _verifier_map(
    verifier_keys: Iterable[str | NoteVerifier],
) -> dict[tuple[str, int], NoteVerifier]:
    if isinstance(verifier_keys, str | NoteVerifier):
        verifier_keys = (verifier_keys,)
    known: dict[tuple[str, int], NoteVerifier] = {}
    for item in verifier_keys:
        verifier = item if isinstance(item, NoteVerifier) else parse_vkey(item)
        slot = (verifier.name, verifier.key_id)
        if slot in known and known[slot] != verifier:
            raise ValueError(f"ambiguous verifier keys: two keys are {slot[0]}+{slot[1]:08x}")
        known[slot] = verifier
    return known


def open_note_verified(
    note: str | bytes, verifier_keys: Iterable[str | NoteVerifier]
) -> tuple[str, tuple[tuple[str, int], ...]]:
    """Like :func:`open_note`, answering the verified ``(name, key ID)`` pairs."""
    known = _verifier_map(verifier_keys)
    parsed = parse_note(note)
    raw = parsed.text.encode("utf-8")
    verified: list[tuple[str, int]] = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # an unknown key (rotation, a witness we do not follow): ignored
        if not verifier.verifies(raw, sig.signature):
            raise VerificationError(
                f"signature by known key {sig.name}+{sig.key_id:08x} does not verify"
            )
        if (sig.name, sig.key_id) not in verified:
            verified.append((sig.name, sig.key_id))
    if not verified:
        raise VerificationError("note has no signature from a trusted key")
    return parsed.text, tuple(verified)


def open_note(
    note: str | bytes, verifier_keys: Iterable[str | NoteVerifier]
) -> tuple[str, tuple[str, ...]]:
    """Verify a signed note against trusted keys (vkey strings or :class:`NoteVerifier`).

    Answers the note text and the names of the trusted keys whose signatures verified.
    Raises :class:`VerificationError` when no trusted key signed it or when a trusted
    key's signature fails, :class:`CanonDecodeError` when the note is malformed.
    """
    text, verified = open_note_verified(note, verifier_keys)
    names: list[str] = []
    for name, _ in verified:
        if name not in names:
            names.append(name)
    return text, tuple(names)
