"""Messages of ``/n3xus/live/1.0.0``: one node pulling a room's stream from another.

Sans-IO: :func:`encode` and :func:`decode` turn messages into the strict DAG-CBOR
bytes of one frame and back; the framing (unsigned-varint length prefix) and the
libp2p stream belong to ``protocol/`` and the node. specs/live.md §6 is the
normative text; the dataclasses here mirror its CDDL one to one.

The follower opens a stream and sends :class:`Pull`; the origin answers
:class:`Accept` (or :class:`Refuse` and closes), then streams :class:`Frame`
messages. The follower may send :class:`KeyframeRequest` (a local viewer joined)
and :class:`Bye`. The origin sends :class:`Live` when the performance starts or
ends and :class:`End` when the room closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from n3xus.canon import codec

from .errors import PullProtocolError
from .relay import MAX_ENCODED_FRAME_BYTES
from .rooms import MAX_TOKEN_CHARS, ROOM_NAME_RE

PROTOCOL_ID = "/n3xus/live/1.0.0"
#: A frame message is the frame plus < 64 bytes of envelope; nothing else is larger.
MAX_PULL_MESSAGE_BYTES = MAX_ENCODED_FRAME_BYTES + 256
#: Error codes and refusal messages are short text.
MAX_TEXT_CHARS = 256
KIND_CODES = {"video": "v", "audio": "a"}
KINDS_BY_CODE = {code: kind for kind, code in KIND_CODES.items()}
MAX_U63 = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class Pull:
    room: str
    token: str
    kinds: tuple[str, ...] = ("video",)


@dataclass(frozen=True, slots=True)
class Accept:
    room: str
    live: bool


@dataclass(frozen=True, slots=True)
class Refuse:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Frame:
    kind: str
    index: int
    pts: int
    keyframe: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class KeyframeRequest:
    pass


@dataclass(frozen=True, slots=True)
class Live:
    live: bool


@dataclass(frozen=True, slots=True)
class End:
    pass


@dataclass(frozen=True, slots=True)
class Bye:
    pass


PullMessage = Pull | Accept | Refuse | Frame | KeyframeRequest | Live | End | Bye


def encode(message: PullMessage) -> bytes:
    value: dict[str, Any]
    if isinstance(message, Pull):
        value = {"t": "pull", "v": 1, "room": message.room, "token": message.token,
                 "kinds": [KIND_CODES[k] for k in message.kinds]}
    elif isinstance(message, Accept):
        value = {"t": "accept", "v": 1, "room": message.room, "live": message.live}
    elif isinstance(message, Refuse):
        value = {"t": "refuse", "code": message.code, "message": message.message}
    elif isinstance(message, Frame):
        value = {"t": "frame", "k": KIND_CODES[message.kind], "i": message.index,
                 "pts": message.pts, "key": message.keyframe, "data": message.data}
    elif isinstance(message, KeyframeRequest):
        value = {"t": "keyframe"}
    elif isinstance(message, Live):
        value = {"t": "live", "live": message.live}
    elif isinstance(message, End):
        value = {"t": "end"}
    else:
        value = {"t": "bye"}
    data = codec.encode(value)
    if len(data) > MAX_PULL_MESSAGE_BYTES:
        raise PullProtocolError("message exceeds MAX_PULL_MESSAGE_BYTES", code="too-large")
    return data


#: Message type -> exact key set (anything else is refused).
FIELDS: dict[str, frozenset[str]] = {
    "pull": frozenset({"t", "v", "room", "token", "kinds"}),
    "accept": frozenset({"t", "v", "room", "live"}),
    "refuse": frozenset({"t", "code", "message"}),
    "frame": frozenset({"t", "k", "i", "pts", "key", "data"}),
    "keyframe": frozenset({"t"}),
    "live": frozenset({"t", "live"}),
    "end": frozenset({"t"}),
    "bye": frozenset({"t"}),
}


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise PullProtocolError(f"{name} must be text of at most {limit} characters")
    return value


def _uint(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_U63:
        raise PullProtocolError(f"{name} must be an integer in 0..2^63-1")
    return value


def _bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise PullProtocolError(f"{name} must be a boolean")
    return value


def _room(value: Any) -> str:
    room = _text(value, "room", 63)
    if not ROOM_NAME_RE.match(room):
        raise PullProtocolError("room is not a valid room name")
    return room


def decode(data: bytes) -> PullMessage:
    """One message from one frame's bytes; :class:`PullProtocolError` otherwise."""
    if len(data) > MAX_PULL_MESSAGE_BYTES:
        raise PullProtocolError("message exceeds MAX_PULL_MESSAGE_BYTES", code="too-large")
    try:
        value = codec.decode(data)
    except ValueError as exc:
        raise PullProtocolError(f"not strict DAG-CBOR: {exc}") from None
    if not isinstance(value, dict) or not isinstance(value.get("t"), str):
        raise PullProtocolError("message must be a map with a text 't'")
    kind = value["t"]
    expected = FIELDS.get(kind)
    if expected is None:
        raise PullProtocolError(f"unknown message type {kind[:32]!r}")
    if set(value) != expected:
        raise PullProtocolError(f"{kind} must have exactly the fields {sorted(expected)}")
    if kind in ("pull", "accept") and value["v"] != 1:
        raise PullProtocolError("unsupported version")
    if kind == "pull":
        codes = value["kinds"]
        if (not isinstance(codes, list) or not 1 <= len(codes) <= 2
                or len(set(map(str, codes))) != len(codes)
                or any(c not in KINDS_BY_CODE for c in codes)):
            raise PullProtocolError("kinds must be 1-2 distinct of 'v', 'a'")
        return Pull(_room(value["room"]), _text(value["token"], "token", MAX_TOKEN_CHARS),
                    tuple(KINDS_BY_CODE[c] for c in codes))
    if kind == "accept":
        return Accept(_room(value["room"]), _bool(value["live"], "live"))
    if kind == "refuse":
        return Refuse(_text(value["code"], "code", MAX_TEXT_CHARS),
                      _text(value["message"], "message", MAX_TEXT_CHARS))
    if kind == "frame":
        k = value["k"]
        if k not in KINDS_BY_CODE:
            raise PullProtocolError("frame kind must be 'v' or 'a'")
        payload = value["data"]
        if not isinstance(payload, bytes) or not 0 < len(payload) <= MAX_ENCODED_FRAME_BYTES:
            raise PullProtocolError("frame data must be 1..MAX_ENCODED_FRAME_BYTES bytes")
        return Frame(KINDS_BY_CODE[k], _uint(value["i"], "i"), _uint(value["pts"], "pts"),
                     _bool(value["key"], "key"), payload)
    if kind == "keyframe":
        return KeyframeRequest()
    if kind == "live":
        return Live(_bool(value["live"], "live"))
    if kind == "end":
        return End()
    return Bye()
