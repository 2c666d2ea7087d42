"""The OpenAPI document is normative: it validates as OpenAPI 3.1, and every operation
of the node, canon and ledger routes is exercised against a real node (two, for the
peer routes), each real answer checked against what the document declares for it:
status declared, media type declared, JSON body valid against the declared schema
(errors against the shared error schema)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from jsonschema import Draft202012Validator
from nacl.signing import SigningKey
from openapi_spec_validator import validate

from n3xus.canon.cid import CID
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.config import DataDir, NodeConfig
from n3xus.node.runtime import Node
from n3xus.node.services.wallets import ensure_genesis

# The route groups of the node, canon memory and ledger (and the built-in ops routes).
# Other groups (console, federation, live rooms) are validated as part of the document
# and exercised by their own tests.
OWN_TAGS = {"ops", "node", "canon", "worlds", "ledger"}


async def _start(nursery: trio.Nursery, path: Path, network_of: Path | None = None) -> Node:
    dd = DataDir(path)
    dd.init()
    if network_of is not None:  # one network: nodes of different genesis refuse each other
        ensure_genesis(dd, network_of / "genesis.cbor")
    node = Node(dd, NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), api_port=0, map_size_mib=256))
    await nursery.start(node.run)
    return node


class Conformance:
    """Sends requests and checks each answer against the document."""

    def __init__(self, client: httpx.AsyncClient, document: dict[str, Any]) -> None:
        self.client = client
        self.doc = document
        self.seen: set[tuple[str, str]] = set()

    def _resolve(self, item: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in item:
            node: Any = self.doc
            for part in item["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            item = node
        return item

    async def call(self, method: str, template: str, *segments: str, expect: int = 200,
                   **kw: Any) -> httpx.Response:
        path = template
        for segment in segments:
            path = path.replace(path[path.index("{"):path.index("}") + 1],
                                quote(segment, safe=""), 1)
        response = await self.client.request(method, path, **kw)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        op = self.doc["paths"][template][method.lower()]
        self.seen.add((method, template))
        declared = op["responses"].get(str(response.status_code))
        assert declared is not None, f"{method} {template} answered {response.status_code}, " \
                                     f"which it does not declare"
        declared = self._resolve(declared)
        content = declared.get("content", {})
        media = response.headers.get("content-type", "").split(";")[0].strip()
        by_base = {m.split(";")[0].strip(): v for m, v in content.items()}
        assert media in by_base, (method, template, media, list(content))
        if media == "application/json":
            schema = self._resolve(by_base[media]["schema"])
            schema = {**schema, "$defs": {}}
            body = response.json()
            errors = list(Draft202012Validator(self._deref(schema)).iter_errors(body))
            assert not errors, (method, template, errors[0].message, body)
        return response

    def _deref(self, schema: Any) -> Any:
        if isinstance(schema, dict):
            if "$ref" in schema:
                return self._deref(self._resolve(schema))
            return {k: self._deref(v) for k, v in schema.items()}
        if isinstance(schema, list):
            return [self._deref(v) for v in schema]
        return schema


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node, httpx.AsyncClient]]:
    async with trio.open_nursery() as nursery:
        a = await _start(nursery, tmp_path / "a")
        b = await _start(nursery, tmp_path / "b", network_of=tmp_path / "a")
        headers = {"Authorization": f"Bearer {a.data_dir.read_token()}"}
        async with httpx.AsyncClient(base_url=a.api_url, headers=headers, timeout=60) as client:
            yield a, b, client
        nursery.cancel_scope.cancel()


async def test_document_validates_and_declares_parameters_bodies_and_errors(
        nodes: tuple[Node, Node, httpx.AsyncClient]) -> None:
    _, _, client = nodes
    doc = (await client.get("/api/v1/openapi.json")).json()
    validate(doc)  # OpenAPI 3.1 (raises on any violation)
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert len(ops) >= 45
    # Query parameters of the issue's examples are declared, with their types.
    log_params = {p["name"]: p for p in ops[("GET", "/api/v1/ledger/log")]["parameters"]}
    assert log_params["start"]["schema"]["type"] == "integer"
    assert log_params["start"]["in"] == "query"
    state = {p["name"] for p in ops[("GET", "/api/v1/ledger/proofs/state")]["parameters"]}
    assert state == {"account", "asset", "edition"}
    # Bodies carry their real media types.
    assert list(ops[("POST", "/api/v1/ledger/txs")]["requestBody"]["content"]) == [
        "application/vnd.ipld.dag-cbor"]
    assert list(ops[("POST", "/api/v1/canon/files")]["requestBody"]["content"]) == [
        "application/octet-stream"]
    assert "application/vnd.ipld.car; version=1" in ops[("POST", "/api/v1/canon/import")][
        "requestBody"]["content"]
    # Errors are declared and share the error schema; answers are not bare objects.
    assert "404" in ops[("GET", "/api/v1/canon/blocks/{cid}")]["responses"]
    assert "401" in ops[("POST", "/api/v1/canon/gc")]["responses"]
    assert "422" in ops[("POST", "/api/v1/ledger/txs")]["responses"]
    for (method, path), op in ops.items():
        if op["tags"][0] not in OWN_TAGS:
            continue
        assert op["responses"]["200"]["content"], (method, path)
        for media, content in op["responses"]["200"]["content"].items():
            if media == "application/json":
                assert content["schema"].get("properties"), (method, path)
        has_input = bool(op.get("parameters")) or "requestBody" in op
        assert ("400" in op["responses"]) == has_input, (method, path)


async def test_every_route_answers_as_documented(nodes: tuple[Node, Node, httpx.AsyncClient],
                                                 tmp_path: Path) -> None:
    a, b, client = nodes
    doc = (await client.get("/api/v1/openapi.json")).json()
    c = Conformance(client, doc)
    v1 = "/api/v1"

    # -- ops and node ------------------------------------------------------------------
    await c.call("GET", "/healthz")
    metrics = await c.call("GET", "/metrics")
    assert "n3xus_api_request_duration_seconds" in metrics.text
    await c.call("GET", f"{v1}/openapi.json")
    await c.call("GET", f"{v1}/id")
    await c.call("GET", f"{v1}/status")
    b_addr = b.listen_addrs[0]
    connected = await c.call("POST", f"{v1}/peers/connect", json={"multiaddr": b_addr})
    assert connected.json()["already_connected"] is False
    again = await c.call("POST", f"{v1}/peers/connect", json={"multiaddr": b_addr})
    assert again.json()["already_connected"] is True and again.json()["addrs"]
    await c.call("POST", f"{v1}/peers/connect", json={"multiaddr": "/ip4/1.2.3/tcp/1"}, expect=400)
    await c.call("POST", f"{v1}/peers/connect", json={}, expect=400)
    peers = await c.call("GET", f"{v1}/peers")
    assert [p["peer_id"] for p in peers.json()["peers"]] == [b.peer_id]
    await c.call("POST", f"{v1}/peers/ping", json={"peer_id": b.peer_id})
    await c.call("POST", f"{v1}/peers/ping", json={"peer_id": "nope"}, expect=400)
    # A third peer id (nobody we know) is banned and unbanned; b stays connected.
    stranger = "12D3KooWGYHiagipDUke28zYWUQ68LJvzGQ9kzAdbsikGbcHu8Aw"
    await c.call("POST", f"{v1}/peers/ban", json={"peer_id": stranger, "seconds": 60})
    await c.call("POST", f"{v1}/peers/ban", json={"peer_id": stranger, "seconds": -1}, expect=400)
    await c.call("POST", f"{v1}/peers/ban", json={"peer_id": "nope"}, expect=400)
    assert (await c.call("POST", f"{v1}/peers/unban", json={"peer_id": stranger})).json()[
        "was_banned"] is True
    await c.call("POST", f"{v1}/peers/unban", json={}, expect=400)

    # -- canon ---------------------------------------------------------------------------
    block = (await c.call("POST", f"{v1}/canon/blocks", content=b"one block",
                          params={"codec": "raw", "hash": "sha2-256", "pin": "false"})).json()
    await c.call("POST", f"{v1}/canon/blocks", content=b"x", params={"codec": "nope"}, expect=400)
    payload = os.urandom(300_000)
    file_root = (await c.call("POST", f"{v1}/canon/files", content=payload)).json()["cid"]
    got = await c.call("GET", f"{v1}/canon/blocks/{{cid}}", block["cid"])
    assert got.content == b"one block"
    await c.call("GET", f"{v1}/canon/blocks/{{cid}}", "zzz", expect=400)
    missing = str(CID(block["cid"]).to_v1())[:-4] + "aaaa"
    await c.call("GET", f"{v1}/canon/blocks/{{cid}}", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy",
                 expect=404)
    assert (await c.call("GET", f"{v1}/canon/files/{{cid}}", file_root)).content == payload
    part = await c.call("GET", f"{v1}/canon/files/{{cid}}", file_root,
                        headers={"Range": "bytes=10-19"}, expect=206)
    assert part.content == payload[10:20]
    await c.call("GET", f"{v1}/canon/files/{{cid}}", file_root,
                 headers={"Range": "bytes=999999-"}, expect=416)
    await c.call("GET", f"{v1}/canon/stat/{{cid}}", file_root)
    await c.call("GET", f"{v1}/canon/stats")
    await c.call("POST", f"{v1}/canon/pins", json={"cid": block["cid"], "name": "n/../x?y#z"})
    await c.call("POST", f"{v1}/canon/pins", json={"cid": block["cid"], "recursive": 10**30},
                 expect=400)
    pins = (await c.call("GET", f"{v1}/canon/pins")).json()["pins"]
    assert "n/../x?y#z" in {p["name"] for p in pins}
    await c.call("DELETE", f"{v1}/canon/pins/{{name}}", "n/../x?y#z")
    await c.call("DELETE", f"{v1}/canon/pins/{{name}}", "n/../x?y#z", expect=404)
    await c.call("POST", f"{v1}/canon/gc")
    car = await c.call("GET", f"{v1}/canon/export", params={"root": file_root})
    await c.call("GET", f"{v1}/canon/export", params={"root": missing}, expect=404)
    imported = await c.call("POST", f"{v1}/canon/import", content=car.content)
    assert imported.json()["roots"] == [file_root]

    # -- worlds and the canon log ------------------------------------------------------
    first = (await c.call("POST", f"{v1}/worlds/{{name}}", "plaza",
                          json={"set": {"greeting": "hi", "poster": {"/": file_root}}})).json()
    await c.call("POST", f"{v1}/worlds/{{name}}", "plaza", json={"set": {"n": 2},
                                                                 "delete": ["greeting"]})
    await c.call("POST", f"{v1}/worlds/{{name}}", "plaza", json={"delete": [1]}, expect=400)
    await c.call("GET", f"{v1}/worlds")
    await c.call("GET", f"{v1}/worlds/{{name}}", "plaza")
    await c.call("GET", f"{v1}/worlds/{{name}}", "nowhere", expect=404)
    await c.call("GET", f"{v1}/worlds/{{name}}/entries", "plaza", params={"prefix": "p", "limit": 5})
    await c.call("GET", f"{v1}/worlds/{{name}}/keys/{{key}}", "plaza", "poster")
    await c.call("GET", f"{v1}/worlds/{{name}}/keys/{{key}}", "plaza", "greeting",
                 params={"at": first["head"]})
    await c.call("GET", f"{v1}/worlds/{{name}}/keys/{{key}}", "plaza", "greeting", expect=404)
    await c.call("GET", f"{v1}/worlds/{{name}}/diff", "plaza", params={"from": first["head"]})
    await c.call("GET", f"{v1}/worlds/{{name}}/diff", "plaza", expect=400)
    await c.call("GET", f"{v1}/worlds/{{name}}/history", "plaza", params={"limit": 10})
    # world federation (node/api/worlds_federation.py): writers of a shared world, follow
    b_key = b.identity()["public_key"]
    await c.call("POST", f"{v1}/worlds/{{name}}/writers", "plaza", json={"key": b_key})
    await c.call("POST", f"{v1}/worlds/{{name}}/writers", "plaza", json={"key": "z"}, expect=400)
    await c.call("GET", f"{v1}/worlds/{{name}}/writers", "plaza")
    await c.call("DELETE", f"{v1}/worlds/{{name}}/writers/{{key}}", "plaza", b_key)
    await c.call("GET", f"{v1}/worlds/{{name}}/federation", "plaza")
    assert b.canon is not None
    b.canon.world_update("garden", {"x": 1}, [])
    await c.call("POST", f"{v1}/worlds/{{name}}/follow", "garden", json={"from": b_addr})
    await c.call("POST", f"{v1}/worlds/{{name}}/follow", "nothing", json={"from": b_addr},
                 expect=409)
    await c.call("POST", f"{v1}/worlds/{{name}}", "garden", json={"set": {"y": 1}}, expect=403)
    await c.call("DELETE", f"{v1}/worlds/{{name}}/follow", "garden")
    await c.call("DELETE", f"{v1}/worlds/{{name}}/follow", "garden", expect=409)
    await c.call("GET", f"{v1}/canon/log", params={"start": 0, "limit": 10})
    await c.call("GET", f"{v1}/canon/log/checkpoint", expect=404)
    await c.call("POST", f"{v1}/canon/log/checkpoint")
    await c.call("GET", f"{v1}/canon/log/checkpoint")
    await c.call("GET", f"{v1}/canon/log/proof/{{index}}", "1")
    await c.call("GET", f"{v1}/canon/log/proof/{{index}}", "99", expect=404)

    # -- ledger --------------------------------------------------------------------------
    genesis, _ = ensure_genesis(a.data_dir)
    issuer = AccountChain(SigningKey(a.data_dir.read_identity_seed()), genesis.cid)
    alice = AccountChain(SigningKey(bytes(range(32))), genesis.cid)
    issued = (await c.call("POST", f"{v1}/ledger/txs",
                           content=issuer.sign(Op.ISSUE, {"to": alice.account, "amount": 50},
                                               time_ms=1),
                           headers={"Content-Type": "application/vnd.ipld.dag-cbor"})).json()
    minted = (await c.call("POST", f"{v1}/ledger/txs", content=alice.sign(Op.MINT, {
        "artifact": CID(file_root), "editions": 2, "metadata": {}, "royalty_bps": 500,
        "creator_bps": 8000, "platform_bps": 2000}, time_ms=2))).json()
    await c.call("POST", f"{v1}/ledger/txs", content=b"\xa1garbage", expect=422)
    await c.call("GET", f"{v1}/ledger/vkey")
    await c.call("GET", f"{v1}/ledger/checkpoint")
    await c.call("POST", f"{v1}/ledger/checkpoint")
    await c.call("GET", f"{v1}/ledger/proofs/tx/{{id}}", issued["id"])
    await c.call("GET", f"{v1}/ledger/proofs/tx/{{id}}", "zzz", expect=400)
    await c.call("GET", f"{v1}/ledger/proofs/state", params={"account": alice.account.hex()})
    await c.call("GET", f"{v1}/ledger/proofs/state", params={"asset": minted["id"], "edition": 1})
    await c.call("GET", f"{v1}/ledger/proofs/state",
                 params={"asset": minted["id"], "edition": 4294967296}, expect=400)
    await c.call("GET", f"{v1}/ledger/proofs/consistency", params={"old": 1})
    export = await c.call("GET", f"{v1}/ledger/export")
    assert len(export.content) > 100
    await c.call("GET", f"{v1}/ledger/genesis")
    cbor = await c.call("GET", f"{v1}/ledger/genesis", params={"format": "cbor"})
    assert cbor.content == bytes(genesis)
    await c.call("GET", f"{v1}/ledger/status")
    await c.call("GET", f"{v1}/ledger/accounts/{{account}}", alice.account.hex())
    await c.call("GET", f"{v1}/ledger/accounts/{{account}}", "abc", expect=400)
    await c.call("GET", f"{v1}/ledger/txs/{{id}}", issued["id"])
    await c.call("GET", f"{v1}/ledger/txs/{{id}}", missing, expect=404)
    asset = (await c.call("GET", f"{v1}/ledger/assets/{{id}}", minted["id"])).json()
    assert len(asset["editions"]) == 2
    await c.call("GET", f"{v1}/ledger/log", params={"start": 0, "limit": 10})
    await c.call("GET", f"{v1}/ledger/log", params={"start": 2**64}, expect=400)
    await c.call("GET", f"{v1}/ledger/fraud-proofs/{{account}}", alice.account.hex(), expect=404)
    bob = bytes(SigningKey(bytes(range(1, 33))).verify_key)
    one = alice.sign(Op.TRANSFER, {"to": bob, "amount": 1}, time_ms=3)
    fork = alice.sign_at(alice.seq - 1, CID(minted["id"]), Op.TRANSFER, {"to": bob, "amount": 2},
                         time_ms=3)
    await c.call("POST", f"{v1}/ledger/txs", content=one)
    await c.call("POST", f"{v1}/ledger/txs", content=fork, expect=422)
    await c.call("GET", f"{v1}/ledger/fraud-proofs/{{account}}", alice.account.hex())

    # -- auth on every private route ---------------------------------------------------
    anonymous = httpx.AsyncClient(base_url=a.api_url, timeout=60)
    async with anonymous:
        c_anon = Conformance(anonymous, doc)
        await c_anon.call("GET", f"{v1}/status", expect=401)
        await c_anon.call("POST", f"{v1}/canon/gc", expect=401)

    wanted = {(m.upper(), p) for p, item in doc["paths"].items() for m, op in item.items()
              if op["tags"][0] in OWN_TAGS}
    assert wanted - c.seen == set(), "operations never exercised"
