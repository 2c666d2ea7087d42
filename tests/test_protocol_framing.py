"""Frames and the error message: limits before bodies, strict prefixes, deadlines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n3xus.canon.codec import decode, encode
from n3xus.protocol.codes import ErrorCode, describe_code, error_code_table
from n3xus.protocol.errors import (
    DeadlineExceeded,
    FrameError,
    LocalProtocolError,
    MessageError,
    PeerError,
    ProtocolError,
)
from n3xus.protocol.framing import (
    FRAME_GRACE_S,
    MAX_ERROR_MESSAGE_CHARS,
    MIN_TRANSFER_RATE,
    FrameDecoder,
    decode_message,
    encode_error,
    encode_frame,
    encode_message,
    error_frame_for,
)


def frames_of(data: bytes, limit: int = 1000, *, eof: bool = True) -> list[bytes]:
    decoder = FrameDecoder(limit)
    decoder.receive_data(data, 0.0)
    if eof:
        decoder.receive_eof()
    out = []
    while (body := decoder.next_frame()) is not None:
        out.append(body)
    return out


def test_frames_round_trip_and_split_a_stream() -> None:
    bodies = [b"", b"a", b"x" * 127, b"y" * 128, b"z" * 300]
    stream = b"".join(encode_frame(body, 1000) for body in bodies)
    assert encode_frame(b"y" * 128, 1000)[:2] == b"\x80\x01"
    assert frames_of(stream) == bodies


def test_a_length_over_the_limit_is_refused_before_the_body() -> None:
    decoder = FrameDecoder(100)
    decoder.receive_data(b"\x65", 0.0)  # 101 announced, no body yet
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    # A long prefix is refused as soon as its first bytes already exceed the limit.
    decoder = FrameDecoder(100)
    decoder.receive_data(b"\xe5", 0.0)  # 101 and more to come
    with pytest.raises(FrameError, match="over the limit"):
        decoder.next_frame()


@pytest.mark.parametrize("prefix", [b"\x80\x00", b"\x81\x00", b"\xff\x80\x00"])
def test_non_minimal_prefixes_are_refused(prefix: bytes) -> None:
    with pytest.raises(FrameError, match="non-minimal"):
        frames_of(prefix + b"\x00" * 200, limit=1 << 20)


def test_a_prefix_of_ten_bytes_is_refused() -> None:
    with pytest.raises(FrameError, match="longer than 9"):
        frames_of(b"\x80" * 9 + b"\x01", limit=(1 << 63))


def test_truncation_is_an_error_only_at_the_end_of_the_stream() -> None:
    frame = encode_frame(b"hello", 100)
    for end in range(1, len(frame)):
        assert frames_of(frame[:end], eof=False) == []
        with pytest.raises(FrameError) as caught:
            frames_of(frame[:end])
        assert caught.value.code is ErrorCode.TRUNCATED


def test_slow_frames_miss_their_deadline() -> None:
    decoder = FrameDecoder(1 << 20)
    assert decoder.deadline is None
    decoder.receive_data(b"\x80\x80\x04", 5.0)  # 65536 bytes announced
    assert decoder.next_frame() is None
    assert decoder.deadline == 5.0 + FRAME_GRACE_S + 65536 / MIN_TRANSFER_RATE
    decoder.check_deadline(5.0 + FRAME_GRACE_S)
    with pytest.raises(DeadlineExceeded) as caught:
        decoder.check_deadline(5.0 + FRAME_GRACE_S + 1.0)
    assert caught.value.code is ErrorCode.TIMEOUT


def test_messages_and_errors() -> None:
    frame = encode_message({"type": "ping", "n": 1}, 100)
    assert decode_message(frames_of(frame)[0]) == {"type": "ping", "n": 1}
    with pytest.raises(PeerError) as caught:
        decode_message(frames_of(encode_error(ErrorCode.WRONG_NETWORK, "no"))[0])
    assert caught.value.code is ErrorCode.WRONG_NETWORK and caught.value.message == "no"
    unknown = frames_of(encode_error(4000, "new"))[0]
    with pytest.raises(PeerError) as caught:
        decode_message(unknown)
    assert caught.value.raw_code == 4000 and "unknown (4000)" in str(caught.value)
    long_error = decode(frames_of(encode_error(1, "x" * 5000), 10_000)[0])
    assert len(long_error["message"]) == MAX_ERROR_MESSAGE_CHARS


@pytest.mark.parametrize(("value", "kind"), [
    ([1, 2], MessageError), ({"n": 1}, MessageError), ({"type": 3}, MessageError),
    ({"type": ""}, MessageError), ({"type": "error", "code": -1, "message": ""}, MessageError),
    ({"type": "error", "code": 1, "message": 5}, MessageError),
])
def test_bad_messages_are_message_errors(value: object, kind: type[Exception]) -> None:
    with pytest.raises(kind):
        decode_message(encode(value))


def test_bad_cbor_is_a_frame_error_and_a_value_error() -> None:
    for body in (b"", b"\xa1\x61a", b"\x18\x01", b"\xa0\x00"):
        with pytest.raises(FrameError) as caught:
            decode_message(body)
        assert isinstance(caught.value, ValueError)
        assert caught.value.code is ErrorCode.MALFORMED


def test_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * 11, 10)
    with pytest.raises(LocalProtocolError):
        encode_message({"no": "type"}, 100)
    decoder = FrameDecoder(10)
    decoder.receive_eof()
    with pytest.raises(LocalProtocolError):
        decoder.receive_data(b"x", 0.0)


def test_error_frames_for_errors() -> None:
    assert error_frame_for(PeerError(16, "x")) == b""
    frame = error_frame_for(FrameError("bad", ErrorCode.FRAME_TOO_LARGE))
    assert decode(frame[1:]) == {"type": "error", "code": 2, "message": "bad"}


def test_code_registry_is_consistent() -> None:
    rows = error_code_table()
    assert [int(r[0]) for r in rows] == sorted(int(c) for c in ErrorCode)
    assert len({r[1] for r in rows}) == len(rows)
    assert describe_code(16) == "wrong-network (16)"
    assert all(0 < code < 1024 for code in ErrorCode)


# --- property tests ----------------------------------------------------------------------

bodies = st.lists(st.binary(max_size=300), max_size=8)


@settings(max_examples=200, deadline=None)
@given(bodies, st.lists(st.integers(min_value=1, max_value=50), max_size=60))
def test_any_chunking_gives_the_same_frames(items: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(body, 1000) for body in items)
    decoder = FrameDecoder(1000)
    out, position = [], 0
    for cut in [*cuts, len(stream)]:
        decoder.receive_data(stream[position:position + cut], float(position))
        position += cut
        while (body := decoder.next_frame()) is not None:
            out.append(body)
    decoder.receive_eof()
    assert decoder.next_frame() is None and decoder.at_end
    assert out == items


@settings(max_examples=200, deadline=None)
@given(bodies, st.data())
def test_truncation_anywhere_is_truncated_or_fewer_frames(items: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(body, 1000) for body in items)
    end = data.draw(st.integers(min_value=0, max_value=len(stream)))
    try:
        got = frames_of(stream[:end])
    except FrameError as exc:
        assert exc.code is ErrorCode.TRUNCATED
    else:
        assert got == items[:len(got)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=500))
def test_random_streams_give_frames_or_frame_errors(stream: bytes, limit: int) -> None:
    try:
        for body in frames_of(stream, limit):
            assert len(body) <= limit
            try:
                decode_message(body)
            except ProtocolError as exc:
                assert isinstance(exc, ValueError | PeerError)
    except FrameError:
        pass
