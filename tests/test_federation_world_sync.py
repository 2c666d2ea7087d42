"""``/n3xus/world-sync/1.0.0`` core (protocol/world_sync.py): the spec's state table and
vectors are the code's; hypothesis: messages round-trip, truncated or bit-flipped input is a
clean protocol error (never a crash), a wrong answer is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from n3xus.canon.cid import cid_of
from n3xus.canon.codec import encode
from n3xus.canon.multiformats import encode_varint
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import ProtocolError, RemoteProtocolError
from n3xus.protocol.framing import FrameDecoder, decode_message
from n3xus.protocol.tables import embedded, markdown_table
from n3xus.protocol.world_sync import (
    MAX_FRAME_BYTES,
    Ack,
    Announce,
    Head,
    HeadRequest,
    Message,
    Role,
    State,
    WorldSyncExchange,
    parse,
    to_map,
    transition_rows,
)

SPECS = Path(__file__).resolve().parents[1] / "specs"
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789/._-", min_size=1, max_size=128)
keys = st.binary(min_size=32, max_size=32)
cids = st.binary(min_size=1, max_size=64).map(lambda data: cid_of(encode({"d": data})))
messages = st.one_of(
    st.builds(HeadRequest, names),
    st.builds(Ack, names),
    st.builds(Head, names, st.none(), st.none(), st.none()),
    st.builds(Head, names, cids, keys, st.one_of(st.none(), keys)),
    st.builds(Announce, names, cids, keys, st.one_of(st.none(), keys)),
)
REQUESTS = (HeadRequest, Announce)


def test_the_spec_state_table_is_the_code() -> None:
    text = (SPECS / "protocol-world-sync.md").read_text(encoding="utf-8")
    assert embedded(text, "world-sync-exchange") == markdown_table(
        ["role", "state", "input", "next state"], transition_rows())
    registry = (SPECS / "README.md").read_text(encoding="utf-8")
    assert "| `/n3xus/world-sync/1.0.0` |" in registry


def test_vectors() -> None:
    vectors = json.loads((SPECS / "vectors" / "protocol-world-sync.json").read_text())
    for vector in vectors["messages"]:
        frame = bytes.fromhex(vector["frame"])
        exchange = WorldSyncExchange(Role.RESPONDER, 0.0)
        decoder = FrameDecoder(MAX_FRAME_BYTES)
        decoder.receive_data(frame, 0.0)
        body = decoder.next_frame()
        assert body is not None and decoder.buffered == 0
        message = parse(decode_message(body))
        assert body == encode(to_map(message))
        if isinstance(message, REQUESTS):
            assert exchange.receive_data(frame, 0.0) == [message]
    for vector in vectors["invalid"]:
        exchange = WorldSyncExchange(Role.RESPONDER, 0.0)
        with pytest.raises(RemoteProtocolError) as caught:
            exchange.receive_data(bytes.fromhex(vector["frame"]), 0.0)
        assert caught.value.code.label == vector["error"], vector["name"]


def _answer_to(request: Message) -> Message:
    if isinstance(request, HeadRequest):
        return Head(request.world, None, None, None)
    return Ack(request.world)


@given(messages)
def test_messages_round_trip_through_a_whole_exchange(message: Message) -> None:
    if not isinstance(message, REQUESTS):
        message = HeadRequest(message.world)
    requester = WorldSyncExchange(Role.REQUESTER, 0.0)
    responder = WorldSyncExchange(Role.RESPONDER, 0.0)
    frame = requester.send(message)
    assert len(frame) <= MAX_FRAME_BYTES + 2
    assert responder.receive_data(frame, 0.1) == [message]
    answer = _answer_to(message)
    assert requester.receive_data(responder.send(answer), 0.2) == [answer]
    assert requester.state is State.DONE and responder.state is State.DONE
    requester.receive_eof()


@given(messages, st.data())
def test_truncated_input_is_a_clean_error(message: Message, data: st.DataObject) -> None:
    request = message if isinstance(message, REQUESTS) else HeadRequest(message.world)
    frame = WorldSyncExchange(Role.REQUESTER, 0.0).send(request)
    cut = data.draw(st.integers(0, len(frame) - 1))
    responder = WorldSyncExchange(Role.RESPONDER, 0.0)
    assert responder.receive_data(frame[:cut], 0.0) == []
    requester = WorldSyncExchange(Role.REQUESTER, 0.0)
    requester.send(request)
    answer = WorldSyncExchange(Role.RESPONDER, 0.0)
    answer.receive_data(frame, 0.0)
    reply = answer.send(_answer_to(request))
    requester.receive_data(reply[:data.draw(st.integers(0, len(reply) - 1))], 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        requester.receive_eof()
    assert caught.value.code == ErrorCode.TRUNCATED


@given(messages, st.data())
def test_bit_flips_never_crash(message: Message, data: st.DataObject) -> None:
    request = message if isinstance(message, REQUESTS) else HeadRequest(message.world)
    frame = bytearray(WorldSyncExchange(Role.REQUESTER, 0.0).send(request))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(frame) - 1))
        frame[position] ^= 1 << data.draw(st.integers(0, 7))
    responder = WorldSyncExchange(Role.RESPONDER, 0.0)
    try:
        for received in responder.receive_data(bytes(frame), 0.0):
            assert isinstance(received, REQUESTS)
    except (ProtocolError, ValueError):
        pass  # a clean protocol error is the expected outcome of most flips


def test_a_wrong_answer_or_a_second_request_is_unexpected() -> None:
    requester = WorldSyncExchange(Role.REQUESTER, 0.0)
    requester.send(HeadRequest("w"))
    responder = WorldSyncExchange(Role.RESPONDER, 0.0)
    responder.receive_data(WorldSyncExchange(Role.REQUESTER, 0.0).send(Announce(
        "w", cid_of(b"\xa0"), bytes(32), None)), 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        requester.receive_data(responder.send(Ack("w")), 0.0)
    assert caught.value.code == ErrorCode.UNEXPECTED_MESSAGE
    twice = WorldSyncExchange(Role.RESPONDER, 0.0)
    frame = WorldSyncExchange(Role.REQUESTER, 0.0).send(HeadRequest("w"))
    with pytest.raises(RemoteProtocolError) as caught:
        twice.receive_data(frame + frame, 0.0)
    assert caught.value.code == ErrorCode.UNEXPECTED_MESSAGE


def test_an_oversized_frame_is_refused_before_its_body() -> None:
    responder = WorldSyncExchange(Role.RESPONDER, 0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        responder.receive_data(encode_varint(MAX_FRAME_BYTES + 1), 0.0)
    assert caught.value.code == ErrorCode.FRAME_TOO_LARGE


def test_a_silent_peer_hits_the_deadline() -> None:
    requester = WorldSyncExchange(Role.REQUESTER, 0.0)
    requester.send(HeadRequest("w"))
    requester.check_deadline(9.9)
    with pytest.raises(RemoteProtocolError) as caught:
        requester.check_deadline(10.0)
    assert caught.value.code == ErrorCode.TIMEOUT
