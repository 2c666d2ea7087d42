"""Frames: ``varint(length) || body``, and the one error message shape (specs/protocol.md).

Every n3xus protocol stream is a sequence of frames. A frame is the multiformats
unsigned-varint of the body's length (minimal, at most :data:`MAX_PREFIX_BYTES` bytes)
followed by the body. A *message* is a frame whose body is one canonical DAG-CBOR map with
a text ``type`` (decoded by :func:`n3xus.canon.codec.decode`, so every rule of the canon
profile holds). The blocks protocol also sends *payload* frames of raw bytes right after a
``blocks`` message; the message layer says when.

:class:`FrameDecoder` is sans-IO: the node feeds it what it reads (:meth:`receive_data`,
:meth:`receive_eof`) and asks for frames (:meth:`next_frame`). It refuses a length prefix
over the frame limit as soon as the prefix is known, before any of the body is read, and
it keeps a deadline for the frame in progress (:attr:`deadline`): a peer that trickles a
frame slower than :data:`MIN_TRANSFER_RATE` after a grace of :data:`FRAME_GRACE_S` is cut off.
Times are the caller's monotonic clock in seconds (``trio.current_time()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonDecodeError, CanonEncodeError, LimitExceededError
from n3xus.canon.multiformats import encode_varint

from .codes import MAX_ERROR_CODE, ErrorCode
from .errors import (
    DeadlineExceeded,
    FrameError,
    LocalProtocolError,
    MessageError,
    PeerError,
    ProtocolError,
)

MAX_PREFIX_BYTES: Final = 9
"""The unsigned-varint spec's own cap (63 bits); frame limits are far smaller anyway."""

FRAME_GRACE_S: Final = 10.0
"""Seconds any frame may take from its first byte, on top of its size allowance: covers a
round trip and a congested moment on a slow link, and is what a silent or one-byte-a-minute
peer gets before it is cut off."""

MIN_TRANSFER_RATE: Final = 64 * 1024
"""Bytes per second a frame must at least arrive at (after the grace): 1 MiB in 16 s. A
slower peer is treated as stalled; honest links are orders of magnitude faster."""

MAX_ERROR_MESSAGE_CHARS: Final = 1024
"""Longest ``message`` text of an error: a sentence for a log line, not a dump."""

MAX_TYPE_CHARS: Final = 64
"""Longest message ``type`` name (the registered ones are under 16 characters)."""


# --- encoding -----------------------------------------------------------------------------


def encode_frame(body: bytes, max_bytes: int) -> bytes:
    """``varint(len(body)) || body``; a body over ``max_bytes`` is our bug."""
    if len(body) > max_bytes:
        raise LocalProtocolError(f"frame of {len(body)} bytes is over the limit of {max_bytes}")
    return encode_varint(len(body)) + body


def encode_message(message: Mapping[str, Any], max_bytes: int) -> bytes:
    """One message frame: the canonical DAG-CBOR of ``message`` (a map with a text
    ``type``), length-prefixed."""
    if not isinstance(message.get("type"), str):
        raise LocalProtocolError("a message is a map with a text 'type'")
    try:
        body = encode(dict(message))
    except (CanonEncodeError, LimitExceededError) as exc:
        raise LocalProtocolError(f"cannot encode {message['type']!r} message: {exc}") from exc
    return encode_frame(body, max_bytes)


def error_message(code: ErrorCode | int, message: str) -> dict[str, Any]:
    """``{"type": "error", "code": code, "message": text}`` (text cut to the limit)."""
    return {"type": "error", "code": int(code), "message": message[:MAX_ERROR_MESSAGE_CHARS]}


def encode_error(code: ErrorCode | int, message: str) -> bytes:
    """The frame of an error message; fits every protocol's frame limit."""
    body = encode(error_message(code, message))
    return encode_varint(len(body)) + body


def error_frame_for(error: ProtocolError) -> bytes:
    """What to send before resetting a stream after ``error`` (b"" if nothing should be)."""
    if not getattr(error, "send_error", True):
        return b""
    return encode_error(error.code, error.message)


# --- decoding -----------------------------------------------------------------------------


def decode_message(body: bytes) -> dict[str, Any]:
    """The map of a message frame; an ``error`` message raises :class:`PeerError`."""
    try:
        value = decode(body)
    except (CanonDecodeError, LimitExceededError) as exc:
        raise FrameError(f"frame body is not canonical DAG-CBOR: {exc}") from None
    if type(value) is not dict:
        raise MessageError(f"a message is a DAG-CBOR map, not {type(value).__name__}")
    kind = value.get("type")
    if type(kind) is not str or not 1 <= len(kind) <= MAX_TYPE_CHARS:
        raise MessageError("a message needs a text 'type' of 1..64 characters")
    if kind == "error":
        raise parse_error(value)
    return value


def parse_error(value: Mapping[str, Any]) -> PeerError:
    """The :class:`PeerError` an ``error`` message stands for (raised by the caller)."""
    code, text = value.get("code"), value.get("message")
    if type(code) is not int or not 0 <= code <= MAX_ERROR_CODE:
        raise MessageError(f"error code must be an integer 0..{MAX_ERROR_CODE}")
    if type(text) is not str or len(text) > MAX_ERROR_MESSAGE_CHARS:
        raise MessageError(f"error message must be text of at most {MAX_ERROR_MESSAGE_CHARS} characters")
    return PeerError(code, text)


class FrameDecoder:
    """Splits a byte stream into frame bodies, sans-IO.

    ``max_frame_bytes`` is the protocol's limit; :meth:`next_frame` may lower or raise it
    for one frame (the blocks protocol's payload frames). Feed bytes with
    :meth:`receive_data`, then call :meth:`next_frame` until it answers None (more bytes
    needed) before reading more, so the buffer never holds more than one frame plus one read.
    """

    def __init__(self, max_frame_bytes: int, *, grace_s: float = FRAME_GRACE_S,
                 min_rate: int = MIN_TRANSFER_RATE) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self.max_frame_bytes = max_frame_bytes
        self._grace_s = grace_s
        self._min_rate = min_rate
        self._buffer = bytearray()
        self._start = 0  # offset of the first unconsumed byte in _buffer
        self._eof = False
        self._frame_started: float | None = None  # arrival of the pending frame's first byte
        self._last_receive = 0.0
        self._pending_length: int | None = None
        self.bytes_received = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    @property
    def at_end(self) -> bool:
        """The peer closed its side and every frame has been taken."""
        return self._eof and self.buffered == 0

    @property
    def deadline(self) -> float | None:
        """When the frame in progress must be complete (None: no frame in progress)."""
        if self._frame_started is None:
            return None
        length = self._pending_length or 0
        return self._frame_started + self._grace_s + length / self._min_rate

    def check_deadline(self, now: float) -> None:
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            raise DeadlineExceeded(
                f"a frame of {self._pending_length or '?'} bytes was still incomplete "
                f"{now - (self._frame_started or now):.1f} s after its first byte"
            )

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        if self._eof:
            raise LocalProtocolError("data after end of stream")
        if not data:
            return
        if self.buffered == 0:
            self._frame_started = now
        self._buffer += data
        self._last_receive = now
        self.bytes_received += len(data)

    def receive_eof(self) -> None:
        self._eof = True

    def next_frame(self, max_bytes: int | None = None) -> bytes | None:
        """The next frame's body, or None if more bytes are needed. Raises FrameError for
        a bad prefix, a length over ``max_bytes`` (default: the protocol limit), or a
        stream that ended inside a frame."""
        limit = self.max_frame_bytes if max_bytes is None else max_bytes
        available = self.buffered
        if available == 0:
            return None
        length, prefix = self._read_prefix(limit)
        if length is None:
            self._check_truncation()
            return None
        self._pending_length = length
        if available < prefix + length:
            self._check_truncation()
            return None
        begin = self._start + prefix
        body = bytes(self._buffer[begin:begin + length])
        self._start = begin + length
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
            self._frame_started = None
        else:
            if self._start > len(self._buffer) // 2:
                del self._buffer[:self._start]
                self._start = 0
            self._frame_started = self._last_receive
        self._pending_length = None
        return body

    def _check_truncation(self) -> None:
        if self._eof:
            raise FrameError(
                f"stream ended inside a frame ({self.buffered} bytes of it received)",
                ErrorCode.TRUNCATED,
            )

    def _read_prefix(self, limit: int) -> tuple[int | None, int]:
        """(length, prefix size), or (None, 0) while the prefix is incomplete."""
        value = 0
        buffer, start = self._buffer, self._start
        end = min(len(buffer), start + MAX_PREFIX_BYTES)
        for index in range(start, end):
            byte = buffer[index]
            value |= (byte & 0x7F) << (7 * (index - start))
            if value > limit:
                raise FrameError(
                    f"frame length {value}{'+' if byte & 0x80 else ''} is over the limit of "
                    f"{limit} bytes", ErrorCode.FRAME_TOO_LARGE,
                )
            if not byte & 0x80:
                if byte == 0 and index > start:
                    raise FrameError("non-minimal varint length prefix")
                return value, index - start + 1
        if end - start >= MAX_PREFIX_BYTES:
            raise FrameError(f"length prefix longer than {MAX_PREFIX_BYTES} bytes")
        return None, 0
