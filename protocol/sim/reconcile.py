"""Range reconciliation at scale, in one process (the test and bench/ledger_sync_ranges.py):
two account sets of synthetic summary rows, reconciled by the real query/summary core
(``protocol/sync/ranges.py``) with every message through its ledger-sync frame, counting
round trips, messages and bytes.

Synthetic rows stand in for account chains (building a million real chains would cost
minutes of signing): an account's row is ``(digest of version v, next = v)``, and "pulling"
or "pushing" an account sets both sides to the higher version, as the union of two chains
would. What the exchange must find is exactly the accounts whose rows differ.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

from blake3 import blake3

from n3xus.protocol.framing import FrameDecoder
from n3xus.protocol.sync.messages import Message, Query, SummaryRow
from n3xus.protocol.sync.ranges import RangeIndex, answer, compare, item_of
from n3xus.protocol.sync.session import MAX_FRAME_BYTES, decode_sync, encode_sync


@functools.cache
def _version_digest(version: int) -> bytes:
    return blake3(b"version" + version.to_bytes(8, "big")).digest()


@dataclass
class Side:
    rows: dict[bytes, SummaryRow] = field(default_factory=dict)
    index: RangeIndex = field(default_factory=RangeIndex)

    def put(self, account: bytes, version: int) -> None:
        row = SummaryRow(account, _version_digest(version), version, None)
        self.rows[account] = row
        self.index.put(account, item_of(account, row.digest))


@dataclass
class Exchange:
    """What one exchange cost, and what it found."""

    rounds: int = 0  # round trips: a round sends every query known, then reads the answers
    messages: int = 0
    sent_bytes: int = 0
    differing: set[bytes] = field(default_factory=set)
    max_depth: int = 0


def make_pair(accounts: int, only_first: float, only_second: float, changed: float,
              seed: int = 0) -> tuple[Side, Side, set[bytes]]:
    """Two sides sharing ``accounts`` accounts but for the given fractions (held by one
    side only, or at a higher version on the second); and the accounts that differ."""
    rng = random.Random(seed)
    first, second = Side(), Side()
    differing: set[bytes] = set()
    stem = seed.to_bytes(8, "big")
    for n in range(accounts):
        account = blake3(stem + n.to_bytes(8, "big")).digest()
        draw = rng.random()
        if draw < only_first:
            first.put(account, 1)
        elif draw < only_first + only_second:
            second.put(account, 1)
        elif draw < only_first + only_second + changed:
            first.put(account, 1)
            second.put(account, 2)
        else:
            first.put(account, 1)
            second.put(account, 1)
            continue
        differing.add(account)
    return first, second, differing


def _wire(message: Message, cost: Exchange) -> Message:
    frame = encode_sync(message)
    cost.messages += 1
    cost.sent_bytes += len(frame)
    decoder = FrameDecoder(MAX_FRAME_BYTES)
    decoder.receive_data(frame, 0.0)
    body = decoder.next_frame()
    assert body is not None
    return decode_sync(body)


def exchange(initiator: Side, responder: Side) -> Exchange:
    """One exchange of queries and summaries until no range differs; the accounts of the
    listed ranges whose rows differ are what the initiator would pull or push."""
    cost = Exchange()
    queries: list[Query] = [initiator.index.root_query()]
    while queries:
        cost.rounds += 1
        following: list[Query] = []
        for query in queries:
            received = _wire(query, cost)
            assert isinstance(received, Query)
            summary = _wire(answer(responder.index, responder.rows.__getitem__, received), cost)
            found = compare(initiator.index, summary)  # type: ignore[arg-type]
            following += found.query_messages()
            for where, rows in found.listed:
                cost.max_depth = max(cost.max_depth, where.depth)
                theirs = {row.account: row for row in rows}
                for account in theirs.keys() | set(initiator.index.accounts(where)):
                    ours = initiator.rows.get(account)
                    if ours is None or account not in theirs or ours.digest != theirs[account].digest:
                        cost.differing.add(account)
        queries = following
    return cost


def settle(first: Side, second: Side, accounts: set[bytes]) -> None:
    """Both sides take the higher version of each account (what pulls and pushes do)."""
    for account in accounts:
        versions = [side.rows[account].next_seq for side in (first, second) if account in side.rows]
        for side in (first, second):
            side.put(account, max(versions))
