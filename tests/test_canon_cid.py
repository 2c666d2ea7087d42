"""CIDs and the multiformats under them: unsigned varints, multihash, base32/base58 text.

Known vectors come from the specs (unsigned-varint, RFC 4648, the base58 draft) and from
ipld/codec-fixtures (CIDs other implementations wrote), so the tests do not only check this
code against itself.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from typing import Any

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n3xus.canon import CID, CanonDecodeError, CanonEncodeError, cid_of, decode, encode
from n3xus.canon.cid import MAX_CID_TEXT_LENGTH
from n3xus.canon.multiformats import (
    MAX_DIGEST_SIZE,
    base32_lower_decode,
    base32_lower_encode,
    base58btc_decode,
    base58btc_encode,
    decode_multihash,
    decode_varint,
    encode_multihash,
    encode_varint,
)

# (text, binary hex) pairs taken from ipld/codec-fixtures (directory names and the links in
# the blocks), written by the Go and JavaScript implementations.
KNOWN_CIDS = [
    ("QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJBY",
     "122022ad631c69ee983095b5b8acd029ff94aff1dc6c48837878589a92b90dfea317"),
    ("bafkqabiaaebagba", "015500050001020304"),
    ("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm",
     "0171122069ea0740f9807a28f4d932c62e7c1c83be055e55072c90266ab3e79df63a365b"),
    ("bagyacvradn6dsgl6sw2jwoh7s3d37hq5wsu7g22wtdwnmaaaaaaaaaaaaaaa",
     "01b00156201b7c39197e95b49b38ff96c7bf9e1db4a9f36b5698ecd6000000000000000000"),
    ("zdpuAtX7ZibcWdSKQwiDCkPjWwRvtcKCPku9H7LhgA4qJW4Wk",
     "01711220785197229dc8bb1152945da58e2348f7e279eeded06cc2ca736d0e879858b501"),
    ("z8mWaJ1dZ9fH5EetPuRsj8jj26pXsgpsr", "01781114c876ceeaa8b30123bc5fc99359e682a737308659"),
]


@pytest.mark.parametrize(("text", "binary_hex"), KNOWN_CIDS, ids=[t[:20] for t, _ in KNOWN_CIDS])
def test_known_cids_parse_from_text_and_bytes_alike(text: str, binary_hex: str) -> None:
    binary = bytes.fromhex(binary_hex)
    from_text = CID(text)
    from_bytes = CID(binary)
    assert from_text == from_bytes
    assert bytes(from_text) == binary
    if text.startswith(("Qm", "b")):
        assert str(from_bytes) == text  # we print v0 as base58, v1 as base32 lower
    else:
        assert str(from_bytes) == "b" + base32_lower_encode(binary)


def test_cidv0_parts() -> None:
    cid = CID("QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJBY")
    assert (cid.version, cid.codec, cid.codec_name) == (0, 0x70, "dag-pb")
    assert (cid.hash_code, cid.hash_name) == (0x12, "sha2-256")
    assert cid.digest.hex() == "22ad631c69ee983095b5b8acd029ff94aff1dc6c48837878589a92b90dfea317"
    assert cid.multihash == bytes(cid)
    v1 = cid.to_v1()
    assert (v1.version, v1.codec, v1.multihash) == (1, 0x70, cid.multihash)
    assert str(v1).startswith("bafybei")
    assert v1 != cid


def test_cidv1_parts_and_names() -> None:
    cid = CID("bagyacvradn6dsgl6sw2jwoh7s3d37hq5wsu7g22wtdwnmaaaaaaaaaaaaaaa")
    assert (cid.version, cid.codec, cid.codec_name) == (1, 0xB0, "0xb0")
    assert (cid.hash_code, cid.hash_name) == (0x56, "dbl-sha2-256")
    assert len(cid.digest) == 32
    assert cid.multihash == bytes.fromhex("5620") + cid.digest
    assert CID.from_digest("raw", 0xB401, b"\x01").hash_name == "0xb401"
    assert CID.from_digest(0x55, "identity", b"").codec_name == "raw"


def test_repr_and_str() -> None:
    cid = cid_of(b"x")
    assert repr(cid) == f"CID('{cid}')"
    assert str(cid).startswith("bafyr4i")  # dag-cbor (0x71) + blake3 (0x1e) + 32 bytes


def test_value_semantics() -> None:
    one, two, three = (cid_of(bytes([n])) for n in range(3))
    assert CID(str(one)) == one and hash(CID(bytes(one))) == hash(one)
    assert len({one, CID(bytes(one)), two}) == 2
    assert sorted([three, one, two]) == sorted([three, one, two], key=bytes)
    assert (one < two) == (bytes(one) < bytes(two))
    assert one <= one and one >= one and not one < one
    assert pickle.loads(pickle.dumps(one)) == one
    assert copy.copy(one) is one and copy.deepcopy(one) is one
    assert one != bytes(one) and one != str(one)
    with pytest.raises(AttributeError):
        one.codec = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        one.extra = 5  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        _ = one < bytes(one)


def test_cid_accepts_bytes_like_and_cid() -> None:
    cid = cid_of(b"y", hash="sha2-256")
    assert CID(bytearray(bytes(cid))) == CID(memoryview(bytes(cid))) == CID(cid) == cid
    with pytest.raises(TypeError):
        CID(5)  # type: ignore[arg-type]


def test_cid_of_blake3_and_sha2_256() -> None:
    # BLAKE3 of the empty input, from the BLAKE3 test vectors.
    empty = cid_of(b"", codec="raw")
    assert empty.digest.hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert (empty.codec_name, empty.hash_name, empty.version) == ("raw", "blake3", 1)
    data = encode({"hello": "world"})
    default = cid_of(data)
    assert bytes(default) == b"\x01\x71\x1e\x20" + blake3.blake3(data).digest()
    sha = cid_of(data, hash="sha2-256")
    assert bytes(sha) == b"\x01\x71\x12\x20" + hashlib.sha256(data).digest()
    assert str(sha).startswith("bafyrei")
    assert cid_of(data, codec=0x71) == default
    assert CID(bytes(default)) == default and CID(str(default)) == default
    assert cid_of(b"", codec=0x1B0, hash="sha2-256").codec_name == "0x01b0"
    with pytest.raises(CanonEncodeError):
        cid_of(data, hash="md5")
    with pytest.raises(CanonEncodeError):
        cid_of(data, codec="no-such-codec")


def test_from_digest_and_from_multihash() -> None:
    digest = bytes(range(32))
    cid = CID.from_digest("dag-cbor", "sha2-256", digest)
    assert bytes(cid) == b"\x01\x71\x12\x20" + digest
    assert CID.from_digest(0x71, 0x12, digest) == cid
    assert CID.from_multihash("dag-cbor", cid.multihash) == cid
    v0 = CID.from_digest("dag-pb", "sha2-256", digest, version=0)
    assert bytes(v0) == b"\x12\x20" + digest and v0.version == 0
    with pytest.raises(CanonEncodeError):
        CID.from_digest("dag-cbor", "sha2-256", digest, version=0)
    with pytest.raises(CanonEncodeError):
        CID.from_digest("dag-pb", "blake3", digest, version=0)
    with pytest.raises(CanonEncodeError):
        CID.from_digest("dag-cbor", "sha2-256", digest, version=2)
    with pytest.raises(CanonEncodeError):
        CID.from_digest("dag-cbor", "no-such-hash", digest)
    with pytest.raises(CanonEncodeError):
        CID.from_digest(True, "sha2-256", digest)
    with pytest.raises(CanonEncodeError):
        CID.from_digest(-1, "sha2-256", digest)
    with pytest.raises(CanonEncodeError):
        CID.from_digest("raw", "identity", b"\x00" * (MAX_DIGEST_SIZE + 1))
    with pytest.raises(CanonEncodeError):
        CID.from_multihash("raw", b"\x12\x20\x00")


def test_cids_in_dag_cbor_keep_their_version() -> None:
    v0 = CID("QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJBY")
    data = encode([v0, v0.to_v1()])
    assert data.hex().startswith("82d82a582300122022ad")
    assert decode(data) == [v0, v0.to_v1()]


MALFORMED_BINARY = [
    ("", "empty CID"),
    ("1220" + "00" * 31, "CIDv0 must be exactly 34 bytes"),
    ("1220" + "00" * 33, "CIDv0 must be exactly 34 bytes"),
    ("00711220" + "00" * 32, "unsupported CID version 0"),
    ("02711220" + "00" * 32, "unsupported CID version 2"),
    ("8101711220" + "00" * 32, "unsupported CID version 129"),
    ("8100711220" + "00" * 32, "non-minimal CID version"),
    ("01", "truncated CID codec"),
    ("01f1001220" + "00" * 32, "non-minimal CID codec"),
    ("0171", "truncated multihash code"),
    ("017112", "truncated multihash length"),
    ("01711220" + "00" * 31, "truncated multihash"),
    ("01711220" + "00" * 33, "trailing bytes after the multihash"),
    ("0171ffffffffffffffffff01", "longer than 9 bytes"),
    ("01710088" + "08" + "00" * 1032, "exceeds 1024"),
]


@pytest.mark.parametrize(("binary_hex", "message"), MALFORMED_BINARY,
                         ids=[m for _, m in MALFORMED_BINARY])
def test_malformed_binary_cids_are_refused(binary_hex: str, message: str) -> None:
    with pytest.raises(CanonDecodeError, match=message):
        CID(bytes.fromhex(binary_hex))


MALFORMED_TEXT = [
    ("", "empty CID text"),
    ("fabcdef", "unsupported multibase prefix 'f'"),
    ("BAFYREIDJ5IDUB6MAPIUPJWJSYYXHYHEDXYCV4VIHFSICM2VT46O7MORWLM", "prefix 'B'"),
    ("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlM", "not base32 lower-case"),
    ("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwl1", "not base32 lower-case"),
    ("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwln", "non-canonical base32"),
    ("bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwl", "impossible length"),
    ("QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJB0", "not base58btc"),
    ("QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJBl", "not base58btc"),
    ("QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJBYY", "prefix 'Q'"),
    ("zdpuAtX7ZibcWdSKQwiDCkPjWwRvtcKCPku9H7LhgA4qJW4WkO", "not base58btc"),
    ("b" + base32_lower_encode(b"\x12\x20" + b"\x00" * 32), "may not be multibase-encoded"),
    ("z" + base58btc_encode(b"\x12\x20" + b"\x00" * 32), "may not be multibase-encoded"),
    ("b" + "a" * MAX_CID_TEXT_LENGTH, "too long"),
    ("z" + "2" * MAX_CID_TEXT_LENGTH, "too long"),
]


@pytest.mark.parametrize(("text", "message"), MALFORMED_TEXT, ids=[m for _, m in MALFORMED_TEXT])
def test_malformed_text_cids_are_refused(text: str, message: str) -> None:
    with pytest.raises(CanonDecodeError, match=message):
        CID(text)


def test_v0_text_of_the_wrong_multihash_is_refused() -> None:
    # 46 base58 characters starting "Qm" that do not decode to 0x12 0x20 + 32 bytes.
    with pytest.raises(CanonDecodeError, match="not a CIDv0"):
        CID("Qm" + "1" * 44)


# --- multiformats ------------------------------------------------------------------------

VARINTS = [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (255, "ff01"), (300, "ac02"),
           (16384, "808001"), (2**63 - 1, "ffffffffffffffff7f")]


@pytest.mark.parametrize(("number", "hex_form"), VARINTS, ids=[h for _, h in VARINTS])
def test_varint_vectors(number: int, hex_form: str) -> None:
    assert encode_varint(number).hex() == hex_form
    assert decode_varint(bytes.fromhex(hex_form) + b"\xaa", 0) == (number, len(hex_form) // 2)


@pytest.mark.parametrize(("hex_form", "message"), [
    ("", "truncated"), ("80", "truncated"), ("8000", "non-minimal"), ("ff00", "non-minimal"),
    ("ffffffffffffffffff01", "longer than 9 bytes"),
])
def test_varint_refusals(hex_form: str, message: str) -> None:
    with pytest.raises(CanonDecodeError, match=message):
        decode_varint(bytes.fromhex(hex_form), 0)


def test_varint_encode_refusals() -> None:
    for number in (-1, 2**63):
        with pytest.raises(CanonEncodeError):
            encode_varint(number)


def test_base_vectors() -> None:
    # RFC 4648 section 10 (lower case, no padding) and the base58 IETF draft.
    for plain, text in [(b"", ""), (b"f", "my"), (b"fo", "mzxq"), (b"foo", "mzxw6"),
                        (b"foob", "mzxw6yq"), (b"fooba", "mzxw6ytb"), (b"foobar", "mzxw6ytboi")]:
        assert base32_lower_encode(plain) == text
        assert base32_lower_decode(text) == plain
    for plain, text in [(b"Hello World!", "2NEpo7TZRRrLZSi2U"),
                        (bytes.fromhex("0000287fb4cd"), "11233QC4"), (b"", "")]:
        assert base58btc_encode(plain) == text
        assert base58btc_decode(text) == plain


def test_multihash_parts() -> None:
    multihash = encode_multihash(0x12, b"\x01" * 32)
    assert multihash[:2] == b"\x12\x20"
    assert decode_multihash(b"\xff" + multihash, 1) == (0x12, 3, 32)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_varint_round_trip(number: int) -> None:
    encoded = encode_varint(number)
    assert decode_varint(encoded, 0) == (number, len(encoded))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_base_round_trips(data: bytes) -> None:
    assert base32_lower_decode(base32_lower_encode(data)) == data
    assert base58btc_decode(base58btc_encode(data)) == data


cids = st.builds(
    CID.from_digest,
    st.one_of(st.sampled_from(["dag-cbor", "raw", "dag-pb"]), st.integers(0, 2**63 - 1)),
    st.one_of(st.sampled_from(["blake3", "sha2-256"]), st.integers(0, 2**63 - 1)),
    st.binary(max_size=MAX_DIGEST_SIZE),
)


@settings(max_examples=200, deadline=None)
@given(cids)
def test_cid_round_trips(cid: CID) -> None:
    assert CID(bytes(cid)) == cid
    assert CID(str(cid)) == cid
    assert CID("z" + base58btc_encode(bytes(cid))) == cid
    again = CID.from_digest(cid.codec, cid.hash_code, cid.digest)
    assert bytes(again) == bytes(cid)
    assert bytes(cid) == encode_varint(1) + encode_varint(cid.codec) + cid.multihash


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=48))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        cid = CID(data)
    except CanonDecodeError:
        return
    assert bytes(cid) == data  # accepted only in the one canonical form
    assert CID(str(cid)) == cid


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=70))
def test_arbitrary_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        cid: Any = CID(text)
    except CanonDecodeError:
        return
    assert str(cid) == text or text.startswith("z")
