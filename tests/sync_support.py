"""Hypothesis strategies of the ledger-sync messages (specs/ledger.md §14.1), shared by the
message tests of the sync core and of the ``/n3xus/ledger-sync/2.0.0`` frames."""

from __future__ import annotations

from hypothesis import strategies as st

from n3xus.protocol.sync.messages import (
    FANOUT,
    FINGERPRINT_BYTES,
    MAX_DEPTH,
    MAX_RANGE_ROWS,
    Chain,
    Gossip,
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

b32 = st.binary(min_size=32, max_size=32)
fingerprints = st.binary(min_size=FINGERPRINT_BYTES, max_size=FINGERPRINT_BYTES)
seqs = st.integers(0, 2**63 - 1)
entries = st.lists(st.binary(min_size=1, max_size=300), max_size=64).map(tuple)


@st.composite
def ranges(draw: st.DrawFn, max_depth: int = MAX_DEPTH) -> Range:
    depth = draw(st.integers(0, max_depth))
    prefix = bytearray(draw(st.binary(min_size=(depth + 1) // 2, max_size=(depth + 1) // 2)))
    if depth % 2:
        prefix[-1] &= 0xF0
    return Range(bytes(prefix), depth)


def inside(where: Range, tail: bytes) -> bytes:
    """The account of ``where`` whose nibbles after the prefix are those of ``tail``."""
    whole = where.depth // 2
    account = bytearray(where.prefix[:whole] + tail[whole:])
    if where.depth % 2:
        account[whole] = (where.prefix[whole] & 0xF0) | (tail[whole] & 0x0F)
    return bytes(account)


@st.composite
def range_rows(draw: st.DrawFn) -> RangeRows:
    where = draw(ranges())
    tails = draw(st.lists(b32, max_size=MAX_RANGE_ROWS if where.depth < MAX_DEPTH else 1))
    accounts = sorted({inside(where, tail) for tail in tails})
    rows = [SummaryRow(a, draw(b32), draw(seqs), draw(st.none() | seqs)) for a in accounts]
    return RangeRows(where, tuple(rows))


range_splits = st.builds(RangeSplit, ranges(MAX_DEPTH - 1),
                         st.lists(fingerprints, min_size=FANOUT, max_size=FANOUT).map(tuple))
queries = st.builds(Query, st.lists(st.builds(RangeFingerprint, ranges(), fingerprints),
                                    min_size=1, max_size=6).map(tuple))
summaries = st.builds(Summary, st.lists(st.one_of(range_rows(), range_splits), max_size=4).map(tuple))
stream_messages: st.SearchStrategy[Message] = st.one_of(
    queries, summaries, st.builds(Pull, b32, seqs), st.builds(Chain, b32, entries))
all_messages: st.SearchStrategy[Message] = st.one_of(
    stream_messages, st.builds(Gossip, entries.filter(bool)))
