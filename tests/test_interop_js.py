"""Interop with another implementation: a js-libp2p 3.x peer (``tests/interop/peer.mjs``,
written from specs/ alone, no code shared with the Python side) and a CLI node (``n3xus node
start``), each its own process on 127.0.0.1. Both dial each other, identify, ping, complete
the signed hello (/n3xus/hello/1.0.0) and exchange blocks by CID (/n3xus/blocks/1.0.0);
the JS peer runs a Kademlia DHT server on /ipfs/kad/1.0.0 and finds our provider records
(and we find its)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_support import VECTORS_SCRIPT, JsPeer, node_binary

from conftest import CliNode, run_cli, start_cli_node, wait_for
from n3xus.canon.cid import cid_of
from n3xus.canon.codec import decode, encode
from n3xus.node.p2p.hello import verify_recognition

# Generous: a loaded 2-core machine, two interpreters, DHT queries.
CONNECT_BOUND_S = 60.0
# The JS peer's blocks and the canon log are read back through the API of a busy node.
API_TIMEOUT_S = 30.0
MAX_BLOCK_BYTES = 1_048_576  # the largest block (and payload frame) there is
JS_VECTOR_CHECKS_AT_LEAST = 50


@pytest.fixture(scope="module")
def node_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliNode]:
    node_binary()  # fail early and clearly when npm ci was not run
    node = start_cli_node(tmp_path_factory.mktemp("interop") / "a")
    yield node
    if node.proc.poll() is None:
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]


@pytest.fixture
def js_peers() -> Iterator[list[JsPeer]]:
    peers: list[JsPeer] = []
    yield peers
    for peer in peers:
        peer.stop()


def cli_json(*args: str) -> Any:
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def network_of(node: CliNode) -> str:
    return str(cli_json("ledger", "status", "--data-dir", str(node.data_dir))["network"])


def listed_peer(node: CliNode, peer_id: str) -> dict[str, Any] | None:
    listed = cli_json("peers", "list", "--data-dir", str(node.data_dir))
    for peer in listed["peers"]:
        if peer["peer_id"] == peer_id:
            return peer  # type: ignore[no-any-return]
    return None


def start_js(node: CliNode, js_peers: list[JsPeer]) -> JsPeer:
    js = JsPeer(network_of(node))
    js_peers.append(js)
    return js


def test_js_implementation_reproduces_the_spec_vectors() -> None:
    """The JS side rebuilds and signs the hello vectors byte for byte, verifies both
    hellos (checkpoints included), refuses the invalid frames with their codes, and agrees
    with canon.md's DAG-CBOR and CID vectors (specs/vectors/*.json)."""
    res = subprocess.run([node_binary(), str(VECTORS_SCRIPT)], capture_output=True, text=True,
                         timeout=120)
    assert res.stdout.strip(), res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["failures"] == [] and res.returncode == 0, result
    assert result["checked"] >= JS_VECTOR_CHECKS_AT_LEAST


def test_js_peer_dials_our_node_hello_identify_ping_both_ways(
        node_a: CliNode, js_peers: list[JsPeer]) -> None:
    js = start_js(node_a, js_peers)
    network = network_of(node_a)
    our_key = cli_json("id", "--data-dir", str(node_a.data_dir))["public_key"]

    answer = js.ok("dial", addr=node_a.listen_addr)
    assert answer["peer"] == node_a.peer_id
    hello = answer["hello"]
    assert hello["state"] == "done", hello
    # The JS side verified our signed hello (§5 checks 1-9), checkpoints included.
    ours = hello["remote"]
    assert ours["key"] == our_key and ours["network"] == network
    assert ours["version"].split(".")[0] == "0" and ours["agent"].startswith("n3xus-py/")
    assert {"/n3xus/hello/1.0.0", "/n3xus/blocks/1.0.0"} <= set(ours["protocols"])
    # (a fresh node has signed no canon checkpoint yet; its ledger has the genesis)
    assert ours["canon"] is None or ours["canon"]["origin"] == f"n3xus.net/canon/{node_a.peer_id}"
    assert ours["ledger"]["origin"] == f"n3xus.net/ledger/{network}/{node_a.peer_id}"
    ledger_note = run_cli("ledger", "checkpoint", "--data-dir", str(node_a.data_dir)).stdout
    assert ours["ledger"]["root"] == ledger_note.splitlines()[2]  # the node's ledger is idle
    event = js.wait_event(lambda e: e["event"] == "hello" and e["peer"] == node_a.peer_id,
                          CONNECT_BOUND_S, "the JS hello event")
    assert event["role"] == "initiator"

    # Our side accepted the JS peer's hello: visible to the operator, logged, verifiable.
    wait_for(lambda: (listed_peer(node_a, js.peer_id) or {}).get("hello") is not None,
             CONNECT_BOUND_S, "peers list shows the JS peer's hello")
    listed = listed_peer(node_a, js.peer_id)
    assert listed is not None and listed["refusal"] is None and listed["direction"] == "inbound"
    assert listed["hello"]["agent"] == js.agent and listed["hello"]["network"] == network
    assert listed["hello"]["protocols"] == ["/n3xus/blocks/1.0.0", "/n3xus/hello/1.0.0"]
    handshakes = [e for e in node_a.api_get("/canon/log?start=0&limit=1000", timeout=API_TIMEOUT_S)["entries"]
                  if e["type"] == "handshake"]
    recognitions = []
    for entry in handshakes:
        payload = decode(node_a.api_get(f"/canon/blocks/{entry['payload']}", timeout=API_TIMEOUT_S))
        if payload["peer"] == js.peer_id:
            block = node_a.api_get(f"/canon/blocks/{payload['hello']}", timeout=API_TIMEOUT_S)
            recognitions.append(verify_recognition(payload, block, node_a.peer_id))
    assert recognitions and recognitions[0].peer_id == js.peer_id  # the JS signature verifies

    # identify, both ways: the JS peer learned our agent and protocols, and answered ours.
    ident = js.ok("identify", peer=node_a.peer_id)
    assert ident["agent"].startswith("py-libp2p/")
    assert {"/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/ipfs/kad/1.0.0", "/n3xus/hello/1.0.0",
            "/n3xus/blocks/1.0.0"} <= set(ident["protocols"])
    js.wait_event(lambda e: e["event"] == "identify-request" and e["peer"] == node_a.peer_id,
                  CONNECT_BOUND_S, "our node's identify request reached the JS peer")

    # ping, both ways: JS pings us (several times: a half-closed ping stream would leave
    # js-libp2p's one-stream limit exhausted), and our keepalive pings the JS peer.
    for _ in range(3):
        assert js.ok("ping", peer=node_a.peer_id)["rtt_ms"] >= 0
    js.wait_event(lambda e: e["event"] == "inbound-ping" and e["peer"] == node_a.peer_id,
                  CONNECT_BOUND_S, "our node pinged the JS peer")
    wait_for(lambda: (listed_peer(node_a, js.peer_id) or {}).get("last_ping_rtt_ms") is not None,
             CONNECT_BOUND_S, "peers list shows an RTT to the JS peer")
    # Still connected and recognised (js-libp2p's monitor pings us every 10 s meanwhile).
    states = [c["hello"] and c["hello"]["state"] for c in js.ok("connections")["connections"]
              if c["peer"] == node_a.peer_id]
    assert states and set(states) == {"done"}, states


def test_our_node_dials_the_js_peer_and_fetches_a_block_from_it(
        node_a: CliNode, js_peers: list[JsPeer]) -> None:
    js = start_js(node_a, js_peers)
    connected = cli_json("peers", "connect", js.addr, "--data-dir", str(node_a.data_dir))
    assert connected["peer_id"] == js.peer_id
    event = js.wait_event(lambda e: e["event"] == "hello" and e["peer"] == node_a.peer_id,
                          CONNECT_BOUND_S, "the hello our node started")
    assert event["role"] == "responder" and event["state"] == "done", event
    assert event["remote"]["agent"].startswith("n3xus-py/")
    wait_for(lambda: (listed_peer(node_a, js.peer_id) or {}).get("hello") is not None,
             CONNECT_BOUND_S, "peers list shows the JS peer's hello")
    listed = listed_peer(node_a, js.peer_id)
    assert listed is not None and listed["direction"] == "outbound"
    assert listed["hello"]["agent"] == js.agent

    # The JS peer serves /n3xus/blocks/1.0.0 too: our node fetches (and verifies) from it.
    encoded = js.ok("encode", value={"served-by": "js-libp2p", "n": 3})
    cid = js.ok("put", hex=encoded["hex"])["cid"]
    assert cid == encoded["cid"]
    fetched = cli_json("canon", "fetch", cid, "--from", js.peer_id, "--data-dir", str(node_a.data_dir))
    assert fetched["state"] == "done" and fetched["peers"][js.peer_id]["blocks"] == 1, fetched
    assert node_a.api_get(f"/canon/blocks/{cid}", timeout=API_TIMEOUT_S) == bytes.fromhex(encoded["hex"])
    js.wait_event(lambda e: e["event"] == "blocks-stream" and e["peer"] == node_a.peer_id,
                  CONNECT_BOUND_S, "our node's blocks stream")


def test_js_peer_fetches_blocks_stored_with_the_cli(
        node_a: CliNode, js_peers: list[JsPeer], tmp_path: Path) -> None:
    js = start_js(node_a, js_peers)
    assert js.ok("dial", addr=node_a.listen_addr)["hello"]["state"] == "done"
    data_dir = str(node_a.data_dir)

    # A DAG-CBOR block encoded by @ipld/dag-cbor, its CID computed by multiformats (BLAKE3),
    # stored by the CLI, which computes the same CID from the same bytes.
    linked = js.ok("encode", value={"linked": True})
    link = linked["cid"]
    (tmp_path / "linked.cbor").write_bytes(bytes.fromhex(linked["hex"]))
    assert cli_json("canon", "put", "--block", "--codec", "dag-cbor", str(tmp_path / "linked.cbor"),
                    "--data-dir", data_dir)["cid"] == link  # stored first: a put pins what it links
    value = {"interop": "js-libp2p 3", "n": -7, "big": 2**40, "float": 1.5, "text": "é✓",
             "bytes": {"/": {"bytes": base64.b64encode(b"\x00\x01\xff").decode().rstrip("=")}},
             "list": [True, None, 0, "x"], "link": {"/": link}}
    encoded = js.ok("encode", value=value)
    dag_file = tmp_path / "block.cbor"
    dag_file.write_bytes(bytes.fromhex(encoded["hex"]))
    put = cli_json("canon", "put", "--block", "--codec", "dag-cbor", str(dag_file), "--data-dir", data_dir)
    assert put["cid"] == encoded["cid"]
    # The largest block there is: one full payload frame.
    raw = secrets.token_bytes(MAX_BLOCK_BYTES)
    raw_file = tmp_path / "block.raw"
    raw_file.write_bytes(raw)
    raw_cid = cli_json("canon", "put", "--block", "--codec", "raw", str(raw_file), "--data-dir", data_dir)["cid"]
    missing = js.ok("encode", value={"never": "stored", "nonce": secrets.token_hex(8)})["cid"]

    got = js.ok("fetch", peer=node_a.peer_id, cids=[put["cid"], raw_cid, missing])
    dag = got["blocks"][put["cid"]]
    assert dag["hex"] == encoded["hex"] and dag["verified"]
    assert dag["cid_recomputed"] == put["cid"] and dag["reencoded_equal"]
    assert dag["value"] == value
    assert got["blocks"][raw_cid]["verified"] and got["blocks"][raw_cid]["hex"] == raw.hex()
    assert got["dont_have"] == [missing]
    assert got["bytes"] == len(raw) + len(bytes.fromhex(encoded["hex"]))


def test_kademlia_dht_between_the_js_peer_and_our_node(
        node_a: CliNode, js_peers: list[JsPeer], tmp_path: Path) -> None:
    js = start_js(node_a, js_peers)
    assert js.ok("dial", addr=node_a.listen_addr)["hello"]["state"] == "done"
    wait_for(lambda: js.ok("dht-routing-table")["size"] >= 1, CONNECT_BOUND_S,
             "our node in the JS peer's routing table")

    # Our provider record, found by the JS peer's DHT client (/ipfs/kad/1.0.0).
    block = tmp_path / "provided.raw"
    block.write_bytes(secrets.token_bytes(100))
    cid = cli_json("canon", "put", "--block", "--codec", "raw", str(block), "--data-dir", str(node_a.data_dir))["cid"]
    found: list[dict[str, Any]] = []

    def js_finds_us() -> bool:
        answer = js.request("dht-find-providers", cid=cid, timeout_s=20, timeout=40)
        found[:] = answer.get("providers", [])
        return any(p["peer"] == node_a.peer_id for p in found)

    wait_for(js_finds_us, CONNECT_BOUND_S, "the JS DHT finds our provider record")

    # The JS peer's provider record, found by our DHT; then fetched without --from.
    encoded = js.ok("encode", value={"provided-by": js.peer_id})
    js_cid = js.ok("put", hex=encoded["hex"])["cid"]
    js.ok("dht-provide", cid=js_cid, timeout_s=30, timeout=60)
    providers = node_a.api_get(f"/canon/providers/{js_cid}", timeout=API_TIMEOUT_S)
    assert js.peer_id in [p["peer_id"] for p in providers["dht"]], providers
    fetched = cli_json("canon", "fetch", js_cid, "--data-dir", str(node_a.data_dir))
    assert fetched["state"] == "done" and js.peer_id in fetched["peers"], fetched


def test_a_js_peer_of_another_network_is_refused_both_ways_with_error_frames(
        node_a: CliNode, js_peers: list[JsPeer]) -> None:
    """The refusal path crosses implementations: an `error` frame (code 16, wrong-network)
    sent by either side is read by the other, which shows the reason."""
    elsewhere = str(cid_of(encode({"another": "genesis"})))
    dialer = JsPeer(elsewhere)
    js_peers.append(dialer)
    # The JS peer dials: it receives our hello first and refuses it (by us, on its side).
    hello = dialer.ok("dial", addr=node_a.listen_addr)["hello"]
    assert hello["state"] == "failed" and hello["code"] == "wrong-network" and hello["by"] == "us"

    def refusal(peer_id: str) -> dict[str, Any] | None:
        listed = cli_json("peers", "list", "--data-dir", str(node_a.data_dir))
        for peer in [*listed["peers"], *listed["others"]]:
            if peer["peer_id"] == peer_id and peer.get("refusal"):
                return peer["refusal"]  # type: ignore[no-any-return]
        return None

    wait_for(lambda: refusal(dialer.peer_id) is not None, CONNECT_BOUND_S,
             "our node shows the JS peer's refusal")
    theirs = refusal(dialer.peer_id)
    assert theirs is not None and theirs["code"] == 16 and theirs["reason"] == "wrong-network"
    assert theirs["by"] == "peer" and network_of(node_a) in theirs["message"]

    # Our node dials another one: it receives the JS hello and refuses it; the JS responder
    # reads our error frame.
    listener = JsPeer(elsewhere)
    js_peers.append(listener)
    run_cli("peers", "connect", listener.addr, "--data-dir", str(node_a.data_dir), "--json")
    event = listener.wait_event(lambda e: e["event"] == "hello" and e["peer"] == node_a.peer_id,
                                CONNECT_BOUND_S, "our refusal reaches the JS responder")
    assert event["role"] == "responder" and event["state"] == "refused-by-peer", event
    assert event["code"] == 16 and elsewhere in event["message"]
    ours = refusal(listener.peer_id)
    assert ours is not None and ours["reason"] == "wrong-network" and ours["by"] == "us"
