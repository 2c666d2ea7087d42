"""specs/vectors/protocol-*.json: the implementation makes exactly these bytes, decodes them
to exactly these values, and refuses the invalid ones with exactly these codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from protocol_support import NOW, NOW_MS, config, pair, peer
from protocol_vectors import ALL, VECTORS_DIR, from_json, render, split_frames

from n3xus.canon.cid import CID
from n3xus.canon.codec import decode
from n3xus.protocol.blocks import MAX_CONTROL_FRAME_BYTES, BlockReceived, BlocksRequester
from n3xus.protocol.errors import EvidenceError, ProtocolError
from n3xus.protocol.framing import FrameDecoder, decode_message
from n3xus.protocol.hello import MAX_HELLO_FRAME_BYTES, HelloExchange, HelloState, Role
from n3xus.protocol.witness import verify_split_view


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS_DIR / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("name", list(ALL))
def test_the_implementation_reproduces_the_vector_file(name: str) -> None:
    assert (VECTORS_DIR / name).read_text(encoding="utf-8") == render(name), (
        f"{name} is out of date: python tests/protocol_vectors.py --write")


def _check_valid(vector: dict[str, Any], limit: int) -> None:
    bodies = split_frames(bytes.fromhex(vector["hex"]), limit)
    assert len(bodies) == len(vector["frames"]), vector["name"]
    for body, expected in zip(bodies, vector["frames"], strict=True):
        if "message" in expected:
            assert decode(body) == from_json(expected["message"]), vector["name"]
        else:
            assert body == from_json(expected["payload"]), vector["name"]


def test_framing_vectors() -> None:
    vectors = load("protocol-framing.json")
    for vector in vectors["valid"]:
        _check_valid(vector, 1024)
    for vector in vectors["invalid"]:
        decoder = FrameDecoder(vector["limit"])
        decoder.receive_data(bytes.fromhex(vector["hex"]), 0.0)
        decoder.receive_eof()
        with pytest.raises(ProtocolError) as caught:
            while (body := decoder.next_frame()) is not None:
                decode_message(body)
        assert caught.value.code.label == vector["code"], vector["name"]


def test_hello_vectors_complete_an_exchange_on_both_sides() -> None:
    vectors = load("protocol-hello.json")
    assert vectors["initiator"]["peer_id"] == peer(1) and vectors["responder"]["peer_id"] == peer(2)
    steps = [bytes.fromhex(step["hex"]) for step in vectors["exchange"]]
    for step in vectors["exchange"]:
        _check_valid(step, MAX_HELLO_FRAME_BYTES)
    nonces = (bytes.fromhex(vectors["initiator"]["nonce"]), bytes.fromhex(vectors["responder"]["nonce"]))
    initiator, responder = pair(config(1), config(2), nonces=nonces)
    assert initiator.start() == steps[0]
    assert responder.receive_data(steps[0], now=NOW, wall_ms=vectors["time_ms"]) == steps[1]
    assert initiator.receive_data(steps[1], now=NOW, wall_ms=vectors["time_ms"]) == steps[2]
    assert responder.receive_data(steps[2], now=NOW, wall_ms=vectors["time_ms"]) == steps[3]
    assert initiator.receive_data(steps[3], now=NOW, wall_ms=vectors["time_ms"]) == b""
    assert initiator.state is HelloState.DONE and responder.state is HelloState.DONE
    assert responder.sent_hello is not None
    assert responder.sent_hello.signing_bytes().hex() == vectors["responder_signing_input_hex"]
    assert responder.sent_hello.signing_bytes().startswith(bytes.fromhex(vectors["signature_tag_hex"]))


@pytest.mark.parametrize("index", [0, 1])
def test_hello_invalid_vectors(index: int) -> None:
    vectors = load("protocol-hello.json")
    vector = vectors["invalid"][index]
    start = bytes.fromhex(vectors["exchange"][0]["hex"])
    nonce = bytes.fromhex(vectors["responder"]["nonce"])
    if vector["code"] == "replayed":
        start = start.replace(bytes([0x11]) * 32, bytes([0x33]) * 32)
        nonce = bytes([0x44]) * 32
    responder = HelloExchange(Role.RESPONDER, config(2), local_peer=peer(2), remote_peer=peer(1),
                              now=NOW, nonce=nonce)
    responder.receive_data(start, now=NOW, wall_ms=NOW_MS)
    responder.receive_data(bytes.fromhex(vector["hex"]), now=NOW, wall_ms=NOW_MS)
    assert responder.state is HelloState.FAILED and responder.error is not None
    assert responder.error.code.label == vector["code"]


def test_blocks_vectors() -> None:
    vectors = load("protocol-blocks.json")
    for vector in vectors["valid"]:
        _check_valid(vector, MAX_CONTROL_FRAME_BYTES)
    batch = next(v for v in vectors["valid"] if v["name"].startswith("blocks"))
    requester = BlocksRequester(0.0)
    cids = from_json(batch["frames"][0]["message"])["cids"]
    requester.want(cids)
    requester.receive_data(bytes.fromhex(batch["hex"]), 0.0)
    assert requester.next_event() == BlockReceived(cids[0], b"hello")
    assert requester.next_event() == BlockReceived(cids[1], b"world")
    for vector in vectors["invalid"]:
        requester = BlocksRequester(0.0)
        if vector["wanted"]:
            requester.want([CID(text) for text in vector["wanted"]])
        with pytest.raises(ProtocolError) as caught:
            requester.receive_data(bytes.fromhex(vector["hex"]), 0.0)
        assert caught.value.code.label == vector["code"], vector["name"]


def test_split_view_vectors() -> None:
    vectors = load("protocol-split-view.json")
    for vector in vectors["valid"]:
        result = verify_split_view(bytes.fromhex(vector["hex"]))
        assert result.kind.value == vector["kind"] and result.origin == vectors["origin"]
    for vector in vectors["invalid"]:
        with pytest.raises(EvidenceError):
            verify_split_view(bytes.fromhex(vector["hex"]))
