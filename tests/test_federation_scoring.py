"""Peer scoring against a real CLI node: a raw py-libp2p host in the test speaks
``/n3xus/hello/1.0.0`` by hand -- malformed, oversized, truncated, replayed, unsigned, badly
signed and stalled hellos -- and each is rejected with its error code, lowers its score, and
the node keeps serving others; past the threshold the peer is banned. Plus the PeerBook's
rules as pure state (decay, caps, the stream rate)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest
import trio
from libp2p.custom_types import TProtocol
from raw_peer_support import (
    RAW_SEED,
    RawPeer,
    cli_json,
    network_of,
    peer_entry,
    penalties,
    read_error,
    wait_until,
)

from conftest import CliNode, run_cli, start_cli_node
from n3xus.canon.multiformats import encode_varint
from n3xus.node.p2p import host as p2p
from n3xus.node.services.peers import (
    BAN_THRESHOLD,
    MAX_SCORE,
    MAX_STREAM_BURST,
    PENALTY_WEIGHTS,
    SCORE_HALF_LIFE_S,
    PeerBook,
)
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.framing import encode_frame, encode_message
from n3xus.protocol.hello import (
    HELLO_TIMEOUT_S,
    MAX_HELLO_FRAME_BYTES,
    HelloState,
)
from n3xus.protocol.witness_wire import (
    WITNESS_PROTOCOL_ID,
    Checkpoints,
    GetCheckpoints,
    WitnessRequester,
)

# -- the PeerBook as pure state ---------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_penalties_decay_and_ban_at_the_threshold() -> None:
    clock = Clock()
    book = PeerBook(clock=clock, ban_seconds=60.0)
    book.penalize("p", ErrorCode.MALFORMED)
    assert book.score("p") == -PENALTY_WEIGHTS["malformed"]
    clock.now += SCORE_HALF_LIFE_S
    assert book.score("p") == pytest.approx(-PENALTY_WEIGHTS["malformed"] / 2)
    for _ in range(3):
        book.reward("p", 100.0)
    assert book.score("p") == MAX_SCORE  # merit is capped
    hits = 0
    while book.bans_issued == 0:
        book.penalize("p", ErrorCode.BAD_SIGNATURE)
        hits += 1
    assert book.score("p") <= BAN_THRESHOLD
    assert hits == int((MAX_SCORE - BAN_THRESHOLD) // PENALTY_WEIGHTS["bad-signature"]) + 1
    described = book.describe("p")
    assert described["traffic"]["penalties"] == {"malformed": 1, "bad-signature": hits}
    book.penalize("p", "some-new-label", weight=0.5)  # unknown labels cost the default
    assert "some-new-label" in book.describe("p")["traffic"]["penalties"]


def test_stream_rate_is_a_flood_penalty() -> None:
    clock = Clock()
    book = PeerBook(clock=clock)
    allowed = sum(book.count_stream("p", "blocks") for _ in range(int(MAX_STREAM_BURST) + 10))
    assert allowed == MAX_STREAM_BURST
    assert book.describe("p")["traffic"]["penalties"]["flood"] == 10
    assert book.describe("p")["traffic"]["streams"] == {"blocks": MAX_STREAM_BURST + 10}
    rates = book.describe("p")["traffic"]["rates"]
    assert rates["streams_per_s"] == pytest.approx((MAX_STREAM_BURST + 10) / 10.0)
    clock.now += 1.0
    assert book.count_stream("p", "blocks")  # the bucket refills
    book.count_bytes("p", sent=1000, received=50)
    traffic = book.describe("p")["traffic"]
    assert (traffic["bytes_sent"], traffic["bytes_received"]) == (1000, 50)
    assert traffic["rates"]["bytes_sent_per_s"] == pytest.approx(100.0)
    clock.now += 10.0  # one time constant later
    assert book.describe("p")["traffic"]["rates"]["bytes_sent_per_s"] == pytest.approx(36.8, abs=0.1)


async def test_wait_accepted_answers_at_once_without_a_hello_under_way() -> None:
    book = PeerBook(clock=trio.current_time)
    started = trio.current_time()
    assert await book.wait_accepted("p", 5.0) is False
    assert trio.current_time() - started < 0.5
    book.hello_started("p")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(book.wait_accepted, "p", 5.0)
        await trio.sleep(0.05)
        book.refused("p", {"code": 1})
    assert trio.current_time() - started < 1.0


# -- a raw libp2p peer against a CLI node (tests/raw_peer_support.py) ----------------------


async def test_bad_hellos_are_each_refused_with_their_code_and_cost_score(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    b = start_cli_node(tmp_path / "b", "--bootstrap", a.listen_addr,
                       genesis=tmp_path / "a" / "genesis.cbor")
    cli_nodes.append(b)
    network = network_of(a)
    host = p2p.make_host(p2p.keypair_from_seed(RAW_SEED))
    async with p2p.running_host(host, []):
        raw = RawPeer(host, a, network)
        assert raw.peer_id == raw.config.peer_id

        # Positive control: the raw peer can complete a hello, and is then served.
        code, core = await raw.exchange()
        assert code is None and core.state is HelloState.DONE
        assert core.result is not None and core.result.peer_id == a.peer_id
        captured = core.sent_hello
        assert captured is not None
        witness = await raw.stream(TProtocol(WITNESS_PROTOCOL_ID))
        request = WitnessRequester(GetCheckpoints(), trio.current_time())
        await witness.write(request.start())
        answer = None
        while answer is None:
            answer = request.receive_data(await witness.read(65536), trio.current_time())
        assert isinstance(answer, Checkpoints) and answer.ledger is not None
        await raw.done()

        expected = {}
        # Not a DAG-CBOR value at all.
        expected["malformed"] = await raw.send_raw(encode_frame(b"\xff\xfe\xfd", 100))
        # A length prefix over the hello's 128 KiB limit: refused before any body.
        expected["frame-too-large"] = await raw.send_raw(encode_varint(MAX_HELLO_FRAME_BYTES + 1) + b"x" * 64)
        # A frame cut short by the end of the stream: no error frame, just the penalty.
        expected["truncated"] = await raw.send_raw(encode_varint(100) + b"\xa1" * 10, half_close=True)
        # The hello captured above, replayed on a new connection (other nonces).
        expected["replayed"], _ = await raw.exchange(replay=captured.to_message())
        await raw.done()
        # An unsigned hello (no "sig" at all) and one whose signature does not verify.
        expected["unsigned"], _ = await raw.exchange(
            tamper=lambda m: {k: v for k, v in m.items() if k != "sig"})
        await raw.done()
        expected["bad-signature"], _ = await raw.exchange(
            tamper=lambda m: {**m, "agent": "changed after signing"})
        await raw.done()
        assert expected == {"malformed": ErrorCode.MALFORMED, "frame-too-large": ErrorCode.FRAME_TOO_LARGE,
                            "truncated": None, "replayed": ErrorCode.REPLAYED,
                            "unsigned": ErrorCode.MALFORMED, "bad-signature": ErrorCode.BAD_SIGNATURE}

        await wait_until(lambda: penalties(a, raw.peer_id).get("bad-signature") == 1, 10,
                         "the last penalty is recorded")
        seen = penalties(a, raw.peer_id)
        assert seen == {"malformed": 2, "frame-too-large": 1, "truncated": 1, "replayed": 1,
                        "bad-signature": 1}, seen
        entry = peer_entry(a, raw.peer_id)
        assert entry is not None and entry["score"] < -50 and entry["banned"] is None
        assert entry["refusal"]["reason"] == "bad-signature" and entry["refusal"]["by"] == "us"

        # A stalled hello (hello-start, then silence) is cut off at the deadline.
        stream = await raw.stream()
        await stream.write(encode_message({"type": "hello-start", "nonce": os.urandom(32)},
                                          MAX_HELLO_FRAME_BYTES))
        started = trio.current_time()
        code = await read_error(stream)
        assert code == ErrorCode.TIMEOUT
        assert HELLO_TIMEOUT_S - 1 <= trio.current_time() - started <= HELLO_TIMEOUT_S + 5
        await raw.done()

        # Another /n3xus/ stream without a hello is refused at once.
        stream = await raw.stream(TProtocol(WITNESS_PROTOCOL_ID))
        started = trio.current_time()
        assert await read_error(stream) == ErrorCode.UNEXPECTED_MESSAGE
        assert trio.current_time() - started < 3.0
        await raw.done()

        # The node kept serving the honest peer all along.
        assert b.peer_id in {p["peer_id"] for p in cli_json("peers", "list", "--data-dir",
                                                             str(a.data_dir))["peers"]}
        b_entry = peer_entry(a, b.peer_id)
        assert b_entry is not None and b_entry["hello"] is not None and b_entry["score"] > 0

        # Past the threshold the peer is banned: disconnected and refused.
        while (entry := peer_entry(a, raw.peer_id)) is not None and entry["banned"] is None:
            await raw.exchange(tamper=lambda m: {**m, "agent": "changed after signing"})
            await raw.done()
        assert entry is not None and entry["banned"]["reason"].startswith("score")
        assert entry["score"] <= BAN_THRESHOLD
        try:
            stream = await raw.stream()
            # Accepted by TCP and Noise, then closed by the gate: never served.
            served = await read_error(stream) is not None
        except (p2p.DialError, *p2p.NETWORK_ERRORS):
            served = False
        assert not served
        await raw.done()
        # The operator lifts it; the peer may hello again.
        unbanned = cli_json("peers", "unban", raw.peer_id, "--data-dir", str(a.data_dir))
        assert unbanned == {"peer_id": raw.peer_id, "was_banned": True}
        code, core = await raw.exchange()
        assert code is None and core.state is HelloState.DONE
        await raw.done()
    for node in (a, b):
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]


def test_operator_ban_and_unban(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    b = start_cli_node(tmp_path / "b", "--bootstrap", a.listen_addr,
                       genesis=tmp_path / "a" / "genesis.cbor")
    cli_nodes.append(b)
    deadline = time.monotonic() + 30
    while (entry := peer_entry(a, b.peer_id)) is None or entry.get("hello") is None:
        assert time.monotonic() < deadline, "B's hello did not complete"
        time.sleep(0.25)
    banned = cli_json("peers", "ban", b.peer_id, "--for", "120", "--data-dir", str(a.data_dir))
    assert banned["banned"]["reason"] == "operator" and 110 < banned["banned"]["seconds_left"] <= 120
    entry = peer_entry(a, b.peer_id)
    assert entry is not None and entry["banned"] is not None
    listed = cli_json("peers", "list", "--data-dir", str(a.data_dir))
    assert b.peer_id not in {p["peer_id"] for p in listed["peers"]}  # closed before the answer
    # A's own services open streams by peer id (a dial when not connected): none dials B.
    token = (a.data_dir / "api.token").read_text().strip()
    ping = httpx.post(f"{a.api_url}/api/v1/peers/ping", json={"peer_id": b.peer_id}, timeout=30,
                      headers={"Authorization": f"Bearer {token}"})
    assert ping.status_code == 502 and "banned" in ping.text, ping.text
    # B redials A (its bootstrap peer): refused after its handshake, never shown connected.
    deadline = time.monotonic() + 30
    while True:
        listed = cli_json("peers", "list", "--data-dir", str(a.data_dir))
        assert b.peer_id not in {p["peer_id"] for p in listed["peers"]}, "a banned peer is connected"
        gate = cli_json("node", "status", "--data-dir", str(a.data_dir))["connection_gate"]
        if gate["refused_total"].get("banned", 0) >= 2:
            break
        assert time.monotonic() < deadline, f"B did not redial: {gate}"
        time.sleep(0.2)
    human = run_cli("peers", "list", "--data-dir", str(a.data_dir)).stdout
    assert "banned" in human
    bad = run_cli("peers", "ban", b.peer_id, "--for", "0", "--data-dir", str(a.data_dir))
    assert bad.returncode != 0 and "error:" in bad.stderr
    assert cli_json("peers", "unban", b.peer_id, "--data-dir", str(a.data_dir))["was_banned"] is True
    assert cli_json("peers", "unban", b.peer_id, "--data-dir", str(a.data_dir))["was_banned"] is False
    # B reconnects by itself (A is its bootstrap peer) and completes a new hello.
    deadline = time.monotonic() + 60
    while (entry := peer_entry(a, b.peer_id)) is None or entry.get("hello") is None:
        assert time.monotonic() < deadline, "B did not come back after the unban"
        time.sleep(0.5)
    for node in (a, b):
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]


def test_the_spec_shows_the_penalty_weights_the_node_uses() -> None:
    from n3xus.protocol.tables import embedded, markdown_table

    text = (Path(__file__).resolve().parents[1] / "specs" / "protocol.md").read_text(encoding="utf-8")
    rendered = markdown_table(["reason", "weight"],
                              [(f"`{label}`", str(weight)) for label, weight in PENALTY_WEIGHTS.items()])
    assert embedded(text, "penalty-weights") == rendered


async def test_a_connection_without_a_hello_is_closed(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    from n3xus.node.p2p.hello import NO_HELLO_GRACE_S

    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    host = p2p.make_host(p2p.keypair_from_seed(RAW_SEED))
    async with p2p.running_host(host, []):
        await p2p.connect(host, a.listen_addr)
        started = trio.current_time()
        bound = HELLO_TIMEOUT_S + NO_HELLO_GRACE_S
        await wait_until(lambda: a.peer_id not in {p for p, _ in p2p.connected_peers(host)},
                         bound + 10, "the silent connection is closed")
        took = trio.current_time() - started
        assert bound - 1 <= took <= bound + 10
    entry = peer_entry(a, p2p.peer_id_of(host))
    assert entry is not None and entry["refusal"]["reason"] == "no-hello"
    assert entry["traffic"]["penalties"] == {"no-hello": 1}
    code, _, stderr = a.stop()
    assert code == 0, stderr[-2000:]
