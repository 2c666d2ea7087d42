"""The few facts about a VP8 frame the relay needs (RFC 6386 §9.1), sans-IO.

An encoded VP8 frame begins with a 3-byte frame tag; bit 0 of its first byte is
the frame type, 0 for a keyframe. A keyframe continues with the start code
``9d 01 2a`` and two little-endian u16 fields whose low 14 bits are the width and
the height in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CodecError

VP8_KEYFRAME_START_CODE = b"\x9d\x01\x2a"
#: Frame tag (3) + start code (3) + width (2) + height (2).
VP8_KEYFRAME_HEADER_BYTES = 10


def is_vp8_keyframe(frame: bytes) -> bool:
    """True when ``frame`` is a VP8 keyframe (frame-type bit clear and start code)."""
    return (
        len(frame) >= VP8_KEYFRAME_HEADER_BYTES
        and frame[0] & 0x01 == 0
        and frame[3:6] == VP8_KEYFRAME_START_CODE
    )


@dataclass(frozen=True, slots=True)
class Vp8KeyframeInfo:
    width: int
    height: int


def vp8_keyframe_info(frame: bytes) -> Vp8KeyframeInfo:
    """Width and height of a VP8 keyframe; :class:`CodecError` if it is not one."""
    if not is_vp8_keyframe(frame):
        raise CodecError("not a VP8 keyframe")
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    if width == 0 or height == 0:
        raise CodecError("VP8 keyframe with a zero dimension")
    return Vp8KeyframeInfo(width, height)
