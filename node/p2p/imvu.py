"""``/n3xus/imvu/1.0.0`` on the node: agents asking agents on other nodes (specs/imvu.md §11).

The sans-IO exchange is :class:`n3xus.imvu.wire.AgentExchange`; this module drives it over
libp2p streams with the shared runner (:mod:`.streams`: bounded reads and writes, error
frames, the hello gate, per-peer stream rates).

* :class:`ImvuServer` answers: it reads one ``ask`` (within :data:`ASK_READ_TIMEOUT_S`),
  runs the named agent's turn through the node's :data:`Answerer` (the agent service),
  forwards the turn's text pieces as ``token`` frames when the ask streamed, then sends the
  ``answer`` and closes. An unknown agent is the error ``unknown-agent`` (64), a stopped one
  ``agent-stopped`` (65), a full queue ``busy``; those are refusals, not the asker's fault,
  so they cost it no score. If the asker resets the stream meanwhile, the turn is cancelled
  (a turn cancelled before its decision records nothing).
* :func:`ask_peer` asks: it opens a stream, sends the ``ask``, passes ``token`` pieces to a
  callback, and returns the ``answer``; anything else is :class:`PeerAskError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.imvu.wire import MAX_TOKEN_CHARS, PROTOCOL_ID, AgentExchange, Answer, Ask, Role, Token
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import DeadlineExceeded, ProtocolError

from ..logs import get_logger
from . import host as p2p
from .streams import CoreStream, PeerObserver, guarded, serve

log = get_logger("n3xus.imvu")

ASK_READ_TIMEOUT_S: Final = 10.0
"""From the stream's opening to a complete ``ask`` frame (at most 64 KiB): a peer that opens
a stream and sends nothing holds a task no longer than this."""
ANSWER_TIMEOUT_S: Final = 180.0
"""How long an asker waits for the answer: up to 8 queued turns of a few seconds each on
the answering node's model (DEFAULT_MAX_QUEUED_PER_AGENT), plus the network."""
OPEN_STREAM_TIMEOUT_S: Final = 10.0
"""Dialing (if needed) and negotiating the protocol."""
TOKEN_BUFFER: Final = 1024
"""Pieces buffered between the turn and the stream: more than the 512 tokens a turn may
generate (MAX_OUTPUT_TOKENS), so the scheduler's sink never fills (it fails closed if it does)."""


_OPEN_ERRORS: Final[tuple[type[Exception], ...]] = (*p2p.NETWORK_ERRORS, ValueError)


class AgentRefusal(Exception):
    """The answering node cannot run the ask: unknown agent, stopped agent, busy. ``code``
    is the error code sent to the asker."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PeerAskError(Exception):
    """An ask to an agent on a peer got no answer (refused, unreachable, timed out)."""


Answerer = Callable[[Ask, str, trio.MemorySendChannel[str] | None], Awaitable[Answer]]
"""``answer(ask, remote peer id, token sink or None) -> Answer``; raises AgentRefusal. The
sink (if any) is closed by the answerer when the turn ends."""


class ImvuServer:
    def __init__(self, host: BasicHost, peerbook: PeerObserver | None, answerer: Answerer) -> None:
        self.host = host
        self.peerbook = peerbook
        self.answerer = answerer
        self.asks_answered = 0
        self.asks_refused = 0

    def register(self) -> None:
        """Set the stream handler (before any dial, so every hello lists the protocol)."""
        self.host.set_stream_handler(TProtocol(PROTOCOL_ID), self._handle)

    async def _handle(self, stream: INetStream) -> None:
        await serve(stream, self._answer, peerbook=self.peerbook, protocol="imvu")

    async def _read_ask(self, channel: CoreStream, exchange: AgentExchange) -> Ask | None:
        deadline = trio.current_time() + ASK_READ_TIMEOUT_S
        while True:
            data = await channel.receive(deadline)
            if not data:
                exchange.receive_eof()
                return None  # the peer closed before asking: nothing to answer
            for message in exchange.receive_data(data, trio.current_time()):
                if isinstance(message, Ask):
                    return message

    async def _answer(self, channel: CoreStream) -> None:
        exchange = AgentExchange(Role.ANSWERER)
        ask = await self._read_ask(channel, exchange)
        if ask is None:
            return
        answer: Answer | None = None
        refusal: AgentRefusal | None = None
        tokens_done = trio.Event()
        async with trio.open_nursery() as nursery:
            sink: trio.MemorySendChannel[str] | None = None
            if ask.stream:
                sink, pieces = trio.open_memory_channel[str](TOKEN_BUFFER)
                nursery.start_soon(self._forward_tokens, channel, exchange, pieces, tokens_done)
            else:
                tokens_done.set()
            nursery.start_soon(self._watch_asker, channel, nursery.cancel_scope)
            try:
                answer = await self.answerer(ask, channel.peer_id, sink)
            except AgentRefusal as exc:
                refusal = exc
                if sink is not None:
                    await sink.aclose()
            # The turn closed the sink: the forwarder ends after the last piece; the
            # watcher is all that is left, and it has nothing more to watch for.
            await tokens_done.wait()
            nursery.cancel_scope.cancel()
        if refusal is not None:
            self.asks_refused += 1
            log.info("imvu ask refused", peer_id=channel.peer_id, agent=ask.agent,
                     code=refusal.code.label, reason=refusal.message)
            await channel.send(exchange.send_error(refusal.code, refusal.message))
            await channel.close()
            return
        if answer is None:  # cancelled: the asker went away
            return
        await channel.send(exchange.send(answer))
        await channel.close()
        self.asks_answered += 1

    async def _forward_tokens(self, channel: CoreStream, exchange: AgentExchange,
                              pieces: trio.MemoryReceiveChannel[str], done: trio.Event) -> None:
        try:
            async for piece in pieces:
                for start in range(0, len(piece), MAX_TOKEN_CHARS):
                    await channel.send(exchange.send(Token(piece[start:start + MAX_TOKEN_CHARS])))
        finally:
            done.set()

    async def _watch_asker(self, channel: CoreStream, scope: trio.CancelScope) -> None:
        """Cancel the turn if the asker resets the stream (it went away). Its end of
        writing (EOF) is normal: it has nothing more to say after the ask."""
        try:
            while await channel.stream.read(1024):
                pass  # anything after the ask is ignored
        except EOFError:
            return
        except p2p.NETWORK_ERRORS:
            scope.cancel()


async def ask_peer(host: BasicHost, peerbook: PeerObserver | None, peer_id: str, ask: Ask,
                   on_token: Callable[[str], None] | None = None,
                   timeout: float = ANSWER_TIMEOUT_S) -> Answer:
    """Ask an agent on ``peer_id`` (module doc); PeerAskError if no answer came."""
    stream: INetStream | None = None
    failure = "no answer"
    with trio.move_on_after(OPEN_STREAM_TIMEOUT_S):
        try:
            stream = await host.new_stream(p2p.parse_peer_id(peer_id), [TProtocol(PROTOCOL_ID)])
        except _OPEN_ERRORS as exc:
            failure = f"cannot open {PROTOCOL_ID} to {peer_id}: {exc}"
    if stream is None:
        raise PeerAskError(failure if failure != "no answer" else
                           f"cannot reach {peer_id} within {OPEN_STREAM_TIMEOUT_S:.0f} s")
    answer: Answer | None = None
    async with guarded(stream, peerbook=peerbook, protocol="imvu") as channel:
        exchange = AgentExchange(Role.ASKER)
        deadline = trio.current_time() + timeout
        try:
            await channel.send(exchange.send(ask))
            while answer is None:
                try:
                    data = await channel.receive(deadline)
                except DeadlineExceeded:
                    failure = f"{peer_id} did not answer within {timeout:.0f} s"
                    raise
                if not data:
                    exchange.receive_eof()  # raises: truncated before the answer
                for message in exchange.receive_data(data, trio.current_time()):
                    if isinstance(message, Token):
                        if on_token is not None:
                            on_token(message.text)
                    elif isinstance(message, Answer):
                        answer = message
        except ProtocolError as exc:
            if failure == "no answer":
                failure = f"{peer_id}: {exc}"
            raise
        await channel.close()
    if answer is None:
        raise PeerAskError(failure)
    return answer
