"""The PeerBook: what the node knows about each peer, and how much it trusts it.

Per peer: the verified hello (or the refusal, with its code and reason), a score, traffic
counters (bytes, streams per protocol and their rate), and the ban state, which lives in the
connection gate (:class:`~n3xus.node.p2p.limits.ConnectionGate`, so a banned peer is refused
at the connection level in and out).

Scoring. Every peer starts at 0. Protocol faults subtract a weight per error code
(:data:`PENALTY_WEIGHTS`, times the caller's ``weight``); good exchanges add a little
(:meth:`PeerBook.reward`, capped at :data:`MAX_SCORE`). The score decays toward 0 with a
half-life of :data:`SCORE_HALF_LIFE_S`, so old faults are forgiven and old merit expires. At
or below :data:`BAN_THRESHOLD` the peer is banned for ``ban_seconds`` and disconnected.

Anyone may call it, synchronously and from any task (helper modules call ``penalize`` for
block mismatches, the stream runner for protocol errors). Disconnecting needs the host, so
bans are queued and carried out by :meth:`PeerBook.run`, a task in the node's nursery.

Interface (stable; other modules call it)::

    book.penalize(peer_id, ErrorCode.BLOCK_MISMATCH)        # or a text label: "flood"
    book.reward(peer_id)                                     # a useful exchange
    book.score(peer_id) -> float
    book.count_bytes(peer_id, sent=0, received=0)
    book.is_accepted(peer_id) -> bool                        # hello completed (and not banned)
    await book.wait_accepted(peer_id, timeout) -> bool       # ... or wait for the one under way
    book.count_stream(peer_id, protocol) -> bool             # False: over the stream rate
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio

from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.limits import TokenBucket

if TYPE_CHECKING:
    from n3xus.protocol.hello import PeerHello

    from ..p2p.limits import ConnectionGate

logger = logging.getLogger(__name__)

BAN_THRESHOLD: Final = -100.0
"""Score at or below which a peer is banned: ten malformed messages, four bad signatures or
five blocks that do not match their CID within a half-life -- far beyond what a buggy but
honest peer produces (it fails once and reconnects), well within what an attacker tries."""
DEFAULT_BAN_SECONDS: Final = 600.0
"""How long a score ban lasts unless configured (``[federation] ban_seconds``): ten minutes
turns a flood into a trickle without locking out a peer that was restarted with a fix."""
SCORE_HALF_LIFE_S: Final = 600.0
"""Scores halve toward 0 every ten minutes: a peer is judged by its recent behaviour."""
MAX_SCORE: Final = 20.0
"""Merit is capped so that a long good record cannot buy unlimited faults (it absorbs two
bad blocks, not a flood)."""
MAX_STREAMS_PER_SECOND: Final = 50.0
MAX_STREAM_BURST: Final = 200.0
"""Streams a peer may open per second (and in a burst): a fetch uses a handful of streams
per peer; hundreds per second is a flood. Each stream over the rate costs ``flood``."""
MAX_RECORDS: Final = 4096
"""Peers remembered (connected ones are never dropped; the oldest others are): 4096 records
of about 1 KiB bound the book's memory."""
RATE_WINDOW_S: Final = 10.0
"""Time constant of the per-peer rates (bytes and streams per second, exponentially
weighted): long enough to smooth bursts, short enough to show a flood as it happens."""
MAX_EVENTS_PER_PEER: Final = 16
"""Last penalties kept per peer for the operator (code, time)."""

PENALTY_WEIGHTS: Final[dict[str, float]] = {
    # Framing and message faults: sending garbage costs a tenth of the way to a ban.
    ErrorCode.MALFORMED.label: 10.0,
    ErrorCode.FRAME_TOO_LARGE.label: 20.0,
    ErrorCode.TRUNCATED.label: 5.0,
    ErrorCode.UNEXPECTED_MESSAGE.label: 10.0,
    ErrorCode.TIMEOUT.label: 5.0,          # slow or silent: might be the network
    ErrorCode.UNSUPPORTED.label: 2.0,      # a newer peer may try what we do not know
    ErrorCode.BUSY.label: 0.0,             # the peer is telling us about itself
    ErrorCode.INTERNAL.label: 0.0,
    # Hello refusals: lying about identity or replaying costs most.
    # (Not faults: such peers are kept away by hello.INCOMPATIBLE_BACKOFF_S instead.)
    ErrorCode.WRONG_NETWORK.label: 0.0,
    ErrorCode.UNSUPPORTED_VERSION.label: 0.0,
    ErrorCode.BAD_SIGNATURE.label: 25.0,
    ErrorCode.IDENTITY_MISMATCH.label: 25.0,
    ErrorCode.REPLAYED.label: 20.0,
    ErrorCode.STALE.label: 5.0,
    ErrorCode.POLICY_DENIED.label: 0.0,
    ErrorCode.BAD_CHECKPOINT.label: 20.0,
    # Blocks.
    ErrorCode.BLOCK_MISMATCH.label: 20.0,
    ErrorCode.TOO_MANY_WANTS.label: 10.0,
    ErrorCode.UNEXPECTED_BLOCK.label: 5.0,
    # Witnessing: a proven split view is the worst thing a log can do.
    ErrorCode.SPLIT_VIEW.label: 1000.0,
    ErrorCode.INCONSISTENT_PROOF.label: 20.0,
    # Node-level labels (not error codes).
    "flood": 2.0,                          # per stream over the rate
    "no-hello": 10.0,                      # a connection that never completed its hello
}
DEFAULT_PENALTY: Final = 10.0


def penalty_label(code: ErrorCode | str | int) -> str:
    if isinstance(code, ErrorCode):
        return code.label
    if isinstance(code, int):
        try:
            return ErrorCode(code).label
        except ValueError:
            return f"code-{code}"
    return str(code)


@dataclass
class PeerRecord:
    peer_id: str
    score: float = 0.0
    updated: float = 0.0                       # monotonic time of the score's last change
    hello: PeerHello | None = None
    hello_at: float | None = None              # unix seconds
    hello_ms: float | None = None              # how long the exchange took
    direction: str | None = None
    refusal: dict[str, Any] | None = None
    refused_at: float | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    streams: Counter[str] = field(default_factory=Counter)
    penalties: Counter[str] = field(default_factory=Counter)
    recent: list[tuple[str, float]] = field(default_factory=list)
    stream_rate: TokenBucket | None = None
    connected: bool = False
    ban_reason: str | None = None
    rates: dict[str, float] = field(default_factory=dict)   # name -> events per second
    rates_at: float | None = None

    def add_rate(self, name: str, amount: float, now: float) -> None:
        """Exponentially weighted rate over RATE_WINDOW_S (all rates decay together)."""
        if self.rates_at is not None and now > self.rates_at:
            decay = math.exp(-(now - self.rates_at) / RATE_WINDOW_S)
            for key in self.rates:
                self.rates[key] *= decay
        self.rates_at = now if self.rates_at is None else max(now, self.rates_at)
        self.rates[name] = self.rates.get(name, 0.0) + amount / RATE_WINDOW_S

    def rates_now(self, now: float) -> dict[str, float]:
        if self.rates_at is None:
            return {}
        decay = math.exp(-max(0.0, now - self.rates_at) / RATE_WINDOW_S)
        return {key: round(value * decay, 3) for key, value in self.rates.items()}


class PeerBook:
    """The node's record of its peers (``node.peerbook``)."""

    def __init__(self, gate: ConnectionGate | None = None, *,
                 ban_threshold: float = BAN_THRESHOLD, ban_seconds: float = DEFAULT_BAN_SECONDS,
                 clock: Callable[[], float] = trio.current_time,
                 wall: Callable[[], float] | None = None) -> None:
        if not ban_seconds > 0:
            raise ValueError("ban_seconds must be positive")
        self.gate = gate
        self.ban_threshold = ban_threshold
        self.ban_seconds = ban_seconds
        self._clock = clock
        self._wall = wall or time.time
        self._records: OrderedDict[str, PeerRecord] = OrderedDict()
        self._send, self._receive = trio.open_memory_channel[str](MAX_RECORDS)
        self._queued: set[str] = set()
        self.bans_issued = 0
        self.on_accepted: list[Callable[[str, PeerHello], None]] = []
        self._outcomes: dict[str, trio.Event] = {}  # set when a peer's next hello ends

    # -- records ---------------------------------------------------------------
    def record(self, peer_id: str) -> PeerRecord:
        record = self._records.get(peer_id)
        if record is None:
            record = self._records[peer_id] = PeerRecord(peer_id, updated=self._clock())
            self._evict()
        else:
            self._records.move_to_end(peer_id)
        return record

    def get(self, peer_id: str) -> PeerRecord | None:
        return self._records.get(peer_id)

    def _evict(self) -> None:
        while len(self._records) > MAX_RECORDS:
            for peer_id, record in self._records.items():
                if not record.connected:
                    del self._records[peer_id]
                    break
            else:
                return

    # -- score -----------------------------------------------------------------
    def _decayed(self, record: PeerRecord, now: float) -> float:
        elapsed = max(0.0, now - record.updated)
        return record.score * math.pow(0.5, elapsed / SCORE_HALF_LIFE_S)

    def score(self, peer_id: str) -> float:
        record = self._records.get(peer_id)
        return 0.0 if record is None else round(self._decayed(record, self._clock()), 3)

    def _add(self, record: PeerRecord, delta: float) -> float:
        now = self._clock()
        record.score = min(MAX_SCORE, self._decayed(record, now) + delta)
        record.updated = now
        return record.score

    def penalize(self, peer_id: str, code: ErrorCode | str, weight: float = 1.0) -> None:
        """Lower ``peer_id``'s score for a fault (``code``: an error code or a label of
        :data:`PENALTY_WEIGHTS`); ban and disconnect it at the threshold."""
        label = penalty_label(code)
        record = self.record(peer_id)
        record.penalties[label] += 1
        record.recent = [*record.recent[-(MAX_EVENTS_PER_PEER - 1):], (label, self._wall())]
        score = self._add(record, -PENALTY_WEIGHTS.get(label, DEFAULT_PENALTY) * max(0.0, weight))
        logger.info("peer %s penalized for %s: score %.1f", peer_id, label, score)
        if score <= self.ban_threshold and not self.is_banned(peer_id):
            self.ban(peer_id, self.ban_seconds, f"score {score:.0f} (last fault: {label})")

    def reward(self, peer_id: str, weight: float = 0.1) -> None:
        self._add(self.record(peer_id), max(0.0, weight))

    # -- traffic ---------------------------------------------------------------
    def count_bytes(self, peer_id: str, sent: int = 0, received: int = 0) -> None:
        record = self.record(peer_id)
        record.bytes_sent += sent
        record.bytes_received += received
        now = self._clock()
        if sent:
            record.add_rate("bytes_sent_per_s", sent, now)
        if received:
            record.add_rate("bytes_received_per_s", received, now)

    def count_stream(self, peer_id: str, protocol: str) -> bool:
        """Count a stream the peer opened; False (and a ``flood`` penalty) when it opens
        them faster than :data:`MAX_STREAMS_PER_SECOND`: the caller refuses the stream."""
        record = self.record(peer_id)
        record.streams[protocol] += 1
        now = self._clock()
        record.add_rate("streams_per_s", 1, now)
        if record.stream_rate is None:
            record.stream_rate = TokenBucket(MAX_STREAMS_PER_SECOND, MAX_STREAM_BURST, now)
        if record.stream_rate.take(1, now) > 0:
            self.penalize(peer_id, "flood")
            return False
        return True

    # -- hello -----------------------------------------------------------------
    def accepted(self, peer_id: str, hello: PeerHello, *, direction: str,
                 elapsed_s: float) -> None:
        record = self.record(peer_id)
        record.hello, record.hello_at = hello, self._wall()
        record.hello_ms = round(elapsed_s * 1000, 3)
        record.direction, record.refusal, record.connected = direction, None, True
        self.reward(peer_id, 1.0)
        self._settle(peer_id)
        for listener in list(self.on_accepted):
            listener(peer_id, hello)

    def refused(self, peer_id: str, refusal: dict[str, Any] | None) -> None:
        record = self.record(peer_id)
        record.hello, record.refusal, record.refused_at = None, refusal, self._wall()
        self._settle(peer_id)

    def _settle(self, peer_id: str) -> None:
        event = self._outcomes.pop(peer_id, None)
        if event is not None:
            event.set()

    def hello_started(self, peer_id: str) -> None:
        """A hello exchange with ``peer_id`` is under way (see :meth:`wait_accepted`)."""
        self._outcomes.setdefault(peer_id, trio.Event())

    async def wait_accepted(self, peer_id: str, timeout: float) -> bool:
        """True once ``peer_id``'s hello completed: at once if it has, else when the hello
        under way ends (False if it fails, none is under way, or none completes within
        ``timeout``)."""
        if self.is_accepted(peer_id):
            return True
        if self.is_banned(peer_id) or peer_id not in self._outcomes:
            return False
        event = self._outcomes.setdefault(peer_id, trio.Event())
        with trio.move_on_after(timeout):
            await event.wait()
        return self.is_accepted(peer_id)

    def is_accepted(self, peer_id: str) -> bool:
        record = self._records.get(peer_id)
        return (record is not None and record.hello is not None and record.connected
                and not self.is_banned(peer_id))

    def peer_hello(self, peer_id: str) -> PeerHello | None:
        record = self._records.get(peer_id)
        return None if record is None else record.hello

    def connected(self, peer_id: str) -> None:
        self.record(peer_id).connected = True

    def disconnected(self, peer_id: str) -> None:
        """The last connection to the peer closed: its hello no longer recognises it."""
        record = self._records.get(peer_id)
        if record is not None:
            record.connected = False
            record.hello = None

    # -- bans ------------------------------------------------------------------
    def is_banned(self, peer_id: str) -> bool:
        return self.gate is not None and self.gate.is_banned(peer_id, self._clock())

    def ban(self, peer_id: str, seconds: float | None = None, reason: str = "operator") -> None:
        """Ban ``peer_id`` for ``seconds`` (default: ``ban_seconds``) and queue its
        disconnection; :meth:`run` closes its connections."""
        seconds = self.ban_seconds if seconds is None else seconds
        if not seconds > 0:
            raise ValueError("a ban lasts a positive number of seconds")
        record = self.record(peer_id)
        record.ban_reason = reason
        if self.gate is not None:
            self.gate.ban(peer_id, self._clock() + seconds, reason)
        self.bans_issued += 1
        logger.warning("peer %s banned for %.0f s: %s", peer_id, seconds, reason)
        if peer_id not in self._queued:
            try:
                self._send.send_nowait(peer_id)
                self._queued.add(peer_id)
            except trio.WouldBlock:
                logger.error("ban queue full; %s is banned but stays connected until it "
                             "reconnects", peer_id)

    def unban(self, peer_id: str) -> bool:
        record = self._records.get(peer_id)
        if record is not None:
            record.ban_reason = None
            record.score = min(record.score, 0.0) / 2  # a second chance, not a clean slate
        return self.gate.unban(peer_id) if self.gate is not None else False

    def ban_state(self, peer_id: str) -> dict[str, Any] | None:
        if self.gate is None:
            return None
        for entry in self.gate.bans(self._clock()):
            if entry["peer_id"] == peer_id:
                return dict(entry)
        return None

    async def run(self, disconnect: Callable[[str], Any]) -> None:
        """Carry out queued bans: ``await disconnect(peer_id)`` for each (the node's
        bounded host.disconnect). Runs until cancelled."""
        async for peer_id in self._receive:
            self._queued.discard(peer_id)
            await disconnect(peer_id)

    # -- views -----------------------------------------------------------------
    def describe(self, peer_id: str) -> dict[str, Any]:
        """The fields the peers route adds to each peer: ``hello``, ``score``, ``banned``,
        ``refusal``, ``traffic``."""
        record = self._records.get(peer_id)
        ban = self.ban_state(peer_id)
        if record is None:
            return {"hello": None, "score": 0.0, "banned": ban, "refusal": None,
                    "traffic": None}
        return {
            "hello": _hello_view(record),
            "score": self.score(peer_id),
            "banned": ban,
            "refusal": record.refusal,
            "traffic": {"bytes_sent": record.bytes_sent, "bytes_received": record.bytes_received,
                        "streams": dict(record.streams), "penalties": dict(record.penalties),
                        "rates": record.rates_now(self._clock()),
                        "recent_penalties": [{"reason": r, "at": round(t, 3)}
                                             for r, t in record.recent]},
        }

    def others(self, connected: set[str]) -> list[dict[str, Any]]:
        """Peers not connected now that the operator should see: refused, banned or
        penalized ones (most recent last)."""
        out = []
        for peer_id, record in self._records.items():
            if peer_id in connected:
                continue
            if record.refusal is None and not record.penalties and not self.is_banned(peer_id):
                continue
            out.append({"peer_id": peer_id, "connected": False, **self.describe(peer_id)})
        return out


def _hello_view(record: PeerRecord) -> dict[str, Any] | None:
    if record.hello is None:
        return None
    hello = record.hello.hello
    canon, ledger = record.hello.canon_checkpoint, record.hello.ledger_checkpoint
    return {
        "version": hello.version, "agent": hello.agent, "network": str(hello.network),
        "protocols": list(hello.protocols), "capabilities": list(hello.capabilities),
        "canon": None if canon is None else {"size": canon.size, "root": canon.root_hash.hex()},
        "ledger": None if ledger is None else {"size": ledger.size, "root": ledger.root_hash.hex()},
        "cid": str(hello.cid), "direction": record.direction, "at": record.hello_at,
        "elapsed_ms": record.hello_ms,
    }
