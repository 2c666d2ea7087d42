"""State transition rules and the validation loop, on an in-memory view: every rejection
reason, "a rejection changes nothing", sales, royalties and tips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_support import ARTIFACT, SUPPLY_CAP, Net, account, key, make_genesis, snapshot

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.ledger.errors import Reason
from n3xus.ledger.genesis import MAX_AMOUNT, Genesis
from n3xus.ledger.ingest import Accepted, Rejected
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.memory import replay_log as replay
from n3xus.ledger.rules import sale_payout, tip_split
from n3xus.ledger.tx import TX_SIGNATURE_TAG, AccountChain, Op, decode_tx, encode_tx_map, sign_tx


@pytest.fixture
def net() -> Net:
    net = Net()
    net.fund("alice", 1_000)
    return net


def rejected_without_change(net: Net, envelope: bytes, reason: Reason) -> None:
    """Ingest a bad envelope: the reason must match and state and log must be unchanged."""
    assert isinstance(net.view, MemoryLedger)
    before = snapshot(net.view)
    root = net.view.state_root()
    outcome = net.run(envelope)
    assert isinstance(outcome, Rejected), outcome
    assert outcome.reason is reason, outcome.error
    assert snapshot(net.view) == before
    assert net.view.state_root() == root


def test_issue_and_transfer_move_exact_amounts(net: Net) -> None:
    net.do("alice", Op.TRANSFER, to=account("bob"), amount=300)
    assert (net.balance("alice"), net.balance("bob")) == (700, 300)
    net.do("bob", Op.TRANSFER, to=account("alice"), amount=300)
    # A zero balance is deleted from the state (canonical state: no zero entries).
    assert net.view.get(b"B" + account("bob")) is None
    assert net.view.get(b"S") == (1_000).to_bytes(8, "big")


def test_self_transfer_keeps_the_balance(net: Net) -> None:
    net.do("alice", Op.TRANSFER, to=account("alice"), amount=1_000)
    assert net.balance("alice") == 1_000


def test_overdraft_and_double_spend_are_rejected(net: Net) -> None:
    rejected_without_change(net, net.draft("alice", Op.TRANSFER, to=account("bob"), amount=1_001),
                            Reason.OVERDRAFT)
    # Double spend: two different transactions at the same position; the first wins...
    chain = net.chain("alice")
    seq, prev = chain.seq, chain.prev
    when = net.clock + 10
    first = chain.sign_at(seq, prev, Op.TRANSFER, {"to": account("bob"), "amount": 800},
                          time_ms=when)
    second = chain.sign_at(seq, prev, Op.TRANSFER, {"to": account("carol"), "amount": 800},
                           time_ms=when)
    assert isinstance(net.run(first), Accepted)
    assert net.balance("bob") == 800
    # ...the second is an equivocation: it freezes the account from that seq, and both are
    # void (ledger v2: the same result whichever a node saw first).
    outcome = net.run(second)
    assert isinstance(outcome, Rejected) and outcome.reason is Reason.EQUIVOCATION
    assert net.balance("bob") == 0 and net.balance("carol") == 0 and net.balance("alice") == 1_000
    # Sequential double spend with a fresh seq: just an overdraft (only 200 left) - but the
    # account is frozen now, which is checked first.
    chain.seq, chain.prev = seq + 1, first_cid(first)
    rejected_without_change(net, net.draft("alice", Op.TRANSFER, to=account("carol"), amount=100),
                            Reason.FROZEN)


def first_cid(envelope: bytes) -> CID:
    return decode_tx(envelope).cid


def test_replay_is_rejected(net: Net) -> None:
    envelope = net.sign("alice", Op.TRANSFER, to=account("bob"), amount=10)
    assert isinstance(net.run(envelope), Accepted)
    rejected_without_change(net, envelope, Reason.REPLAY)
    net.do("alice", Op.TRANSFER, to=account("bob"), amount=10)
    rejected_without_change(net, envelope, Reason.REPLAY)  # an older one, via the chain index
    assert net.balance("bob") == 20


def test_forged_signature_is_rejected(net: Net) -> None:
    envelope = net.draft("alice", Op.TRANSFER, to=account("bob"), amount=10)
    forged = bytearray(envelope)
    forged[-1] ^= 1
    rejected_without_change(net, bytes(forged), Reason.BAD_SIGNATURE)
    # Signed by someone else's key, claiming alice's account.
    mallory = AccountChain(key("mallory"), net.genesis.cid)
    signed_by_mallory = sign_tx(key("mallory"), network=net.genesis.cid, seq=0, prev=None, time_ms=1, op=Op.TRANSFER,
                                args={"to": mallory.account, "amount": 10})
    swapped = signed_by_mallory.replace(mallory.account, account("alice"))
    rejected_without_change(net, swapped, Reason.BAD_SIGNATURE)


def test_chain_gaps_and_wrong_links_are_rejected(net: Net) -> None:
    chain = net.chain("alice")
    net.do("alice", Op.TRANSFER, to=account("bob"), amount=1)
    when = net.clock + 10
    # A client's submit keeps nothing that does not take effect now: a gap (which the
    # network path would hold as pending) and a wrong link are refused.
    ahead = chain.sign_at(chain.seq + 1, chain.prev, Op.TRANSFER,
                          {"to": account("bob"), "amount": 1}, time_ms=when)
    rejected_without_change(net, ahead, Reason.BAD_SEQ)
    wrong_prev = chain.sign_at(chain.seq, cid_of(b"not the head"), Op.TRANSFER,
                               {"to": account("bob"), "amount": 1}, time_ms=when)
    rejected_without_change(net, wrong_prev, Reason.BAD_PREV)
    # Dated before its predecessor: it sorts before it, so it can never follow it.
    early = chain.sign_at(chain.seq, chain.prev, Op.TRANSFER,
                          {"to": account("bob"), "amount": 1}, time_ms=1)
    rejected_without_change(net, early, Reason.BAD_SEQ)
    assert not net.view.pending


def test_wrong_network_is_rejected(net: Net) -> None:
    other = make_genesis(royalty_bps=500)
    envelope = AccountChain(key("alice"), other.cid).sign(
        Op.TRANSFER, {"to": account("bob"), "amount": 1}, time_ms=1)
    rejected_without_change(net, envelope, Reason.WRONG_NETWORK)


def test_issuance_needs_an_issuer_and_respects_the_cap(net: Net) -> None:
    rejected_without_change(net, net.draft("alice", Op.ISSUE, to=account("alice"), amount=1),
                            Reason.NOT_ISSUER)
    left = SUPPLY_CAP - 1_000
    rejected_without_change(net, net.draft("issuer2", Op.ISSUE, to=account("bob"),
                                           amount=left + 1), Reason.OVER_CAP)
    net.do("issuer2", Op.ISSUE, to=account("bob"), amount=left)
    rejected_without_change(net, net.draft("issuer", Op.ISSUE, to=account("bob"), amount=1),
                            Reason.OVER_CAP)


def test_amount_bounds_and_integer_overflow(net: Net) -> None:
    # Amounts are checked before signatures and state: a builder can still sign them by hand.

    def signed(amount: int) -> bytes:
        chain = net.chain("alice")
        tx_map = encode_tx_map(network=net.genesis.cid, account=chain.account, seq=chain.seq,
                               prev=chain.prev, time_ms=1, op=Op.TRANSFER,
                               args={"to": account("bob"), "amount": amount})
        sig = key("alice").sign(TX_SIGNATURE_TAG + tx_map).signature
        return encode({"tx": decode(tx_map), "sig": sig})

    rejected_without_change(net, signed(MAX_AMOUNT + 1), Reason.OVERFLOW)
    rejected_without_change(net, signed(2**64 - 1), Reason.OVERFLOW)
    rejected_without_change(net, signed(0), Reason.BAD_AMOUNT)
    rejected_without_change(net, signed(-5), Reason.BAD_AMOUNT)
    # 2**64 has no DAG-CBOR integer form at all: it cannot even be encoded.
    with pytest.raises(ValueError):
        signed(2**64)


def test_supply_cap_at_the_largest_amount_never_wraps() -> None:
    net = Net(make_genesis_with_cap(MAX_AMOUNT))
    net.do("issuer", Op.ISSUE, to=account("alice"), amount=MAX_AMOUNT)
    rejected = net.reject("issuer", Op.ISSUE, to=account("alice"), amount=1)
    assert rejected.reason is Reason.OVER_CAP
    net.do("alice", Op.TRANSFER, to=account("bob"), amount=MAX_AMOUNT)
    assert net.balance("bob") == MAX_AMOUNT


def make_genesis_with_cap(cap: int) -> Genesis:
    return Genesis.create("n3xus-test", [account("issuer")], cap, account("platform"))


# --- assets -----------------------------------------------------------------------------------


def test_mint_list_buy_moves_everything_at_once(net: Net) -> None:
    asset = net.mint("creator", editions=2, royalty_bps=1000)
    net.do("creator", Op.LIST, asset=asset, edition=1, price=100)
    listing = net.do("creator", Op.LIST, asset=asset, edition=1, price=200).cid  # re-listing
    net.fund("bob", 500)
    net.do("bob", Op.BUY, asset=asset, edition=1, listing=listing, price=200)
    # Primary sale: the seller is the creator. Royalty 20 -> creator 16, platform 4.
    assert net.balance("bob") == 300
    assert net.balance("creator") == 180 + 16
    assert net.balance("platform") == 4
    assert net.view.get(b"O" + bytes(asset) + (1).to_bytes(4, "big")) == account("bob")
    # Secondary sale: bob resells to alice at 1000; royalty 100 -> creator 80, platform 20.
    relist = net.do("bob", Op.LIST, asset=asset, edition=1, price=1_000).cid
    net.do("alice", Op.BUY, asset=asset, edition=1, listing=relist, price=1_000)
    assert (net.balance("alice"), net.balance("bob")) == (0, 300 + 900)
    assert (net.balance("creator"), net.balance("platform")) == (196 + 80, 4 + 20)


def test_asset_rejections(net: Net) -> None:
    asset = net.mint("creator", editions=2)
    listing = net.do("creator", Op.LIST, asset=asset, edition=2, price=50).cid
    unknown = cid_of(b"no such asset")
    cases = [
        ("alice", Op.TRANSFER_ASSET, {"to": account("bob"), "asset": unknown, "edition": 1},
         Reason.UNKNOWN_ASSET),
        ("alice", Op.LIST, {"asset": asset, "edition": 3, "price": 1}, Reason.UNKNOWN_ASSET),
        ("alice", Op.LIST, {"asset": asset, "edition": 1, "price": 1}, Reason.NOT_OWNER),
        ("alice", Op.TRANSFER_ASSET, {"to": account("bob"), "asset": asset, "edition": 1},
         Reason.NOT_OWNER),
        ("alice", Op.DELIST, {"asset": asset, "edition": 1}, Reason.UNKNOWN_LISTING),
        ("alice", Op.DELIST, {"asset": asset, "edition": 2}, Reason.NOT_OWNER),
        ("alice", Op.BUY, {"asset": asset, "edition": 1, "listing": listing, "price": 50},
         Reason.UNKNOWN_LISTING),
        ("alice", Op.BUY, {"asset": asset, "edition": 2, "listing": listing, "price": 49},
         Reason.PRICE_MISMATCH),
        ("alice", Op.BUY, {"asset": asset, "edition": 2, "listing": listing, "price": 51},
         Reason.PRICE_MISMATCH),
        ("alice", Op.BUY, {"asset": asset, "edition": 2, "listing": unknown, "price": 50},
         Reason.UNKNOWN_LISTING),
        ("creator", Op.BUY, {"asset": asset, "edition": 2, "listing": listing, "price": 50},
         Reason.OWN_LISTING),
        ("bob", Op.BUY, {"asset": asset, "edition": 2, "listing": listing, "price": 50},
         Reason.OVERDRAFT),
        ("creator", Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 1001,
                              "royalty_bps": 0, "creator_bps": 10_000, "platform_bps": 0},
         Reason.BAD_PARAMS),
        ("creator", Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 1,
                              "royalty_bps": 5001, "creator_bps": 10_000, "platform_bps": 0},
         Reason.BAD_PARAMS),
        ("creator", Op.MINT, {"artifact": ARTIFACT, "metadata": {}, "editions": 1,
                              "royalty_bps": 10, "creator_bps": 5000, "platform_bps": 4999},
         Reason.BAD_PARAMS),
    ]
    for name, op, args, reason in cases:
        rejected_without_change(net, net.draft(name, op, **args), reason)
    # A transfer cancels the listing; the stale listing id can no longer be bought.
    net.do("creator", Op.TRANSFER_ASSET, to=account("bob"), asset=asset, edition=2)
    assert net.reject("alice", Op.BUY, asset=asset, edition=2, listing=listing,
                      price=50).reason is Reason.UNKNOWN_LISTING
    net.do("bob", Op.LIST, asset=asset, edition=2, price=5)
    net.do("bob", Op.DELIST, asset=asset, edition=2)
    assert net.view.get(b"L" + bytes(asset) + (2).to_bytes(4, "big")) is None


def test_tip_splits_with_the_platform(net: Net) -> None:
    net.do("alice", Op.TIP, to=account("creator"), ref=None, amount=99)
    # 2000 bps of 99 = 19.8 -> the platform gets 19 (rounded down), the creator 80.
    assert (net.balance("creator"), net.balance("platform")) == (80, 19)
    net.do("alice", Op.TIP, to=account("creator"), ref=cid_of(b"performance"), amount=1)
    assert (net.balance("creator"), net.balance("platform")) == (81, 19)
    assert net.reject("alice", Op.TIP, to=account("creator"), ref=None,
                      amount=10_000).reason is Reason.OVERDRAFT


# --- arithmetic properties --------------------------------------------------------------------

amounts = st.integers(min_value=1, max_value=MAX_AMOUNT)
bps = st.integers(min_value=0, max_value=10_000)


@settings(max_examples=300)
@given(amounts, bps, bps)
def test_sale_payout_conserves_and_is_bounded(price: int, royalty_bps: int,
                                              platform_bps: int) -> None:
    payout = sale_payout(price, royalty_bps, platform_bps)
    assert payout.seller + payout.creator + payout.platform == price
    assert min(payout) >= 0
    royalty = payout.creator + payout.platform
    # The royalty is the exact share rounded down: never more, less by under one unit.
    assert royalty * 10_000 <= price * royalty_bps < (royalty + 1) * 10_000
    assert payout.platform * 10_000 <= royalty * platform_bps < (payout.platform + 1) * 10_000


@settings(max_examples=300)
@given(amounts, bps)
def test_tip_split_conserves_and_favours_the_creator(amount: int, platform_bps: int) -> None:
    creator, platform = tip_split(amount, platform_bps)
    assert creator + platform == amount and creator >= 0 and platform >= 0
    assert platform * 10_000 <= amount * platform_bps


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["bob", "carol", "creator"]),
                          st.integers(min_value=1, max_value=400), bps), min_size=1, max_size=6))
def test_sales_conserve_total_supply(sales: list[tuple[str, int, int]]) -> None:
    """Whatever sells at whatever price and royalty, the sum of balances stays the supply."""
    net = Net()
    for name in ("alice", "bob", "carol"):
        net.fund(name, 1_000)
    for index, (buyer, price, royalty) in enumerate(sales):
        asset = net.mint("creator", editions=1, royalty_bps=min(royalty, 5000),
                         creator_bps=10_000 - royalty, platform_bps=royalty)
        seller = "creator"
        if index % 2:  # a resale: alice buys it first, then lists it
            first = net.do("creator", Op.LIST, asset=asset, edition=1, price=1).cid
            net.do("alice", Op.BUY, asset=asset, edition=1, listing=first, price=1)
            seller = "alice"
        if seller == buyer:
            continue
        listing = net.do(seller, Op.LIST, asset=asset, edition=1, price=price).cid
        outcome = net.attempt(buyer, Op.BUY, asset=asset, edition=1, listing=listing,
                              price=price)
        if isinstance(outcome, Rejected):
            assert outcome.reason is Reason.OVERDRAFT
        assert isinstance(net.view, MemoryLedger)
        total = sum(int.from_bytes(v, "big") for k, v in net.view.state.items() if k[:1] == b"B")
        assert total == 3_000


def test_replay_of_the_log_gives_the_same_root(net: Net) -> None:
    asset = net.mint("creator")
    listing = net.do("creator", Op.LIST, asset=asset, edition=1, price=10).cid
    net.do("alice", Op.BUY, asset=asset, edition=1, listing=listing, price=10)
    net.do("alice", Op.TIP, to=account("creator"), ref=None, amount=7)
    assert isinstance(net.view, MemoryLedger)
    rebuilt = replay(net.view.log, genesis=net.genesis)
    assert rebuilt.state == net.view.state
    assert rebuilt.state_root() == net.view.state_root()
    # Replaying without signature checks gives the same state as well.
    assert replay(net.view.log, verify=False).state_root() == net.view.state_root()


def test_rejected_entries_in_a_batch_do_not_disturb_the_others(net: Net) -> None:
    good = [net.sign("alice", Op.TRANSFER, to=account("bob"), amount=1) for _ in range(3)]
    bad = b"\xa2\x62tx\xa0\x63sig\x40"
    outcomes = net.view.ingest([good[0], bad, good[1], good[1], good[2]])
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == ["Accepted", "Rejected", "Accepted", "Rejected", "Accepted"]
    assert net.balance("bob") == 3
