"""Two in-process nodes on 127.0.0.1: connect, ping, API, clean cancellation."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from n3xus.node.config import DataDir, NodeConfig
from n3xus.node.runtime import Node
from n3xus.node.services.wallets import ensure_genesis


def _node(path: Path, network_of: Path | None = None) -> Node:
    """A node; ``network_of``: another node's data dir whose network (genesis) it joins --
    nodes of different networks refuse each other's hello and disconnect."""
    dd = DataDir(path)
    dd.init()
    if network_of is not None:
        ensure_genesis(DataDir(network_of))
        ensure_genesis(dd, network_of / "genesis.cbor")
    config = NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), api_port=0, map_size_mib=64)
    return Node(dd, config)


async def test_two_nodes_connect_and_ping(tmp_path: Path) -> None:
    a = _node(tmp_path / "a")
    b = _node(tmp_path / "b", network_of=tmp_path / "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert a.peer_id != b.peer_id
        assert a.listen_addrs[0].startswith("/ip4/127.0.0.1/tcp/")
        assert a.listen_addrs[0].endswith("/p2p/" + a.peer_id)

        assert await b.connect(a.listen_addrs[0]) == a.peer_id
        with trio.fail_after(10):
            while not a.peers():  # the inbound side registers the peer asynchronously
                await trio.sleep(0.05)
        assert [p["peer_id"] for p in a.peers()] == [b.peer_id]
        rtt = await b.ping(a.peer_id)
        assert 0 < rtt < 5
        assert await a.ping(b.peer_id) > 0  # the inbound side can ping back too

        status = b.status()
        assert status["peer_count"] == 1 and status["counters"]["dials"] == 1
        nursery.cancel_scope.cancel()
    # Cancelled cleanly: the run files are gone and the data dirs can be reused.
    assert not (tmp_path / "a" / "api.json").exists()
    with DataDir(tmp_path / "a").lock():
        pass


async def test_api_over_http_in_process(tmp_path: Path) -> None:
    a = _node(tmp_path / "a")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        token = a.data_dir.read_token()
        async with httpx.AsyncClient(base_url=a.api_url) as client:
            r = await client.get("/api/v1/id")
            assert r.status_code == 200 and r.json()["peer_id"] == a.peer_id
            r = await client.post("/api/v1/peers/connect", json={"multiaddr": "x"})
            assert r.status_code == 401
            auth = {"Authorization": f"Bearer {token}"}
            r = await client.post("/api/v1/peers/connect", json={"multiaddr": "/nope"}, headers=auth)
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_multiaddr"
            r = await client.post("/api/v1/peers/connect", content=b"{not json", headers=auth)
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_json"
            r = await client.post("/api/v1/peers/connect", content=b"x" * (2 * 1024 * 1024),
                                  headers=auth)
            assert r.status_code == 413
            r = await client.get("/api/v1/no-such-thing", headers=auth)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
            spec = (await client.get("/api/v1/openapi.json")).json()
            assert "/api/v1/peers/connect" in spec["paths"]
        nursery.cancel_scope.cancel()


def test_wildcard_listen_addresses_become_dialable() -> None:
    from n3xus.node.runtime import dial_addrs

    out = dial_addrs(["/ip4/0.0.0.0/tcp/4141/p2p/12D3KooWabc", "/ip4/10.1.2.3/tcp/9/p2p/12D3KooWabc"])
    assert out[0] == "/ip4/127.0.0.1/tcp/4141/p2p/12D3KooWabc"
    assert "/ip4/10.1.2.3/tcp/9/p2p/12D3KooWabc" in out
    assert not any("/0.0.0.0/" in a for a in out)
