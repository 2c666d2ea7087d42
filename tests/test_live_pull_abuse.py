"""``/n3xus/live/1.0.0`` against a running CLI node, byte by byte (specs/protocol-live.md): a raw
py-libp2p host completes a hello by hand, then breaks the pull protocol -- an oversized
length prefix, bytes that are not DAG-CBOR, an unknown message type, a first message that
is not ``pull``, breaches after the pull was accepted, an idle stream and a frame that
stalls -- and each gets the common ``error`` message with its code, then a reset, and
counts against the peer; the node keeps serving a well-behaved pull afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamReset
from raw_peer_support import RAW_SEED, RawPeer, network_of, penalties, wait_until
from test_live_node import cli

from conftest import CliNode, start_cli_node
from n3xus.canon.multiformats import encode_varint
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.streams import ERROR_LINGER_S
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.framing import FrameDecoder, encode_frame, encode_message
from n3xus.webrtc import pull
from n3xus.webrtc.signaling import HELLO_TIMEOUT_S

LIVE = TProtocol(pull.PROTOCOL_ID)
ROOM = "abuse"
# The origin waits HELLO_TIMEOUT_S for the pull request; the idle cases need that long.
READ_TIMEOUT_S = HELLO_TIMEOUT_S + 10.0
# How long after the node's linger its reset may take to arrive (a loaded machine).
RESET_WAIT_S = 3.0


async def outcome(stream: Any) -> tuple[list[Any], str]:
    """The messages the node sent on ``stream`` (an error message as its code) and how the
    stream ended: ``"reset"`` or ``"eof"``. After an error message the node may half-close
    and linger (so the frame is not lost) before it resets: the end of the data is read,
    then the reset is waited for; any other end is the node's clean close."""
    frames = FrameDecoder(pull.MAX_PULL_MESSAGE_BYTES)
    received: list[Any] = []
    with trio.fail_after(READ_TIMEOUT_S):
        while True:
            try:
                data = await stream.read(65536)
            except StreamReset:
                return received, "reset"
            except EOFError:
                data = b""
            if not data:
                break
            frames.receive_data(data, trio.current_time())
            while (body := frames.next_frame()) is not None:
                message = pull.decode(body)
                # An error is compared by its code (its text is for people).
                received.append(ErrorCode(message.code)
                                if isinstance(message, pull.PeerErrorMessage) else message)
    if not received or not isinstance(received[-1], ErrorCode):
        return received, "eof"
    # py-libp2p reports a reset stream as the end of data on read; a write tells them
    # apart (it fails on a reset stream only). During the linger the node discards it.
    with trio.move_on_after(ERROR_LINGER_S + RESET_WAIT_S):
        while True:
            try:
                await stream.write(b"\x00")
            except StreamReset:
                return received, "reset"
            await trio.sleep(0.1)
    return received, "eof"


def breach(code: ErrorCode) -> tuple[list[Any], str]:
    """What a breach looks like from the peer: the common error with ``code``, a reset."""
    return [code], "reset"


async def test_pull_breaches_get_an_error_and_a_reset_and_honest_pulls_go_on(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    node = start_cli_node(tmp_path / "origin")
    cli_nodes.append(node)
    viewer_token = cli(node, "room", "create", ROOM)["tokens"]["viewer"]
    good_pull = pull.encode_frame(pull.Pull(ROOM, viewer_token, ("video",)))
    host = p2p.make_host(p2p.keypair_from_seed(RAW_SEED))
    async with p2p.running_host(host, []):
        raw = RawPeer(host, node, network_of(node))
        code, _ = await raw.exchange()  # the hello, by hand: live streams need one
        assert code is None

        async def attempt(data: bytes, *, then: bytes = b"") -> tuple[list[Any], str]:
            stream = await raw.stream(LIVE)
            await stream.write(data)
            if then:
                await trio.sleep(0.2)
                await stream.write(then)
            return await outcome(stream)

        # Positive control: a valid pull is accepted; `bye` ends it cleanly.
        stream = await raw.stream(LIVE)
        await stream.write(good_pull)
        await stream.write(pull.encode_frame(pull.Bye()))
        assert await outcome(stream) == ([pull.Accept(ROOM, False)], "eof")

        seen: dict[str, tuple[list[Any], str]] = {}
        # A length prefix over MAX_PULL_MESSAGE_BYTES: refused before any body.
        seen["oversized"] = await attempt(encode_varint(pull.MAX_PULL_MESSAGE_BYTES + 1) + b"x" * 64)
        # A frame whose body is not DAG-CBOR at all.
        seen["garbage"] = await attempt(encode_frame(b"\xff\xfe\xfd", 100))
        # A well-formed message of a type this protocol does not have.
        seen["unknown type"] = await attempt(encode_message({"type": "dance"}, 100))
        # A known message, but not the `pull` a stream must start with.
        seen["not a pull"] = await attempt(pull.encode_frame(pull.KeyframeRequest()))
        # Accepted first, then garbage: the breach ends the running stream too.
        seen["after accept"] = await attempt(good_pull, then=encode_frame(b"\xff", 100))
        seen["oversized after accept"] = await attempt(
            good_pull, then=encode_varint(pull.MAX_PULL_MESSAGE_BYTES + 1) + b"x" * 64)
        async with trio.open_nursery() as nursery:  # the two slow cases wait in parallel
            async def slow(name: str, data: bytes) -> None:
                started = trio.current_time()
                seen[name] = await attempt(data)
                assert trio.current_time() - started >= HELLO_TIMEOUT_S - 0.5, name
            # Opens the stream and sends nothing.
            nursery.start_soon(slow, "idle", b"")
            # One byte of a frame's length prefix, then nothing.
            nursery.start_soon(slow, "stalled frame", good_pull[:1])

        assert seen == {
            "oversized": breach(ErrorCode.FRAME_TOO_LARGE),
            "garbage": breach(ErrorCode.MALFORMED),
            "unknown type": breach(ErrorCode.UNSUPPORTED),
            "not a pull": breach(ErrorCode.UNEXPECTED_MESSAGE),
            "after accept": ([pull.Accept(ROOM, False), ErrorCode.MALFORMED], "reset"),
            "oversized after accept": ([pull.Accept(ROOM, False), ErrorCode.FRAME_TOO_LARGE],
                                       "reset"),
            "idle": breach(ErrorCode.TIMEOUT),
            "stalled frame": breach(ErrorCode.TIMEOUT),
        }, seen

        # Each breach counted against the peer, by its code.
        expected = {"frame-too-large": 2, "malformed": 2, "unsupported": 1,
                    "unexpected-message": 1, "timeout": 2}
        await wait_until(lambda: penalties(node, raw.peer_id) == expected, 10,
                         "every breach is recorded")

        # The node still serves a well-behaved pull, on this connection and on a new one.
        stream = await raw.stream(LIVE)
        await stream.write(good_pull)
        await stream.write(pull.encode_frame(pull.Bye()))
        assert await outcome(stream) == ([pull.Accept(ROOM, False)], "eof")
        await raw.done()
        code, _ = await raw.exchange()
        assert code is None
        stream = await raw.stream(LIVE)
        await stream.write(good_pull)
        await stream.write(pull.encode_frame(pull.Bye()))
        assert await outcome(stream) == ([pull.Accept(ROOM, False)], "eof")
        await raw.done()
