"""Hostile requests against a real node's API (issue 7 §3-§4): each is a 4xx with the
JSON error shape, never a 500 or a traceback; refused bodies close the connection
cleanly; auth follows RFC 7235; status lines carry reason phrases; the token never
reaches the log."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from node_api_support import api_node
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from n3xus.canon.codec import MAX_BLOCK_SIZE
from n3xus.ledger.tx import MAX_TX_BYTES
from n3xus.node.api.schema_errors import MAX_SHOWN_CHARS, MAX_SHOWN_FIELDS, describe
from n3xus.node.api.schemas import CID_TEXT, HEX, HEX32, STRING, arr, enum, integer, nullable, obj
from n3xus.node.api.server import ApiRoute, build_app
from n3xus.node.cli.client import path_of
from n3xus.node.logs import configure_logging
from n3xus.node.runtime import Node
from n3xus.webrtc.asgi import MAX_TIP_ENVELOPE_BYTES

DEEP = 100_000


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with api_node(tmp_path) as pair:
        yield pair


def _is_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body


async def test_deep_wrong_typed_and_huge_inputs_are_4xx(api: tuple[Node, httpx.AsyncClient]) -> None:
    _, c = api
    deep = ("[" * DEEP + "]" * DEEP).encode()
    deep_object = ('{"a":' * 1000 + "1" + "}" * 1000).encode()
    for path in ("/canon/pins", "/worlds/w1", "/peers/connect", "/peers/ping"):
        for body in (deep, deep_object):
            r = await c.post(path, content=body, headers={"Content-Type": "application/json"})
            _is_error(r, 400)
            assert "deeper" in r.json()["error"]["message"]
    _is_error(await c.post("/worlds/w1", json={"delete": [1]}), 400)
    _is_error(await c.post("/worlds/w1", json={"set": []}), 400)
    _is_error(await c.post("/worlds/w1", content=b'{"set": {"k": NaN}}',
                           headers={"Content-Type": "application/json"}), 400)
    _is_error(await c.post("/canon/pins", json={"cid": 5}), 400)
    _is_error(await c.post("/canon/pins", json=[1]), 400)
    _is_error(await c.post("/peers/connect", json={"multiaddr": "x", "extra": 1}), 400)
    _is_error(await c.post("/worlds/w1", content=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400)
    _is_error(await c.get("/ledger/log", params={"start": "18446744073709551616"}), 400)
    _is_error(await c.get("/ledger/log", params={"limit": "-1"}), 400)
    _is_error(await c.get("/ledger/log", params={"start": "²"}), 400)  # a Unicode digit
    _is_error(await c.get("/canon/log", params={"start": str(10**30)}), 400)
    _is_error(await c.get("/ledger/proofs/state", params={
        "asset": "bafyr4ihrdbl3zql2ct76bhhzw4uschd37jmw2turyq3vnj7zvh3zcqpxye",
        "edition": "4294967296"}), 400)
    _is_error(await c.get("/canon/log/proof/18446744073709551616"), 400)
    _is_error(await c.get("/canon/blocks/zzz"), 400)
    assert (await c.get("/canon/blocks/zzz")).json()["error"]["message"] == "zzz is not a CID"
    _is_error(await c.get("/canon/blocks/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"), 404)
    assert (await c.get("/canon/blocks/bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
            ).json()["error"]["message"].endswith("is not stored on this node")
    _is_error(await c.get("/worlds/%FF"), 400)  # not UTF-8 once decoded
    _is_error(await c.get("/no/such/route"), 404)
    _is_error(await c.delete("/canon/stats"), 405)


async def test_refused_bodies_get_one_plain_line(api: tuple[Node, httpx.AsyncClient]) -> None:
    """A body its schema refuses is answered with the field, what it must be and what was
    sent, in words: no schema text (patterns, jsonschema phrasing), no huge echo."""
    _, c = api
    await c.post("/worlds/w", json={"set": {"k": 1}})
    refusals = {
        ("/worlds/w/writers", '{"key": "zz"}'):
            "key: 'zz' is not 32 bytes as lowercase hex (an ed25519 public key / account)",
        ("/worlds/w/writers", "{}"): "missing field 'key'",
        ("/worlds/w/writers", '{"key": 7}'): "key must be a string, not an integer",
        ("/peers/connect", '{"multiaddr": "x", "extra": 1, "more": 2}'):
            "unknown fields 'extra', 'more'",
        ("/canon/pins", "[1]"): "request body must be an object, not an array",
        ("/worlds/w/writers", json.dumps({"key": "z" * 100_000})):
            "key: '" + "z" * 59 + "… is not 32 bytes as lowercase hex (an ed25519 public key / account)",
    }
    for (path, body), message in refusals.items():
        r = await c.post(path, content=body, headers={"Content-Type": "application/json"})
        _is_error(r, 400)
        assert r.json()["error"] == {"code": "bad_request", "message": message}, (path, body)


@pytest.mark.parametrize(("schema", "body", "message"), [
    (obj({"n": nullable(integer(0, 10))}), {"n": 11}, "n must be <= 10, not 11"),
    (obj({"n": nullable(integer(0, 10))}), {"n": "x"}, "n must be an integer, not a string"),
    (obj({"l": arr(STRING, max_items=2)}), {"l": ["a", "b", "c"]}, "l has more than 2 items"),
    (obj({"m": enum("a", "b")}), {"m": "c"}, "m must be one of a, b, not 'c'"),
    (obj({"s": HEX}), {"s": "zz"}, "s: 'zz' is not well-formed (expected ^[0-9a-f]*$)"),
    (obj({"o": obj({"k": HEX32})}), {"o": {"k": "q"}},
     "o/k: 'q' is not 32 bytes as lowercase hex (an ed25519 public key / account)"),
    (obj({"o": obj({"k": HEX32})}), {"o": {}}, "o: missing field 'k'"),
    (obj({"c": CID_TEXT}), {"c": ""}, "c must not be empty"),
])
def test_schema_refusals_read_as_one_line(schema: dict[str, Any], body: Any, message: str) -> None:
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    assert describe(errors[0]) == message


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_any_refused_body_is_one_short_line(body: Any) -> None:
    schema = obj({"key": HEX32, "n": nullable(integer(0, 10))}, {"tags": arr(STRING, max_items=2)})
    for error in Draft202012Validator(schema).iter_errors(body):
        line = describe(error)
        assert "\n" not in line and len(line) < 100 + (MAX_SHOWN_FIELDS + 1) * MAX_SHOWN_CHARS, line


async def test_encoded_segments_reach_the_handler_as_names(api: tuple[Node, httpx.AsyncClient]) -> None:
    _, c = api
    cid = (await c.post("/canon/blocks", content=b"pinned")).json()["cid"]
    names = ["x", "A", "h", "x?y", "%41", "h#frag", "..", ".", "a/b", " sp ace"]
    for name in names:
        assert (await c.post("/canon/pins", json={"cid": cid, "name": name})).status_code == 200
    encoded = {"x?y": "x%3Fy", "%41": "%2541", "h#frag": "h%23frag", "..": "%2E%2E",
               ".": "%2E", "a/b": "a%2Fb", " sp ace": "%20sp%20ace"}
    for name, segment in encoded.items():
        r = await c.delete(f"/canon/pins/{segment}")
        assert r.status_code == 200 and r.json()["name"] == name, (name, r.text)
    left = {p["name"] for p in (await c.get("/canon/pins")).json()["pins"]}
    assert {"x", "A", "h"} <= left and not left & set(encoded)
    await c.post("/worlds/w", json={"set": {"b": "B", "a/../b": "AB"}})
    assert (await c.get("/worlds/w/keys/a%2F..%2Fb")).json()["value"] == "AB"
    assert (await c.get("/worlds/w/keys/b")).json()["value"] == "B"
    # A world name holding "/" is one segment, not a route to another world's entries.
    await c.post("/worlds/a%2Fentries", json={"set": {"k": 1}})
    assert (await c.get("/worlds/a%2Fentries")).json()["world"] == "a/entries"


def _raw(port: int, request: bytes, read_all: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if not read_all and b"\r\n\r\n" in data:
                break
        return data


async def test_413_closes_the_connection_and_the_client_recovers(
        api: tuple[Node, httpx.AsyncClient]) -> None:
    node, c = api
    port = int(node.api_url.rsplit(":", 1)[1])
    token = node.data_dir.read_token()
    head = (f"POST /api/v1/canon/pins HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n").encode()
    answer = await trio.to_thread.run_sync(_raw, port, head + b"{" * 1000)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413 ") and len(status_line) > len("HTTP/1.1 413 ")
    assert b"connection: close" in rest.lower()
    # A keep-alive client alternating refused and normal requests loses none of them.
    for _ in range(15):
        big = await c.post("/canon/pins", content=b"[" + b"1," * 600_000 + b"1]",
                           headers={"Content-Type": "application/json"})
        _is_error(big, 413)
        assert (await c.get("/canon/stats")).status_code == 200


async def test_raw_bodies_are_bounded_alike(api: tuple[Node, httpx.AsyncClient]) -> None:
    """Every route that takes a raw body (a block, a transaction, a tip envelope) refuses
    one declared over its limit from the head alone, closing the connection; a body read
    to its end and then refused keeps the connection alive."""
    node, c = api
    port = int(node.api_url.rsplit(":", 1)[1])
    token = node.data_dir.read_token()
    for path, limit in (("/api/v1/canon/blocks", MAX_BLOCK_SIZE), ("/api/v1/ledger/txs", MAX_TX_BYTES),
                        ("/api/v1/rooms/r/tips", MAX_TIP_ENVELOPE_BYTES)):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {limit + 1}\r\n\r\n").encode()
        answer = await trio.to_thread.run_sync(_raw, port, head)  # no body is ever sent
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413 "), (path, answer[:200])
        assert b"connection: close" in rest.lower(), path
    refused = await c.post("/ledger/txs", content=b"not a transaction")
    assert 400 <= refused.status_code < 500 and refused.status_code != 413, refused.text
    assert refused.headers.get("connection", "").lower() != "close"


async def test_bearer_scheme_is_case_insensitive_and_reasons_are_sent(
        api: tuple[Node, httpx.AsyncClient]) -> None:
    node, c = api
    token = node.data_dir.read_token()
    async with httpx.AsyncClient(base_url=node.api_url + "/api/v1") as anonymous:
        for header in (f"bearer {token}", f"BEARER {token}", f"Bearer  {token}"):
            assert (await anonymous.get("/status", headers={"Authorization": header})).status_code == 200
        for header in (f"Basic {token}", "Bearer wrong", token, "", f"Bearer{token}"):
            r = await anonymous.get("/status", headers={"Authorization": header})
            _is_error(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer")
    port = int(node.api_url.rsplit(":", 1)[1])
    ok = await trio.to_thread.run_sync(_raw, port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    missing = await trio.to_thread.run_sync(_raw, port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n")


@pytest.mark.parametrize("log_format", ["text", "json", None])
async def test_the_token_never_reaches_the_log(log_format: str | None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a handler failing with a 500 logged its traceback with local
    variables, among them the expected ``Bearer <token>``."""
    token = "tok-" + "s3cr3t" * 6

    async def broken(request: Request) -> Response:
        secret_header = request.headers["authorization"]  # a local that holds the token
        raise RuntimeError(f"handler bug ({len(secret_header)} chars)")

    route = ApiRoute("GET", "/broken", broken, "A handler with a bug")
    app = build_app([route], token=token, registry=CollectorRegistry(), version="test")
    try:
        if log_format is None:
            structlog.reset_defaults()  # the library's default renderer (rich, with locals)
        else:
            configure_logging("info", log_format)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n3xus") as client:
            for scheme in ("Bearer", "bearer"):
                r = await client.get("/api/v1/broken", headers={"Authorization": f"{scheme} {token}"})
                _is_error(r, 500)
                assert token not in r.text
    finally:
        structlog.reset_defaults()
    logged = capsys.readouterr()
    log_text = logged.err + logged.out
    assert "handler bug" in log_text and "RuntimeError" in log_text  # the failure is logged
    assert token not in log_text and "s3cr3t" not in log_text
    if log_format == "json":
        lines = [json.loads(line) for line in logged.err.splitlines() if line.startswith("{")]
        assert any(line.get("event") == "API handler failed" for line in lines)


def _echo_app() -> Any:
    async def one(request: Request) -> Response:
        return JSONResponse({"name": request.path_params["name"]})

    async def two(request: Request) -> Response:
        return JSONResponse(dict(request.path_params))

    routes = [ApiRoute("GET", "/t/{name}", one, "echo", auth=False),
              ApiRoute("GET", "/t/{name}/keys/{key:path}", two, "echo two", auth=False)]
    return build_app(routes, token="t", registry=CollectorRegistry(), version="test")


_ECHO = TestClient(_echo_app())
_NAMES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(name=_NAMES, key=_NAMES)
def test_any_name_survives_the_client_encoding_and_the_server_routing(name: str, key: str) -> None:
    """The CLI's path_of() and the server's raw-path routing are inverse for any text:
    no name is cut at `?`/`#`, normalised at `..`, or split at `/`."""
    one = _ECHO.get("/api/v1" + path_of("/t/{}", name))
    assert one.status_code == 200 and one.json() == {"name": name}
    two = _ECHO.get("/api/v1" + path_of("/t/{}/keys/{}", name, key))
    assert two.status_code == 200 and two.json() == {"name": name, "key": key}
