"""The canon memory over the node's HTTP API: a real node, real LMDB, real HTTP."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from node_api_support import api_node

from n3xus.canon import car, cid_of
from n3xus.canon.checkpoint import Checkpoint, ProofBundle
from n3xus.canon.cid import CID
from n3xus.canon.merkle import BLAKE3
from n3xus.canon.note import make_vkey
from n3xus.node.config import DataDir, NodeConfig
from n3xus.node.runtime import Node


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with api_node(tmp_path, map_size_mib=256, timeout=60) as pair:
        yield pair


async def test_file_round_trip_ranges_and_stat(api: tuple[Node, httpx.AsyncClient]) -> None:
    _, client = api
    data = os.urandom(1_000_003)
    r = await client.post("/canon/files", content=data)
    assert r.status_code == 200, r.text
    root = r.json()["cid"]
    assert r.json()["size"] == len(data)
    got = await client.get(f"/canon/files/{root}")
    assert got.content == data
    part = await client.get(f"/canon/files/{root}", headers={"Range": "bytes=262140-262150"})
    assert part.status_code == 206 and part.content == data[262140:262151]
    assert part.headers["content-range"] == f"bytes 262140-262150/{len(data)}"
    tail = await client.get(f"/canon/files/{root}", headers={"Range": "bytes=-5"})
    assert tail.content == data[-5:]
    bad = await client.get(f"/canon/files/{root}", headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416
    stat = (await client.get(f"/canon/stat/{root}")).json()
    assert stat["file"]["size"] == len(data) and stat["pins"] == [root]


async def test_blocks_codec_checks_and_errors(api: tuple[Node, httpx.AsyncClient]) -> None:
    _, client = api
    r = await client.post("/canon/blocks", params={"codec": "raw"}, content=b"hello")
    cid = r.json()["cid"]
    assert cid == str(cid_of(b"hello", codec="raw"))
    assert (await client.get(f"/canon/blocks/{cid}")).content == b"hello"
    # Non-canonical DAG-CBOR (map keys out of order) is refused with a clear error.
    r = await client.post("/canon/blocks", params={"codec": "dag-cbor"},
                          content=bytes.fromhex("a2616201616101"))
    assert r.status_code == 400 and "order" in r.json()["error"]["message"].lower()
    assert (await client.post("/canon/blocks", content=b"x" * (1024 * 1024 + 1))).status_code == 413
    assert (await client.get("/canon/blocks/not-a-cid")).status_code == 400
    missing = str(cid_of(b"never stored", codec="raw"))
    assert (await client.get(f"/canon/blocks/{missing}")).status_code == 404


async def test_corrupt_block_is_reported_never_served(api: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = api
    cid = (await client.post("/canon/blocks", content=b"precious bytes")).json()["cid"]
    assert node.canon is not None
    blocks_db = node.env.open_db(b"canon/blocks")
    with node.env.begin(write=True, db=blocks_db) as txn:  # flip bits underneath the store
        txn.put(bytes(CID(cid)), b"precious bytez")
    r = await client.get(f"/canon/blocks/{cid}")
    assert r.status_code == 500 and r.json()["error"]["code"] == "corrupt_block"
    assert cid in (await client.get("/canon/stats")).json()["corrupt"]


async def test_worlds_history_diff_and_log(api: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = api
    first = (await client.post("/worlds/town", json={"set": {"a": 1, "b": {"x": [1, 2]}}})).json()
    second = (await client.post("/worlds/town", json={"set": {"c": "three"}, "delete": ["a"]})).json()
    assert second["seq"] == first["seq"] + 1
    assert (await client.get("/worlds/town/keys/b")).json()["value"] == {"x": [1, 2]}
    assert (await client.get("/worlds/town/keys/a")).status_code == 404
    old = await client.get("/worlds/town/keys/a", params={"at": first["head"]})
    assert old.json()["value"] == 1
    diff = (await client.get("/worlds/town/diff", params={"from": first["head"]})).json()
    assert {(c["key"], c["old"] is None, c["new"] is None) for c in diff["changes"]} == {
        ("a", False, True), ("c", True, False)}
    history = (await client.get("/worlds/town/history")).json()["history"]
    assert [h["commit"] for h in history] == [second["head"], first["head"]]
    assert (await client.get("/worlds/nowhere")).status_code == 404
    bad = await client.post("/worlds/town", json={"set": {"bad key with spaces": 1}})
    assert bad.status_code == 400

    log = (await client.get("/canon/log")).json()
    assert log["size"] == 2 and [e["type"] for e in log["entries"]] == ["world-commit"] * 2
    note = (await client.post("/canon/log/checkpoint")).text
    vkey = make_vkey(f"n3xus.net/canon/{node.peer_id}", bytes.fromhex(
        (await client.get("/id")).json()["public_key"]))
    checkpoint, _ = Checkpoint.open(note, vkey)
    assert checkpoint.size == 2
    bundle = ProofBundle.parse((await client.get("/canon/log/proof/1")).text)
    entry_cid = CID(log["entries"][1]["cid"])
    entry_block = (await client.get(f"/canon/blocks/{entry_cid}")).content \
        if (await client.get(f"/canon/stat/{entry_cid}")).status_code == 200 \
        else node.canon.log.entry_block(1)  # type: ignore[union-attr]
    bundle.verify(vkey, BLAKE3, entry=entry_block)


async def test_car_export_import_between_nodes(api: tuple[Node, httpx.AsyncClient], tmp_path: Path) -> None:
    node, client = api
    await client.post("/worlds/w", json={"set": {"k": "v", "n": 7}})
    file_cid = (await client.post("/canon/files", content=os.urandom(600_000))).json()["cid"]
    exported = (await client.get("/canon/export", params={"root": file_cid})).content
    # An independent reading of the CAR: header roots and every block's hash.
    sections = list(car.CarReader(io.BytesIO(exported)))
    reader = car.CarReader(io.BytesIO(exported))
    assert [str(r) for r in reader.roots] == [file_cid]
    assert sections and all(str(cid_of(s.data, codec=s.cid.codec_name, hash=s.cid.hash_name))
                            == str(s.cid) for s in sections)
    mine = (await client.get("/canon/export", params={"author": (await client.get("/id")).json()["public_key"]})).content
    assert len(mine) > 0
    # Into a second node: everything verifies, and a tampered copy is caught.
    dd = DataDir(tmp_path / "other")
    dd.init()
    other = Node(dd, NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), api_port=0, map_size_mib=256))
    async with trio.open_nursery() as nursery:
        await nursery.start(other.run)
        headers = {"Authorization": f"Bearer {dd.read_token()}"}
        async with httpx.AsyncClient(base_url=other.api_url + "/api/v1", headers=headers) as c2:
            report = (await c2.post("/canon/import", content=mine)).json()
            assert report["bad_blocks"] == [] and report["imported"] > 0
            tampered = bytearray(exported)
            tampered[-10] ^= 0x01
            report = (await c2.post("/canon/import", content=bytes(tampered))).json()
            assert len(report["bad_blocks"]) == 1
            r = await c2.post("/canon/import", content=exported[:len(exported) // 2])
            assert r.status_code == 400 and "truncated" in r.json()["error"]["message"]
        nursery.cancel_scope.cancel()
    assert (await client.get("/canon/export", params={"root": str(cid_of(b"nope"))})).status_code == 404


async def test_pins_and_gc(api: tuple[Node, httpx.AsyncClient]) -> None:
    _, client = api
    kept = (await client.post("/canon/blocks", content=b"keep me")).json()["cid"]
    loose = (await client.post("/canon/blocks", params={"pin": "false"}, content=b"loose")).json()["cid"]
    # A bare put survives the first GC after it (grace), not the second.
    await client.post("/canon/gc")
    assert (await client.get(f"/canon/blocks/{loose}")).status_code == 200
    await client.post("/canon/gc")
    assert (await client.get(f"/canon/blocks/{loose}")).status_code == 404
    assert (await client.get(f"/canon/blocks/{kept}")).status_code == 200
    assert (await client.delete(f"/canon/pins/{kept}")).status_code == 200
    assert (await client.delete(f"/canon/pins/{kept}")).status_code == 404
    await client.post("/canon/gc")
    await client.post("/canon/gc")
    assert (await client.get(f"/canon/blocks/{kept}")).status_code == 404
