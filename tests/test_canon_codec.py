"""Strict DAG-CBOR codec: canonical encoding, strict decoding with offsets, limits, and
property tests (round trips, truncation, bit flips, random bytes).

Both decoders are exercised: ``decode`` (cbor2 fast path, falling back to the exact decoder)
and ``decode_exact`` (pure Python), which must agree on every input.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import re
import struct
from typing import Any, NamedTuple

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from n3xus.canon import CID, CanonDecodeError, CanonEncodeError, LimitExceededError, decode, encode
from n3xus.canon.codec import INT_MAX, INT_MIN, MAX_BLOCK_SIZE, MAX_NESTING_DEPTH, decode_exact

DECODERS = [pytest.param(decode, id="decode"), pytest.param(decode_exact, id="decode_exact")]

LINK = CID.from_digest("dag-cbor", "sha2-256", bytes(range(32)))
LINK_HEX = "d82a58250001711220" + bytes(range(32)).hex()


def same(a: Any, b: Any) -> bool:
    """Equality that also compares kinds (True is not 1, 1.0 is not 1, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return bool(a == b)


# --- canonical encoding: known bytes -------------------------------------------------------

ENCODINGS = [
    (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65535, "19ffff"),
    (65536, "1a00010000"), (2**32 - 1, "1affffffff"), (2**32, "1b0000000100000000"),
    (2**64 - 1, "1bffffffffffffffff"), (-1, "20"), (-24, "37"), (-25, "3818"),
    (-(2**64), "3bffffffffffffffff"),
    (1.5, "fb3ff8000000000000"), (0.0, "fb0000000000000000"), (-0.0, "fb8000000000000000"),
    (1.0, "fb3ff0000000000000"), (5e-324, "fb0000000000000001"),
    (True, "f5"), (False, "f4"), (None, "f6"),
    ("", "60"), ("a", "6161"), ("水", "63e6b0b4"), ("x" * 24, "7818" + "78" * 24),
    (b"", "40"), (b"\x01\x02", "420102"), (b"\xff" * 256, "590100" + "ff" * 256),
    ([], "80"), ([1, [2]], "82018102"), ({}, "a0"),
    ({"b": 1, "a": 2}, "a2616102616201"),
    # Length first: "b" (1 byte) before "aa" (2 bytes), whatever the letters.
    ({"aa": 1, "b": 2}, "a2616202626161" + "01"),
    # Byte length, not character count: "é" is 2 UTF-8 bytes, so it sorts after "z" and,
    # being as long as "ab", after "ab" too (0xc3 > 0x61).
    ({"é": 1, "ab": 2, "z": 3}, "a3617a03626162" + "02" + "62c3a9" + "01"),
    (LINK, LINK_HEX),
    ({"link": LINK}, "a1646c696e6b" + LINK_HEX),
]


@pytest.mark.parametrize(("value", "expected"), ENCODINGS, ids=[e[1][:24] for e in ENCODINGS])
def test_encode_known_bytes(value: Any, expected: str) -> None:
    assert encode(value).hex() == expected
    for decoder in (decode, decode_exact):
        assert same(decoder(bytes.fromhex(expected)), value)


def test_map_key_order_does_not_depend_on_insertion_order() -> None:
    keys = ["bb", "a", "ccc", "b", "aa", "é", "\U00010151", "zz", ""]
    forward = encode({k: i for i, k in enumerate(keys)})
    backward = encode({k: i for i, k in reversed(list(enumerate(keys)))})
    assert forward == backward
    assert list(decode(forward)) == ["", "a", "b", "aa", "bb", "zz", "é", "ccc", "\U00010151"]


def test_encode_does_not_modify_its_input() -> None:
    value = {"b": (1, 2), "a": [bytearray(b"x")]}
    encode(value)
    assert list(value) == ["b", "a"]
    assert value["b"] == (1, 2)


# --- conveniences accepted on encode ----------------------------------------------------


class Kind(enum.IntEnum):
    TRANSFER = 7


class Name(enum.StrEnum):
    MEMO = "memo"


class Point(NamedTuple):
    x: int
    y: int


def test_conveniences_encode_as_plain_kinds() -> None:
    value = {
        Name.MEMO: Name.MEMO,
        "kind": Kind.TRANSFER,
        "tuple": (1, (2, 3)),
        "point": Point(4, 5),
        "ba": bytearray(b"ab"),
        "mv": memoryview(b"cd"),
        "od": collections.OrderedDict([("z", 1), ("a", 2)]),
    }
    plain = {
        "memo": "memo",
        "kind": 7,
        "tuple": [1, [2, 3]],
        "point": [4, 5],
        "ba": b"ab",
        "mv": b"cd",
        "od": {"a": 2, "z": 1},
    }
    data = encode(value)
    assert data == encode(plain)
    assert same(decode(data), plain)


# --- refused on encode -------------------------------------------------------------------

REFUSED_VALUES = [
    (float("nan"), "NaN"), (float("inf"), "NaN or Infinity"), (float("-inf"), "NaN or Infinity"),
    (2**64, "outside the CBOR range"), (-(2**64) - 1, "outside the CBOR range"),
    ({1: "x"}, "not a str"), ({b"k": 1}, "not a str"), ({("a",): 1}, "not a str"),
    ({"a", "b"}, "set"), (frozenset(), "frozenset"), (datetime.datetime(2020, 1, 1), "datetime"),
    (decimal.Decimal("1.5"), "Decimal"), (1 + 2j, "complex"), (object(), "object"),
    (cbor2.CBORTag(1, 2), "CBORTag"), (cbor2.CBORSimpleValue(99), "CBORSimpleValue"),
    (cbor2.undefined, "not an IPLD data model kind"), (re.compile("x"), "Pattern"),
    ("\ud800", "lone surrogate"), ({"\udfff": 1}, "lone surrogate"),
]


@pytest.mark.parametrize(("value", "message"), REFUSED_VALUES, ids=[m for _, m in REFUSED_VALUES])
def test_encode_refuses_values_outside_the_data_model(value: Any, message: str) -> None:
    with pytest.raises(CanonEncodeError, match=re.escape(message)):
        encode(value)


def test_encode_error_names_the_path() -> None:
    with pytest.raises(CanonEncodeError, match=re.escape("(at $['outer'][1]['inner'])")):
        encode({"outer": [0, {"inner": float("nan")}]})


def test_encode_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        encode({1: 2})


# --- limits ------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_nesting_up_to_the_limit_round_trips() -> None:
    value = nested(MAX_NESTING_DEPTH, leaf=LINK)
    data = encode(value)
    assert same(decode(data), value)
    assert same(decode_exact(data), value)


def test_encode_refuses_nesting_past_the_limit() -> None:
    with pytest.raises(LimitExceededError, match=str(MAX_NESTING_DEPTH)):
        encode(nested(MAX_NESTING_DEPTH + 1))


def test_encode_refuses_a_cycle_cleanly() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(LimitExceededError):
        encode(cycle)


@pytest.mark.parametrize("decoder", DECODERS)
def test_decode_refuses_nesting_past_the_limit_with_offset(decoder: Any) -> None:
    depth = MAX_NESTING_DEPTH + 1
    data = b"\x81" * (depth - 1) + b"\x80"
    with pytest.raises(LimitExceededError, match=f"offset {MAX_NESTING_DEPTH}$"):
        decoder(data)
    assert decoder(data[1:]) is not None  # exactly at the limit is fine


@pytest.mark.parametrize("decoder", DECODERS)
def test_decode_survives_absurd_nesting(decoder: Any) -> None:
    with pytest.raises(LimitExceededError):
        decoder(b"\x81" * 100_000 + b"\x80")


def test_encode_refuses_values_over_the_block_size() -> None:
    assert len(encode(b"\x00" * (MAX_BLOCK_SIZE - 5))) == MAX_BLOCK_SIZE
    with pytest.raises(LimitExceededError):
        encode(b"\x00" * (MAX_BLOCK_SIZE - 4))


@pytest.mark.parametrize("decoder", DECODERS)
def test_decode_refuses_blocks_over_the_block_size(decoder: Any) -> None:
    with pytest.raises(LimitExceededError):
        decoder(b"\x5a" + (MAX_BLOCK_SIZE).to_bytes(4, "big") + b"\x00" * MAX_BLOCK_SIZE)


# --- refused on decode, with the offset --------------------------------------------------

# (hex, words the message must contain, offset it must name)
REFUSED_BYTES = [
    ("a3636261720363666f6f0163666f6f02", "duplicate map key 'foo'", 11),
    ("a2616201616101", "out of canonical order", 4),
    ("a262626201616101", "out of canonical order", 5),  # "bb" then "a": longer first
    ("a1010203", "must be text strings", 1),
    ("a1416101", "must be text strings", 1),
    ("a18101f6", "must be text strings", 1),
    ("1801", "non-minimal unsigned integer", 0),
    ("190001", "non-minimal unsigned integer", 0),
    ("1a0000ffff", "non-minimal unsigned integer", 0),
    ("1b00000000ffffffff", "non-minimal unsigned integer", 0),
    ("3817", "non-minimal negative integer", 0),
    ("580141", "non-minimal byte string", 0),
    ("78016161", "non-minimal text string", 0),
    ("980101", "non-minimal array", 0),
    ("b80161610101", "non-minimal map", 0),
    ("a17801616101", "non-minimal text string", 1),
    ("8201190001", "non-minimal unsigned integer", 2),
    ("5f4161ff", "indefinite-length byte string", 0),
    ("7f6161ff", "indefinite-length text string", 0),
    ("9f01ff", "indefinite-length array", 0),
    ("bf616101ff", "indefinite-length map", 0),
    ("8101ff", "trailing bytes", 2),
    ("ff", "unexpected break", 0),
    ("1c", "reserved additional info 28", 0),
    ("5d", "reserved additional info 29", 0),
    ("fc", "reserved additional info 28", 0),
    ("c100", "tag 1 at offset 0", 0),
    ("c249010000000000000000", "tag 2 at offset 0", 0),
    ("d9d9f701", "tag 55799", 0),
    ("d90100816161", "tag 256", 0),
    ("8201d81c01", "tag 28", 2),
    ("d9002a4100", "non-minimal tag", 0),
    ("d82a6161", "wraps a text string", 0),
    ("d82a4101", "lacks the 0x00 multibase prefix", 0),
    ("d82a40", "lacks the 0x00 multibase prefix", 0),
    ("d82a4100", "invalid CID in link", 0),
    ("8201d82a4500017112ff", "invalid CID in link at offset 2", 2),
    ("d82a58250002711220" + "00" * 32, "unsupported CID version 2", 0),
    ("f7", "undefined", 0),
    ("f0", "simple value", 0),
    ("f820", "simple value", 0),
    ("f814", "simple value", 0),
    ("f93c00", "16-bit float", 0),
    ("fa3fc00000", "32-bit float", 0),
    ("f97e00", "16-bit float", 0),
    ("fb7ff8000000000000", "float nan", 0),
    ("fb7ff0000000000000", "float inf", 0),
    ("fbfff0000000000000", "float -inf", 0),
    ("82f6fb7ff0000000000000", "float inf at offset 2", 2),
    ("62c328", "invalid UTF-8", 1),
    ("62c0af", "invalid UTF-8", 1),
    ("63eda080", "invalid UTF-8", 1),
    ("a162ff0001", "invalid UTF-8", 2),
    ("", "empty input", 0),
    ("18", "truncated", 1),
    ("62c3", "truncated text string", 1),
    ("82", "truncated array", 0),
    ("a1", "truncated map", 0),
    ("fb3ff0", "truncated float", 1),
    ("d8", "truncated", 1),
    ("d82a", "truncated item", 2),
    ("5b7fffffffffffffff", "truncated byte string", 9),
    ("9b7fffffffffffffff", "truncated array", 0),
    ("bb7fffffffffffffff", "truncated map", 0),
]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("hex_data", "words", "offset"), REFUSED_BYTES,
                         ids=[f"{h[:20]}-{w}" for h, w, _ in REFUSED_BYTES])
def test_decode_refuses_non_canonical_input(decoder: Any, hex_data: str, words: str,
                                            offset: int) -> None:
    with pytest.raises(CanonDecodeError) as caught:
        decoder(bytes.fromhex(hex_data))
    message = str(caught.value)
    assert words in message
    assert f"offset {offset}" in message


def test_decode_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        decode(b"\xf7")


def test_decode_accepts_bytearray_and_memoryview_and_refuses_text() -> None:
    data = encode({"a": [1, LINK]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {"a": [1, LINK]}
    with pytest.raises(TypeError):
        decode(data.hex())  # type: ignore[arg-type]


def test_links_decode_to_cids() -> None:
    value = decode(encode({"prev": LINK, "all": [LINK, LINK]}))
    assert type(value["prev"]) is CID
    assert value["prev"] == LINK
    assert value["all"] == [LINK, LINK]


def test_integers_outside_int64_round_trip() -> None:
    for number in (2**63, 2**64 - 1, -(2**63) - 1, -(2**64)):
        assert decode(encode(number)) == number


# --- property tests ----------------------------------------------------------------------

cids = st.one_of(
    st.builds(
        CID.from_digest,
        st.sampled_from(["dag-cbor", "raw", "dag-pb", 0x1B0, 0x0129]),
        st.sampled_from(["blake3", "sha2-256", "identity", 0xB220]),
        st.binary(max_size=64),
    ),
    st.builds(lambda digest: CID.from_digest("dag-pb", "sha2-256", digest, version=0),
              st.binary(min_size=32, max_size=32)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=INT_MIN, max_value=INT_MAX),
    st.integers(min_value=-300, max_value=300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.binary(max_size=40),
    cids,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=40,
)
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(values)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    decoded = decode(data)
    assert same(decoded, value)
    assert same(decode_exact(data), value)
    assert encode(decoded) == data


@PROPERTY
@given(st.dictionaries(st.text(max_size=6), st.integers(-1000, 1000), max_size=12), st.randoms())
def test_encoding_ignores_key_insertion_order(mapping: dict[str, int], random: Any) -> None:
    items = list(mapping.items())
    random.shuffle(items)
    assert encode(dict(items)) == encode(mapping)


@PROPERTY
@given(values)
def test_every_truncation_is_a_clean_error(value: Any) -> None:
    data = encode(value)
    for end in range(len(data)):
        for decoder in (decode, decode_exact):
            with pytest.raises(CanonDecodeError, match="truncated|empty input"):
                decoder(data[:end])


def check_outcome(data: bytes) -> None:
    """decode and decode_exact agree; an accepted input is exactly the canonical encoding of
    its value; anything else is a clean CanonDecodeError or LimitExceededError."""
    outcomes: list[tuple[Any, ...]] = []
    for decoder in (decode, decode_exact):
        try:
            value = decoder(data)
        except (CanonDecodeError, LimitExceededError) as exc:
            outcomes.append(("refused", type(exc), str(exc)))
        else:
            assert encode(value) == data
            outcomes.append(("accepted", value))
    first, second = outcomes
    assert first[0] == second[0]
    if first[0] == "accepted":
        assert same(first[1], second[1])
    else:
        assert first == second


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data())
def test_bit_flips_never_crash_or_pass_non_canonical_bytes(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    check_outcome(bytes(encoded))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data: bytes) -> None:
    check_outcome(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([
    b"\x80", b"\xa0", b"\x81", b"\x82", b"\xa1", b"\x61a", b"\x61b", b"\x00", b"\x18\x18",
    b"\xf6", b"\xf7", b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\xd8\x2a", b"\x41\x00",
    b"\x58\x25\x00\x01\x71\x12\x20" + b"\x11" * 32, b"\x9f", b"\xff", b"\xc2", b"\x62\xc3\xa9",
]), max_size=12))
def test_structured_junk_never_crashes(pieces: list[bytes]) -> None:
    check_outcome(b"".join(pieces))
