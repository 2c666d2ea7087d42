"""The vectors of specs/vectors/protocol-ledger-sync.json (``/n3xus/ledger-sync/2.0.0``,
specs/protocol-ledger-sync.md §2 and §5): range fingerprints of a two-account set, the
frames of every message, and frames a receiver must refuse. ``python
tests/ledger_sync_vectors.py --write`` regenerates the file (deterministic);
``tests/test_federation_ledger_wire.py`` checks it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol_vectors import VECTORS_DIR, to_json  # noqa: E402

from n3xus.canon.codec import encode  # noqa: E402
from n3xus.protocol.framing import encode_frame  # noqa: E402
from n3xus.protocol.sync.messages import (  # noqa: E402
    ROOT,
    Chain,
    Message,
    Pull,
    Query,
    Range,
    RangeFingerprint,
    RangeRows,
    RangeSplit,
    Summary,
    SummaryRow,
)
from n3xus.protocol.sync.ranges import EMPTY_FINGERPRINT, RangeIndex, item_of  # noqa: E402
from n3xus.protocol.sync.session import MAX_FRAME_BYTES, encode_sync  # noqa: E402

FILE = "protocol-ledger-sync.json"
ROWS = (SummaryRow(bytes(32), b"\xdd" * 32, 3, None),
        SummaryRow(b"\x1a" + b"\x34" * 31, b"\xee" * 32, 1, 0))


def index_of(rows: tuple[SummaryRow, ...] = ROWS) -> RangeIndex:
    index = RangeIndex()
    for row in rows:
        index.put(row.account, item_of(row.account, row.digest))
    return index


FINGERPRINTED = (ROOT, Range(b"\x00", 1), Range(b"\x10", 1), Range(b"\x1a", 2),
                 Range(b"\x1a\x30", 3), Range(b"\xf0", 1))


def valid_messages() -> list[tuple[str, Message]]:
    index = index_of()
    root = RangeFingerprint(ROOT, index.fingerprint(ROOT))
    return [
        ("query of the root", Query((root,))),
        ("query of two ranges (the second at an odd depth)",
         Query((RangeFingerprint(Range(b"\x00", 1), index.fingerprint(Range(b"\x00", 1))),
                RangeFingerprint(Range(b"\x1a\x30", 3), EMPTY_FINGERPRINT)))),
        ("summary: in sync", Summary(())),
        ("summary listing the root's two rows", Summary((RangeRows(ROOT, ROWS),))),
        ("summary splitting the root", Summary((RangeSplit(ROOT, index.children(ROOT)),))),
        ("pull of account 00..00 from seq 5", Pull(bytes(32), 5)),
        ("chain of two entries", Chain(bytes(32), (b"entry-0", b"entry-1"))),
    ]


def _row(row: SummaryRow) -> list[Any]:
    return [row.account, row.digest, row.next_seq, row.freeze]


def invalid_values() -> list[tuple[str, dict[str, Any]]]:
    fp = bytes(16)
    row = _row(ROWS[0])
    return [
        ("a query of no range", {"type": "query", "r": []}),
        ("an odd depth whose prefix has a low nibble", {"type": "query", "r": [[b"\x1a", 1, fp]]}),
        ("a prefix longer than ceil(depth / 2)", {"type": "query", "r": [[b"\x1a\x00", 2, fp]]}),
        ("a depth beyond 64", {"type": "query", "r": [[bytes(33), 65, fp]]}),
        ("a 15-byte fingerprint", {"type": "query", "r": [[b"", 0, bytes(15)]]}),
        ("a split at depth 64", {"type": "summary", "r": [
            {"p": bytes(32), "d": 64, "c": [fp] * 16}]}),
        ("a split of 15 sub-ranges", {"type": "summary", "r": [{"p": b"", "d": 0, "c": [fp] * 15}]}),
        ("rows out of order", {"type": "summary", "r": [
            {"p": b"", "d": 0, "a": [_row(ROWS[1]), row]}]}),
        ("a row outside its range", {"type": "summary", "r": [{"p": b"\x10", "d": 1, "a": [row]}]}),
        ("17 rows", {"type": "summary", "r": [{"p": b"", "d": 0, "a": [
            [bytes([n]) + bytes(31), b"\xdd" * 32, 0, None] for n in range(17)]}]}),
        ("an item with both rows and sub-ranges", {"type": "summary", "r": [
            {"p": b"", "d": 0, "a": [], "c": [fp] * 16}]}),
    ]


def render() -> str:
    index = index_of()
    data = {
        "description": "/n3xus/ledger-sync/2.0.0 (specs/protocol-ledger-sync.md §2): each frame is "
                       "varint(length) || canonical DAG-CBOR of the message (ledger.md §14.1 with "
                       "'t' renamed 'type'). 'set' is a node's two account rows [account, digest, "
                       "next, freeze]; 'fingerprints' are its range fingerprints (§2.1), 'empty' "
                       "the empty range's. Invalid frames are refused with the code given.",
        "set": [_row(row) for row in ROWS],
        "empty": EMPTY_FINGERPRINT,
        "fingerprints": [{"prefix": where.prefix, "depth": where.depth,
                          "fingerprint": index.fingerprint(where)} for where in FINGERPRINTED],
        "valid": [{"name": name, "hex": encode_sync(message).hex()}
                  for name, message in valid_messages()],
        "invalid": [{"name": name, "code": "malformed",
                     "hex": encode_frame(encode(value), MAX_FRAME_BYTES).hex()}
                    for name, value in invalid_values()],
    }
    return json.dumps(to_json(data), indent=2) + "\n"


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    if sys.argv[1:] == ["--write"]:
        (VECTORS_DIR / FILE).write_text(render(), encoding="utf-8")
        print("wrote", FILE)
    else:
        print(render())
