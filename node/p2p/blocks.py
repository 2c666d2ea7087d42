"""``/n3xus/blocks/1.0.0`` on libp2p streams (specs/protocol-blocks.md): the serving side
(:class:`BlockServer`, blocks from the canon block store to any peer that passed the hello)
and the requesting side (:class:`BlockSession`, one stream to one peer).

The wire rules live in the sans-IO cores (:mod:`n3xus.protocol.blocks`); the stream I/O
rules (deadlines, error frames, resets, penalties) in :mod:`.streams`. What is here is the
node's policy:

* **Per-peer serving limits.** A peer may hold :data:`MAX_STREAMS_PER_PEER` blocks streams,
  :data:`MAX_PEER_OUTSTANDING_WANTS` unanswered wants across them (more is
  ``too-many-wants``: error, reset, penalty), :data:`MAX_SERVE_BYTES_IN_FLIGHT` of block bytes
  read from the store and not yet written to it, and is served at most
  ``MAX_BLOCKS_SERVED_PER_SECOND`` answers a second (a token bucket; over it the answers wait,
  so a peer that asks for the same blocks in a loop gets them at that rate and no faster).
  Wants arriving faster than that rate (beyond :data:`WANT_RATE_BURST`), or for blocks we do
  not have faster than :data:`MAX_DONT_HAVES_PER_SECOND`, are a flood: ``too-many-wants``.
* **Hello first.** A stream from a peer whose hello has not completed is refused
  (``unexpected-message``); so is a peer opening streams faster than the PeerBook's stream
  rate (``busy``): :func:`.streams.admit`.
* **Fairness.** Each stream is served by its own task and each answer batch is bounded
  (:data:`SERVE_BATCH_BYTES`), so a flooding peer waits on its own bucket while others' streams
  keep being served; faults end only the offender's stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Final, Protocol

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonError
from n3xus.protocol.blocks import (
    BLOCKS_PROTOCOL_ID,
    INITIAL_BLOCK_SIZE_ESTIMATE,
    MAX_BLOCKS_SERVED_PER_SECOND,
    MAX_BYTES_IN_FLIGHT,
    MAX_CIDS_PER_MESSAGE,
    MAX_OUTSTANDING_WANTS,
    MAX_PAYLOAD_BYTES,
    BlocksRequester,
    BlocksResponder,
    Cancel,
    Have,
    RequesterEvent,
)
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import DeadlineExceeded, ProtocolError, RemoteProtocolError
from n3xus.protocol.limits import TokenBucket

from . import host as p2p
from .streams import (
    HELLO_WAIT_S,
    CoreStream,
    PeerObserver,
    StreamClosed,
    admit,
    guarded,
    pump,
)

logger = logging.getLogger(__name__)

PROTOCOL: Final = TProtocol(BLOCKS_PROTOCOL_ID)

MAX_STREAMS_PER_PEER: Final = 8
"""Blocks streams one peer may have open to us at once: a fetch uses one per peer; eight
leave room for parallel fetches of different DAGs, and bound a peer's share of our tasks."""
MAX_PEER_OUTSTANDING_WANTS: Final = MAX_OUTSTANDING_WANTS
"""Unanswered wants one peer may hold across all its streams: one stream's worth
(4,096), so opening more streams does not buy a peer more of our memory."""
SERVE_BATCH_BYTES: Final = MAX_PAYLOAD_BYTES
"""Block bytes read from the store per answer batch: one payload frame (1 MiB)."""
MAX_SERVE_BYTES_IN_FLIGHT: Final = 4 * SERVE_BATCH_BYTES
"""Block bytes read for one peer and not yet written to it (across its streams): four
batches keep a fast link busy while what a peer that stops reading pins in our memory stays
at 4 MiB (its writes then time out: streams.WRITE_TIMEOUT_S)."""
SERVE_RATE_BURST: Final = MAX_OUTSTANDING_WANTS
"""Token bucket burst of the serving rate: one full window of wants is answered at once
(a lower rate gets a burst of one second's worth)."""
WANT_RATE_BURST: Final = 2 * MAX_PEER_OUTSTANDING_WANTS
"""Wants a peer may send ahead of the serving rate. An honest requester wants only as
answers arrive (at most the serving rate) plus its window of MAX_PEER_OUTSTANDING_WANTS, so
twice that never trips it; a peer that sends wants faster than they can be answered is
flooding: ``too-many-wants``, error and reset. (Decoding wants is what a want flood costs us:
this bounds it to the serving rate.)"""
MAX_DONT_HAVES_PER_SECOND: Final = 1000
"""``dont-have`` answers one peer may cost us per second. A requester asks peers that
announced or confirmed the DAG, so misses are the part of a DAG a peer lacks, once per CID; a
stream of wants for blocks we never had is a flood (each costs a decode and a lookup):
``too-many-wants``, plus :data:`WANT_FLOOD_PENALTY`."""
DONT_HAVE_BURST: Final = 2 * MAX_CIDS_PER_MESSAGE
"""Misses answered at once before the rate applies: two messages' worth."""
WANT_FLOOD_PENALTY: Final = 10.0
"""Weight of the ``flood`` penalty (2 points each, so 20) added to ``too-many-wants`` (10)
for a miss flood: with the malformed and oversized frames a flooder also tries, its second
round of abuse gets it banned."""
BULK_READ_BYTES: Final = MAX_PAYLOAD_BYTES
"""Bytes a requester asks of its stream per read: a whole payload frame (1 MiB) rather than
64 KiB, so a batch costs one read and one Yamux window update instead of sixteen."""
CONNECTION_LOSS_WAIT_S: Final = 1.0
"""After a stream ends inside a frame, how long to wait for its connection to close too
(a killed peer: the socket's end reaches the muxer a moment after the stream's)."""
WINDOW_SAMPLE_BLOCKS: Final = 16
"""Blocks a peer must have sent before its window follows their mean size."""
SERVE_RATE_ENV: Final = "N3XUS_TEST_BLOCKS_SERVE_RATE"
"""Test hook, not a setting: blocks served per second per peer instead of
MAX_BLOCKS_SERVED_PER_SECOND, so the CLI tests can catch a 50 MiB fetch mid-way (kill a
source, restart the fetcher) on a fast machine."""


class PeerScores(PeerObserver, Protocol):
    """What this module asks of the node's PeerBook (node/services/peers.py)."""

    def reward(self, peer_id: str, weight: float = 0.1) -> None: ...

    def is_accepted(self, peer_id: str) -> bool: ...


# --- serving ---------------------------------------------------------------------------


@dataclass
class ServedPeer:
    """Serving state and counters of one peer (across its streams)."""

    bucket: TokenBucket
    want_bucket: TokenBucket
    miss_bucket: TokenBucket
    bytes_budget: trio.Semaphore = field(
        default_factory=lambda: trio.Semaphore(MAX_SERVE_BYTES_IN_FLIGHT // SERVE_BATCH_BYTES))
    streams: int = 0
    wants: int = 0
    blocks_served: int = 0
    bytes_served: int = 0
    dont_haves: int = 0
    refused_streams: int = 0
    errors: int = 0
    rate_waits: int = 0

    def view(self) -> dict[str, int]:
        return {"streams": self.streams, "outstanding_wants": self.wants,
                "blocks_served": self.blocks_served, "bytes_served": self.bytes_served,
                "dont_haves": self.dont_haves, "refused_streams": self.refused_streams,
                "errors": self.errors, "rate_waits": self.rate_waits}


class BlockServer:
    """Answers ``/n3xus/blocks/1.0.0`` streams from ``store``. Register with
    :meth:`register` once the host runs; the handler tasks belong to libp2p's nursery and
    end with their streams."""

    def __init__(self, host: BasicHost, store: BlockStore, peerbook: PeerScores | None = None,
                 *, rate: float | None = None,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.host = host
        self.store = store
        self.peerbook = peerbook
        self.rate = rate if rate is not None else float(
            os.environ.get(SERVE_RATE_ENV, MAX_BLOCKS_SERVED_PER_SECOND))
        self._clock = clock
        self.peers: dict[str, ServedPeer] = {}

    def register(self) -> None:
        self.host.set_stream_handler(PROTOCOL, self.handle)

    def unregister(self) -> None:
        self.host.remove_stream_handler(PROTOCOL)

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {peer: state.view() for peer, state in self.peers.items()}

    def _peer(self, peer_id: str) -> ServedPeer:
        state = self.peers.get(peer_id)
        if state is None:
            now = self._clock()
            burst = max(1.0, min(float(SERVE_RATE_BURST), self.rate))
            state = self.peers[peer_id] = ServedPeer(
                TokenBucket(self.rate, burst, now),
                TokenBucket(self.rate, WANT_RATE_BURST, now),
                TokenBucket(MAX_DONT_HAVES_PER_SECOND, DONT_HAVE_BURST, now))
        return state

    async def handle(self, stream: INetStream) -> None:
        """The stream handler: admission (stream rate, hello first), the per-peer stream
        limit, then serving until the requester closes or breaks the protocol."""
        async with guarded(stream, peerbook=self.peerbook, protocol="blocks") as channel:
            state = self._peer(channel.peer_id)
            if not await admit(channel):
                state.refused_streams += 1
                return
            if state.streams >= MAX_STREAMS_PER_PEER:
                state.refused_streams += 1
                raise RemoteProtocolError(f"over {MAX_STREAMS_PER_PEER} blocks streams",
                                          ErrorCode.BUSY)
            state.streams += 1
            responder = BlocksResponder(self._clock())
            try:
                await self._serve(channel, responder, state)
            except ProtocolError:
                state.errors += 1
                raise
            finally:
                state.streams -= 1
                state.wants -= len(responder.pending)

    async def _serve(self, channel: CoreStream, responder: BlocksResponder,
                     state: ServedPeer) -> None:
        """Two tasks on one stream: one reads wants, one answers them. The first error of
        either ends both and is raised here, for :func:`guarded` to act on."""
        wake = trio.Event()
        ended = False
        error: Exception | None = None

        async def read_wants() -> None:
            nonlocal wake, ended
            try:
                while True:
                    try:
                        more = await pump(channel, responder)
                    except DeadlineExceeded:
                        if responder.pending:
                            raise
                        return  # idle for IDLE_TIMEOUT_S: close, no fault (rule of §6)
                    # Wants are answered from responder.pending, in arrival order; the
                    # events only tell how many were added or withdrawn.
                    while (event := responder.next_event()) is not None:
                        change = len(event.cids)
                        if isinstance(event, Cancel):
                            state.wants -= change
                            continue
                        state.wants += change
                        if state.want_bucket.take(change, self._clock()) > 0:
                            raise RemoteProtocolError(
                                f"wants faster than {self.rate:.0f} a second can be served",
                                ErrorCode.TOO_MANY_WANTS)
                    if state.wants > MAX_PEER_OUTSTANDING_WANTS:
                        raise RemoteProtocolError(
                            f"over {MAX_PEER_OUTSTANDING_WANTS} outstanding wants across "
                            "streams", ErrorCode.TOO_MANY_WANTS)
                    wake.set()
                    if not more:
                        return
            finally:
                ended = True
                wake.set()

        async def answer() -> None:
            nonlocal wake
            while True:
                if not responder.pending:
                    if ended:
                        return
                    await wake.wait()
                    wake = trio.Event()
                    continue
                await self._answer_batch(channel, responder, state)

        async def first_error(task: Callable[[], Awaitable[None]],
                              scope: trio.CancelScope) -> None:
            nonlocal error
            try:
                await task()
            except (ProtocolError, StreamClosed) as exc:
                error = error or exc
                scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_error, answer, nursery.cancel_scope)
            # When the requester closes its side, what is pending is still answered.
            await first_error(read_wants, nursery.cancel_scope)
        if error is not None:
            raise error
        await channel.close()

    async def _answer_batch(self, channel: CoreStream, responder: BlocksResponder,
                            state: ServedPeer) -> None:
        batch: list[tuple[CID, str]] = list(islice(responder.pending.items(),
                                                   MAX_CIDS_PER_MESSAGE))
        async with state.bytes_budget:
            found: list[tuple[CID, bytes]] = []
            haves: list[CID] = []
            missing: list[CID] = []
            size = 0
            count = 0
            for cid, mode in batch:
                if size >= SERVE_BATCH_BYTES:
                    break
                wait = state.bucket.take(1, self._clock())
                if wait > 0:
                    if count:
                        break  # send what we have; the next batch waits for tokens
                    state.rate_waits += 1
                    await trio.sleep(wait)
                    state.bucket.take(1, self._clock())
                count += 1
                data = self._read(cid) if mode == "block" else None
                if mode == "have":
                    (haves if self.store.has(cid) else missing).append(cid)
                elif data is None:
                    missing.append(cid)
                else:
                    if found and size + len(data) > SERVE_BATCH_BYTES:
                        count -= 1
                        break
                    found.append((cid, data))
                    size += len(data)
            if missing and state.miss_bucket.take(len(missing), self._clock()) > 0:
                if self.peerbook is not None:  # on top of too-many-wants: a deliberate flood
                    self.peerbook.penalize(channel.peer_id, "flood", WANT_FLOOD_PENALTY)
                raise RemoteProtocolError(
                    f"wants for blocks this node does not have, over {MAX_DONT_HAVES_PER_SECOND}"
                    " a second: a want flood", ErrorCode.TOO_MANY_WANTS)
            before = len(responder.pending)
            frames = (responder.send_blocks(found, self._clock()) + responder.send_have(haves)
                      + responder.send_dont_have(missing))
            state.wants -= before - len(responder.pending)
            state.blocks_served += len(found)
            state.bytes_served += size
            state.dont_haves += len(missing)
            await channel.send(frames)

    def _read(self, cid: CID) -> bytes | None:
        try:
            return self.store.get(cid)
        except CanonError:  # not stored, or corrupt (the store recorded it): dont-have
            return None


# --- requesting --------------------------------------------------------------------------


class SessionFailed(Exception):
    """A blocks session with a peer ended before its work was done (``reason`` says why;
    ``code`` is the protocol error code when the peer broke the protocol)."""

    def __init__(self, reason: str, code: ErrorCode | None = None) -> None:
        super().__init__(reason)
        self.code = code


class BlockSession:
    """Our requesting end of one blocks stream to one peer.

    Usage (in a nursery)::

        async with await BlockSession.open(host, peer_id, peerbook) as session:
            await session.want(cids)
            async for events in session.answers():   # lists of verified events
                ...

    Every block is verified against its CID by the core before it is reported; a peer that
    breaks the protocol (a mismatching block, an unwanted answer, garbage) gets an error
    frame and a reset, is penalized, and :meth:`answers` raises :class:`SessionFailed`.
    """

    def __init__(self, channel: CoreStream, peerbook: PeerScores | None) -> None:
        self.channel = channel
        self.peer_id = channel.peer_id
        self.peerbook = peerbook
        self.requester = BlocksRequester(trio.current_time())
        self.mismatches = 0
        self.failure: SessionFailed | None = None
        self._write_lock = trio.Lock()

    @classmethod
    async def open(cls, host: BasicHost, peer_id: str,
                   peerbook: PeerScores | None = None) -> BlockSession:
        if peerbook is not None and not await peerbook.wait_accepted(peer_id, HELLO_WAIT_S):
            raise SessionFailed(f"{peer_id} has not completed the hello")
        try:
            stream = await host.new_stream(p2p.parse_peer_id(peer_id), [PROTOCOL])
        except p2p.NETWORK_ERRORS as exc:
            raise SessionFailed(f"cannot open a blocks stream to {peer_id}: {exc}") from exc
        return cls(CoreStream(stream, peerbook=peerbook, protocol="blocks",
                              read_bytes=BULK_READ_BYTES), peerbook)

    async def __aenter__(self) -> BlockSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def limit(self) -> int:
        """Wants this peer may have open: MAX_BYTES_IN_FLIGHT over the mean size of its
        blocks, once WINDOW_SAMPLE_BLOCKS have arrived (before, the default chunk size is
        assumed: a DAG's first blocks are its small interior nodes, and their mean would
        hand one peer the whole DAG before any other peer joined)."""
        received = self.requester.blocks_received
        mean = (self.requester.block_bytes_received // received
                if received >= WINDOW_SAMPLE_BLOCKS else INITIAL_BLOCK_SIZE_ESTIMATE)
        return min(MAX_OUTSTANDING_WANTS, max(1, MAX_BYTES_IN_FLIGHT // max(mean, 1)))

    async def want(self, cids: Sequence[CID], *, have_only: bool = False) -> None:
        if not cids:
            return
        async with self._write_lock:
            frames = self.requester.want(cids, have_only=have_only, now=trio.current_time())
            try:
                await self.channel.send(frames)
            except StreamClosed as exc:
                raise SessionFailed(str(exc)) from exc

    async def cancel(self, cids: Sequence[CID]) -> None:
        async with self._write_lock:
            frames = self.requester.cancel(cids)
            try:
                await self.channel.send(frames)
            except StreamClosed as exc:
                raise SessionFailed(str(exc)) from exc

    async def next_answers(self) -> list[RequesterEvent]:
        """The next verified answers (at least one); [] when the peer closed the stream
        cleanly. Raises SessionFailed when the session is over for a reason."""
        events: list[RequesterEvent] = []
        while not events:
            try:
                if not await pump(self.channel, self.requester):
                    return []
            except RemoteProtocolError as exc:
                if exc.code == ErrorCode.BLOCK_MISMATCH:
                    self.mismatches += 1
                if exc.code == ErrorCode.TRUNCATED and await self._connection_lost():
                    # The peer's process or link died mid-frame: gone, not misbehaving.
                    self.failure = SessionFailed(f"connection to {self.peer_id} lost: {exc}")
                    await self.channel.reset()
                    raise self.failure from exc
                await self.channel.fail(exc)  # error frame, reset, penalty
                self.failure = SessionFailed(str(exc), exc.code)
                raise self.failure from exc
            except StreamClosed as exc:
                self.failure = SessionFailed(f"stream to {self.peer_id} closed: {exc}")
                raise self.failure from exc
            while (event := self.requester.next_event()) is not None:
                events.append(event)
        return events

    async def _connection_lost(self) -> bool:
        """Whether the stream's whole connection closes (within CONNECTION_LOSS_WAIT_S):
        what a truncated frame means when the peer was killed, not what it sent."""
        closed = getattr(self.channel.stream.muxed_conn, "event_closed", None)
        if not isinstance(closed, trio.Event):
            return False
        with trio.move_on_after(CONNECTION_LOSS_WAIT_S):
            await closed.wait()
        return closed.is_set()

    async def close(self) -> None:
        await self.channel.close()

    async def reset(self) -> None:
        await self.channel.reset()


async def ask_have(host: BasicHost, peer_ids: Sequence[str], cid: CID,
                   peerbook: PeerScores | None = None, timeout: float = 5.0) -> list[str]:
    """Which of ``peer_ids`` say they have ``cid`` (a ``want-have`` to each, concurrently,
    within ``timeout``): how a node asks its peers who has a CID."""
    found: list[str] = []

    async def ask(peer_id: str) -> None:
        with trio.move_on_after(timeout):
            try:
                session = await BlockSession.open(host, peer_id, peerbook)
            except SessionFailed as exc:
                logger.debug("want-have to %s: %s", peer_id, exc)
                return
            try:
                await session.want([cid], have_only=True)
                if any(isinstance(event, Have) for event in await session.next_answers()):
                    found.append(peer_id)
            except SessionFailed as exc:
                logger.debug("want-have to %s: %s", peer_id, exc)
            finally:
                await session.close()

    async with trio.open_nursery() as nursery:
        for peer_id in peer_ids:
            nursery.start_soon(ask, peer_id)
    return found
