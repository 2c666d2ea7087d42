"""/n3xus/live/1.0.0: the message codec (property tests) and a follower node's viewer
watching an origin node's performer through one pulled copy of the stream.

The two services run in one process and the libp2p stream is stood in for by a
pair of trio channels carrying whole messages (framing is protocol/'s job)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from test_webrtc_relay import ROOM, go_live, wait_frames
from webrtc_support import (
    TOKEN_KEY,
    accept_answer,
    close_peer,
    join,
    new_viewer,
    offer,
    rgb_close,
    snapshot,
)

from n3xus.webrtc import pull
from n3xus.webrtc.bridge import open_bridge
from n3xus.webrtc.errors import PullProtocolError, RemoteLiveError
from n3xus.webrtc.pullstream import framed
from n3xus.webrtc.rooms import Role, RoomTokens
from n3xus.webrtc.service import open_live_service

FOLLOWER_KEY = bytes(range(1, 33))

messages = st.one_of(
    st.builds(pull.Pull, st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True),
              st.text(max_size=40), st.sampled_from([("video",), ("audio",), ("video", "audio")])),
    st.builds(pull.Accept, st.just("stage"), st.booleans()),
    st.builds(pull.Refuse, st.text(max_size=20), st.text(max_size=60)),
    st.builds(pull.Frame, st.sampled_from(["video", "audio"]), st.integers(0, 2**63 - 1),
              st.integers(0, 2**63 - 1), st.booleans(), st.binary(min_size=1, max_size=200)),
    st.just(pull.KeyframeRequest()), st.builds(pull.Live, st.booleans()),
    st.just(pull.End()), st.just(pull.Bye()),
)


@given(messages)
def test_pull_messages_round_trip(message: pull.PullMessage) -> None:
    assert pull.decode(pull.encode(message)) == message


@given(messages, st.data())
def test_truncated_or_flipped_pull_messages_fail_cleanly(message: pull.PullMessage,
                                                         data: st.DataObject) -> None:
    encoded = pull.encode(message)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(PullProtocolError) as truncated:
        pull.decode(encoded[:cut])
    assert truncated.value.wire_code == 1  # malformed
    i = data.draw(st.integers(0, len(encoded) - 1))
    bit = data.draw(st.integers(0, 7))
    flipped = encoded[:i] + bytes([encoded[i] ^ (1 << bit)]) + encoded[i + 1:]
    try:
        pull.decode(flipped)
    except PullProtocolError as exc:
        assert isinstance(exc, ValueError) and exc.wire_code in (1, 8)


def test_pull_decoder_checks_fields_and_ignores_unknown_ones() -> None:
    from n3xus.canon import codec
    assert pull.decode(codec.encode({"type": "end", "x": 1})) == pull.End()
    with pytest.raises(PullProtocolError, match="lacks"):
        pull.decode(codec.encode({"type": "live"}))
    with pytest.raises(PullProtocolError, match="kinds"):
        pull.decode(codec.encode({"type": "pull", "v": 1, "room": "a", "token": "t",
                                  "kinds": ["v", "v"]}))
    with pytest.raises(PullProtocolError, match="data"):
        pull.decode(codec.encode({"type": "frame", "k": "v", "i": 1, "pts": 1, "key": True,
                                  "data": b""}))
    with pytest.raises(PullProtocolError) as unknown:
        pull.decode(codec.encode({"type": "dance"}))
    assert unknown.value.wire_code == 8  # unsupported
    # The common error message (protocol.md §4) is the peer ending the stream.
    assert pull.decode(pull.error_body(1, "bad")) == pull.PeerErrorMessage(1, "bad")
    # Whole frames use the common framing: varint length, then the body.
    frame = pull.encode_frame(pull.End())
    assert frame[0] == len(frame) - 1 and pull.decode(frame[1:]) == pull.End()


async def test_a_malformed_pull_request_is_a_breach() -> None:
    """serve_pull raises it with the common code; the node sends the error and resets
    (tests/test_live_pull_abuse.py checks that on the wire)."""
    async with open_live_service(TOKEN_KEY) as origin:
        (f_send, _), (o_send, o_recv) = stream_pair()
        await f_send(b"\xa1\x64type")  # truncated DAG-CBOR
        with pytest.raises(PullProtocolError) as breach:
            await origin.serve_pull(o_send, o_recv)
        assert breach.value.wire_code == 1  # malformed


def stream_pair() -> tuple[tuple[Callable[[bytes], Awaitable[None]],
                                 Callable[[], Awaitable[bytes | None]]],
                           tuple[Callable[[bytes], Awaitable[None]],
                                 Callable[[], Awaitable[bytes | None]]]]:
    """Two ends of a message stream with backpressure (a small buffer)."""
    a_send, b_recv = trio.open_memory_channel[bytes](4)
    b_send, a_recv = trio.open_memory_channel[bytes](4)

    def receiver(channel: trio.MemoryReceiveChannel[bytes]) -> Callable[[], Awaitable[bytes | None]]:
        async def receive() -> bytes | None:
            try:
                return await channel.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return None
        return receive

    return (a_send.send, receiver(a_recv)), (b_send.send, receiver(b_recv))


async def test_a_viewer_on_another_node_watches_through_one_pulled_copy() -> None:
    async with open_live_service(TOKEN_KEY) as origin, \
            open_live_service(FOLLOWER_KEY) as follower, \
            open_bridge("clients") as clients, trio.open_nursery() as nursery:
        performer, _ = await go_live(origin, clients, nursery)
        (f_send, f_recv), (o_send, o_recv) = stream_pair()
        pull_token = origin.issue_token(ROOM, "viewer")
        nursery.start_soon(origin.serve_pull, o_send, o_recv)
        nursery.start_soon(lambda: follower.pull_into(ROOM, pull_token, f_send, f_recv))

        socket, _ = await join(follower, nursery, ROOM, Role.VIEWER, "remote-viewer")
        viewer, sdp = await clients.run(new_viewer)
        answer = await offer(socket, sdp)
        assert answer["type"] == "answer"
        await clients.run(accept_answer, viewer, answer["sdp"])
        await wait_frames(clients, viewer, 30)
        _, rgb, sizes = await clients.run(snapshot, viewer)
        assert rgb_close(rgb) and sizes == {(640, 480)}

        origin_stats = await origin.stats(ROOM)
        assert origin_stats["relays"]["video"]["subscribers"] == 1  # one copy for the node
        follower_stats = await follower.stats(ROOM)
        assert follower_stats["relays"]["video"]["keyframe_requests_sent"] >= 1  # went upstream
        await clients.run(close_peer, viewer)
        await clients.run(close_peer, performer)
        nursery.cancel_scope.cancel()


async def test_a_pull_with_a_token_of_another_node_is_refused() -> None:
    async with open_live_service(TOKEN_KEY) as origin, \
            open_live_service(FOLLOWER_KEY) as follower, trio.open_nursery() as nursery:
        (f_send, f_recv), (o_send, o_recv) = stream_pair()
        nursery.start_soon(origin.serve_pull, o_send, o_recv)
        forged = RoomTokens(FOLLOWER_KEY).issue(ROOM, Role.VIEWER, now_ms=1_800_000_000_000)
        with pytest.raises(RemoteLiveError) as refused:
            await follower.pull_into(ROOM, forged, f_send, f_recv)
        assert refused.value.code == "bad-token"
        nursery.cancel_scope.cancel()


def byte_stream_pair() -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Two ends of a byte stream (trio's in-memory streams, small buffers so that
    backpressure is real), each turned into framed message send/receive."""
    from trio.testing import lockstep_stream_pair

    a, b = lockstep_stream_pair()

    def ends(stream: Any) -> tuple[Any, Any]:
        async def read(n: int) -> bytes:
            return bytes(await stream.receive_some(n))
        return framed(read, stream.send_all)

    return ends(a), ends(b)


async def test_pull_over_a_framed_byte_stream() -> None:
    async with open_live_service(TOKEN_KEY) as origin, \
            open_live_service(FOLLOWER_KEY) as follower, \
            open_bridge("clients") as clients, trio.open_nursery() as nursery:
        performer, _ = await go_live(origin, clients, nursery)
        (f_send, f_recv), (o_send, o_recv) = byte_stream_pair()
        nursery.start_soon(origin.serve_pull, o_send, o_recv)
        token = origin.issue_token(ROOM, "viewer")
        nursery.start_soon(lambda: follower.pull_into(ROOM, token, f_send, f_recv))
        with trio.fail_after(20):
            async with follower.subscribe(ROOM) as frames:
                first = await frames.next()
        # A follower's subscriber starts at a keyframe the origin's performer sent.
        assert first is not None and first.keyframe and first.data[3:6] == b"\x9d\x01\x2a"
        await clients.run(close_peer, performer)
        nursery.cancel_scope.cancel()


async def test_a_framing_breach_gets_the_common_error_code() -> None:
    from trio.testing import lockstep_stream_pair

    async with open_live_service(TOKEN_KEY) as origin, trio.open_nursery() as nursery:
        a, b = lockstep_stream_pair()

        async def read(n: int) -> bytes:
            return bytes(await b.receive_some(n))

        o_send, o_recv = framed(read, b.send_all)

        async def serve() -> None:
            try:
                await origin.serve_pull(o_send, o_recv)
            except PullProtocolError as exc:  # what the node turns into error + reset
                await o_send(pull.error_body(exc.wire_code, exc.message))

        nursery.start_soon(serve)
        await a.send_all(b"\xff\xff\xff\xff\x7f")  # a length prefix of ~34 GB
        reply_send, reply_recv = framed(lambda n: a.receive_some(n), a.send_all)
        body = await reply_recv()
        assert body is not None
        error = pull.decode(body)
        assert isinstance(error, pull.PeerErrorMessage) and error.code == 2  # frame-too-large
        nursery.cancel_scope.cancel()
