"""The ledger topic's validation on real hosts (in-process, 127.0.0.1, real hellos): a
valid gossip message crosses Y to Z; a message with a badly signed transaction, or bytes
that are no gossip message, is rejected by Y: not forwarded to Z, and its forwarder X is
penalized in Y's PeerBook (``bad-signature``, ``malformed``); a batch with one forged entry
is rejected whole (its valid entry kept by Y, not forwarded). Copies of a message under
validation share its verdict."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import trio
from libp2p.pubsub.pb import rpc_pb2
from nacl.signing import SigningKey

from n3xus.ledger.genesis import Genesis
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node import __version__
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.gossip import GossipService, Verdict
from n3xus.node.p2p.hello import HelloService
from n3xus.node.services.ledger import LedgerService
from n3xus.node.services.ledger_federation import LedgerFederation, gossip_messages
from n3xus.node.services.peers import PeerBook
from n3xus.node.storage import open_environment
from n3xus.protocol.hello import FederationPolicy, HelloConfig
from n3xus.protocol.sync.messages import encode_message

TIMEOUT_S = 30.0


class _Peer:
    def __init__(self, root: Path, name: str, genesis: Genesis) -> None:
        self.seed = secrets.token_bytes(32)
        self.host = p2p.make_host(p2p.keypair_from_seed(self.seed))
        self.book = PeerBook(p2p.gate_of(self.host))
        self.env = open_environment(root / name, 64)
        self.ledger = LedgerService(self.env, genesis, SigningKey(self.seed), name)
        self.genesis = genesis
        self.addr = ""
        self.gossip: Any = None
        self.federation: Any = None

    async def config(self) -> HelloConfig:
        network = self.genesis.cid
        return HelloConfig(signing_key=SigningKey(self.seed), version=__version__, agent="test",
                           protocols=(), capabilities=(), network=network,
                           policy=FederationPolicy((network,)))

    async def start(self, nursery: trio.Nursery) -> None:
        self.addr = (await nursery.start(_serve, self.host))[0]
        await nursery.start(HelloService(self.host, self.book, self.config).run)
        self.gossip = await nursery.start(GossipService(self.host, self.book).run)
        self.federation = await nursery.start(LedgerFederation(
            self.host, self.ledger, self.gossip, self.book, sync_interval_s=3600.0).run)


async def _serve(host: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs:
        task_status.started(addrs)
        await trio.sleep_forever()


async def _until(condition: Any, what: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        while not condition():
            await trio.sleep(0.02)


def test_invalid_gossip_is_not_forwarded_and_costs_the_forwarder(tmp_path: Path) -> None:
    issuer = SigningKey(b"\x21" * 32)
    genesis = Genesis.create("gossip", [bytes(issuer.verify_key)], 10**9,
                             bytes(SigningKey(b"\x22" * 32).verify_key))
    funding = AccountChain(issuer, genesis.cid)
    holder = SigningKey(b"\x23" * 32)
    good = funding.sign(Op.ISSUE, {"to": bytes(holder.verify_key), "amount": 5}, time_ms=1)
    forged = bytearray(funding.sign(Op.ISSUE, {"to": b"\x02" * 32, "amount": 7}, time_ms=2))
    forged[-1] ^= 1
    # A batch: a valid transfer by the holder (its chain's first) and a forged one.
    spending = AccountChain(holder, genesis.cid)
    batch_good = spending.sign(Op.TRANSFER, {"to": b"\x03" * 32, "amount": 2}, time_ms=3)
    batch_forged = bytearray(spending.sign(Op.TRANSFER, {"to": b"\x04" * 32, "amount": 1},
                                           time_ms=4))
    batch_forged[-1] ^= 1

    async def main() -> None:
        x, y, z = (_Peer(tmp_path, name, genesis) for name in "xyz")
        async with trio.open_nursery() as nursery:
            for peer in (x, y, z):
                await peer.start(nursery)
            await p2p.connect(x.host, y.addr)
            await p2p.connect(z.host, y.addr)
            topic = y.federation.topic
            await _until(lambda: len(y.gossip.mesh_peers(topic)) == 2
                         and x.gossip.mesh_peers(topic) and z.gossip.mesh_peers(topic), "meshes")
            x_id = p2p.peer_id_of(x.host)

            # Valid: crosses Y to Z, no penalty.
            await x.gossip.publish(topic, encode_message(gossip_messages([good])[0]))
            await _until(lambda: z.ledger.store.log_size() == 2, "the valid entry on Z")
            assert not y.book.get(x_id).penalties  # type: ignore[union-attr]

            # A forged signature: rejected by Y, never reaches Z.
            await x.gossip.publish(topic, encode_message(gossip_messages([bytes(forged)])[0]))
            await _until(lambda: y.book.get(x_id).penalties["bad-signature"] == 1,  # type: ignore[union-attr]
                         "Y penalizes X")
            # Bytes that are no gossip message.
            await x.gossip.publish(topic, b"\xa1\x61t\x64junk")
            await _until(lambda: y.book.get(x_id).penalties["malformed"] == 1,  # type: ignore[union-attr]
                         "Y penalizes X again")
            # A batch is judged whole (protocol-ledger-sync.md §1): one forged entry rejects
            # the message; Y keeps its valid entry but does not forward the message.
            await x.gossip.publish(topic, encode_message(
                gossip_messages([batch_good, bytes(batch_forged)])[0]))
            await _until(lambda: y.book.get(x_id).penalties["bad-signature"] == 2,  # type: ignore[union-attr]
                         "Y penalizes X for the batch")
            await trio.sleep(1.0)  # time for a forward that must not happen
            assert y.ledger.store.log_size() == 3  # the genesis, good, batch_good
            assert z.ledger.store.log_size() == 2
            assert y.book.score(x_id) < 0
            assert y.gossip.counters.snapshot()["received"]["reject"] == 3
            nursery.cancel_scope.cancel()
        for peer in (x, y, z):
            peer.env.close()

    trio.run(main)



def test_copies_under_validation_share_the_first_verdict() -> None:
    """Copies of a message that arrive from other peers while it is being validated are not
    handed to the handler again (no second ingest): a valid message's copies are ignored
    (it is forwarded once), an invalid one's are rejected like it."""
    hosts = [p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32))) for _ in range(4)]
    service = GossipService(hosts[0])
    forwarders = [h.get_id() for h in hosts[1:]]
    calls: list[bytes] = []

    async def main() -> dict[bytes, list[bool]]:
        verdicts: dict[bytes, list[bool]] = {}
        for data in (b"good", b"bad"):
            release = trio.Event()

            async def handler(_peer: str, payload: bytes,
                              release: trio.Event = release) -> tuple[Verdict, str | None]:
                calls.append(payload)
                await release.wait()
                return (Verdict.ACCEPT, None) if payload == b"good" \
                    else (Verdict.REJECT, "malformed")

            msg = rpc_pb2.Message(data=data, topicIDs=["/t"])
            results = verdicts[data] = []

            async def one(forwarder: Any, msg: Any = msg, handler: Any = handler,
                          results: list[bool] = results) -> None:
                results.append(await service._validate(handler, forwarder, msg))

            async with trio.open_nursery() as nursery:
                for forwarder in forwarders:
                    nursery.start_soon(one, forwarder)
                    await trio.sleep(0.01)  # the first copy is under validation
                release.set()
        return verdicts

    verdicts = trio.run(main)
    assert calls == [b"good", b"bad"]
    assert sorted(verdicts[b"good"]) == [False, False, True]
    assert verdicts[b"bad"] == [False, False, False]
    snapshot = service.counters.snapshot()
    assert snapshot["duplicates"] == 2
    assert snapshot["received"] == {"accept": 1, "ignore": 2, "reject": 3}
