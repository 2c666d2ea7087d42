"""Content identifiers (multiformats/cid): CIDv1 and, for others' data, CIDv0.

A :class:`CID` is immutable, hashable and ordered by its binary form. It parses

* CIDv1 text in base32 lower case (``b…``, how we print it) or base58btc (``z…``),
* CIDv0 text (46 characters of base58btc starting ``Qm``),
* binary CIDv1 (``varint(1) varint(codec) multihash``) and binary CIDv0 (34 bytes
  ``0x12 0x20`` + a sha2-256 digest),

and rejects everything else with :class:`~n3xus.canon.errors.CanonDecodeError`. Parsing is
strict (minimal varints, canonical base32/base58 text, no trailing bytes), so one identifier
has exactly one binary form and equality is byte equality.

Our own blocks are named with :func:`cid_of`: CIDv1, codec dag-cbor, BLAKE3-256.
"""

from __future__ import annotations

from typing import Any, Final, final

from .errors import CanonDecodeError, CanonEncodeError
from .multiformats import (
    CODEC_CODES,
    CODEC_NAMES,
    HASH_CODES,
    HASH_NAMES,
    MAX_DIGEST_SIZE,
    SUPPORTED_HASHES,
    base32_lower_decode,
    base32_lower_encode,
    base58btc_decode,
    base58btc_encode,
    code_name,
    decode_multihash,
    decode_varint,
    encode_multihash,
    encode_varint,
    hash_digest,
    resolve_code,
)

DAG_CBOR: Final = 0x71
DAG_PB: Final = 0x70
RAW: Final = 0x55
SHA2_256: Final = 0x12
BLAKE3: Final = 0x1E

# Text longer than this cannot be a CID we accept (base58 needs < 1.4 characters per byte and
# base32 1.6, over a digest of at most MAX_DIGEST_SIZE bytes plus four 9-byte varints). The
# check comes first so that a huge string never reaches base58's quadratic decoding.
MAX_CID_TEXT_LENGTH = 2 * (MAX_DIGEST_SIZE + 4 * 9) + 2

# CIDv0: a bare sha2-256 multihash, 34 bytes, whose base58btc text is 46 characters "Qm…".
_CIDV0_LENGTH = 34
_CIDV0_TEXT_LENGTH = 46

# The tag-42 encoding of a link is d8 2a + byte-string header + 0x00 + binary CID; cached per
# CID because the same link is usually encoded many times.
_CBOR_TAG_42 = b"\xd8\x2a"


def _cbor_bytes_header(length: int) -> bytes:
    if length < 24:
        return bytes((0x40 + length,))
    if length < 0x100:
        return bytes((0x58, length))
    return b"\x59" + length.to_bytes(2, "big")


@final
class CID:
    """A content identifier. ``CID("bafy…")``, ``CID(b"\\x01q…")``, ``CID("Qm…")``.

    Immutable as :class:`fractions.Fraction` is: the parts are read-only properties over
    private slots (no per-instance dict). We do not override ``__setattr__``, because that
    would make every construction ~3x slower, and decoding makes one CID per link.
    """

    __slots__ = ("_binary", "_version", "_codec", "_hash_code", "_multihash_start", "_digest_start",
                 "_text", "_link")

    _binary: bytes
    _version: int
    _codec: int
    _hash_code: int
    _multihash_start: int
    _digest_start: int
    # Computed on first use (decoding makes many CIDs that are never printed).
    _text: str | None
    _link: bytes | None

    def __init__(self, source: str | bytes | bytearray | memoryview | CID) -> None:
        if type(source) is bytes:
            self._parse_binary(source)
        elif isinstance(source, CID):
            self._set(source._binary, source._version, source._codec, source._hash_code,
                      source._multihash_start, source._digest_start)
        elif isinstance(source, bytes | bytearray | memoryview):
            self._parse_binary(bytes(source))
        elif isinstance(source, str):
            self._parse_text(source)
        else:
            raise TypeError(f"CID() takes text or bytes, not {type(source).__name__}")

    # --- construction ------------------------------------------------------------------

    def _set(self, binary: bytes, version: int, codec: int, hash_code: int,
             multihash_start: int, digest_start: int) -> None:
        self._binary = binary
        self._version = version
        self._codec = codec
        self._hash_code = hash_code
        self._multihash_start = multihash_start
        self._digest_start = digest_start
        self._text = None
        self._link = None

    def _parse_binary(self, binary: bytes) -> None:
        length = len(binary)
        if length == _CIDV0_LENGTH and binary[0] == SHA2_256 and binary[1] == 0x20:
            self._set(binary, 0, DAG_PB, SHA2_256, 0, 2)
            return
        # Fast path: CIDv1 whose codec, hash code and digest length are one-byte varints
        # (dag-cbor/raw/dag-pb with blake3/sha2-256: nearly every CID we meet).
        if length >= 4 and binary[0] == 1:
            codec = binary[1]
            hash_code = binary[2]
            if codec < 0x80 and hash_code < 0x80 and binary[3] == length - 4 < 0x80:
                self._binary = binary
                self._version = 1
                self._codec = codec
                self._hash_code = hash_code
                self._multihash_start = 2
                self._digest_start = 4
                self._text = None
                self._link = None
                return
        self._parse_binary_general(binary)

    def _parse_binary_general(self, binary: bytes) -> None:
        length = len(binary)
        if length == 0:
            raise CanonDecodeError("empty CID")
        version = binary[0]
        if version != 1:
            if version == SHA2_256:
                raise CanonDecodeError(
                    f"CIDv0 must be exactly {_CIDV0_LENGTH} bytes (0x12 0x20 + sha2-256 digest), "
                    f"got {length}"
                )
            if version >= 0x80:
                version, _ = decode_varint(binary, 0, "CID version")
            raise CanonDecodeError(f"unsupported CID version {version}")
        codec, multihash_start = decode_varint(binary, 1, "CID codec")
        hash_code, digest_start, _ = decode_multihash(binary, multihash_start)
        self._set(binary, 1, codec, hash_code, multihash_start, digest_start)

    def _parse_text(self, text: str) -> None:
        if len(text) > MAX_CID_TEXT_LENGTH:
            raise CanonDecodeError(f"CID text of {len(text)} characters is too long")
        if len(text) == _CIDV0_TEXT_LENGTH and text.startswith("Qm"):
            binary = base58btc_decode(text)
            if len(binary) != _CIDV0_LENGTH or binary[:2] != b"\x12\x20":
                raise CanonDecodeError(f"{text!r} is not a CIDv0 (sha2-256 multihash)")
            self._set(binary, 0, DAG_PB, SHA2_256, 0, 2)
            return
        if not text:
            raise CanonDecodeError("empty CID text")
        prefix, body = text[0], text[1:]
        if prefix == "b":
            binary = base32_lower_decode(body)
        elif prefix == "z":
            binary = base58btc_decode(body)
        else:
            raise CanonDecodeError(
                f"unsupported multibase prefix {prefix!r} in CID text (expected 'b', 'z' or 'Qm…')"
            )
        if binary[:1] == b"\x12":
            # The CID spec forbids multibase-encoded CIDv0 (no CIDv18, to avoid the ambiguity).
            raise CanonDecodeError("a CIDv0 may not be multibase-encoded")
        self._parse_binary(binary)

    @classmethod
    def from_multihash(cls, codec: int | str, multihash: bytes, version: int = 1) -> CID:
        """A CID of ``codec`` over an already-encoded multihash."""
        codec_code = resolve_code(CODEC_CODES, "codec", codec)
        multihash = bytes(multihash)
        if version == 0:
            if codec_code != DAG_PB or len(multihash) != _CIDV0_LENGTH or multihash[:2] != b"\x12\x20":
                raise CanonEncodeError("a CIDv0 is only dag-pb over a 32-byte sha2-256 digest")
            return cls(multihash)
        if version != 1:
            raise CanonEncodeError(f"unsupported CID version {version}")
        try:
            return cls(encode_varint(1) + encode_varint(codec_code) + multihash)
        except CanonDecodeError as exc:
            raise CanonEncodeError(f"invalid multihash: {exc}") from exc

    @classmethod
    def from_digest(cls, codec: int | str, hash_name: int | str, digest: bytes,
                    version: int = 1) -> CID:
        """A CID from its parts: ``CID.from_digest("dag-cbor", "blake3", digest)``."""
        hash_code = resolve_code(HASH_CODES, "hash", hash_name)
        return cls.from_multihash(codec, encode_multihash(hash_code, bytes(digest)), version)

    def to_v1(self) -> CID:
        """The CIDv1 naming the same content (itself if already v1)."""
        if self._version == 1:
            return self
        return CID.from_multihash(self._codec, self.multihash)

    # --- the parts -----------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    @property
    def codec(self) -> int:
        """Multicodec code of the content's format (0x71 dag-cbor, 0x55 raw, 0x70 dag-pb)."""
        return self._codec

    @property
    def codec_name(self) -> str:
        return code_name(CODEC_NAMES, self._codec)

    @property
    def hash_code(self) -> int:
        return self._hash_code

    @property
    def hash_name(self) -> str:
        return code_name(HASH_NAMES, self._hash_code)

    @property
    def digest(self) -> bytes:
        return self._binary[self._digest_start:]

    @property
    def multihash(self) -> bytes:
        return self._binary[self._multihash_start:]

    def dag_cbor_link(self) -> bytes:
        """This CID as a DAG-CBOR link: tag 42 over a byte string 0x00 + binary CID."""
        link = self._link
        if link is None:
            payload_length = len(self._binary) + 1
            link = _CBOR_TAG_42 + _cbor_bytes_header(payload_length) + b"\x00" + self._binary
            self._link = link
        return link

    # --- value semantics -----------------------------------------------------------------

    def __bytes__(self) -> bytes:
        return self._binary

    def __str__(self) -> str:
        text = self._text
        if text is None:
            if self._version == 0:
                text = base58btc_encode(self._binary)
            else:
                text = "b" + base32_lower_encode(self._binary)
            self._text = text
        return text

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __hash__(self) -> int:
        return hash(self._binary)

    def __eq__(self, other: object) -> bool:
        if type(other) is CID:
            return self._binary == other._binary
        return NotImplemented

    def __lt__(self, other: object) -> bool:
        if type(other) is CID:
            return self._binary < other._binary
        return NotImplemented

    def __le__(self, other: object) -> bool:
        if type(other) is CID:
            return self._binary <= other._binary
        return NotImplemented

    def __gt__(self, other: object) -> bool:
        if type(other) is CID:
            return self._binary > other._binary
        return NotImplemented

    def __ge__(self, other: object) -> bool:
        if type(other) is CID:
            return self._binary >= other._binary
        return NotImplemented

    def __reduce__(self) -> tuple[type[CID], tuple[bytes]]:
        return (CID, (self._binary,))

    def __copy__(self) -> CID:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> CID:
        return self


# Binary prefix (version, codec, hash code, digest length) and multihash offset of the CIDs
# cid_of makes, keyed by (codec code, hash name); both supported hashes give 32-byte digests.
# Only named codecs are cached, so callers cannot grow it without bound.
_PREFIXES: dict[tuple[int, str], tuple[bytes, int]] = {}
_DIGEST_SIZE = 32


def cid_of(data: bytes, codec: int | str = "dag-cbor", hash: str = "blake3") -> CID:
    """The CIDv1 of a block: ``cid_of(canon.encode(value))`` names a DAG-CBOR block with
    BLAKE3-256; ``hash="sha2-256"`` gives the CIDs other IPFS tools compute by default."""
    codec_code = codec if type(codec) is int else resolve_code(CODEC_CODES, "codec", codec)
    cached = _PREFIXES.get((codec_code, hash))
    if cached is None:
        if hash not in SUPPORTED_HASHES:
            raise CanonEncodeError(f"unsupported hash {hash!r}; use one of {SUPPORTED_HASHES}")
        codec_code = resolve_code(CODEC_CODES, "codec", codec_code)
        head = encode_varint(1) + encode_varint(codec_code)
        cached = (head + encode_varint(HASH_CODES[hash]) + encode_varint(_DIGEST_SIZE), len(head))
        if codec_code in CODEC_NAMES:
            _PREFIXES[(codec_code, hash)] = cached
    prefix, multihash_start = cached
    digest = hash_digest(hash, data)
    cid = CID.__new__(CID)
    cid._set(prefix + digest, 1, codec_code, HASH_CODES[hash], multihash_start, len(prefix))
    return cid
