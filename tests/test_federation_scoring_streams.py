"""The stream runner (node/p2p/streams.py) on real libp2p hosts: a sans-IO core driven by
``serve``/``pump`` answers garbage with an error frame and a reset, cuts off silent and
trickling peers at the core's deadlines, turns a bug of ours into ``internal`` without
losing the connection, refuses un-helloed and flooding peers, and scores each fault."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.streams import CoreStream, pump, serve
from n3xus.node.services.peers import MAX_STREAM_BURST, PeerBook
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import DeadlineExceeded, MessageError, PeerError
from n3xus.protocol.framing import FrameDecoder, decode_message, encode_frame, encode_message

ECHO = TProtocol("/n3xus/test-echo/1.0.0")
GATED = TProtocol("/n3xus/test-gated/1.0.0")
FRAME_LIMIT = 1024
CORE_TIMEOUT_S = 1.0  # the test core's own deadlines: short, so the test runs in seconds


class EchoCore:
    """A minimal sans-IO core of the shape ``pump`` drives: frames in, messages out, a
    deadline for the first message and for every frame."""

    def __init__(self, now: float) -> None:
        self.frames = FrameDecoder(FRAME_LIMIT, grace_s=CORE_TIMEOUT_S)
        self.expires = now + CORE_TIMEOUT_S
        self.messages: list[dict[str, Any]] = []

    @property
    def deadline(self) -> float | None:
        frame = self.frames.deadline
        return self.expires if frame is None else min(frame, self.expires)

    def check_deadline(self, now: float) -> None:
        self.frames.check_deadline(now)
        if now >= self.expires:
            raise DeadlineExceeded("no message in time")

    def receive_data(self, data: bytes, now: float) -> None:
        self.frames.receive_data(data, now)
        self.frames.check_deadline(now)
        while (body := self.frames.next_frame()) is not None:
            self.messages.append(decode_message(body))
            self.expires = now + CORE_TIMEOUT_S

    def receive_eof(self) -> None:
        self.frames.receive_eof()
        self.frames.next_frame()  # raises `truncated` inside a frame


async def echo_session(channel: CoreStream) -> None:
    core = EchoCore(trio.current_time())
    while await pump(channel, core):
        while core.messages:
            message = core.messages.pop(0)
            if message["type"] == "boom":
                raise KeyError("a bug in the handler")
            if message["type"] == "bad":
                raise MessageError("a message the schema refuses")
            await channel.send(encode_message(message, FRAME_LIMIT))
    await channel.close()


@asynccontextmanager
async def server_and_client() -> AsyncIterator[tuple[BasicHost, PeerBook, BasicHost, str]]:
    server = p2p.make_host(p2p.keypair_from_seed(bytes([0x31]) * 32))
    book = PeerBook(p2p.gate_of(server))

    async def echo(stream: Any) -> None:
        await serve(stream, echo_session, peerbook=book, protocol="test-echo", require_hello=False)

    async def gated(stream: Any) -> None:
        await serve(stream, echo_session, peerbook=book, protocol="test-gated")

    server.set_stream_handler(ECHO, echo)
    server.set_stream_handler(GATED, gated)
    client = p2p.make_host(p2p.keypair_from_seed(bytes([0x32]) * 32))
    async with p2p.running_host(server, ["/ip4/127.0.0.1/tcp/0"]) as addrs, \
            p2p.running_host(client, []):
        await p2p.connect(client, addrs[0])
        yield server, book, client, str(client.get_id())


async def answer(stream: Any, timeout: float = 10.0) -> dict[str, Any] | int | None:
    """The next message (a dict), the code of an error frame (int), or None at the end."""
    frames = FrameDecoder(FRAME_LIMIT)
    with trio.fail_after(timeout):
        while True:
            try:
                data = await stream.read(4096)
            except p2p.NETWORK_ERRORS:
                return None
            if not data:
                return None
            frames.receive_data(data, trio.current_time())
            body = frames.next_frame()
            if body is not None:
                try:
                    return decode_message(body)
                except PeerError as error:
                    return error.raw_code


async def test_the_runner_answers_refuses_and_cuts_off() -> None:
    async with server_and_client() as (server, book, client, client_id):
        server_id = server.get_id()

        async def open_stream(protocol: TProtocol = ECHO) -> Any:
            return await client.new_stream(server_id, [protocol])

        stream = await open_stream()
        await stream.write(encode_message({"type": "ping", "n": 1}, FRAME_LIMIT))
        assert await answer(stream) == {"type": "ping", "n": 1}
        await stream.close()

        stream = await open_stream()  # garbage: an error frame, then the reset
        await stream.write(encode_frame(b"\xff\xff", FRAME_LIMIT))
        assert await answer(stream) == ErrorCode.MALFORMED
        stream = await open_stream()  # over the frame limit, refused before the body
        await stream.write(bytes([0x80, 0x10]))  # varint 2048
        assert await answer(stream) == ErrorCode.FRAME_TOO_LARGE
        stream = await open_stream()  # a schema error raised by the handler
        await stream.write(encode_message({"type": "bad"}, FRAME_LIMIT))
        assert await answer(stream) == ErrorCode.MALFORMED

        stream = await open_stream()  # silent: cut off at the core's deadline
        started = trio.current_time()
        assert await answer(stream) == ErrorCode.TIMEOUT
        assert CORE_TIMEOUT_S - 0.1 <= trio.current_time() - started < CORE_TIMEOUT_S + 3
        stream = await open_stream()  # one byte of a frame, then nothing
        await stream.write(b"\x05")
        started = trio.current_time()
        assert await answer(stream) == ErrorCode.TIMEOUT
        assert trio.current_time() - started < CORE_TIMEOUT_S + 3

        stream = await open_stream()  # a bug of ours: `internal`, the connection lives
        await stream.write(encode_message({"type": "boom"}, FRAME_LIMIT))
        assert await answer(stream) == ErrorCode.INTERNAL
        stream = await open_stream()
        await stream.write(encode_message({"type": "ping", "n": 2}, FRAME_LIMIT))
        assert await answer(stream) == {"type": "ping", "n": 2}
        await stream.close()

        stream = await open_stream(GATED)  # no hello on this connection
        started = trio.current_time()
        assert await answer(stream) == ErrorCode.UNEXPECTED_MESSAGE
        assert trio.current_time() - started < 2.0

        expected = {"malformed": 2, "frame-too-large": 1, "timeout": 2, "unexpected-message": 1}
        with trio.move_on_after(5):  # a penalty lands after the error frame's linger
            while book.describe(client_id)["traffic"]["penalties"] != expected:
                await trio.sleep(0.05)
        traffic = book.describe(client_id)["traffic"]
        assert traffic["penalties"] == expected
        assert traffic["streams"] == {"test-echo": 8, "test-gated": 1}
        assert traffic["bytes_received"] > 0 and traffic["bytes_sent"] > 0
        assert book.score(client_id) < -50

        # Over the stream rate: refused with `busy` (the bucket is drained by hand here).
        for _ in range(int(MAX_STREAM_BURST)):
            book.count_stream(client_id, "test-echo")
        stream = await open_stream()
        assert await answer(stream) == ErrorCode.BUSY
        assert book.describe(client_id)["traffic"]["penalties"]["flood"] >= 1
