"""Untrusted DAG-CBOR costs bounded work: hostile 1 MiB blocks are refused by the
allocation-free scan before any value is built (memory is asserted, never time)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_canon_codec import check_outcome, values

from n3xus.canon import codec
from n3xus.canon.codec import (
    MAX_BLOCK_SIZE,
    MAX_NESTING_DEPTH,
    PRESCAN_MIN_BYTES,
    decode,
    decode_exact,
    encode,
)
from n3xus.canon.errors import CanonDecodeError, LimitExceededError

JUNK_PIECES = [
    b"\x80", b"\xa0", b"\x81", b"\x82", b"\xa1", b"\x61a", b"\x61b", b"\x00", b"\x18\x18",
    b"\xf6", b"\xf7", b"\xfb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\xd8\x2a", b"\x41\x00",
    b"\x58\x25\x00\x01\x71\x12\x20" + b"\x11" * 32, b"\x9f", b"\xff", b"\xc2", b"\x62\xc3\xa9",
    b"\x60", b"\x40", b"\x20", b"\xf4",
]

# What refusing may allocate beyond the input itself: error objects and a bounded stack.
# Building the values of these inputs takes 50-170 MB.
MAX_REFUSAL_ALLOCATION = 2 * 1024 * 1024


def _array(items: bytes, count: int) -> bytes:
    """An array head with a minimal count (so that only the planted fault is wrong)."""
    head = encode([None] * count)[: -count]
    return head + items


def hostile_blocks() -> dict[str, bytes]:
    n = MAX_BLOCK_SIZE - 5
    return {
        "a million nested one-element arrays": b"\x81" * (MAX_BLOCK_SIZE - 1) + b"\x80",
        "a million nested one-entry maps": b"\xa1\x60" * (MAX_BLOCK_SIZE // 2 - 1) + b"\x80",
        "a million empty arrays, bad last byte": _array(b"\x80" * (n - 2) + b"\x18\x00", n - 1),
        # (fewer items: the walk over them is slow under tracemalloc)
        "60,000 one-element arrays, bad end": _array(b"\x81\x00" * 59_999 + b"\x18\x00", 60_000),
        "a million empty maps, bad last byte": _array(b"\xa0" * (n - 2) + b"\x18\x00", n - 1),
        "depth 128 repeated, then depth 129": _array(
            (b"\x81" * 126 + b"\x80") * 1000 + b"\x81" * 128 + b"\x80", 1001),
    }


def _peak_allocation(call: Callable[[], Any]) -> tuple[int, BaseException | None]:
    tracemalloc.start()
    try:
        call()
        outcome: BaseException | None = None
    except (CanonDecodeError, LimitExceededError) as exc:
        outcome = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak, outcome


@pytest.mark.parametrize("name", list(hostile_blocks()))
@pytest.mark.parametrize("decoder", [decode, decode_exact], ids=["decode", "decode_exact"])
def test_hostile_blocks_are_refused_without_building_them(name: str, decoder: Any) -> None:
    data = hostile_blocks()[name]
    assert len(data) <= MAX_BLOCK_SIZE
    peak, outcome = _peak_allocation(lambda: decoder(data))
    assert isinstance(outcome, CanonDecodeError | LimitExceededError), name
    assert "offset 0:" not in str(outcome), f"{name}: refused at its head, not its body"
    assert peak < MAX_REFUSAL_ALLOCATION, f"{name}: refusing allocated {peak} bytes"


def test_depth_limit_is_checked_before_the_container_is_read() -> None:
    # The nested input is refused at the 129th head, whatever follows it (here: garbage
    # that would be its own error much later).
    data = b"\x81" * MAX_NESTING_DEPTH + b"\x80" + b"\xff" * PRESCAN_MIN_BYTES
    with pytest.raises(LimitExceededError, match=f"offset {MAX_NESTING_DEPTH}$"):
        decode(data)


def test_large_valid_dense_blocks_still_decode() -> None:
    value = [[0] for _ in range(20_000)] + [{"": None}] * 1000 + [b"", "", [], {}] * 1000
    data = encode(value)
    assert len(data) >= PRESCAN_MIN_BYTES
    assert decode(data) == value
    assert decode_exact(data) == value


def test_one_byte_runs_respect_the_depth_limit() -> None:
    # An empty array inside 128 levels is level 129: the fast skip of one-byte items must
    # not let it through.
    inner = b"\x82\x00\x80"  # [0, []]
    data = b"\x81" * (MAX_NESTING_DEPTH - 1) + inner
    padded = b"\x82" + data + b"\x5a" + (PRESCAN_MIN_BYTES).to_bytes(4, "big") + bytes(PRESCAN_MIN_BYTES)
    with pytest.raises(LimitExceededError, match="nesting deeper"):
        decode(padded)


# --- the scan as the only gate: same outcomes as the exact decoder -----------------------

@contextmanager
def scan_everything() -> Iterator[None]:
    """Make ``decode`` scan (and then trust cbor2 without re-encoding) at every size."""
    saved = codec.PRESCAN_MIN_BYTES
    codec.PRESCAN_MIN_BYTES = 0  # type: ignore[misc]
    try:
        yield
    finally:
        codec.PRESCAN_MIN_BYTES = saved  # type: ignore[misc]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data())
def test_scanned_decode_agrees_with_the_exact_decoder_under_bit_flips(
    value: Any, data: st.DataObject
) -> None:
    encoded = bytearray(encode(value))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
        encoded[position] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    with scan_everything():
        check_outcome(bytes(encoded))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(JUNK_PIECES), max_size=12))
def test_scanned_decode_agrees_on_structured_junk(pieces: list[bytes]) -> None:
    with scan_everything():
        check_outcome(b"".join(pieces))
