"""``/n3xus/world-sync/1.0.0`` on libp2p streams: world heads asked for and announced
(specs/protocol-world-sync.md; the sans-IO core is :mod:`n3xus.protocol.world_sync`).

* :class:`WorldSyncServer` answers a ``head-request`` with the node's head of that world and
  an ``announce`` with ``ack`` (handing the announcement to the federation service, which
  decides whether it cares). Streams go through :func:`.streams.serve`: the hello gate, the
  per-peer stream rate, deadlines, error frames and penalties.
* :func:`request_head` and :func:`announce` are the requesting side: one stream, one
  exchange, a bounded time; failures are :class:`WorldSyncFailed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.protocol.errors import ProtocolError
from n3xus.protocol.world_sync import (
    EXCHANGE_TIMEOUT_S,
    PROTOCOL_ID,
    Ack,
    Announce,
    Head,
    HeadRequest,
    Message,
    Role,
    WorldSyncExchange,
)

from . import host as p2p
from .streams import CoreStream, PeerObserver, StreamClosed, guarded, serve

OPEN_STREAM_TIMEOUT_S: Final = 5.0
"""Opening a stream to a connected peer is one round trip; a peer that cannot do it in
5 s is skipped this round (the next anti-entropy round asks again)."""

_OPEN_ERRORS: Final[tuple[type[Exception], ...]] = (*p2p.NETWORK_ERRORS, ValueError)

HeadSource = Callable[[str], Awaitable[Head]]
"""``head_of(world) -> Head``: the node's head of a world (None fields when it has none)."""
AnnounceSink = Callable[[str, Announce], None]
"""``on_announce(peer id, announce)``: must not block (it queues work)."""


class WorldSyncFailed(Exception):
    """An exchange with a peer did not complete (unreachable, refused, broke the protocol)."""


class WorldSyncServer:
    def __init__(self, host: BasicHost, peerbook: PeerObserver | None, head_of: HeadSource,
                 on_announce: AnnounceSink) -> None:
        self.host = host
        self.peerbook = peerbook
        self.head_of = head_of
        self.on_announce = on_announce
        self.answered = 0

    def register(self) -> None:
        """Set the stream handler (before any dial, so every hello lists the protocol)."""
        self.host.set_stream_handler(TProtocol(PROTOCOL_ID), self._handle)

    async def _handle(self, stream: INetStream) -> None:
        await serve(stream, self._answer, peerbook=self.peerbook, protocol="world-sync")

    async def _answer(self, channel: CoreStream) -> None:
        exchange = WorldSyncExchange(Role.RESPONDER, trio.current_time())
        request = await _read_one(channel, exchange)
        if request is None:
            return  # closed without asking
        if isinstance(request, HeadRequest):
            await channel.send(exchange.send(await self.head_of(request.world)))
        elif isinstance(request, Announce):
            self.on_announce(channel.peer_id, request)
            await channel.send(exchange.send(Ack(request.world)))
        self.answered += 1
        await channel.close()


async def _read_one(channel: CoreStream, exchange: WorldSyncExchange) -> Message | None:
    while True:
        exchange.check_deadline(trio.current_time())
        data = await channel.receive(exchange.deadline)
        if not data:
            exchange.receive_eof()
            return None
        messages = exchange.receive_data(data, trio.current_time())
        if messages:
            return messages[0]


async def _exchange(host: BasicHost, peerbook: PeerObserver | None, peer_id: str,
                    request: Message) -> Message:
    stream: INetStream | None = None
    with trio.move_on_after(OPEN_STREAM_TIMEOUT_S):
        try:
            stream = await host.new_stream(p2p.parse_peer_id(peer_id), [TProtocol(PROTOCOL_ID)])
        except _OPEN_ERRORS as exc:
            raise WorldSyncFailed(f"cannot open {PROTOCOL_ID} to {peer_id}: {exc}") from exc
    if stream is None:
        raise WorldSyncFailed(f"cannot open {PROTOCOL_ID} to {peer_id} within "
                              f"{OPEN_STREAM_TIMEOUT_S:.0f} s")
    answer: Message | None = None
    failure = "no answer"
    async with guarded(stream, peerbook=peerbook, protocol="world-sync") as channel:
        exchange = WorldSyncExchange(Role.REQUESTER, trio.current_time(), EXCHANGE_TIMEOUT_S)
        try:
            await channel.send(exchange.send(request))
            answer = await _read_one(channel, exchange)
        except (ProtocolError, StreamClosed) as exc:
            failure = f"{peer_id}: {exc}"
            raise
        await channel.close()
    if answer is None:
        raise WorldSyncFailed(failure)
    return answer


async def request_head(host: BasicHost, peerbook: PeerObserver | None, peer_id: str,
                       world: str) -> Head:
    answer = await _exchange(host, peerbook, peer_id, HeadRequest(world))
    if not isinstance(answer, Head) or answer.world != world:
        raise WorldSyncFailed(f"{peer_id} answered a head request for {world!r} with {answer}")
    return answer


async def announce(host: BasicHost, peerbook: PeerObserver | None, peer_id: str,
                   message: Announce) -> None:
    answer = await _exchange(host, peerbook, peer_id, message)
    if not isinstance(answer, Ack) or answer.world != message.world:
        raise WorldSyncFailed(f"{peer_id} answered an announce with {answer}")
