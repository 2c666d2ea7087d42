"""Range-based set reconciliation of account summaries (``specs/ledger.md`` §14.2-14.3),
sans IO: what a node keeps to answer ``query`` messages in bounded time, how it answers
them, and how it reads a ``summary``.

The set reconciled is a node's accounts, each with its summary row; its *item* is
``BLAKE3(account || digest)`` read as a 256-bit big-endian integer. A range (the accounts
under a nibble prefix, ``messages.Range``) has the fingerprint

    BLAKE3("n3xus/ledger-sync/range/v2" || 0x00 || u256 (sum of its items mod 2**256)
           || u64 count)[:16]

A sum rather than an XOR: a XOR of hashes can be cancelled by anyone who makes ~257
accounts (linear algebra over GF(2)), a modular sum has no such shortcut; the count makes
equal sums of different sizes differ.

One exchange goes root first: the initiator sends its fingerprint of a range; the
responder, when its own differs, lists the range's rows if it holds at most
``MAX_RANGE_ROWS`` accounts there, else answers the 16 fingerprints of its sub-ranges; the
initiator queries again the sub-ranges whose fingerprints differ from its own. Every round
goes one nibble deeper, so an exchange ends after at most ``MAX_DEPTH`` + 1 rounds (about
``log16(n / 16) + 1`` for n uniformly spread accounts) and each round's work is bounded
by the message limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from blake3 import blake3

from .messages import (
    FANOUT,
    FINGERPRINT_BYTES,
    MAX_DEPTH,
    MAX_QUERY_RANGES,
    MAX_RANGE_ROWS,
    ROOT,
    Query,
    Range,
    RangeFingerprint,
    RangeRows,
    RangeSplit,
    Summary,
    SummaryRow,
)

RANGE_TAG: Final = b"n3xus/ledger-sync/range/v2\x00"
MODULUS: Final = 1 << 256
_MASK: Final = MODULUS - 1
INDEXED_NIBBLES: Final = 4
"""Range depths whose sums and counts are kept in arrays (16**4 = 65,536 leaves, ~5 MB):
a range this shallow is answered with one lookup; a deeper one lies inside one leaf, which
holds ~n / 65,536 accounts (15 at a million) and is summed on demand."""


def fingerprint(total: int, count: int) -> bytes:
    return blake3(RANGE_TAG + total.to_bytes(32, "big") + count.to_bytes(8, "big")).digest()[:FINGERPRINT_BYTES]


EMPTY_FINGERPRINT: Final = fingerprint(0, 0)


def item_of(account: bytes, digest: bytes) -> int:
    return int.from_bytes(blake3(account + digest).digest(), "big")


def _nibbles(where: Range) -> int:
    """The range's prefix as an integer of ``depth`` nibbles."""
    value = int.from_bytes(where.prefix, "big")
    return value >> 4 if where.depth % 2 else value


def _nibble(account: bytes, position: int) -> int:
    byte = account[position // 2]
    return byte & 0x0F if position % 2 else byte >> 4


class RangeIndex:
    """Items by account, with the sum and count of every range down to
    :data:`INDEXED_NIBBLES` kept up to date (O(INDEXED_NIBBLES) per change)."""

    def __init__(self) -> None:
        self._sums = [[0] * FANOUT**level for level in range(INDEXED_NIBBLES + 1)]
        self._counts = [[0] * FANOUT**level for level in range(INDEXED_NIBBLES + 1)]
        self._leaves: dict[int, dict[bytes, int]] = {}
        self._levels = [(self._sums[level], self._counts[level], 4 * (INDEXED_NIBBLES - level))
                        for level in range(INDEXED_NIBBLES + 1)]

    def __len__(self) -> int:
        return self._counts[0][0]

    def put(self, account: bytes, item: int) -> None:
        leaf = (account[0] << 8) | account[1]
        members = self._leaves.get(leaf)
        if members is None:
            members = self._leaves[leaf] = {}
        old = members.get(account)
        members[account] = item
        delta, added = item - (old or 0), int(old is None)
        for sums, counts, shift in self._levels:
            slot = leaf >> shift
            sums[slot] = (sums[slot] + delta) & _MASK
            counts[slot] += added

    def total(self, where: Range) -> tuple[int, int]:
        """The sum (mod 2**256) and count of the range's items."""
        if where.depth <= INDEXED_NIBBLES:
            slot = _nibbles(where)
            return self._sums[where.depth][slot], self._counts[where.depth][slot]
        total = count = 0
        for account, item in self._leaves.get(int.from_bytes(where.prefix[:2], "big"), {}).items():
            if where.contains(account):
                total += item
                count += 1
        return total % MODULUS, count

    def fingerprint(self, where: Range) -> bytes:
        return fingerprint(*self.total(where))

    def accounts(self, where: Range) -> list[bytes]:
        """The range's accounts, ascending."""
        if where.depth >= INDEXED_NIBBLES:
            members = self._leaves.get(int.from_bytes(where.prefix[:2], "big"), {})
            return sorted(a for a in members if where.contains(a))
        shift = 4 * (INDEXED_NIBBLES - where.depth)
        low, high = _nibbles(where) << shift, (_nibbles(where) + 1) << shift
        if high - low > len(self._leaves):  # fewer occupied leaves than the range spans
            leaves = sorted(leaf for leaf in self._leaves if low <= leaf < high)
        else:
            leaves = [leaf for leaf in range(low, high) if leaf in self._leaves]
        return [a for leaf in leaves for a in sorted(self._leaves[leaf])]

    def children(self, where: Range) -> tuple[bytes, ...]:
        """The fingerprints of the range's 16 sub-ranges, by next nibble."""
        if where.depth < INDEXED_NIBBLES:
            base = _nibbles(where) * FANOUT
            sums, counts = self._sums[where.depth + 1], self._counts[where.depth + 1]
            return tuple(fingerprint(sums[base + n], counts[base + n]) for n in range(FANOUT))
        totals = [0] * FANOUT
        counts_ = [0] * FANOUT
        for account, item in self._leaves.get(int.from_bytes(where.prefix[:2], "big"), {}).items():
            if where.contains(account):
                nibble = _nibble(account, where.depth)
                totals[nibble] += item
                counts_[nibble] += 1
        return tuple(fingerprint(totals[n] % MODULUS, counts_[n]) for n in range(FANOUT))

    def root_query(self) -> Query:
        return Query((RangeFingerprint(ROOT, self.fingerprint(ROOT)),))


def answer(index: RangeIndex, row_of: Callable[[bytes], SummaryRow], query: Query) -> Summary:
    """The responder's answer to ``query``: for each range whose fingerprint differs from
    ours, our rows there (at most :data:`MAX_RANGE_ROWS`) or our 16 sub-range fingerprints.
    Equal ranges are left out (an empty summary: in sync)."""
    items: list[RangeRows | RangeSplit] = []
    for asked in query.ranges:
        total, count = index.total(asked.range)
        if fingerprint(total, count) == asked.fingerprint:
            continue
        if count <= MAX_RANGE_ROWS or asked.range.depth == MAX_DEPTH:
            items.append(RangeRows(asked.range, tuple(row_of(a) for a in index.accounts(asked.range))))
        else:
            items.append(RangeSplit(asked.range, index.children(asked.range)))
    return Summary(tuple(items))


@dataclass
class Differences:
    """What a summary tells the initiator: sub-ranges to query next (with our
    fingerprints), and ranges whose peer rows are known whole (to compare account by
    account; no rows when the peer holds nothing there)."""

    queries: list[RangeFingerprint] = field(default_factory=list)
    listed: list[tuple[Range, tuple[SummaryRow, ...]]] = field(default_factory=list)

    def query_messages(self) -> list[Query]:
        return [Query(tuple(self.queries[start:start + MAX_QUERY_RANGES]))
                for start in range(0, len(self.queries), MAX_QUERY_RANGES)]


def compare(index: RangeIndex, summary: Summary) -> Differences:
    found = Differences()
    for item in summary.items:
        if isinstance(item, RangeRows):
            found.listed.append((item.range, item.rows))
            continue
        ours = index.children(item.range)
        for nibble, theirs in enumerate(item.children):
            if ours[nibble] == theirs:
                continue
            child = item.range.child(nibble)
            if theirs == EMPTY_FINGERPRINT:
                found.listed.append((child, ()))  # the peer has none there: no need to ask
            else:
                found.queries.append(RangeFingerprint(child, ours[nibble]))
    return found
