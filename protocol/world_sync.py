"""``/n3xus/world-sync/1.0.0``: world heads, asked for and announced (specs/protocol-world-sync.md).

Sans-IO, like the other cores: the node feeds bytes and a clock, takes frames to send and
events. One stream carries exactly one exchange, opened by the *requester*:

    head-request {world}                 ->  head {world, head, author, owner}
    announce {world, head, author, owner} ->  ack {world}

Then both sides close. A world's blocks travel over ``/n3xus/blocks/1.0.0``; this protocol
only says which commit is a node's head of a world, and (``owner``) whether the world is
shared (canon-world.md §8) and by whose key it is named. The transition table
:data:`TRANSITIONS` is the state table of the spec (a test renders one into the other).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from n3xus.canon.cid import CID
from n3xus.canon.entries import validate_world_name
from n3xus.canon.errors import CanonDecodeError

from .codes import ErrorCode
from .errors import DeadlineExceeded, LocalProtocolError, MessageError, RemoteProtocolError
from .framing import FrameDecoder, decode_message, encode_message

PROTOCOL_ID: Final = "/n3xus/world-sync/1.0.0"
MAX_FRAME_BYTES: Final = 1024
"""Largest message: a world name (<= 128 characters), a CID (< 80 bytes), two 32-byte keys
and the field names come to under 400 bytes; 1 KiB leaves room and refuses anything else."""
EXCHANGE_TIMEOUT_S: Final = 10.0
"""From the stream's opening to the complete answer: one round trip and two LMDB reads."""
KEY_BYTES: Final = 32


class Role(Enum):
    REQUESTER = "requester"
    RESPONDER = "responder"


class State(Enum):
    IDLE = "idle"            # nothing sent or received yet
    WAITING = "waiting"      # request sent (requester) / request received (responder)
    DONE = "done"            # answer received (requester) / answer sent (responder)


# (role, state, message type, direction) -> next state. "send"/"receive" as seen by the role.
TRANSITIONS: Final[dict[tuple[Role, State, str, str], State]] = {
    (Role.REQUESTER, State.IDLE, "head-request", "send"): State.WAITING,
    (Role.REQUESTER, State.IDLE, "announce", "send"): State.WAITING,
    (Role.REQUESTER, State.WAITING, "head", "receive"): State.DONE,
    (Role.REQUESTER, State.WAITING, "ack", "receive"): State.DONE,
    (Role.RESPONDER, State.IDLE, "head-request", "receive"): State.WAITING,
    (Role.RESPONDER, State.IDLE, "announce", "receive"): State.WAITING,
    (Role.RESPONDER, State.WAITING, "head", "send"): State.DONE,
    (Role.RESPONDER, State.WAITING, "ack", "send"): State.DONE,
}
def transition_rows() -> list[tuple[str, str, str, str]]:
    """The state table of the spec: (role, state, input, next state)."""
    return [(f"`{role.value}`", f"`{state.value}`", f"`{direction} {kind}`", f"`{after.value}`")
            for (role, state, kind, direction), after in TRANSITIONS.items()]


# Which answer each request takes.
ANSWER_TO: Final = {"head-request": "head", "announce": "ack"}


@dataclass(frozen=True)
class HeadRequest:
    world: str


@dataclass(frozen=True)
class Head:
    """A node's head of ``world``: the commit CID and its author (None: no such world),
    and the owner key when the world is shared (None: an ordinary single-writer world)."""

    world: str
    head: CID | None
    author: bytes | None
    owner: bytes | None


@dataclass(frozen=True)
class Announce:
    world: str
    head: CID
    author: bytes
    owner: bytes | None


@dataclass(frozen=True)
class Ack:
    world: str


Message = HeadRequest | Head | Announce | Ack
_FIELDS: Final = {
    "head-request": {"type", "world"},
    "head": {"type", "world", "head", "author", "owner"},
    "announce": {"type", "world", "head", "author", "owner"},
    "ack": {"type", "world"},
}


def to_map(message: Message) -> dict[str, Any]:
    if isinstance(message, HeadRequest):
        return {"type": "head-request", "world": message.world}
    if isinstance(message, Ack):
        return {"type": "ack", "world": message.world}
    kind = "head" if isinstance(message, Head) else "announce"
    return {"type": kind, "world": message.world, "head": message.head,
            "author": message.author, "owner": message.owner}


def _key(value: Any, field: str, nullable: bool) -> bytes | None:
    if value is None and nullable:
        return None
    if type(value) is not bytes or len(value) != KEY_BYTES:
        raise MessageError(f"'{field}' must be {KEY_BYTES} bytes" + (" or null" if nullable else ""))
    return value


def parse(value: dict[str, Any]) -> Message:
    """A message from its decoded map; MessageError (malformed) if it breaks the schema."""
    kind = value["type"]
    fields = _FIELDS.get(kind)
    if fields is None:
        raise RemoteProtocolError(f"world-sync has no message {kind[:64]!r}", ErrorCode.UNSUPPORTED)
    if not fields <= set(value):  # unknown fields are ignored (protocol.md §3)
        raise MessageError(f"a {kind} message has the fields {sorted(fields)}")
    try:
        world = validate_world_name(value["world"])
    except CanonDecodeError as exc:
        raise MessageError(f"bad world name: {exc}") from None
    if kind == "head-request":
        return HeadRequest(world)
    if kind == "ack":
        return Ack(world)
    head, author, owner = value["head"], value["author"], value["owner"]
    owner_key = _key(owner, "owner", nullable=True)
    if kind == "announce":
        if not isinstance(head, CID):
            raise MessageError("an announce's 'head' is a CID")
        author_key = _key(author, "author", nullable=False)
        assert author_key is not None
        return Announce(world, head, author_key, owner_key)
    if head is None:
        if author is not None or owner is not None:
            raise MessageError("a head without a commit has no author or owner")
        return Head(world, None, None, None)
    if not isinstance(head, CID):
        raise MessageError("a head's 'head' is a CID or null")
    return Head(world, head, _key(author, "author", nullable=False), owner_key)


class WorldSyncExchange:
    """One side of one exchange. ``send(message)`` -> bytes to write; ``receive_data`` ->
    the messages it completes (at most one: the other side's request or answer)."""

    def __init__(self, role: Role, now: float, timeout_s: float = EXCHANGE_TIMEOUT_S) -> None:
        self.role = role
        self.state = State.IDLE
        self.request_type: str | None = None
        self._decoder = FrameDecoder(MAX_FRAME_BYTES)
        self._deadline = now + timeout_s

    @property
    def deadline(self) -> float:
        return self._deadline

    def check_deadline(self, now: float) -> None:
        if now >= self._deadline:
            raise DeadlineExceeded(f"world-sync exchange not complete within its deadline "
                                   f"(state {self.state.value})")
        self._decoder.check_deadline(now)

    def _step(self, kind: str, direction: str) -> None:
        nxt = TRANSITIONS.get((self.role, self.state, kind, direction))
        if nxt is None or (kind in ("head", "ack") and ANSWER_TO.get(self.request_type or "") != kind):
            if direction == "send":
                raise LocalProtocolError(f"cannot send {kind} in state {self.state.value}")
            raise RemoteProtocolError(f"{kind} is not allowed in state {self.state.value}",
                                      ErrorCode.UNEXPECTED_MESSAGE)
        if kind in ANSWER_TO:
            self.request_type = kind
        self.state = nxt

    def send(self, message: Message) -> bytes:
        body = to_map(message)
        self._step(body["type"], "send")
        return encode_message(body, MAX_FRAME_BYTES)

    def receive_data(self, data: bytes, now: float) -> list[Message]:
        self._decoder.receive_data(data, now)
        out: list[Message] = []
        while (frame := self._decoder.next_frame()) is not None:
            message = parse(decode_message(frame))
            self._step(to_map(message)["type"], "receive")
            out.append(message)
        return out

    def receive_eof(self) -> None:
        """The peer closed its side: fine once the exchange is done, truncation before."""
        self._decoder.receive_eof()
        self._decoder.next_frame()  # raises if the stream ended inside a frame
        if self.state is not State.DONE and not (self.role is Role.RESPONDER
                                                 and self.state is State.WAITING):
            raise RemoteProtocolError("the stream ended before the exchange was complete",
                                      ErrorCode.TRUNCATED)
