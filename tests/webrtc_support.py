"""Helpers of the WebRTC tests: real aiortc peers as browsers stand-ins, and an
in-memory WebSocket so the real signaling handler runs without an HTTP server.

The client peers run on their own bridge (a second asyncio thread), so the node's
engine and the "browsers" share nothing but UDP sockets on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import trio
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from n3xus.webrtc.rooms import Role
from n3xus.webrtc.service import LiveService

TOKEN_KEY = bytes(range(32))
#: The colour the synthetic performer paints; viewers check the decoded frames.
PERFORMER_RGB = (200, 40, 40)
#: Tolerance on a decoded colour channel mean (VP8 at 500 kbps is close, not exact).
COLOR_TOLERANCE = 20


class ColorTrack(VideoStreamTrack):
    """A 640x480, 30 fps synthetic camera painting one solid colour."""

    def __init__(self, rgb: tuple[int, int, int] = PERFORMER_RGB,
                 size: tuple[int, int] = (640, 480)) -> None:
        super().__init__()
        array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        array[:, :] = rgb
        self._frame = VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv420p")

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = self._frame
        frame.pts = pts
        frame.time_base = time_base
        return frame


@dataclass
class ClientPeer:
    """A stand-in browser: one RTCPeerConnection on the clients' loop."""

    pc: RTCPeerConnection
    frames: int = 0
    last_rgb: tuple[float, float, float] | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)
    first_frame_at: float | None = None
    consumer: asyncio.Task[None] | None = None


def _mean_rgb(frame: VideoFrame) -> tuple[float, float, float]:
    array = frame.to_ndarray(format="rgb24")
    mean = array.reshape(-1, 3).mean(axis=0)
    return float(mean[0]), float(mean[1]), float(mean[2])


async def _consume(peer: ClientPeer, track: Any) -> None:
    try:
        while True:
            frame = await track.recv()
            peer.frames += 1
            if peer.first_frame_at is None:
                peer.first_frame_at = time.monotonic()
            peer.sizes.add((frame.width, frame.height))
            if peer.frames % 10 == 1:
                peer.last_rgb = _mean_rgb(frame)
    except MediaStreamError:
        return


async def new_performer(rgb: tuple[int, int, int] = PERFORMER_RGB) -> tuple[ClientPeer, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(ColorTrack(rgb), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return ClientPeer(pc), pc.localDescription.sdp


async def new_viewer(data_channel: bool = False) -> tuple[ClientPeer, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    peer = ClientPeer(pc)
    pc.addTransceiver("video", direction="recvonly")
    if data_channel:
        pc.createDataChannel("room")

    @pc.on("track")
    def on_track(track: Any) -> None:
        peer.consumer = asyncio.ensure_future(_consume(peer, track))

    await pc.setLocalDescription(await pc.createOffer())
    return peer, pc.localDescription.sdp


async def accept_answer(peer: ClientPeer, sdp: str) -> None:
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))


async def close_peer(peer: ClientPeer) -> None:
    await peer.pc.close()
    if peer.consumer is not None:
        peer.consumer.cancel()


async def snapshot(peer: ClientPeer) -> tuple[int, tuple[float, float, float] | None,
                                            set[tuple[int, int]]]:
    return peer.frames, peer.last_rgb, set(peer.sizes)


async def send_pli(peer: ClientPeer) -> bool:
    """Make a viewer send a real RTCP PLI for its incoming video."""
    for transceiver in peer.pc.getTransceivers():
        receiver = transceiver.receiver
        sources = receiver.getSynchronizationSources()
        if transceiver.kind == "video" and sources:
            await receiver._send_rtcp_pli(sources[0].source)
            return True
    return False


class MemorySocket:
    """A WebSocket stand-in for :meth:`LiveService.serve_signaling`."""

    def __init__(self) -> None:
        self._to_server_send, self._to_server = trio.open_memory_channel[str | None](64)
        self._to_client_send, self._to_client = trio.open_memory_channel[str](64)
        self.closed: tuple[int, str] | None = None
        self.backlog: list[dict[str, Any]] = []

    # server side
    async def receive_text(self) -> str | None:
        return await self._to_server.receive()

    async def send_text(self, text: str) -> None:
        await self._to_client_send.send(text)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self._to_client_send.close()

    # client side
    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self._to_server_send.send(text)

    async def recv(self) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        with trio.fail_after(20):
            return json.loads(await self._to_client.receive())  # type: ignore[no-any-return]

    async def recv_reply(self, *types: str) -> dict[str, Any]:
        """The next message of one of ``types``; others wait in the backlog."""
        with trio.fail_after(20):
            while True:
                message = json.loads(await self._to_client.receive())
                if message["type"] in types:
                    return message  # type: ignore[no-any-return]
                self.backlog.append(message)

    async def hang_up(self) -> None:
        await self._to_server_send.send(None)


async def join(service: LiveService, nursery: trio.Nursery, room: str, role: Role | str,
               name: str = "tester", token: str | None = None) -> tuple[MemorySocket, dict[str, Any]]:
    """Open a signaling connection, say hello, return the socket and the welcome."""
    socket = MemorySocket()
    nursery.start_soon(service.serve_signaling, socket, room)
    await socket.send({"type": "hello", "v": 1, "name": name,
                       "token": token or service.issue_token(room, str(Role(role).value))})
    welcome = await socket.recv()
    assert welcome["type"] == "welcome", welcome
    return socket, welcome


async def offer(socket: MemorySocket, sdp: str) -> dict[str, Any]:
    await socket.send({"type": "offer", "sdp": sdp})
    return await socket.recv_reply("answer", "error")


def rgb_close(seen: tuple[float, float, float] | None,
              expected: tuple[int, int, int] = PERFORMER_RGB) -> bool:
    return seen is not None and all(abs(s - e) <= COLOR_TOLERANCE for s, e in zip(seen, expected,
                                                                                   strict=True))


VIDEO_TIME_BASE = Fraction(1, 90000)


@dataclass
class ChannelPeer:
    """A stand-in room page: only the ``room`` data channel."""

    pc: RTCPeerConnection
    channel: Any
    received: list[dict[str, Any]] = field(default_factory=list)
    opened: bool = False


async def new_room_member() -> tuple[ChannelPeer, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("room")
    peer = ChannelPeer(pc, channel)

    @channel.on("open")
    def on_open() -> None:
        peer.opened = True

    @channel.on("message")
    def on_message(message: str) -> None:
        peer.received.append(json.loads(message))

    await pc.setLocalDescription(await pc.createOffer())
    return peer, pc.localDescription.sdp


async def channel_accept(peer: ChannelPeer, sdp: str) -> None:
    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))


async def channel_send(peer: ChannelPeer, message: dict[str, Any]) -> None:
    peer.channel.send(json.dumps(message))


async def channel_state(peer: ChannelPeer) -> tuple[bool, list[dict[str, Any]]]:
    return peer.opened, list(peer.received)


async def incoming_ssrcs(peer: ClientPeer) -> set[int]:
    """The SSRCs a peer receives video from (what the relay rewrote per viewer)."""
    return {source.source for t in peer.pc.getTransceivers() if t.kind == "video"
            for source in t.receiver.getSynchronizationSources()}


async def outgoing_ssrcs(peer: ClientPeer) -> set[int]:
    return {t.sender._ssrc for t in peer.pc.getTransceivers() if t.kind == "video"}
