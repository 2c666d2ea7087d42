"""Driving a sans-IO protocol core over a libp2p stream: deadlines, error frames, resets.

Every ``/n3xus/*`` handler and initiator wraps its stream in a :class:`CoreStream`. It owns
the I/O rules of specs/protocol.md §3 so each protocol does not re-implement them:

* reads wait at most until the core's deadline (``core.deadline``, the caller's trio clock);
  a peer that sends nothing, or one byte a minute, gets a ``timeout`` error and a reset;
* writes and closes are bounded too (:data:`WRITE_TIMEOUT_S`, :data:`CLOSE_TIMEOUT_S`): a
  peer that stops reading cannot hold a task;
* a :class:`~n3xus.protocol.errors.RemoteProtocolError` is answered with its error frame
  and a reset (:meth:`CoreStream.fail`), and counted against the peer (``penalize``);
* network errors (the peer vanished, the stream was reset) end the stream quietly;
* nothing escapes :func:`guarded` but cancellation: a handler task never crashes the
  node's nursery (a bug of ours is logged with its traceback and answered ``internal``).

Usage. A responder (the stream handler of a protocol)::

    from n3xus.node.p2p.streams import CoreStream, guarded, pump, serve

    async def handle_blocks(stream: INetStream) -> None:      # host.set_stream_handler
        await serve(stream, _blocks_session, peerbook=node.peerbook, protocol="blocks")

    async def _blocks_session(channel: CoreStream) -> None:   # runs only after admit()
        core = BlocksResponder(now=trio.current_time())
        while await pump(channel, core):                       # reads once, feeds the core
            while (event := core.next_event()) is not None:
                await channel.send(answer(event))
        await channel.close()                                  # the peer closed its side

``serve`` counts the stream (per-peer stream rate: over it, ``busy``), refuses it with
``unexpected-message`` unless the peer's hello completed (protocol-hello.md §2), and runs
the session under :func:`guarded`. An initiator opens the stream with ``host.new_stream``
and uses ``async with guarded(stream, peerbook=..., protocol=...) as channel:`` directly.

``pump`` works with any core that has ``deadline``, ``check_deadline(now)``,
``receive_data(data, now)`` and ``receive_eof()`` (the blocks cores); cores of another shape
(the hello exchange) call :meth:`CoreStream.receive` with their own deadline. Byte counts go
to ``peerbook.count_bytes`` as they happen, remote protocol errors to ``peerbook.penalize``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, Protocol

import trio
from libp2p.abc import INetStream

from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import (
    DeadlineExceeded,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from n3xus.protocol.framing import encode_error, error_frame_for

from .host import NETWORK_ERRORS

logger = logging.getLogger(__name__)

READ_CHUNK_BYTES: Final = 64 * 1024
"""Bytes asked of the stream per read: one Yamux window's worth; a core's buffer then holds
at most one frame plus one read (framing.FrameDecoder's rule)."""
WRITE_TIMEOUT_S: Final = 30.0
"""Longest a single write may block: 30 s moves 2 MiB at the slowest rate the frame
deadlines accept (64 KiB/s); a peer that stops reading (full Yamux window) is cut off."""
CLOSE_TIMEOUT_S: Final = 1.0
"""Closing sends a Yamux FIN or RST; a dead peer must not hold the task here."""
ERROR_LINGER_S: Final = 1.0
"""After an error frame, how long the stream stays half-open for the peer to read it."""
HELLO_WAIT_S: Final = 10.0
"""How long a ``require_hello`` stream waits for the connection's hello to complete (the
initiator may open a stream the moment it reads ``hello-accept``, before the responder's
side is marked; the hello itself must complete within HELLO_TIMEOUT_S)."""
IDLE_DEADLINE_S: Final = 60.0
"""Deadline of a read when the core has none (between requests on a long-lived stream)."""


class PeerObserver(Protocol):
    """What the runner reports to (the node's PeerBook satisfies it)."""

    def count_bytes(self, peer_id: str, sent: int = 0, received: int = 0) -> None: ...

    def penalize(self, peer_id: str, code: ErrorCode | str, weight: float = 1.0) -> None: ...

    def count_stream(self, peer_id: str, protocol: str) -> bool: ...

    async def wait_accepted(self, peer_id: str, timeout: float) -> bool: ...


class SansIOCore(Protocol):
    """The shape :func:`pump` drives (BlocksRequester, BlocksResponder)."""

    @property
    def deadline(self) -> float | None: ...

    def check_deadline(self, now: float) -> None: ...

    def receive_data(self, data: bytes, now: float) -> None: ...

    def receive_eof(self) -> None: ...


class StreamClosed(Exception):
    """The stream is gone (reset, closed, or the connection died): nothing more to do."""


def remote_peer_of(stream: INetStream) -> str:
    return str(stream.muxed_conn.peer_id)


class CoreStream:
    """A libp2p stream with bounded reads and writes, byte counting and clean failure."""

    def __init__(self, stream: INetStream, *, peerbook: PeerObserver | None = None,
                 protocol: str = "n3xus", read_bytes: int = READ_CHUNK_BYTES) -> None:
        self.stream = stream
        self.read_bytes = read_bytes  # bulk protocols (blocks) read larger pieces
        self.peer_id = remote_peer_of(stream)
        self.peerbook = peerbook
        self.protocol = protocol
        self.bytes_sent = 0
        self.bytes_received = 0
        self.finished = False
        self.error: ProtocolError | None = None

    async def receive(self, deadline: float | None) -> bytes:
        """Up to ``read_bytes`` bytes; b"" when the peer closed its side. Raises
        DeadlineExceeded when nothing came by ``deadline`` (None: :data:`IDLE_DEADLINE_S`
        from now) and StreamClosed when the stream is gone."""
        if deadline is None:
            deadline = trio.current_time() + IDLE_DEADLINE_S
        data = b""
        with trio.move_on_at(deadline) as scope:
            try:
                data = await self.stream.read(self.read_bytes)
            except EOFError:  # libp2p's StreamEOF derives from EOFError
                return b""
            except NETWORK_ERRORS as exc:
                raise StreamClosed(f"reading from {self.peer_id}: {exc}") from exc
        if scope.cancelled_caught:
            raise DeadlineExceeded(f"nothing from the peer on /n3xus/{self.protocol} before the "
                                   "stream's deadline")
        if data and self.peerbook is not None:
            self.peerbook.count_bytes(self.peer_id, received=len(data))
        self.bytes_received += len(data)
        return data

    async def send(self, data: bytes) -> None:
        """Write ``data`` (nothing for b""); StreamClosed if the peer is gone or too slow."""
        if not data:
            return
        with trio.move_on_after(WRITE_TIMEOUT_S) as scope:
            try:
                await self.stream.write(data)
            except NETWORK_ERRORS as exc:
                raise StreamClosed(f"writing to {self.peer_id}: {exc}") from exc
        if scope.cancelled_caught:
            if self.peerbook is not None:
                self.peerbook.penalize(self.peer_id, ErrorCode.TIMEOUT)
            await self.reset()
            raise StreamClosed(f"{self.peer_id} did not read {len(data)} bytes within "
                               f"{WRITE_TIMEOUT_S:.0f} s")
        if self.peerbook is not None:
            self.peerbook.count_bytes(self.peer_id, sent=len(data))
        self.bytes_sent += len(data)

    async def fail(self, error: ProtocolError, frame: bytes | None = None) -> None:
        """End the stream because of ``error``: send its error frame (``frame`` if the core
        already made it; nothing if the peer sent the error), then reset. A remote error
        counts against the peer."""
        self.error = error
        if isinstance(error, LocalProtocolError):
            logger.error("/n3xus/%s with %s: our bug: %s", self.protocol, self.peer_id, error)
        else:
            logger.info("/n3xus/%s with %s failed: %s", self.protocol, self.peer_id, error)
        payload = error_frame_for(error) if frame is None else frame
        if isinstance(error, LocalProtocolError):
            payload = encode_error(ErrorCode.INTERNAL, "internal error")
        if payload and not self.finished:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                try:
                    await self.stream.write(payload)
                    self.bytes_sent += len(payload)
                except NETWORK_ERRORS:
                    pass  # the peer is gone: the reset below is all that is left to do
            await self._linger()
        # Scored after the error frame went out: a penalty may ban the peer, and a ban
        # closes its connection. The peer's own error message (PeerError: send_error
        # false) is its refusal of us, not a fault of its own.
        if (isinstance(error, RemoteProtocolError) and getattr(error, "send_error", True)
                and self.peerbook is not None):
            self.peerbook.penalize(self.peer_id, error.code)
        await self.reset()

    async def _linger(self) -> None:
        """After an error frame: half-close and give the peer :data:`ERROR_LINGER_S` to
        read it and close its side (a reset right away may drop the frame in flight)."""
        close_write = getattr(self.stream, "close_write", self.stream.close)
        with trio.move_on_after(ERROR_LINGER_S):
            try:
                await close_write()
                while await self.stream.read(READ_CHUNK_BYTES):
                    pass  # whatever the peer still sends is discarded
            except NETWORK_ERRORS:
                pass  # closed or reset by the peer: it has what it needed

    async def reset(self) -> None:
        if self.finished:
            return
        self.finished = True
        await self._reset_now()

    async def _bounded(self, operation: Callable[[], Awaitable[None]], doing: str) -> bool:
        """Run a stream's close or reset shielded from cancellation and bounded by
        :data:`CLOSE_TIMEOUT_S`; a network error is the peer gone (logged). True if it
        timed out."""
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
            try:
                await operation()
            except NETWORK_ERRORS as exc:
                logger.debug("%s a stream of %s: %s", doing, self.peer_id, exc)
        return scope.cancelled_caught

    async def _reset_now(self) -> None:
        await self._bounded(self.stream.reset, "resetting")

    async def close(self) -> None:
        """Close after a completed exchange (FIN; bounded, shielded)."""
        if self.finished:
            return
        self.finished = True
        if await self._bounded(self.stream.close, "closing"):
            await self._reset_now()


async def pump(channel: CoreStream, core: SansIOCore) -> bool:
    """Read once (until the core's deadline) and feed the core. False when the peer closed
    its side (the core got ``receive_eof``). Raises what the core raises."""
    now = trio.current_time()
    core.check_deadline(now)
    try:
        data = await channel.receive(core.deadline)
    except DeadlineExceeded:
        core.check_deadline(trio.current_time())  # the core's own words if it has them
        raise
    if not data:
        core.receive_eof()
        return False
    core.receive_data(data, trio.current_time())
    return True


@asynccontextmanager
async def guarded(stream: INetStream, *, peerbook: PeerObserver | None = None,
                  protocol: str = "n3xus") -> AsyncIterator[CoreStream]:
    """A :class:`CoreStream` for the block; whatever the block raises ends here:
    ProtocolError -> error frame + reset (+ penalty), StreamClosed / network errors ->
    reset. A block that returns without closing leaves the stream closed too."""
    channel = CoreStream(stream, peerbook=peerbook, protocol=protocol)
    try:
        yield channel
    except ProtocolError as exc:
        await channel.fail(exc)
    except StreamClosed as exc:
        logger.debug("/n3xus/%s with %s: %s", protocol, channel.peer_id, exc)
        await channel.reset()
    except NETWORK_ERRORS as exc:
        logger.debug("/n3xus/%s with %s: network: %s", protocol, channel.peer_id, exc)
        await channel.reset()
    except Exception:  # noqa: BLE001 - the task boundary: a bug of ours must not kill the
        # connection's task (and with it every stream of the peer). Logged with its
        # traceback; the peer gets `internal`, not a hung stream.
        logger.exception("/n3xus/%s with %s: unexpected error", protocol, channel.peer_id)
        await channel.fail(LocalProtocolError("unexpected error in the handler"))
    finally:
        if not channel.finished:
            await channel.close()


async def admit(channel: CoreStream, *, require_hello: bool = True) -> bool:
    """For a stream the peer opened: count it, refuse it with ``busy`` when the peer opens
    streams faster than its rate, and (``require_hello``) with ``unexpected-message`` unless
    the peer's hello completed, waiting up to :data:`HELLO_WAIT_S` for one in progress
    (every ``/n3xus/`` protocol but the hello itself, protocol-hello.md §2). False: the
    stream was refused (and reset); do not serve it."""
    book = channel.peerbook
    if book is None:
        return True
    if not book.count_stream(channel.peer_id, channel.protocol):
        await channel.fail(RemoteProtocolError("too many streams per second", ErrorCode.BUSY))
        return False
    if require_hello and not await book.wait_accepted(channel.peer_id, HELLO_WAIT_S):
        await channel.fail(RemoteProtocolError(
            f"/n3xus/{channel.protocol} before a completed hello on this connection",
            ErrorCode.UNEXPECTED_MESSAGE))
        return False
    return True


async def serve(stream: INetStream, handler: Callable[[CoreStream], Awaitable[None]], *,
                peerbook: PeerObserver | None, protocol: str,
                require_hello: bool = True) -> None:
    """The whole responder side of a ``/n3xus/`` stream handler: :func:`guarded`, then
    :func:`admit`, then ``await handler(channel)``. Never raises (but Cancelled)."""
    async with guarded(stream, peerbook=peerbook, protocol=protocol) as channel:
        if await admit(channel, require_hello=require_hello):
            await handler(channel)
