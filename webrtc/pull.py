"""Messages of ``/n3xus/live/1.0.0``: one node pulling a room's stream from another.

Sans-IO. The stream follows the common rules of specs/protocol.md: unsigned-varint
length-prefixed frames, each one strict DAG-CBOR map with a text ``type``; required
fields are checked and unknown fields ignored; a breach ends the stream with the
common ``error`` message (code ``malformed``, ``unsupported``, ...). Framing and the
common checks are ``n3xus.protocol.framing``'s; this module adds the messages of this
protocol (specs/protocol-live.md; the dataclasses mirror its CDDL one to one).

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
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import PeerError, ProtocolError
from n3xus.protocol.framing import decode_message, error_message
from n3xus.protocol.framing import encode_frame as frame_bytes

from .errors import PullProtocolError
from .relay import MAX_ENCODED_FRAME_BYTES
from .rooms import MAX_TOKEN_CHARS, ROOM_NAME_RE

PROTOCOL_ID = "/n3xus/live/1.0.0"
#: A frame message is the frame plus < 64 bytes of envelope; nothing else is larger.
#: This is the protocol's maximum frame size (specs/protocol.md §2).
MAX_PULL_MESSAGE_BYTES = MAX_ENCODED_FRAME_BYTES + 256
#: Error codes and refusal messages are short text.
MAX_TEXT_CHARS = 256
#: Seconds the origin waits for the ``pull`` that opens a stream: as long as a browser gets
#: for its signaling ``hello`` (a live viewer waits on either); a silent stream is a
#: ``timeout`` breach, so idle streams cannot pile up at the origin.
PULL_REQUEST_TIMEOUT_S = 10.0
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


@dataclass(frozen=True, slots=True)
class PeerErrorMessage:
    """The peer ended the stream with the common ``error`` message (protocol.md §4)."""

    code: int
    message: str


PullMessage = Pull | Accept | Refuse | Frame | KeyframeRequest | Live | End | Bye


def _value(message: PullMessage) -> dict[str, Any]:
    if isinstance(message, Pull):
        return {"type": "pull", "v": 1, "room": message.room, "token": message.token,
                "kinds": [KIND_CODES[k] for k in message.kinds]}
    if isinstance(message, Accept):
        return {"type": "accept", "v": 1, "room": message.room, "live": message.live}
    if isinstance(message, Refuse):
        return {"type": "refuse", "code": message.code, "message": message.message}
    if isinstance(message, Frame):
        return {"type": "frame", "k": KIND_CODES[message.kind], "i": message.index,
                "pts": message.pts, "key": message.keyframe, "data": message.data}
    if isinstance(message, KeyframeRequest):
        return {"type": "keyframe"}
    if isinstance(message, Live):
        return {"type": "live", "live": message.live}
    if isinstance(message, End):
        return {"type": "end"}
    return {"type": "bye"}


def encode(message: PullMessage) -> bytes:
    """The body of one message frame (strict DAG-CBOR)."""
    data = codec.encode(_value(message))
    if len(data) > MAX_PULL_MESSAGE_BYTES:
        raise PullProtocolError("message exceeds MAX_PULL_MESSAGE_BYTES", code="too-large")
    return data


def error_body(code: int, text: str) -> bytes:
    """The body of the common ``error`` message (protocol.md §4) for a breach."""
    return codec.encode(error_message(code, text))


def encode_frame(message: PullMessage) -> bytes:
    """One whole frame: ``varint(length) || body`` (protocol.md §2)."""
    return frame_bytes(encode(message), MAX_PULL_MESSAGE_BYTES)


#: Message type -> required fields (protocol.md §3: unknown fields are ignored).
FIELDS: dict[str, frozenset[str]] = {
    "pull": frozenset({"v", "room", "token", "kinds"}),
    "accept": frozenset({"v", "room", "live"}),
    "refuse": frozenset({"code", "message"}),
    "frame": frozenset({"k", "i", "pts", "key", "data"}),
    "keyframe": frozenset(),
    "live": frozenset({"live"}),
    "end": frozenset(),
    "bye": frozenset(),
}


def _malformed(text: str) -> PullProtocolError:
    return PullProtocolError(text, wire_code=ErrorCode.MALFORMED)


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _malformed(f"{name} must be text of at most {limit} characters")
    return value


def _uint(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_U63:
        raise _malformed(f"{name} must be an integer in 0..2^63-1")
    return value


def _bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise _malformed(f"{name} must be a boolean")
    return value


def _room(value: Any) -> str:
    room = _text(value, "room", 63)
    if not ROOM_NAME_RE.match(room):
        raise _malformed("room is not a valid room name")
    return room


def decode(body: bytes) -> PullMessage | PeerErrorMessage:
    """One message from one frame's body. Raises :class:`PullProtocolError` whose
    ``wire_code`` is the common error code to send before resetting the stream."""
    if len(body) > MAX_PULL_MESSAGE_BYTES:
        raise PullProtocolError("message exceeds MAX_PULL_MESSAGE_BYTES", code="too-large",
                                wire_code=ErrorCode.FRAME_TOO_LARGE)
    try:
        value = decode_message(body)
    except PeerError as exc:
        return PeerErrorMessage(exc.raw_code, exc.message)
    except ProtocolError as exc:
        raise _malformed(str(exc)) from None
    kind = value["type"]
    required = FIELDS.get(kind)
    if required is None:
        raise PullProtocolError(f"unknown message type {kind[:32]!r}", code="unsupported",
                                wire_code=ErrorCode.UNSUPPORTED)
    missing = required - set(value)
    if missing:
        raise _malformed(f"{kind} lacks {', '.join(sorted(missing))}")
    if kind in ("pull", "accept") and value["v"] != 1:
        raise _malformed("unsupported version")
    if kind == "pull":
        codes = value["kinds"]
        if (not isinstance(codes, list) or not 1 <= len(codes) <= 2
                or any(c not in KINDS_BY_CODE for c in codes) or len(set(codes)) != len(codes)):
            raise _malformed("kinds must be 1-2 distinct of 'v', 'a'")
        return Pull(_room(value["room"]), _text(value["token"], "token", MAX_TOKEN_CHARS),
                    tuple(KINDS_BY_CODE[c] for c in codes))
    if kind == "accept":
        return Accept(_room(value["room"]), _bool(value["live"], "live"))
    if kind == "refuse":
        return Refuse(_text(value["code"], "code", MAX_TEXT_CHARS),
                      _text(value["message"], "message", MAX_TEXT_CHARS))
    if kind == "frame":
        k = value["k"]
        if not isinstance(k, str) or k not in KINDS_BY_CODE:
            raise _malformed("frame kind must be 'v' or 'a'")
        payload = value["data"]
        if not isinstance(payload, bytes) or not 0 < len(payload) <= MAX_ENCODED_FRAME_BYTES:
            raise _malformed("frame data must be 1..MAX_ENCODED_FRAME_BYTES bytes")
        return Frame(KINDS_BY_CODE[k], _uint(value["i"], "i"), _uint(value["pts"], "pts"),
                     _bool(value["key"], "key"), payload)
    if kind == "keyframe":
        return KeyframeRequest()
    if kind == "live":
        return Live(_bool(value["live"], "live"))
    if kind == "end":
        return End()
    return Bye()
