"""``/n3xus/ledger-sync/1.0.0``: anti-entropy between two nodes over one libp2p stream
(specs/protocol-ledger-sync.md), and the node's periodic loop that runs it.

The messages are those of specs/ledger.md §14.1 (``digest``, ``summary``, ``pull``,
``chain``) in the common framing of specs/protocol.md: each is one varint frame whose body
is the canonical DAG-CBOR map of the §14.1 message with its ``t`` key named ``type``.
Gossip travels on gossipsub instead (``/n3xus/ledger/<network>``, see
``node/services/ledger_federation.py``).

One exchange per stream; the opener is the *initiator*::

    initiator                          responder
    digest               ------->
                         <-------      summary       (or: closes its side = in sync)
    chain (push) ...     ------->                    (ingested, never answered)
    pull ...             ------->
                         <-------      chain         (one per pull, in order)
    (closes its side)    ------->
                         <-------      (closes its side)

:class:`SyncSession` is the sans-IO state machine of either side (the transition table
:data:`TRANSITIONS` is data, shared with the spec's table); :class:`LedgerSyncService` runs
it on streams and, every :data:`ANTI_ENTROPY_INTERVAL_S`, opens one to a random peer whose
hello lists the protocol. What to answer and what to pull is decided by the ledger's sync
core (``protocol/sync/ledger.py``) behind :class:`SyncBackend`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, Final, Protocol

import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost

from n3xus.canon.codec import encode
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import LocalProtocolError, MessageError, RemoteProtocolError
from n3xus.protocol.framing import FrameDecoder, decode_message, encode_frame
from n3xus.protocol.sync.messages import (
    MAX_ENTRIES,
    MAX_ENTRY_BYTES,
    MAX_SUMMARY_ROWS,
    Chain,
    Digest,
    Message,
    Pull,
    Summary,
    from_value,
    to_value,
)

from .host import NETWORK_ERRORS
from .streams import CoreStream, guarded, serve

logger = logging.getLogger(__name__)

PROTOCOL_ID: Final = TProtocol("/n3xus/ledger-sync/1.0.0")
MAX_FRAME_BYTES: Final = MAX_ENTRIES * (MAX_ENTRY_BYTES + 8) + 4096
"""The largest message: a chain of 64 entries of the largest entry size (a fraud proof),
with their CBOR headers; a full summary (4096 rows of ~90 bytes) is smaller."""
ANTI_ENTROPY_INTERVAL_S: Final = 1.0
"""One exchange with a random peer per second (specs/ledger.md §14.3's reference)."""
MAX_PULLS_IN_FLIGHT: Final = 16
"""Pulls sent ahead of their answers: keeps the stream busy across round trips (16 chains of
64 entries) without letting one session hold more than ~16 MiB of answers in flight."""
MAX_PULLS_PER_SESSION: Final = 8192
"""Pulls planned from one summary: 4096 accounts x 2 chunks, or fewer accounts further
behind (a chunk is 64 entries). What is left is found by the next round's digest."""
MAX_BUFFERED_ENTRIES: Final = 200_000
"""Pulled entries kept before they are ingested: a catch-up is ingested in few large
batches sorted by canonical order (each batch that sorts before processed entries makes the
ledger replay them), bounded to ~64 MiB of 300-byte transactions."""
SESSION_IDLE_S: Final = 30.0
"""Longest wait for the peer's next message in an exchange."""
CONNECT_TIMEOUT_S: Final = 10.0


class Role:
    INITIATOR = "initiator"
    RESPONDER = "responder"


EOF: Final = "eof"
TRANSITIONS: Final[dict[tuple[str, str], dict[str, str]]] = {
    (Role.INITIATOR, "awaiting-summary"): {"summary": "reconciling", EOF: "done"},
    (Role.INITIATOR, "reconciling"): {"chain": "reconciling", EOF: "done"},
    (Role.RESPONDER, "awaiting-digest"): {"digest": "serving"},
    (Role.RESPONDER, "serving"): {"pull": "serving", "chain": "serving", EOF: "done"},
}
"""(role, state) -> {received message type or "eof": next state}. Anything else received is
``unexpected-message``; a message type the protocol does not define is ``unsupported``.
Also checked: an initiator's ``chain`` answers a pull it sent, and its ``eof`` comes with no
pull unanswered (else ``truncated``)."""
INITIAL: Final = {Role.INITIATOR: "awaiting-summary", Role.RESPONDER: "awaiting-digest"}
_FIELDS: Final = {"digest": ("b",), "summary": ("b", "a"), "pull": ("a", "s"), "chain": ("a", "e")}


# --- wire ---------------------------------------------------------------------------------


def encode_sync(message: Message) -> bytes:
    """One frame: the §14.1 map of ``message`` with ``t`` renamed ``type``."""
    value = to_value(message)
    kind = value.pop("t")
    if kind == "gossip":
        raise LocalProtocolError("gossip travels on gossipsub, not on ledger-sync streams")
    return encode_frame(encode({"type": kind, **value}), MAX_FRAME_BYTES)


def decode_sync(body: bytes) -> Message:
    """A frame body to a message. Fields this version does not know are ignored (a later
    minor version may add some); the known ones are checked strictly (§14.1).
    MessageError/FrameError (ValueErrors) on anything else; PeerError for ``error``."""
    value = decode_message(body)
    kind = value["type"]
    fields = _FIELDS.get(kind)
    if fields is None:
        raise MessageError(f"ledger-sync has no {kind[:64]!r} message", ErrorCode.UNSUPPORTED)
    missing = [name for name in fields if name not in value]
    if missing:
        raise MessageError(f"a {kind} message lacks {missing}")
    return from_value({"t": kind, **{name: value[name] for name in fields}})


def kind_of(message: Message) -> str:
    return str(to_value(message)["t"])


# --- the sans-IO session ------------------------------------------------------------------


class SyncSession:
    """One side of one exchange: frames in, checked messages out."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.state = INITIAL[role]
        self._frames = FrameDecoder(MAX_FRAME_BYTES)
        self.pulls_outstanding = 0

    @property
    def deadline(self) -> float | None:
        return self._frames.deadline

    def check_deadline(self, now: float) -> None:
        self._frames.check_deadline(now)

    def receive_data(self, data: bytes, now: float) -> None:
        self._frames.receive_data(data, now)

    def receive_eof(self) -> None:
        self._frames.receive_eof()

    def next_event(self) -> Message | str | None:
        """The next received message (checked against the table), :data:`EOF` once the
        peer closed its side, or None when more bytes are needed."""
        if self.state == "done":
            return None
        body = self._frames.next_frame()
        if body is None:
            if not self._frames.at_end:
                return None
            self._advance(EOF)
            return EOF
        message = decode_sync(body)
        self._advance(kind_of(message))
        return message

    def _advance(self, event: str) -> None:
        allowed = TRANSITIONS.get((self.role, self.state), {})
        if event not in allowed:
            raise RemoteProtocolError(f"{event} is not expected by the {self.role} in state "
                                      f"{self.state}", ErrorCode.UNEXPECTED_MESSAGE)
        if self.role == Role.INITIATOR and event == "chain":
            if self.pulls_outstanding == 0:
                raise RemoteProtocolError("a chain that answers no pull",
                                          ErrorCode.UNEXPECTED_MESSAGE)
            self.pulls_outstanding -= 1
        if self.role == Role.INITIATOR and event == EOF and self.pulls_outstanding:
            raise RemoteProtocolError(f"the exchange ended with {self.pulls_outstanding} pulls "
                                      "unanswered", ErrorCode.TRUNCATED)
        self.state = allowed[event]

    def sent(self, message: Message) -> None:
        """Record a message this side sent (pulls are counted for their answers)."""
        if isinstance(message, Pull):
            if self.role != Role.INITIATOR:
                raise LocalProtocolError("only the initiator pulls")
            self.pulls_outstanding += 1


def plan_pulls(sends: Sequence[Message], theirs: Summary) -> list[Message]:
    """The sync core's answer to a summary, with each pull from an account whose peer chain
    is more than one chunk ahead extended by pulls of the following chunks (below the peer's
    freeze there is one transaction per seq, so chunk k starts at ``s + 64k``): the whole
    difference is fetched in one exchange, pipelined. Pushes (chains) first."""
    rows = {row.account: row for row in theirs.rows}
    pushes = [m for m in sends if isinstance(m, Chain)]
    pulls: list[Message] = []
    for message in sends:
        if not isinstance(message, Pull):
            continue
        pulls.append(message)
        row = rows.get(message.account)
        if row is None or row.freeze is not None:
            continue
        seq = message.from_seq + MAX_ENTRIES
        while seq < row.next_seq and len(pulls) < MAX_PULLS_PER_SESSION:
            pulls.append(Pull(message.account, seq))
            seq += MAX_ENTRIES
    return [*pushes, *pulls[:MAX_PULLS_PER_SESSION]]


# --- the node side ------------------------------------------------------------------------


class SyncBackend(Protocol):
    """The ledger side of an exchange (``LedgerFederation`` implements it)."""

    async def digest(self) -> Digest: ...
    async def on_digest(self, peer: str, message: Digest) -> Summary | None: ...
    async def on_summary(self, peer: str, message: Summary) -> list[Message]: ...
    async def on_pull(self, peer: str, message: Pull) -> Chain: ...
    async def ingest_pulled(self, peer: str, entries: list[bytes]) -> None: ...


class LedgerSyncService:
    """Serves ``/n3xus/ledger-sync/1.0.0`` and runs anti-entropy with random peers."""

    def __init__(self, host: BasicHost, backend: SyncBackend, peerbook: Any = None, *,
                 interval_s: float = ANTI_ENTROPY_INTERVAL_S) -> None:
        self.host = host
        self.backend = backend
        self.peerbook = peerbook
        self.interval_s = interval_s
        self.rng = random.Random()
        self.counters = {"sessions": 0, "in_sync": 0, "failed": 0, "served": 0,
                         "pulled": 0, "pushed": 0}

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
        session = SyncSession(Role.INITIATOR)
        digest = await self.backend.digest()
        await channel.send(encode_sync(digest))
        event = await _next(channel, session)
        if event == EOF:
            self.counters["in_sync"] += 1
            await channel.close()
            return
        assert isinstance(event, Summary)
        plan = plan_pulls(await self.backend.on_summary(channel.peer_id, event), event)
        pulls = [m for m in plan if isinstance(m, Pull)]
        for message in plan:
            if isinstance(message, Chain):
                await channel.send(encode_sync(message))
                self.counters["pushed"] += len(message.entries)
        buffered: list[bytes] = []
        sent = 0
        while sent < len(pulls) or session.pulls_outstanding:
            while sent < len(pulls) and session.pulls_outstanding < MAX_PULLS_IN_FLIGHT:
                session.sent(pulls[sent])
                await channel.send(encode_sync(pulls[sent]))
                sent += 1
            answer = await _next(channel, session)
            assert isinstance(answer, Chain)
            buffered += answer.entries
            self.counters["pulled"] += len(answer.entries)
            if len(buffered) >= MAX_BUFFERED_ENTRIES:
                await self.backend.ingest_pulled(channel.peer_id, buffered)
                buffered = []
        if buffered:
            await self.backend.ingest_pulled(channel.peer_id, buffered)
        await channel.close()

    # -- responder ---------------------------------------------------------------------
    async def _handle(self, stream: INetStream) -> None:
        await serve(stream, self._respond, peerbook=self.peerbook, protocol="ledger-sync")

    async def _respond(self, channel: CoreStream) -> None:
        session = SyncSession(Role.RESPONDER)
        self.counters["served"] += 1
        pushed: list[bytes] = []
        while True:
            event = await _next(channel, session)
            if event == EOF:
                break
            if isinstance(event, Digest):
                summary = await self.backend.on_digest(channel.peer_id, event)
                if summary is None:
                    await channel.close()  # in sync: our side ends at once
                    return
                await channel.send(encode_sync(summary))
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


__all__ = ["MAX_SUMMARY_ROWS", "PROTOCOL_ID", "TRANSITIONS", "LedgerSyncService", "SyncSession",
           "decode_sync", "encode_sync", "plan_pulls"]
