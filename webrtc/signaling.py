"""The signaling connection's state machine (sans-IO): text in, events out.

One :class:`SignalingSession` per WebSocket. It checks, in order: the rate (token
bucket), the size, the JSON, the schema (:data:`schemas.CLIENT_SIGNAL_SCHEMA`), and
whether the message type is allowed in the current state (:data:`TRANSITIONS`,
the table specs/live-signaling.md §1.1 prints). It never touches sockets or clocks: the
caller passes ``now`` (seconds, monotonic) and performs the returned event.

Errors before ``hello`` succeeds, rate-limit errors and token errors are *fatal*
(the node answers with an ``error`` and closes); after ``hello``, a malformed or
refused message gets a non-fatal ``error`` and the connection, the peer's media and
everyone else's stay as they were.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import jsonschema

from .datachannel import parse_json_message
from .errors import RateLimitedError, SignalingError
from .schemas import CLIENT_SIGNAL_SCHEMA, MAX_SDP_CHARS

#: One signaling message: an offer's SDP (at most MAX_SDP_CHARS) plus its envelope.
MAX_SIGNAL_MESSAGE_BYTES = MAX_SDP_CHARS + 1024
#: Sustained signaling rate per connection: a page sends a hello, an offer, an
#: occasional ping; 5/s is far above that and far below what would load the node.
SIGNAL_RATE_PER_S = 5.0
#: Burst allowance (a reload re-sending hello + offer + pings at once).
SIGNAL_BURST = 10
#: How long a new connection may take to send ``hello`` before the node closes it.
HELLO_TIMEOUT_S = 10.0
#: WebSocket close codes the node uses (RFC 6455 §7.4.1).
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

_VALIDATOR = jsonschema.Draft202012Validator(CLIENT_SIGNAL_SCHEMA)


class State(enum.StrEnum):
    AWAIT_HELLO = "await-hello"
    READY = "ready"
    CLOSED = "closed"


#: (state, client message type) -> next state. Anything absent is refused.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.AWAIT_HELLO, "hello"): State.READY,
    (State.AWAIT_HELLO, "ping"): State.AWAIT_HELLO,
    (State.AWAIT_HELLO, "bye"): State.CLOSED,
    (State.READY, "offer"): State.READY,
    (State.READY, "end"): State.READY,
    (State.READY, "peer-offer"): State.READY,
    (State.READY, "peer-answer"): State.READY,
    (State.READY, "ping"): State.READY,
    (State.READY, "bye"): State.CLOSED,
}
#: Error codes that end the connection whatever the state.
FATAL_CODES = frozenset({"rate-limited", "too-large", "bad-token", "wrong-room",
                         "token-expired", "bad-room"})


@dataclass(frozen=True, slots=True)
class Hello:
    token: str
    name: str
    #: The page joins the room's browser mesh (room pages; §4.5).
    mesh: bool = False


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str


@dataclass(frozen=True, slots=True)
class PeerSignal:
    """An SDP for another member (``kind`` "peer-offer" or "peer-answer"), which the
    node relays with the sender named by the node (§4.5)."""

    kind: str
    to: str
    sdp: str


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    t: float


@dataclass(frozen=True, slots=True)
class Bye:
    pass


ClientEvent = Hello | Offer | PeerSignal | End | Ping | Bye


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def is_fatal(error: SignalingError, state: State) -> bool:
    return state is State.AWAIT_HELLO or error.code in FATAL_CODES


class SignalingSession:
    def __init__(self, now: float, *, rate: float = SIGNAL_RATE_PER_S,
                 burst: int = SIGNAL_BURST) -> None:
        self.state = State.AWAIT_HELLO
        self._bucket = TokenBucket(rate, burst, now)

    def receive(self, raw: str | bytes, now: float) -> ClientEvent:
        """Parse one client message and advance; raises :class:`SignalingError`."""
        if self.state is State.CLOSED:
            raise SignalingError("connection is closed", code="closed")
        if not self._bucket.take(now):
            raise RateLimitedError(
                f"more than {SIGNAL_RATE_PER_S:g} messages/s (burst {SIGNAL_BURST})")
        message = parse_json_message(raw, MAX_SIGNAL_MESSAGE_BYTES, _VALIDATOR)
        kind = message["type"]
        next_state = TRANSITIONS.get((self.state, kind))
        if next_state is None:
            raise SignalingError(f"{kind!r} is not allowed in state {self.state.value}",
                                 code="unexpected-message")
        self.state = next_state
        if kind == "hello":
            return Hello(message["token"], message.get("name", "guest"),
                         bool(message.get("mesh", False)))
        if kind == "offer":
            return Offer(message["sdp"])
        if kind in ("peer-offer", "peer-answer"):
            return PeerSignal(kind, message["to"], message["sdp"])
        if kind == "end":
            return End()
        if kind == "ping":
            return Ping(float(message.get("t", 0)))
        return Bye()
