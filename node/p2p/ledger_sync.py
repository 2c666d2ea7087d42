"""``/n3xus/ledger-sync/2.0.0``: anti-entropy between two nodes over one libp2p stream
(specs/protocol-ledger-sync.md), and the node's periodic loop that runs it.

The frames, the state machine of either side and the exchange's budgets are sans-IO, in
``protocol/sync/session.py``; what to answer and what to pull is decided by the ledger's
sync core (``protocol/sync/ledger.py``, range reconciliation in ``protocol/sync/ranges.py``)
behind :class:`SyncBackend`. One exchange per stream; the opener is the *initiator*::

    initiator                          responder
    query (root)         ------->
                         <-------      summary       (empty: in sync)
    query (sub-ranges) / pull ...  ->                (at most 16 unanswered, pipelined)
                         <-------      summary / chain   (one per request, in order)
    chain (push) ...     ------->                    (only while nothing is unanswered)
    (closes its side)    ------->
                         <-------      (closes its side)

:class:`LedgerSyncService` runs sessions on streams and, every
:data:`ANTI_ENTROPY_INTERVAL_S`, opens one to a random peer whose hello lists the protocol.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Any, Final, Protocol

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import RemoteProtocolError
from n3xus.protocol.sync.messages import (
    MAX_PUSHES_PER_SUMMARY,
    Chain,
    Message,
    Pull,
    Query,
    Summary,
)
from n3xus.protocol.sync.session import (
    EOF,
    MAX_EXCHANGES_PER_PEER,
    MAX_PULLS_PER_EXCHANGE,
    MAX_PUSHES_PER_EXCHANGE,
    MAX_RANGES_PER_EXCHANGE,
    MAX_REQUESTS_IN_FLIGHT,
    Role,
    SyncSession,
    encode_sync,
    peer_next_seqs,
    plan_pulls,
)
from n3xus.protocol.sync.session import PROTOCOL_ID as _PROTOCOL_ID

from .host import NETWORK_ERRORS
from .streams import CoreStream, guarded, serve

logger = logging.getLogger(__name__)

PROTOCOL_ID: Final = TProtocol(_PROTOCOL_ID)
ANTI_ENTROPY_INTERVAL_S: Final = 1.0
"""One exchange with a random peer per second (specs/ledger.md §14.3's reference)."""
MAX_BUFFERED_ENTRIES: Final = 200_000
"""Pulled entries kept before they are ingested: a catch-up is ingested in few large
batches sorted by canonical order (each batch that sorts before processed entries makes the
ledger replay them), bounded to ~64 MiB of 300-byte transactions."""
MAX_HELD_PUSHES: Final = 64
"""Chains held before an initiator stops sending requests, lets the answers in flight
arrive, and pushes them: pushes go only while nothing is unanswered, so neither side can
block writing to a peer that is itself blocked writing. One summary may add up to
MAX_PUSHES_PER_SUMMARY chains at once (typically ~20 KB each: 64 transfers), sent before
the next request."""
SESSION_IDLE_S: Final = 30.0
"""Longest wait for the peer's next message in an exchange."""
CONNECT_TIMEOUT_S: Final = 10.0


class SyncBackend(Protocol):
    """The ledger side of an exchange (``LedgerFederation`` implements it)."""

    async def root_query(self) -> Query: ...
    async def on_query(self, peer: str, message: Query) -> Summary: ...
    async def on_summary(self, peer: str, message: Summary, max_pushes: int) -> list[Message]: ...
    async def on_pull(self, peer: str, message: Pull) -> Chain: ...
    async def ingest_pulled(self, peer: str, entries: list[bytes]) -> None: ...


class LedgerSyncService:
    """Serves ``/n3xus/ledger-sync/2.0.0`` and runs anti-entropy with random peers."""

    def __init__(self, host: BasicHost, backend: SyncBackend, peerbook: Any = None, *,
                 interval_s: float = ANTI_ENTROPY_INTERVAL_S) -> None:
        self.host = host
        self.backend = backend
        self.peerbook = peerbook
        self.interval_s = interval_s
        self.rng = random.Random()
        self.counters = {"sessions": 0, "failed": 0, "served": 0, "refused": 0,
                         "summaries": 0, "pulled": 0, "pushed": 0}
        self._serving: dict[str, int] = {}

    def register(self) -> None:
        self.host.set_stream_handler(PROTOCOL_ID, self._handle)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Every ``interval_s``: one exchange with a random peer (in turn, never two at
        once: a catch-up is one long exchange)."""
        task_status.started(self)
        while True:
            await trio.sleep(self.interval_s)
            peers = self.sync_peers()
            if peers:
                await self.sync_with(self.rng.choice(peers))

    def sync_peers(self) -> list[str]:
        """Connected peers with a completed hello listing this protocol."""
        found = []
        for peer_id, connections in list(self.host.get_network().connections.items()):
            peer = str(peer_id)
            if not any(not c.is_closed for c in connections):
                continue
            if self.peerbook is None:
                found.append(peer)
                continue
            hello = self.peerbook.peer_hello(peer) if self.peerbook.is_accepted(peer) else None
            if hello is not None and PROTOCOL_ID in hello.hello.protocols:
                found.append(peer)
        return sorted(found)

    # -- initiator ---------------------------------------------------------------------
    async def sync_with(self, peer: str) -> bool:
        """One exchange with ``peer``; False if it failed (logged, scored)."""
        from .host import parse_peer_id

        self.counters["sessions"] += 1
        with trio.move_on_after(CONNECT_TIMEOUT_S) as opening:
            try:
                stream = await self.host.new_stream(parse_peer_id(peer), [PROTOCOL_ID])
            except NETWORK_ERRORS as exc:
                logger.debug("no ledger-sync stream to %s: %s", peer, exc)
                self.counters["failed"] += 1
                return False
        if opening.cancelled_caught:
            self.counters["failed"] += 1
            return False
        done = False
        async with guarded(stream, peerbook=self.peerbook, protocol="ledger-sync") as channel:
            await self._initiate(channel)
            done = True
        if not done or channel.error is not None:
            self.counters["failed"] += 1
        return done and channel.error is None

    async def _initiate(self, channel: CoreStream) -> None:
        """Descend the ranges that differ (queries), fetch (pulls) and hand over (pushes)
        what the summaries show, within the exchange's budgets; requests pipelined."""
        session = SyncSession(Role.INITIATOR)
        queries: deque[Query] = deque([await self.backend.root_query()])
        pulls: deque[Pull] = deque()
        pushes: list[Chain] = []
        buffered: list[bytes] = []
        while True:
            if pushes and not session.outstanding:
                for chain in pushes:
                    session.sent(chain)
                    await channel.send(encode_sync(chain))
                    self.counters["pushed"] += len(chain.entries)
                pushes = []
            while session.outstanding < MAX_REQUESTS_IN_FLIGHT and len(pushes) < MAX_HELD_PUSHES:
                request: Query | Pull
                if queries:  # the descent first: each answer may unlock more work
                    request = queries.popleft()
                elif pulls:
                    request = pulls.popleft()
                else:
                    break
                session.sent(request)
                await channel.send(encode_sync(request))
            if not session.outstanding:
                if pushes:
                    continue
                break
            answer = await _next(channel, session)
            if isinstance(answer, Chain):
                buffered += answer.entries
                self.counters["pulled"] += len(answer.entries)
                if len(buffered) >= MAX_BUFFERED_ENTRIES:
                    await self.backend.ingest_pulled(channel.peer_id, buffered)
                    buffered = []
                continue
            assert isinstance(answer, Summary)
            self.counters["summaries"] += 1
            pushes_left = MAX_PUSHES_PER_EXCHANGE - session.used["pushes"] - len(pushes)
            found = await self.backend.on_summary(channel.peer_id, answer,
                                                  min(pushes_left, MAX_PUSHES_PER_SUMMARY))
            pulls_left = MAX_PULLS_PER_EXCHANGE - session.used["pulls"] - len(pulls)
            pulls += plan_pulls([m for m in found if isinstance(m, Pull)],
                                peer_next_seqs(answer), pulls_left)
            pushes += [m for m in found if isinstance(m, Chain)]
            ranges_left = MAX_RANGES_PER_EXCHANGE - session.used["ranges"] \
                - sum(len(q.ranges) for q in queries)
            for query in (m for m in found if isinstance(m, Query)):
                # Descend no further once the pulls are spent: what it would find waits
                # for the next exchange anyway.
                if len(query.ranges) <= ranges_left and session.used["pulls"] + len(pulls) \
                        < MAX_PULLS_PER_EXCHANGE:
                    queries.append(query)
                    ranges_left -= len(query.ranges)
        if buffered:
            await self.backend.ingest_pulled(channel.peer_id, buffered)
        await channel.close()

    # -- responder ---------------------------------------------------------------------
    async def _handle(self, stream: INetStream) -> None:
        await serve(stream, self._respond, peerbook=self.peerbook, protocol="ledger-sync")

    async def _respond(self, channel: CoreStream) -> None:
        peer = channel.peer_id
        if self._serving.get(peer, 0) >= MAX_EXCHANGES_PER_PEER:
            self.counters["refused"] += 1
            raise RemoteProtocolError(f"over {MAX_EXCHANGES_PER_PEER} ledger-sync exchange at "
                                      "once", ErrorCode.BUSY)
        self._serving[peer] = self._serving.get(peer, 0) + 1
        try:
            await self._serve(channel)
        finally:
            self._serving[peer] -= 1
            if not self._serving[peer]:
                del self._serving[peer]

    async def _serve(self, channel: CoreStream) -> None:
        session = SyncSession(Role.RESPONDER)
        self.counters["served"] += 1
        pushed: list[bytes] = []
        while True:
            event = await _next(channel, session)
            if event == EOF:
                break
            if isinstance(event, Query):
                await channel.send(encode_sync(await self.backend.on_query(channel.peer_id, event)))
            elif isinstance(event, Pull):
                await channel.send(encode_sync(await self.backend.on_pull(channel.peer_id, event)))
            elif isinstance(event, Chain):
                pushed += event.entries
                if len(pushed) >= MAX_BUFFERED_ENTRIES:
                    await self.backend.ingest_pulled(channel.peer_id, pushed)
                    pushed = []
        if pushed:
            await self.backend.ingest_pulled(channel.peer_id, pushed)
        await channel.close()


async def _next(channel: CoreStream, session: SyncSession) -> Message | str:
    """The session's next event, reading as needed (idle deadline :data:`SESSION_IDLE_S`)."""
    while True:
        event = session.next_event()
        if event is not None:
            return event
        session.check_deadline(trio.current_time())
        deadline = session.deadline or trio.current_time() + SESSION_IDLE_S
        data = await channel.receive(deadline)
        if data:
            session.receive_data(data, trio.current_time())
        else:
            session.receive_eof()


__all__ = ["PROTOCOL_ID", "LedgerSyncService", "SyncBackend"]
