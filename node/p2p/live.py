"""``/n3xus/live/1.0.0`` on the node: pulling one copy of a room's encoded stream from its
origin node (specs/protocol-live.md).

The exchange itself is :meth:`LiveService.serve_pull` (origin) and
:meth:`LiveService.pull_into` (follower), over message bodies; here the libp2p stream is
framed (:func:`n3xus.webrtc.pullstream.framed`) and run under the shared stream runner
(:mod:`.streams`: the hello gate, per-peer stream rate, bounded writes, clean resets). Every
breach -- of the framing (an oversized or stalled frame) or of a message (not DAG-CBOR, an
unknown type, no ``pull`` first or in time) -- is answered with the common ``error``
message and a reset, and counts against the peer (specs/protocol-live.md).

A pull stream lives as long as the performance is watched, so reads here have no idle
deadline: the origin may send nothing for minutes between performances. The origin's
per-follower queue (``PULL_QUEUE_FRAMES``) bounds what a slow follower costs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol

from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import RemoteProtocolError
from n3xus.webrtc import pull
from n3xus.webrtc.errors import PullProtocolError, RemoteLiveError
from n3xus.webrtc.pullstream import framed
from n3xus.webrtc.service import LiveService, ReceiveMessage, SendMessage

from ..logs import get_logger
from . import host as p2p
from .streams import CoreStream, PeerObserver, guarded, serve

if TYPE_CHECKING:
    from ..runtime import Node

log = get_logger("n3xus.live.p2p")

PROTOCOL_ID: Final = pull.PROTOCOL_ID
OPEN_STREAM_TIMEOUT_S: Final = 10.0
"""Dialing (if needed) and negotiating the protocol."""


def _framed(channel: CoreStream) -> tuple[SendMessage, ReceiveMessage]:
    stream = channel.stream

    async def read(max_bytes: int) -> bytes:
        try:
            data = await stream.read(max_bytes)
        except EOFError:  # libp2p's StreamEOF: the peer closed its side
            return b""
        if data and channel.peerbook is not None:
            channel.peerbook.count_bytes(channel.peer_id, received=len(data))
        return bytes(data)

    return framed(read, channel.send)


async def _breach(channel: CoreStream, exc: PullProtocolError) -> None:
    """The common ``error`` message with the breach's code, then (after the runner's linger,
    so the message is not lost) a reset; the breach counts against the peer."""
    await channel.fail(RemoteProtocolError(exc.message, ErrorCode(exc.wire_code)))


class LivePullServer:
    """The origin's handler: one :meth:`LiveService.serve_pull` per stream."""

    def __init__(self, host: object, peerbook: PeerObserver | None, live: LiveService) -> None:
        self.host = host
        self.peerbook = peerbook
        self.live = live
        self.streams_served = 0

    def register(self) -> None:
        """Set the stream handler (before any dial, so every hello lists the protocol)."""
        self.host.set_stream_handler(TProtocol(PROTOCOL_ID), self._handle)  # type: ignore[attr-defined]

    async def _handle(self, stream: INetStream) -> None:
        await serve(stream, self._session, peerbook=self.peerbook, protocol="live")

    async def _session(self, channel: CoreStream) -> None:
        self.streams_served += 1
        send, receive = _framed(channel)
        try:
            await self.live.serve_pull(send, receive)
        except PullProtocolError as exc:
            await _breach(channel, exc)


async def pull_room(node: Node, live: LiveService, room: str, peer_id: str, token: str,
                    remote_room: str) -> None:
    """Follower: pull ``remote_room`` of ``peer_id`` into the local ``room`` until the
    origin ends the stream. Raises :class:`RemoteLiveError` when refused (or on a breach)
    and the libp2p errors of an unreachable peer."""
    host = node._host
    stream: INetStream | None = None
    with trio.move_on_after(OPEN_STREAM_TIMEOUT_S):
        stream = await host.new_stream(p2p.parse_peer_id(peer_id), [TProtocol(PROTOCOL_ID)])
    if stream is None:
        raise RemoteLiveError(f"cannot open {PROTOCOL_ID} to {peer_id} within "
                              f"{OPEN_STREAM_TIMEOUT_S:.0f} s", code="unreachable")
    refusal: RemoteLiveError | None = None
    async with guarded(stream, peerbook=node.peerbook, protocol="live") as channel:
        send, receive = _framed(channel)
        try:
            await live.pull_into(room, token, send, receive, remote_room=remote_room,
                                 kinds=("video", "audio"))
        except PullProtocolError as exc:
            await _breach(channel, exc)
            refusal = exc
        except RemoteLiveError as exc:
            refusal = exc
    if refusal is not None:
        raise refusal
