"""Block exchange between real libp2p hosts in one process (node/p2p/blocks.py,
node/services/fetch.py): a peer that answers with blocks whose bytes do not match their CID
is cut off and counted, and none of its bytes are stored; a resumed fetch asks only for
what is missing; the fetch routes answer as the OpenAPI document says."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from libp2p.abc import INetStream
from libp2p.host.basic_host import BasicHost
from nacl.signing import SigningKey
from test_api_openapi import Conformance, _start

from n3xus.canon import car
from n3xus.canon.cid import CID, cid_of
from n3xus.node import __version__
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.blocks import PROTOCOL, BlockServer
from n3xus.node.p2p.discovery import Discovery, DiscoveryConfig
from n3xus.node.p2p.hello import HelloService
from n3xus.node.services.canon import CanonService
from n3xus.node.services.fetch import FetchService
from n3xus.node.services.peers import PeerBook
from n3xus.node.storage import open_environment
from n3xus.protocol.blocks import BlocksResponder, WantBlocks
from n3xus.protocol.errors import PeerError
from n3xus.protocol.hello import FederationPolicy, HelloConfig

LOCAL = "/ip4/127.0.0.1/tcp/0"
NETWORK = cid_of(b"test network", "raw")
FILE_BYTES = 4 * 1024 * 1024 + 12345  # 17 chunks of 256 KiB and a root


def canon_at(path: Path) -> CanonService:
    return CanonService(open_environment(path, 512), SigningKey(os.urandom(32)), "test")


class Peer:
    def __init__(self, host: BasicHost, book: PeerBook, addr: str) -> None:
        self.host, self.book, self.addr = host, book, addr
        self.peer_id = p2p.peer_id_of(host)
        self.discovery: Discovery | None = None


@asynccontextmanager
async def peer(seed: int, bootstrap: str | None = None) -> AsyncIterator[Peer]:
    """A host that completes the hello with the others (one network) and scores them; with
    ``bootstrap``, it also runs discovery (the DHT) from that peer."""
    key = bytes([0x42, seed]) * 16
    host = p2p.make_host(p2p.keypair_from_seed(key))
    book = PeerBook(p2p.gate_of(host))
    config = HelloConfig(signing_key=SigningKey(key), version=__version__, agent="test",
                         protocols=(str(PROTOCOL),), capabilities=(), network=NETWORK,
                         policy=FederationPolicy((NETWORK,)))
    async with p2p.running_host(host, [LOCAL]) as addrs, trio.open_nursery() as nursery:
        async def make_config() -> HelloConfig:
            return config

        await nursery.start(HelloService(host, book, make_config).run)
        found = Peer(host, book, addrs[0])
        if bootstrap is not None:
            found.discovery = await nursery.start(Discovery(
                host, DiscoveryConfig(bootstrap=[bootstrap] if bootstrap else [])).run)
        yield found
        nursery.cancel_scope.cancel()


def serve_lies(host: BasicHost) -> None:
    """A blocks responder that answers every want with bytes that are not the block."""

    async def handle(stream: INetStream) -> None:
        responder = BlocksResponder(trio.current_time())
        try:
            while data := await stream.read(65536):
                responder.receive_data(data, trio.current_time())
                while (event := responder.next_event()) is not None:
                    if isinstance(event, WantBlocks):
                        await stream.write(responder.send_blocks(
                            [(cid, b"not the block " + bytes(cid)) for cid in event.cids]))
        except (*p2p.NETWORK_ERRORS, PeerError):
            return  # cut off by the requester (its error frame, then a reset): expected

    host.set_stream_handler(PROTOCOL, handle)


async def test_blocks_that_do_not_match_their_cid_are_never_stored_and_counted(
        tmp_path: Path) -> None:
    source, fetcher = canon_at(tmp_path / "a"), canon_at(tmp_path / "c")
    content = os.urandom(FILE_BYTES)
    root, _ = source.add_file(io.BytesIO(content), pin=True)
    dag = dict(car.iter_dag(source.store, [root]))
    async with peer(1) as a, peer(2) as liar, peer(3) as c, trio.open_nursery() as nursery:
        BlockServer(a.host, source.store, a.book).register()
        serve_lies(liar.host)
        service = await nursery.start(FetchService(c.host, fetcher, peerbook=c.book).run)
        job = await service.fetch(root, [liar.addr, a.addr])
        nursery.cancel_scope.cancel()
    status = job.status()
    assert status["state"] == "done", status
    lied = status["peers"][liar.peer_id]
    assert lied["mismatches"] == 1 and lied["blocks"] == 0  # cut off at its first lie
    assert lied["state"] == "failed" and lied["error_code"] == "block-mismatch"
    assert service.mismatches == {liar.peer_id: 1}
    assert status["peers"][a.peer_id]["blocks"] == len(dag) == status["blocks_fetched"]
    assert status["peers"][a.peer_id]["mismatches"] == 0
    # The liar is penalized in the fetcher's PeerBook; the honest source is not.
    assert c.book.describe(liar.peer_id)["traffic"]["penalties"] == {"block-mismatch": 1}
    assert c.book.score(liar.peer_id) < 0 <= c.book.score(a.peer_id)
    # Every stored block is the real one: nothing of the liar's was kept.
    assert fetcher.store.verify_all() == ()
    assert {cid: fetcher.store.get(cid) for cid in dag} == dag
    assert status["rejected"] == 0 and status["blocks_stored"] == len(dag)


async def test_a_resumed_fetch_asks_only_for_what_is_missing(tmp_path: Path) -> None:
    source, fetcher = canon_at(tmp_path / "a"), canon_at(tmp_path / "c")
    root, _ = source.add_file(io.BytesIO(os.urandom(FILE_BYTES)), pin=True)
    dag = dict(car.iter_dag(source.store, [root]))
    # What an interrupted fetch left: the root and the first half of the chunks.
    kept = list(dag.items())[: len(dag) // 2]
    fetcher.store.put_blocks(kept)
    async with peer(1) as a, peer(3) as c, trio.open_nursery() as nursery:
        server = BlockServer(a.host, source.store, a.book)
        server.register()
        service = await nursery.start(FetchService(c.host, fetcher, peerbook=c.book).run)
        job = await service.fetch(root, [a.addr])
        nursery.cancel_scope.cancel()
    status = job.status()
    assert status["state"] == "done"
    assert status["blocks_stored_before"] == len(kept)
    assert status["blocks_fetched"] == len(dag) - len(kept)
    assert server.snapshot()[c.peer_id]["blocks_served"] == len(dag) - len(kept)
    assert {cid: fetcher.store.get(cid) for cid in dag} == dag


async def test_providers_are_announced_found_and_fetched_from_without_sources(
        tmp_path: Path) -> None:
    source, fetcher = canon_at(tmp_path / "a"), canon_at(tmp_path / "c")
    root, _ = source.add_file(io.BytesIO(os.urandom(FILE_BYTES)), pin=True)
    async with peer(1, bootstrap="") as a, trio.open_nursery() as nursery:
        BlockServer(a.host, source.store, a.book).register()
        # A announces its pinned roots in the DHT (checked every 0.5 s here).
        await nursery.start(FetchService(a.host, source, peerbook=a.book,
                                         discovery=a.discovery, announce_check_s=0.5).run)
        async with peer(2, bootstrap=a.addr) as b, peer(3, bootstrap=a.addr) as c:
            service = await nursery.start(FetchService(c.host, fetcher, peerbook=c.book,
                                                       discovery=c.discovery).run)
            with trio.fail_after(60):
                while True:  # until A's announcement is in the DHT and A's hello is done
                    found = await service.providers(root)
                    if a.peer_id in found["peers"] and any(
                            p["peer_id"] == a.peer_id for p in found["dht"]):
                        break
                    await trio.sleep(0.5)
            assert b.peer_id not in found["peers"]  # B was asked and said it lacks it
            job = await service.fetch(root)  # no sources: providers are found
            nursery.cancel_scope.cancel()
    status = job.status()
    assert status["state"] == "done" and list(status["peers"]) == [a.peer_id]
    assert status["blocks_fetched"] == len(dict(car.iter_dag(source.store, [root])))


async def test_fetch_routes_answer_as_documented(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        node = await _start(nursery, tmp_path / "n")
        headers = {"Authorization": f"Bearer {node.data_dir.read_token()}"}
        async with httpx.AsyncClient(base_url=node.api_url, headers=headers,
                                     timeout=60) as client:
            doc = (await client.get("/api/v1/openapi.json")).json()
            check = Conformance(client, doc)
            nobody_has = str(cid_of(b"a block nobody has", "raw"))
            # No source given and no peer: the fetch fails with its reason.
            started = (await check.call("POST", "/api/v1/canon/fetch",
                                        json={"cid": nobody_has, "wait": True})).json()
            assert started["state"] == "failed" and "no provider" in started["error"]
            one = (await check.call("GET", "/api/v1/canon/fetch/{id}", started["id"])).json()
            assert one["id"] == started["id"]
            listed = (await check.call("GET", "/api/v1/canon/fetch")).json()
            assert [f["id"] for f in listed["fetches"]] == [started["id"]]
            await check.call("GET", "/api/v1/canon/fetch/{id}", "f999", expect=404)
            await check.call("POST", "/api/v1/canon/fetch", json={"cid": "zzz"}, expect=400)
            await check.call("POST", "/api/v1/canon/fetch",
                             json={"cid": nobody_has, "from": "not a list"}, expect=400)
            providers: Any = (await check.call("GET", "/api/v1/canon/providers/{cid}",
                                               nobody_has)).json()
            assert providers == {"cid": nobody_has, "peers": [], "dht": []}
            # A source that cannot be reached is reported as such.
            bad = (await check.call("POST", "/api/v1/canon/fetch", json={
                "cid": nobody_has, "wait": True,
                "from": [f"/ip4/127.0.0.1/tcp/1/p2p/{node.peer_id}"]})).json()
            assert bad["state"] == "failed" and "reachable" in bad["error"]
        nursery.cancel_scope.cancel()
    assert CID(nobody_has)


def test_yamux_frames_fit_one_noise_message() -> None:
    """make_host tunes py-libp2p's Yamux (node/p2p/patches.py): a full data frame, header
    included, is one Noise message, not two."""
    from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
    from libp2p.stream_muxer.yamux import yamux

    p2p.make_host(p2p.keypair_from_seed(bytes(32)))
    assert yamux.MAX_MESSAGE_SIZE == MAX_PLAINTEXT_LENGTH
    assert os.environ["PY_YAMUX_RELEASE_ON_READ"] in ("0", "1")  # ours, unless an operator's
