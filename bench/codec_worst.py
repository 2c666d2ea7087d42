"""Untrusted DAG-CBOR: the costliest 1 MiB blocks we can construct, against a flat one.

A peer can make a node decode any DAG-CBOR block up to MAX_BLOCK_SIZE (1 MiB) whose CID it
asked for, and any protocol frame before a CID is known. What does the worst one cost?

  ours     canon.codec.decode of a hostile or dense 1 MiB block (refused or accepted)
  ceiling  canon.codec.decode of a flat 1 MiB block (one byte string): the cheapest shape

The ratio is ceiling time / ours (so 0.01 = a hundred times the cost of a flat block).
Peak memory (tracemalloc, one untimed call) is printed per shape. Shapes: nesting past
the depth limit; ~1M empty arrays, 500k one-element arrays and 130k identity links, each
with one non-canonical byte at the very end (the fault is found last, so before the
allocation-free scan these were parsed twice, by cbor2 and by the exact decoder); and the
densest valid blocks, which must be built because they are valid.

Measured at the change (2 cores, shared): refusing the worst shape (1M empty arrays + one
bad byte) took 1.8 s and 170 MB before the scan and now under 0.5 s with no allocation;
valid dense blocks cost about 0.9 s (building a million Python objects).

    python bench/codec_worst.py [--json] [--repeats N]
"""

from __future__ import annotations

import sys
import tracemalloc
from argparse import Namespace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Pair, main  # noqa: E402
from n3xus.canon.codec import MAX_BLOCK_SIZE, decode, encode  # noqa: E402
from n3xus.canon.errors import CanonDecodeError, LimitExceededError  # noqa: E402


def _array(items: bytes, count: int) -> bytes:
    head = encode([None] * count)[:-count]  # minimal array head
    return head + items


def _fill(unit: bytes, last: bytes = b"") -> bytes:
    """An array of as many ``unit`` items as fit in 1 MiB, then ``last`` (one item)."""
    count = (MAX_BLOCK_SIZE - 5 - len(last)) // len(unit)
    body = unit * count + last
    return _array(body, count + (1 if last else 0))


BAD_INT = b"\x18\x00"  # 0 written with one extra byte: the fault the walk meets last
IDENTITY_LINK = b"\xd8\x2a\x45\x00\x01\x55\x00\x00"  # tag 42, a CIDv1 raw identity(empty)

SHAPES: dict[str, tuple[bytes, bool]] = {
    # name: (block, headline: a refused shape)
    "nesting 1M deep (refused)": (b"\x81" * (MAX_BLOCK_SIZE - 1) + b"\x80", True),
    "1M empty arrays + bad byte (refused)": (_fill(b"\x80", BAD_INT), True),
    "500k [0] arrays + bad byte (refused)": (_fill(b"\x81\x00", BAD_INT), True),
    "130k identity links + bad byte (refused)": (_fill(IDENTITY_LINK, BAD_INT), True),
    "1M empty arrays (valid)": (_fill(b"\x80"), False),
    "500k [0] arrays (valid)": (_fill(b"\x81\x00"), False),
    "350k {'': 0} maps (valid)": (_fill(b"\xa1\x60\x00"), False),
}
FLAT = encode(bytes(MAX_BLOCK_SIZE - 5))


def _decode(data: bytes) -> None:
    try:
        decode(data)
    except (CanonDecodeError, LimitExceededError):
        pass  # refusing is the expected outcome of the hostile shapes


def _peak_mib(data: bytes) -> float:
    tracemalloc.start()
    try:
        _decode(data)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def build(args: Namespace) -> tuple[list[Pair], dict[str, Any]]:
    assert len(FLAT) == MAX_BLOCK_SIZE
    pairs = []
    for name, (block, refused) in SHAPES.items():
        assert len(block) <= MAX_BLOCK_SIZE, name
        pairs.append(Pair(
            name=name, units=len(block) // 1024, unit="KiB",
            ours=lambda _state, block=block: _decode(block),
            ceiling=lambda _state: _decode(FLAT),
            headline=refused,
            notes={"bytes": len(block), "peak_alloc_mib": round(_peak_mib(block), 1)},
        ))
    return pairs, {"flat_block_peak_alloc_mib": round(_peak_mib(FLAT), 1)}


if __name__ == "__main__":
    main("canon codec: worst-case 1 MiB blocks vs a flat one", build)
