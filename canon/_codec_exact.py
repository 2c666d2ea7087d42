"""The exact decoder of canonical DAG-CBOR and its allocation-free scan (see
:mod:`n3xus.canon.codec`, which uses both and is the public entry point).

Both apply the same rules in the same order, and every refusal is built by one of the
helpers below, so the two name the same fault with the same message and byte offset
whether or not a decode scanned first.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Any, Final

from .cid import CID
from .codec_limits import LINK_TAG, MAX_NESTING_DEPTH
from .errors import CanonDecodeError, LimitExceededError

_isfinite = math.isfinite
_unpack_double = struct.Struct(">d").unpack_from
# Smallest argument each head size may carry: anything smaller had a shorter encoding.
_MIN_ARGUMENT: Final = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
_MAJOR_NAMES: Final = ("unsigned integer", "negative integer", "byte string", "text string",
                       "array", "map", "tag", "simple value/float")

# Items that are exactly one byte: integers 0..23 and -1..-24, the empty byte and text
# strings, false, true, null; and (when one more level of nesting is allowed) the empty
# array and map.
_ONE_BYTE_SCALARS: Final = re.compile(rb"[\x00-\x17\x20-\x37\x40\x60\xf4-\xf6]+")
_ONE_BYTE_ITEMS: Final = re.compile(rb"[\x00-\x17\x20-\x37\x40\x60\x80\xa0\xf4-\xf6]+")


# --- the refusals both walkers share --------------------------------------------------------


def _truncated(what: str, start: int, count: int, end: int) -> CanonDecodeError:
    return CanonDecodeError(
        f"truncated {what} at offset {start}: needs {count} bytes, {end - start} left"
    )


def _bad_head(major: int, info: int, initial: int, offset: int) -> CanonDecodeError:
    """Additional info 28..31 outside major type 7: indefinite lengths or reserved values."""
    if info == 31:
        return CanonDecodeError(
            f"indefinite-length {_MAJOR_NAMES[major]} at offset {offset} is not allowed"
            if 2 <= major <= 5
            else f"invalid item head 0x{initial:02x} at offset {offset}"
        )
    return CanonDecodeError(f"reserved additional info {info} at offset {offset}")


def _non_minimal(major: int, offset: int, argument: int, size: int) -> CanonDecodeError:
    return CanonDecodeError(
        f"non-minimal {_MAJOR_NAMES[major]} encoding at offset {offset}: "
        f"{argument} written with {size} extra bytes"
    )


def _invalid_utf8(exc: UnicodeDecodeError, offset: int, position: int) -> CanonDecodeError:
    return CanonDecodeError(
        f"invalid UTF-8 in text string at offset {position + exc.start} "
        f"(string starts at {offset}): {exc.reason}"
    )


def _too_deep(offset: int) -> LimitExceededError:
    return LimitExceededError(f"nesting deeper than {MAX_NESTING_DEPTH} at offset {offset}")


def _cannot_fit(major: int, offset: int, count: int, room: int) -> CanonDecodeError:
    """An array or map head announcing more items than bytes are left (each takes one)."""
    unit = "items" if major == 4 else "entries"
    return CanonDecodeError(
        f"truncated {_MAJOR_NAMES[major]} at offset {offset}: {count} {unit} cannot fit in "
        f"{room} bytes"
    )


def _key_not_text(major: int, offset: int) -> CanonDecodeError:
    return CanonDecodeError(
        f"map key at offset {offset} is a {_MAJOR_NAMES[major]}; "
        "DAG-CBOR map keys must be text strings"
    )


def _key_out_of_order(key: str, offset: int, *, duplicate: bool) -> CanonDecodeError:
    if duplicate:
        return CanonDecodeError(f"duplicate map key {key!r} at offset {offset}")
    return CanonDecodeError(
        f"map keys out of canonical order at offset {offset}: {key!r} must "
        "come before the previous key (keys sort by length, then bytes)"
    )


def _trailing(end: int, position: int) -> CanonDecodeError:
    return CanonDecodeError(
        f"{end - position} trailing bytes after the top-level item at offset {position}"
    )


# --- the exact decoder ----------------------------------------------------------------------


class ExactDecoder:
    """Recursive strict decoder over one buffer; positions are absolute offsets."""

    __slots__ = ("data", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)

    def _need(self, start: int, count: int, what: str) -> None:
        if start + count > self.end:
            raise _truncated(what, start, count, self.end)

    def decode(self) -> Any:
        """The one top-level item, which must span the whole buffer."""
        value, end = self.item(0, 0)
        if end != self.end:
            raise _trailing(self.end, end)
        return value

    def head(self, offset: int) -> tuple[int, int, int, int]:
        """Read an item head: (major type, additional info, argument, offset after head)."""
        self._need(offset, 1, "item")
        initial = self.data[offset]
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            return major, info, info, offset + 1
        if major == 7:
            return major, info, 0, offset + 1  # interpreted by item(): floats, simple values
        if info > 27:
            raise _bad_head(major, info, initial, offset)
        size = 1 << (info - 24)
        self._need(offset + 1, size, f"{_MAJOR_NAMES[major]} head")
        argument = int.from_bytes(self.data[offset + 1:offset + 1 + size], "big")
        if argument < _MIN_ARGUMENT[info]:
            raise _non_minimal(major, offset, argument, size)
        return major, info, argument, offset + 1 + size

    def item(self, offset: int, depth: int) -> tuple[Any, int]:
        major, info, argument, position = self.head(offset)
        if major == 0:
            return argument, position
        if major == 1:
            return -1 - argument, position
        if major == 2:
            self._need(position, argument, "byte string")
            return self.data[position:position + argument], position + argument
        if major == 3:
            return self.text(offset, position, argument)
        if major == 4:
            return self.array(offset, position, argument, depth + 1)
        if major == 5:
            return self.map(offset, position, argument, depth + 1)
        if major == 6:
            return self.link(offset, position, argument)
        return self.simple(offset, info)

    def text(self, offset: int, position: int, length: int) -> tuple[str, int]:
        self._need(position, length, "text string")
        raw = self.data[position:position + length]
        try:
            return raw.decode("utf-8"), position + length
        except UnicodeDecodeError as exc:
            raise _invalid_utf8(exc, offset, position) from None

    def array(self, offset: int, position: int, count: int, depth: int) -> tuple[list[Any], int]:
        if depth > MAX_NESTING_DEPTH:
            raise _too_deep(offset)
        if count > self.end - position:
            raise _cannot_fit(4, offset, count, self.end - position)
        items: list[Any] = []
        for _ in range(count):
            item, position = self.item(position, depth)
            items.append(item)
        return items, position

    def map(self, offset: int, position: int, count: int, depth: int) -> tuple[dict[str, Any], int]:
        if depth > MAX_NESTING_DEPTH:
            raise _too_deep(offset)
        if 2 * count > self.end - position:
            raise _cannot_fit(5, offset, count, self.end - position)
        result: dict[str, Any] = {}
        previous = b""
        for _ in range(count):
            key_offset = position
            major, _info, length, key_start = self.head(position)
            if major != 3:
                raise _key_not_text(major, key_offset)
            key, position = self.text(key_offset, key_start, length)
            encoded = self.data[key_offset:position]
            if encoded <= previous:
                raise _key_out_of_order(key, key_offset, duplicate=encoded == previous)
            previous = encoded
            result[key], position = self.item(position, depth)
        return result, position

    def link(self, offset: int, position: int, tag: int) -> tuple[CID, int]:
        if tag != LINK_TAG:
            raise CanonDecodeError(
                f"tag {tag} at offset {offset} is not allowed (DAG-CBOR has only tag 42, links)"
            )
        major, _info, length, start = self.head(position)
        if major != 2:
            raise CanonDecodeError(
                f"tag 42 at offset {offset} wraps a {_MAJOR_NAMES[major]}, not a byte string"
            )
        self._need(start, length, "link")
        payload = self.data[start:start + length]
        if payload[:1] != b"\x00":
            raise CanonDecodeError(
                f"link at offset {offset} lacks the 0x00 multibase prefix before the CID"
            )
        try:
            cid = CID(payload[1:])
        except CanonDecodeError as exc:
            raise CanonDecodeError(f"invalid CID in link at offset {offset}: {exc}") from None
        return cid, start + length

    def simple(self, offset: int, info: int) -> tuple[Any, int]:
        if info == 20:
            return False, offset + 1
        if info == 21:
            return True, offset + 1
        if info == 22:
            return None, offset + 1
        if info == 27:
            self._need(offset + 1, 8, "float")
            value = _unpack_double(self.data, offset + 1)[0]
            if not _isfinite(value):
                raise CanonDecodeError(
                    f"float {value} at offset {offset} is not allowed (no NaN or Infinity)"
                )
            return value, offset + 9
        if info == 23:
            raise CanonDecodeError(f"undefined at offset {offset} is not in the data model")
        if info in (25, 26):
            bits = 16 if info == 25 else 32
            raise CanonDecodeError(
                f"{bits}-bit float at offset {offset}: DAG-CBOR floats are always 64-bit"
            )
        if info == 31:
            raise CanonDecodeError(f"unexpected break (0xff) at offset {offset}")
        if info in (28, 29, 30):
            raise CanonDecodeError(f"reserved additional info {info} at offset {offset}")
        raise CanonDecodeError(
            f"simple value at offset {offset} is not allowed (only false, true, null)"
        )


# --- the allocation-free scan ---------------------------------------------------------------


def _check_utf8(data: bytes, offset: int, position: int, length: int) -> None:
    try:
        data[position:position + length].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid_utf8(exc, offset, position) from None


def scan(data: bytes) -> None:
    """Check that ``data`` is one canonical DAG-CBOR item without building its value.

    An iterative walk over the item heads with an explicit stack of open containers, so
    its memory is bounded by MAX_NESTING_DEPTH whatever the input, and the depth limit is
    enforced when a container opens, before anything is allocated for it. It applies
    every rule of :class:`ExactDecoder`, in the same order and with the same messages
    and offsets, so the decoders refuse the same inputs the same way whether or not they
    scanned first; text is decoded (to check UTF-8) and links parsed (to check the CID),
    but nothing is kept.
    """
    end = len(data)
    if not end:
        raise CanonDecodeError("empty input at offset 0: expected one DAG-CBOR item")
    # Items still to read in each open container (a map counts key and value) and, per
    # container, the encoded bytes of the last map key (None for an array).
    remaining: list[int] = []
    last_keys: list[bytes | None] = []
    position = 0
    while True:
        if last_keys and last_keys[-1] is None and remaining[-1] > 1:
            # Inside an array: skip a run of one-byte items (small integers, empty strings,
            # empty containers, false/true/null) with one regex match, leaving the last
            # item to the walk below; dense arrays of them are the costliest valid shape.
            atoms = _ONE_BYTE_ITEMS if len(remaining) < MAX_NESTING_DEPTH else _ONE_BYTE_SCALARS
            run = atoms.match(data, position, position + remaining[-1] - 1)
            if run is not None:
                remaining[-1] -= run.end() - position
                position = run.end()
        offset = position
        if offset >= end:
            raise _truncated("item", offset, 1, end)
        initial = data[offset]
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            argument = info
            position = offset + 1
        elif major == 7:
            argument = 0
            position = offset + 1
        elif info > 27:
            raise _bad_head(major, info, initial, offset)
        else:
            size = 1 << (info - 24)
            if offset + 1 + size > end:
                raise _truncated(f"{_MAJOR_NAMES[major]} head", offset + 1, size, end)
            argument = int.from_bytes(data[offset + 1:offset + 1 + size], "big")
            if argument < _MIN_ARGUMENT[info]:
                raise _non_minimal(major, offset, argument, size)
            position = offset + 1 + size

        if last_keys and last_keys[-1] is not None and remaining[-1] % 2 == 0:
            # A map key: a text string, after the previous key in canonical order.
            if major != 3:
                raise _key_not_text(major, offset)
            if position + argument > end:
                raise _truncated("text string", position, argument, end)
            _check_utf8(data, offset, position, argument)
            position += argument
            encoded = data[offset:position]
            previous = last_keys[-1]
            if encoded <= previous:
                key = encoded[position - argument - offset:].decode("utf-8")
                raise _key_out_of_order(key, offset, duplicate=encoded == previous)
            last_keys[-1] = encoded
        elif major <= 1:
            pass
        elif major == 2:
            if position + argument > end:
                raise _truncated("byte string", position, argument, end)
            position += argument
        elif major == 3:
            if position + argument > end:
                raise _truncated("text string", position, argument, end)
            _check_utf8(data, offset, position, argument)
            position += argument
        elif major == 4 or major == 5:
            if len(remaining) + 1 > MAX_NESTING_DEPTH:
                raise _too_deep(offset)
            items = argument if major == 4 else 2 * argument
            if items > end - position:  # every item takes at least one byte
                raise _cannot_fit(major, offset, argument, end - position)
            if items:
                remaining.append(items)
                last_keys.append(None if major == 4 else b"")
                continue
        elif major == 6:
            # A tag: only 42 around a byte string holding 0x00 and a valid binary CID. The
            # CID is parsed to be checked, then dropped.
            position = ExactDecoder(data).link(offset, position, argument)[1]
        else:
            position = _scan_simple(data, offset, info)

        # One item is complete: count it, closing every container it completes.
        while remaining:
            remaining[-1] -= 1
            if remaining[-1]:
                break
            remaining.pop()
            last_keys.pop()
        if not remaining:
            break
    if position != end:
        raise _trailing(end, position)


def _scan_simple(data: bytes, offset: int, info: int) -> int:
    """Check a major-type-7 item (the exact decoder's rules); answers the offset after it."""
    if info in (20, 21, 22):
        return offset + 1
    if info == 27 and offset + 9 <= len(data):
        value = _unpack_double(data, offset + 1)[0]
        if _isfinite(value):
            return offset + 9
    ExactDecoder(data).simple(offset, info)  # raises with the exact decoder's message
    raise AssertionError("unreachable: simple() accepted what the scan refused")  # pragma: no cover
