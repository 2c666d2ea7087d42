"""The framing limits as one table (name, value, reason) for specs/protocol.md."""

from __future__ import annotations

from typing import Final

from .framing import (
    FRAME_GRACE_S,
    MAX_ERROR_MESSAGE_CHARS,
    MAX_PREFIX_BYTES,
    MAX_TYPE_CHARS,
    MIN_TRANSFER_RATE,
)

FRAMING_LIMITS: Final[list[tuple[str, int | float, str]]] = [
    ("MAX_PREFIX_BYTES", MAX_PREFIX_BYTES, "bytes of a length prefix (the unsigned-varint spec's cap)"),
    ("FRAME_GRACE_S", FRAME_GRACE_S, "seconds any frame may take from its first byte, before its size allowance"),
    ("MIN_TRANSFER_RATE", MIN_TRANSFER_RATE, "bytes/s a frame must arrive at after the grace (1 MiB in 16 s); slower is a stall"),
    ("MAX_ERROR_MESSAGE_CHARS", MAX_ERROR_MESSAGE_CHARS, "characters of an error's message: a log line, not a dump"),
    ("MAX_TYPE_CHARS", MAX_TYPE_CHARS, "characters of a message type name"),
]
