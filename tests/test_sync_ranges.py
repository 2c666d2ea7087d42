"""Range-based reconciliation of ledger sync (protocol/sync/ranges.py, specs/ledger.md §14,
specs/protocol-ledger-sync.md §2): two account sets that differ in arbitrary subsets of
100,000 accounts reconcile completely in O(log n) round trips, every message through its
frame; ground accounts that share long prefixes only cost depth; and two real in-memory
ledgers with more accounts than one listed range converge through the sync core's queries,
pulls and pushes alone."""

from __future__ import annotations

import math
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_support import key, make_genesis

from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.tx import AccountChain, Op
from n3xus.protocol.sim.reconcile import Side, exchange, make_pair, settle
from n3xus.protocol.sync.ledger import LedgerSync
from n3xus.protocol.sync.messages import (
    FANOUT,
    MAX_DEPTH,
    MAX_QUERY_RANGES,
    MAX_RANGE_ROWS,
    ROOT,
    Query,
    Range,
    RangeFingerprint,
    Summary,
    decode_message,
    encode_message,
)
from n3xus.protocol.sync.ranges import EMPTY_FINGERPRINT, RangeIndex, answer, item_of


def round_bound(accounts: int) -> int:
    """Rounds of queries for n uniform accounts: the root's, then one per level until a
    range holds at most MAX_RANGE_ROWS accounts, and one for the fuller ranges of a level."""
    return math.ceil(math.log(max(accounts, MAX_RANGE_ROWS) / MAX_RANGE_ROWS, FANOUT)) + 2


def reconciled(first: Side, second: Side, differing: set[bytes]) -> int:
    """Run one exchange, check it found exactly the difference and that applying it makes
    the sets equal; its rounds."""
    cost = exchange(first, second)
    assert cost.differing == differing
    settle(first, second, cost.differing)
    assert first.index.fingerprint(ROOT) == second.index.fingerprint(ROOT)
    assert first.rows == second.rows
    again = exchange(first, second)  # nothing left: one round, an empty summary
    assert again.rounds == 1 and not again.differing and again.messages == 2
    return cost.rounds


def test_a_hundred_thousand_accounts_reconcile_in_logarithmic_rounds() -> None:
    accounts = 100_000
    first, second, differing = make_pair(accounts, 0.004, 0.003, 0.008, seed=11)
    assert 1_200 < len(differing) < 1_800
    cost = exchange(first, second)
    assert cost.differing == differing
    assert cost.rounds <= round_bound(accounts) == 6
    # Every summary answered one query of at most MAX_QUERY_RANGES ranges; bytes stay a
    # small multiple of the difference (the full listing would be ~8 MB).
    assert cost.messages <= 2 * (1 + len(differing) * cost.rounds // MAX_QUERY_RANGES + cost.rounds)
    assert cost.sent_bytes < 1_000 * len(differing)
    settle(first, second, cost.differing)
    assert first.index.fingerprint(ROOT) == second.index.fingerprint(ROOT)


def test_a_tenth_of_a_hundred_thousand_and_an_empty_side() -> None:
    first, second, differing = make_pair(100_000, 0.03, 0.03, 0.04, seed=12)
    assert reconciled(first, second, differing) <= round_bound(100_000)
    fresh, full, everything = make_pair(20_000, 0.0, 1.0, 0.0, seed=13)
    assert len(fresh.rows) == 0 and len(everything) == 20_000
    assert reconciled(fresh, full, everything) <= round_bound(20_000)


def test_rounds_grow_with_the_logarithm_of_the_accounts() -> None:
    rounds = []
    for accounts in (100, 1_000, 10_000):
        first, second, differing = make_pair(accounts, 0.02, 0.02, 0.02, seed=accounts)
        rounds.append(reconciled(first, second, differing))
        assert rounds[-1] <= round_bound(accounts)
    assert rounds == sorted(rounds) and rounds[0] < rounds[-1]


@given(st.integers(0, 2**32), st.floats(0, 0.5), st.floats(0, 0.5), st.floats(0, 0.5),
       st.integers(0, 3_000))
@settings(max_examples=25, deadline=None)
def test_arbitrary_differences_reconcile(seed: int, only_first: float, only_second: float,
                                         changed: float, accounts: int) -> None:
    first, second, differing = make_pair(accounts, only_first / 2, only_second / 2, changed / 2,
                                         seed=seed)
    assert reconciled(first, second, differing) <= round_bound(accounts)


def test_ground_accounts_sharing_long_prefixes_cost_depth_not_failure() -> None:
    """Accounts made to share 27 bytes (as if ground by an attacker) still reconcile: each
    round goes one nibble deeper, never more than MAX_DEPTH + 1 rounds."""
    first, second = Side(), Side()
    rng = random.Random(5)
    stem = bytes(rng.getrandbits(8) for _ in range(27))
    differing = set()
    for n in range(300):
        account = stem + bytes(rng.getrandbits(8) for _ in range(5))
        first.put(account, 1)
        if n % 7:
            second.put(account, 1 + n % 2)
        if n % 7 == 0 or n % 2:
            differing.add(account)
    cost = exchange(first, second)
    assert cost.differing == differing
    assert cost.max_depth > 54 and cost.rounds <= MAX_DEPTH + 1


def test_answers_are_bounded_and_equal_ranges_silent() -> None:
    first, second, _ = make_pair(5_000, 0.1, 0.1, 0.1, seed=3)
    # A full query of 256 ranges at depth 2 is one summary of at most 256 items, each a
    # split or at most MAX_RANGE_ROWS rows.
    where = [Range(bytes([n]), 2) for n in range(256)]
    query = Query(tuple(RangeFingerprint(r, first.index.fingerprint(r)) for r in where))
    summary = answer(second.index, second.rows.__getitem__, query)
    assert 0 < len(summary.items) <= MAX_QUERY_RANGES
    assert decode_message(encode_message(summary)) == summary
    same = Query(tuple(RangeFingerprint(r, second.index.fingerprint(r)) for r in where))
    assert answer(second.index, second.rows.__getitem__, same) == Summary(())
    assert RangeIndex().fingerprint(ROOT) == EMPTY_FINGERPRINT


def test_the_index_keeps_sums_whatever_the_order_of_updates() -> None:
    accounts = [bytes([n % 256, n // 256]) + bytes(30) for n in range(2_000)]
    items = {a: item_of(a, bytes([n % 7]) * 32) for n, a in enumerate(accounts)}
    forward, backward = RangeIndex(), RangeIndex()
    for account in accounts:
        forward.put(account, 1)  # a stale item first, replaced
        forward.put(account, items[account])
    for account in reversed(accounts):
        backward.put(account, items[account])
    for where in (ROOT, Range(b"\x10", 1), Range(b"\x12", 2), Range(b"\x12\x00", 3),
                  Range(b"\x12\x00", 4), Range(b"\x12\x00\x00", 5)):
        assert forward.fingerprint(where) == backward.fingerprint(where)
        assert forward.children(where) == backward.children(where)
        assert forward.accounts(where) == sorted(a for a in accounts if where.contains(a))
    assert len(forward) == len(backward) == 2_000


# --- the ledger sync core over real ledgers --------------------------------------------------


def test_two_ledgers_with_many_accounts_converge_through_queries_pulls_and_pushes() -> None:
    """700 accounts (more than one listed range holds, so the root is split and sub-ranges
    queried): each ledger has transfers the other lacks; exchanges of encoded messages alone
    make both reach the same state root, in few exchanges."""
    genesis = make_genesis()
    issuer = AccountChain(key("issuer"), genesis.cid)
    users = [AccountChain(key(f"user{n}"), genesis.cid) for n in range(700)]
    issues = [issuer.sign(Op.ISSUE, {"to": u.account, "amount": 100}, time_ms=1 + n)
              for n, u in enumerate(users)]
    transfers = [u.sign(Op.TRANSFER, {"to": users[(n + 1) % 700].account, "amount": 5},
                        time_ms=10_000 + n) for n, u in enumerate(users)]
    ledgers = [MemoryLedger(genesis), MemoryLedger(genesis)]
    ledgers[0].ingest(issues + transfers[:450], verify=True)
    ledgers[1].ingest(issues[:600] + transfers[250:600], verify=True)
    syncs = [LedgerSync(ledger, random.Random(n)) for n, ledger in enumerate(ledgers)]
    syncs[0].add_peer(1)
    syncs[1].add_peer(0)
    assert syncs[0].digest() != syncs[1].digest()
    exchanges = splits = 0
    while syncs[0].digest() != syncs[1].digest():
        exchanges += 1
        assert exchanges <= 6, "the exchanges do not converge"
        initiator = exchanges % 2
        queue = [(initiator, 1 - initiator, encode_message(syncs[initiator].root_query()))]
        while queue:
            source, target, data = queue.pop(0)
            message = decode_message(data)
            if isinstance(message, Summary):
                splits += sum(not hasattr(item, "rows") for item in message.items)
            for peer, reply in syncs[target].receive(source, message):
                queue.append((target, peer, encode_message(reply)))
    assert ledgers[0].state_root() == ledgers[1].state_root()
    assert splits >= 1  # the root was split: more accounts than one listing holds
    assert exchanges <= 2  # one exchange each way at most (the second has pending pulls)


def test_budgeted_exchanges_strictly_shrink_the_difference() -> None:
    """An initiator over its push budget (5 chains per summary here) leaves the rest for
    later exchanges; each exchange still fixes some accounts, so the set of accounts whose
    summaries differ shrinks strictly until the ledgers agree."""
    genesis = make_genesis()
    issuer = AccountChain(key("issuer"), genesis.cid)
    users = [AccountChain(key(f"budget{n}"), genesis.cid) for n in range(40)]
    issues = [issuer.sign(Op.ISSUE, {"to": u.account, "amount": 10}, time_ms=1 + n)
              for n, u in enumerate(users)]
    ahead, behind = MemoryLedger(genesis), MemoryLedger(genesis)
    ahead.ingest(issues + [u.sign(Op.TRANSFER, {"to": issuer.account, "amount": 1},
                                  time_ms=1_000 + n) for n, u in enumerate(users)])
    behind.ingest(issues)
    syncs = [LedgerSync(ahead, random.Random(1)), LedgerSync(behind, random.Random(2))]

    def differing() -> int:
        rows = [{a: s.row(a) for a in s.index.accounts(ROOT)} for s in syncs]
        return sum(rows[0].get(a) != rows[1].get(a) for a in rows[0].keys() | rows[1].keys())

    history = [differing()]
    while history[-1]:
        queue: list[tuple[int, Any]] = [(1, syncs[0].root_query())]
        while queue:
            target, message = queue.pop(0)
            message = decode_message(encode_message(message))
            if isinstance(message, Summary):
                replies = syncs[0].on_summary(1, message, max_pushes=5)
            else:
                replies = syncs[target].receive(1 - target, message)
            queue += [(1 - target, reply) for _, reply in replies]
        history.append(differing())
        assert history[-1] < history[-2], history
    assert history[0] == 40 and len(history) == 9  # 5 accounts per exchange
    assert ahead.state_root() == behind.state_root()
