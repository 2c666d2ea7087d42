"""``/n3xus/ledger-sync/2.0.0`` between two real nodes (in-process hosts on 127.0.0.1, real
hellos, LMDB ledgers): with more accounts than one listed range holds, one exchange splits
the root, queries the sub-ranges that differ, pulls what the peer has and pushes what it
lacks, in both directions at once; the next exchange finds the nodes in sync at the root.
A peer gets one exchange at a time (``busy`` for a second one)."""

from __future__ import annotations

from pathlib import Path

import trio
from nacl.signing import SigningKey
from test_federation_ledger_gossip import _Peer, _until

from n3xus.ledger.genesis import Genesis
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.ledger_sync import PROTOCOL_ID

USERS = 600
"""Accounts with chains at the responder, ~450: about 28 per first nibble, so the root and
its sub-ranges are split (a listed range holds at most 16)."""


def test_one_exchange_reconciles_many_accounts_both_ways(tmp_path: Path) -> None:
    issuer = SigningKey(b"\x41" * 32)
    genesis = Genesis.create("range-sync", [bytes(issuer.verify_key)], 10**12,
                             bytes(SigningKey(b"\x42" * 32).verify_key))
    funding = AccountChain(issuer, genesis.cid)
    users = [AccountChain(SigningKey(bytes([n % 251 + 1, n // 251 + 1]) * 16), genesis.cid)
             for n in range(USERS)]
    issues = [funding.sign(Op.ISSUE, {"to": u.account, "amount": 1_000}, time_ms=1 + n)
              for n, u in enumerate(users)]
    transfers = [u.sign(Op.TRANSFER, {"to": users[(n + 7) % USERS].account, "amount": 3},
                        time_ms=100_000 + n) for n, u in enumerate(users)]

    async def main() -> None:
        a, b = (_Peer(tmp_path, name, genesis) for name in "ab")
        a.ledger.store.ingest(issues + transfers[:450])
        b.ledger.store.ingest(issues[:500] + transfers[150:500])
        assert a.ledger.store.state_root() != b.ledger.store.state_root()
        async with trio.open_nursery() as nursery:
            for peer in (a, b):
                await peer.start(nursery)
            await p2p.connect(a.host, b.addr)
            b_id = p2p.peer_id_of(b.host)
            await _until(lambda: a.book.is_accepted(b_id) and b.book.is_accepted(
                p2p.peer_id_of(a.host)), "hellos both ways")
            syncer = a.federation.syncer
            assert await syncer.sync_with(b_id)
            counters = dict(syncer.counters)
            # The root was split (more than 16 accounts differ) and sub-ranges answered.
            assert counters["summaries"] >= 3, counters
            assert counters["pulled"] >= 50 and counters["pushed"] >= 250, counters
            await _until(lambda: b.ledger.store.state_root() == a.ledger.store.state_root(),
                         "equal state roots")
            assert a.ledger.store.log_size() == b.ledger.store.log_size() == 1 + USERS + 500
            assert await syncer.sync_with(b_id)
            assert syncer.counters["summaries"] == counters["summaries"] + 1  # in sync
            assert syncer.counters["failed"] == 0 and b.federation.syncer.counters["served"] == 2
            # One exchange per peer at a time: while A holds one open (a stream that asks
            # nothing yet), B refuses A's next with `busy`; once it ends, B serves again.
            held = await a.host.new_stream(p2p.parse_peer_id(b_id), [PROTOCOL_ID])
            await _until(lambda: b.federation.syncer.counters["served"] == 3, "the held exchange")
            assert not await syncer.sync_with(b_id)
            assert b.federation.syncer.counters["refused"] == 1
            await held.close()
            await _until(lambda: not b.federation.syncer._serving, "the held exchange ends")
            assert await syncer.sync_with(b_id)
            nursery.cancel_scope.cancel()
        for peer in (a, b):
            peer.env.close()

    trio.run(main)
