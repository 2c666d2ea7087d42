"""Sans-IO parts of live rooms: tokens, the signaling state machine, SDP plans, VP8
headers, data-channel messages. Property tests: no input crashes a decoder; every
refusal is the package's error (a ValueError) with a code."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from n3xus.webrtc.datachannel import MAX_DATA_MESSAGE_BYTES, DataMessageError, parse_data_message
from n3xus.webrtc.errors import CodecError, ForbiddenError, SignalingError, TokenError
from n3xus.webrtc.rooms import (
    MAX_TOKEN_TTL_MS,
    ROLE_PERMISSIONS,
    Permission,
    Role,
    RoomTokens,
)
from n3xus.webrtc.sdp import plan_offer
from n3xus.webrtc.signaling import (
    SIGNAL_BURST,
    SIGNAL_RATE_PER_S,
    TRANSITIONS,
    Hello,
    Offer,
    SignalingSession,
    State,
)
from n3xus.webrtc.vp8 import is_vp8_keyframe, vp8_keyframe_info

KEY = bytes(range(32))
NOW = 1_800_000_000_000
TOKENS = RoomTokens(KEY)


def test_a_token_grants_its_role_in_its_room_until_it_expires() -> None:
    token = TOKENS.issue("stage", Role.PERFORMER, now_ms=NOW, ttl_ms=60_000)
    grant = TOKENS.verify(token, room="stage", now_ms=NOW + 59_999)
    assert grant.role is Role.PERFORMER and grant.expires_ms == NOW + 60_000
    assert grant.allows(Permission.PUBLISH) and grant.allows(Permission.END)
    with pytest.raises(TokenError) as expired:
        TOKENS.verify(token, room="stage", now_ms=NOW + 60_000)
    assert expired.value.code == "token-expired"
    with pytest.raises(TokenError) as other:
        TOKENS.verify(token, room="backstage", now_ms=NOW)
    assert other.value.code == "wrong-room"
    with pytest.raises(TokenError, match="MAC"):
        RoomTokens(bytes(32)).verify(token, room="stage", now_ms=NOW)
    with pytest.raises(ValueError):
        TOKENS.issue("stage", Role.VIEWER, now_ms=NOW, ttl_ms=MAX_TOKEN_TTL_MS + 1)
    with pytest.raises(TokenError):
        TOKENS.issue("Bad Name", Role.VIEWER, now_ms=NOW)


def test_the_role_table_keeps_viewers_from_publishing_and_editing() -> None:
    viewer = ROLE_PERMISSIONS[Role.VIEWER]
    assert Permission.PUBLISH not in viewer and Permission.EDIT not in viewer
    assert Permission.WATCH in viewer and Permission.CHAT in viewer
    assert ROLE_PERMISSIONS[Role.OWNER] == frozenset(Permission)
    assert Permission.PUBLISH not in ROLE_PERMISSIONS[Role.COLLABORATOR]


@given(st.data())
def test_any_change_to_a_token_is_refused_cleanly(data: st.DataObject) -> None:
    token = TOKENS.issue("stage", Role.VIEWER, now_ms=NOW)
    i = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.characters(codec="ascii").filter(lambda c: c != token[i]))
    forged = token[:i] + replacement + token[i + 1:]
    try:
        grant = TOKENS.verify(forged, room="stage", now_ms=NOW)
    except TokenError as exc:
        assert isinstance(exc, ValueError) and exc.code
    else:
        # Only base64 padding-bit aliases of the same bytes can verify.
        assert grant.role is Role.VIEWER


@given(st.text(max_size=600))
def test_random_text_is_never_a_token(text: str) -> None:
    with pytest.raises(TokenError):
        TOKENS.verify(text, room="stage", now_ms=NOW)


def test_the_session_state_machine_follows_its_table() -> None:
    session = SignalingSession(0.0)
    assert session.state is State.AWAIT_HELLO
    with pytest.raises(SignalingError) as early:
        session.receive(json.dumps({"type": "offer", "sdp": "v=0 and more"}), 0.0)
    assert early.value.code == "unexpected-message"
    event = session.receive(json.dumps({"type": "hello", "v": 1, "token": "t"}), 0.1)
    assert event == Hello("t", "guest") and session.state is State.READY
    assert session.receive(json.dumps({"type": "offer", "sdp": "v=0 and more"}), 0.2) == \
        Offer("v=0 and more")
    session.receive(json.dumps({"type": "bye"}), 0.3)
    assert session.state is State.CLOSED
    assert all(isinstance(s, State) and isinstance(t, State) for (s, _), t in TRANSITIONS.items())


def test_the_rate_limit_refills() -> None:
    session = SignalingSession(0.0)
    ping = json.dumps({"type": "ping"})
    for _ in range(SIGNAL_BURST):
        session.receive(ping, 0.0)
    with pytest.raises(SignalingError) as limited:
        session.receive(ping, 0.0)
    assert limited.value.code == "rate-limited"
    session.receive(ping, 1.0 / SIGNAL_RATE_PER_S + 0.001)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)
                 .map(json.dumps)))
def test_random_signaling_input_never_crashes(raw: str | bytes) -> None:
    session = SignalingSession(0.0, burst=10**6)
    try:
        session.receive(raw, 0.0)
    except SignalingError as exc:
        assert isinstance(exc, ValueError) and exc.code


@given(st.text(max_size=400))
def test_random_sdp_never_crashes_the_planner(text: str) -> None:
    try:
        plan_offer("v=0\r\n" + text, may_publish=True)
    except SignalingError as exc:
        assert exc.code
    except (CodecError, ForbiddenError) as exc:
        assert exc.code


SDP_WATCH = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=recvonly\r\n"
             "a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
             "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n")


def test_offer_plans() -> None:
    plan = plan_offer(SDP_WATCH, may_publish=False)
    assert plan.watch == {"video"} and not plan.publish and plan.data_channel
    publish = SDP_WATCH.replace("a=recvonly", "a=sendonly")
    with pytest.raises(ForbiddenError):
        plan_offer(publish, may_publish=False)
    assert plan_offer(publish, may_publish=True).publish == {"video"}
    with pytest.raises(CodecError, match="VP8"):
        plan_offer(SDP_WATCH.replace("VP8", "H264"), may_publish=False)
    two_videos = SDP_WATCH.replace("m=application", "m=video 9 UDP 96\r\na=rtpmap:96 VP8/90000"
                                   "\r\nm=application")
    with pytest.raises(SignalingError, match="more than 1 video"):
        plan_offer(two_videos, may_publish=False)


def test_vp8_keyframe_headers() -> None:
    # frame tag (keyframe bit clear), start code, 640 x 480
    key = bytes([0x50, 0x42, 0x00]) + b"\x9d\x01\x2a" + (640).to_bytes(2, "little") + \
        (480).to_bytes(2, "little") + b"\x00" * 20
    assert is_vp8_keyframe(key)
    info = vp8_keyframe_info(key)
    assert (info.width, info.height) == (640, 480)
    inter = bytes([key[0] | 1]) + key[1:]
    assert not is_vp8_keyframe(inter)
    with pytest.raises(CodecError):
        vp8_keyframe_info(inter)


@given(st.binary(max_size=64))
def test_vp8_header_parsing_never_crashes(data: bytes) -> None:
    try:
        vp8_keyframe_info(data)
    except CodecError:
        assert True


def test_data_channel_messages_are_checked_against_schema_and_role() -> None:
    assert parse_data_message(json.dumps({"type": "chat", "text": "hi"}), Role.VIEWER)["text"] == "hi"
    edit = json.dumps({"type": "world-edit", "world": "stage", "op": "set", "key": "k", "value": "v"})
    with pytest.raises(DataMessageError) as forbidden:
        parse_data_message(edit, Role.VIEWER)
    assert forbidden.value.code == "forbidden"
    assert parse_data_message(edit, Role.COLLABORATOR)["op"] == "set"
    with pytest.raises(DataMessageError) as big:
        parse_data_message(json.dumps({"type": "chat", "text": "x" * MAX_DATA_MESSAGE_BYTES}),
                           Role.OWNER)
    assert big.value.code == "too-large"
    with pytest.raises(DataMessageError, match="text"):
        parse_data_message(json.dumps({"type": "chat", "text": ""}), Role.OWNER)


def _rtp(seq: int, timestamp: int, marker: bool, data: bytes) -> Any:
    from aiortc.rtp import RtpPacket
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp)
    packet.marker = 1 if marker else 0
    packet._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader leaves
    return packet


def test_the_early_jitter_buffer_releases_a_frame_on_its_marker_packet() -> None:
    from n3xus.webrtc.relay import EarlyFrameJitterBuffer
    buffer = EarlyFrameJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(_rtp(100, 9000, False, b"a"))[1] is None
    assert buffer.add(_rtp(101, 9000, False, b"b"))[1] is None
    frame = buffer.add(_rtp(102, 9000, True, b"c"))[1]
    assert frame is not None and frame.data == b"abc" and frame.timestamp == 9000
    # A frame with a lost packet is not released on its marker ...
    assert buffer.add(_rtp(103, 12000, False, b"d"))[1] is None
    assert buffer.add(_rtp(105, 12000, True, b"f"))[1] is None
    # ... until the retransmission fills the gap and the next frame begins (aiortc's path).
    assert buffer.add(_rtp(104, 12000, False, b"e"))[1] is None
    late = buffer.add(_rtp(106, 15000, False, b"g"))[1]
    assert late is not None and late.data == b"def" and late.timestamp == 12000
    # Sequence numbers wrap.
    wrap = EarlyFrameJitterBuffer(capacity=128, is_video=True)
    assert wrap.add(_rtp(65535, 1, False, b"x"))[1] is None
    frame = wrap.add(_rtp(0, 1, True, b"y"))[1]
    assert frame is not None and frame.data == b"xy"


@given(st.one_of(
    st.text(max_size=200), st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["type", "text", "emoji", "world", "op", "key", "value", "t"]),
                    st.one_of(st.text(max_size=10), st.integers(), st.none(), st.booleans()),
                    max_size=6).map(json.dumps)))
def test_random_data_channel_input_never_crashes(raw: str | bytes) -> None:
    for role in Role:
        try:
            message = parse_data_message(raw, role)
        except DataMessageError as exc:
            assert exc.code in {"too-large", "bad-json", "bad-message", "forbidden"}
        else:
            assert message["type"] in {"chat", "reaction", "world-edit", "ping"}
