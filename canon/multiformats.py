"""The small multiformats the canon needs: unsigned varints, multihash, multibase text.

Specs: multiformats/unsigned-varint, multiformats/multihash, multiformats/multibase and the
multicodec table (multiformats/multicodec ``table.csv``). Everything here is strict: a decoder
accepts only the one canonical form, so two different byte strings never name the same thing.
Errors are :class:`~n3xus.canon.errors.CanonDecodeError` with the offset that was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

import blake3

from .errors import CanonDecodeError, CanonEncodeError

# The unsigned-varint spec caps varints at 9 bytes (63 bits of payload) so that every value
# fits a signed 64-bit integer in every implementation; longer ones are invalid.
MAX_VARINT_BYTES = 9
MAX_VARINT_VALUE = (1 << 63) - 1

# A digest longer than this is refused. Real digests are at most 64 bytes (sha2-512, blake2b);
# "identity" multihashes inline data, and boxo (go IPFS) caps those at 128 bytes. 1 KiB leaves
# room for others' odd data while bounding what a single CID can make us hold or parse.
MAX_DIGEST_SIZE = 1024

# Multicodec codes (multicodec table.csv) of the content codecs we name. Others are fine in a
# CID; they are shown by number.
CODEC_CODES: dict[str, int] = {
    "identity": 0x00,
    "cbor": 0x51,
    "raw": 0x55,
    "dag-pb": 0x70,
    "dag-cbor": 0x71,
    "libp2p-key": 0x72,
    "git-raw": 0x78,
    "dag-jose": 0x85,
    "dag-cose": 0x86,
    "dag-json": 0x0129,
    "json": 0x0200,
}
CODEC_NAMES: dict[int, str] = {code: name for name, code in CODEC_CODES.items()}

# Multihash function codes (multicodec table.csv, tag "multihash").
HASH_CODES: dict[str, int] = {
    "identity": 0x00,
    "sha1": 0x11,
    "sha2-256": 0x12,
    "sha2-512": 0x13,
    "sha3-512": 0x14,
    "sha3-384": 0x15,
    "sha3-256": 0x16,
    "sha3-224": 0x17,
    "shake-128": 0x18,
    "shake-256": 0x19,
    "keccak-256": 0x1B,
    "keccak-512": 0x1D,
    "blake3": 0x1E,
    "sha2-384": 0x20,
    "murmur3-x64-64": 0x22,
    "dbl-sha2-256": 0x56,
    "md5": 0xD5,
    "sha2-256-trunc254-padded": 0x1012,
    "sha2-224": 0x1013,
    "blake2b-256": 0xB220,
    "blake2b-512": 0xB240,
    "blake2s-256": 0xB260,
}
HASH_NAMES: dict[int, str] = {code: name for name, code in HASH_CODES.items()}

# Hash functions we can compute, by name; each returns the 32-byte digest.
SUPPORTED_HASHES = ("blake3", "sha2-256")


def code_name(names: dict[int, str], code: int) -> str:
    """The table name of ``code``, or ``"0x…"`` (hex, even digits) for codes we do not name."""
    name = names.get(code)
    if name is not None:
        return name
    digits = f"{code:x}"
    return "0x" + ("0" * (len(digits) % 2)) + digits


def resolve_code(table: dict[str, int], what: str, value: int | str) -> int:
    """A multicodec code given by name (``"dag-cbor"``) or number; raises CanonEncodeError."""
    if isinstance(value, bool):
        raise CanonEncodeError(f"{what} must be a name or an integer code, not a bool")
    if isinstance(value, int):
        if not 0 <= value <= MAX_VARINT_VALUE:
            raise CanonEncodeError(f"{what} code {value} is outside 0..2**63-1")
        return value
    if isinstance(value, str):
        code = table.get(value)
        if code is None:
            raise CanonEncodeError(f"unknown {what} name {value!r}")
        return code
    raise CanonEncodeError(f"{what} must be a name or an integer code, not {type(value).__name__}")


def hash_digest(hash_name: str, data: bytes) -> bytes:
    """The digest of ``data`` under one of :data:`SUPPORTED_HASHES`."""
    if hash_name == "blake3":
        return blake3.blake3(data).digest()
    if hash_name == "sha2-256":
        return hashlib.sha256(data).digest()
    raise CanonEncodeError(f"unsupported hash {hash_name!r}; use one of {SUPPORTED_HASHES}")


# --- unsigned varint ---------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """The minimal unsigned-varint form of ``value`` (0 ≤ value < 2**63)."""
    if value < 0x80:
        if value < 0:
            raise CanonEncodeError(f"varint of a negative number {value}")
        return bytes((value,))
    if value > MAX_VARINT_VALUE:
        raise CanonEncodeError(f"varint value {value} exceeds 2**63-1")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, offset: int, what: str = "varint") -> tuple[int, int]:
    """Read one unsigned varint at ``offset``; returns ``(value, offset after it)``.

    Rejects truncation, more than :data:`MAX_VARINT_BYTES` bytes and non-minimal forms (a
    final 0x00 byte after a continuation), as the unsigned-varint spec requires.
    """
    value = 0
    shift = 0
    position = offset
    end = len(data)
    while True:
        if position >= end:
            raise CanonDecodeError(f"truncated {what} at offset {offset}")
        if position - offset >= MAX_VARINT_BYTES:
            raise CanonDecodeError(f"{what} longer than {MAX_VARINT_BYTES} bytes at offset {offset}")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and position - offset > 1:
                raise CanonDecodeError(f"non-minimal {what} at offset {offset}")
            return value, position
        shift += 7


# --- multihash ---------------------------------------------------------------------------


def encode_multihash(hash_code: int, digest: bytes) -> bytes:
    """``varint(code) || varint(len) || digest``."""
    if len(digest) > MAX_DIGEST_SIZE:
        raise CanonEncodeError(f"digest of {len(digest)} bytes exceeds {MAX_DIGEST_SIZE}")
    return encode_varint(hash_code) + encode_varint(len(digest)) + bytes(digest)


def decode_multihash(data: bytes, offset: int) -> tuple[int, int, int]:
    """Parse the multihash that must fill ``data[offset:]`` exactly.

    Returns ``(hash_code, digest_offset, digest_length)``.
    """
    hash_code, position = decode_varint(data, offset, "multihash code")
    digest_length, position = decode_varint(data, position, "multihash length")
    if digest_length > MAX_DIGEST_SIZE:
        raise CanonDecodeError(
            f"multihash digest length {digest_length} exceeds {MAX_DIGEST_SIZE} at offset {offset}"
        )
    have = len(data) - position
    if have < digest_length:
        raise CanonDecodeError(
            f"truncated multihash: digest needs {digest_length} bytes, {have} left "
            f"at offset {position}"
        )
    if have > digest_length:
        raise CanonDecodeError(
            f"{have - digest_length} trailing bytes after the multihash at offset "
            f"{position + digest_length}"
        )
    return hash_code, position, digest_length


# --- multibase: base32 lower (prefix "b") and base58btc (prefix "z") ---------------------

_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(_BASE58_ALPHABET)}
_BASE32_LOWER_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def base32_lower_encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase ``b`` without the prefix)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def base32_lower_decode(text: str) -> bytes:
    """Inverse of :func:`base32_lower_encode`; only the canonical text is accepted (lower case,
    no padding, unused trailing bits zero), so each byte string has exactly one text form."""
    if not _BASE32_LOWER_ALPHABET.issuperset(text):
        bad = next(char for char in text if char not in _BASE32_LOWER_ALPHABET)
        raise CanonDecodeError(f"character {bad!r} is not base32 lower-case")
    if len(text) % 8 in (1, 3, 6):
        raise CanonDecodeError(f"base32 text of impossible length {len(text)}")
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        data = base64.b32decode(padded)
    except binascii.Error as exc:
        raise CanonDecodeError(f"invalid base32 text: {exc}") from exc
    if base32_lower_encode(data) != text:
        raise CanonDecodeError("non-canonical base32 text (unused trailing bits are not zero)")
    return data


def base58btc_encode(data: bytes) -> str:
    """Bitcoin base58 (multibase ``z`` without the prefix; CIDv0 text as is)."""
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, remainder = divmod(number, 58)
        digits.append(_BASE58_ALPHABET[remainder])
    return "1" * zeros + "".join(reversed(digits))


def base58btc_decode(text: str) -> bytes:
    """Inverse of :func:`base58btc_encode`; rejects characters outside the alphabet."""
    number = 0
    for position, char in enumerate(text):
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise CanonDecodeError(f"character {char!r} at {position} is not base58btc")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\x00" * zeros + body
