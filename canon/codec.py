"""Strict DAG-CBOR (ipld/ipld ``specs/codecs/dag-cbor/spec.md``): one value, one encoding.

``encode`` writes only the canonical form: map keys are strings sorted by their encoded bytes
(so shorter keys first), integers and lengths as short as possible, every float 64-bit, no NaN
or ±Infinity, no indefinite lengths, and tag 42 only, for links (a byte string 0x00 + binary
CID). ``decode`` accepts only that form and raises :class:`CanonDecodeError` naming what was
wrong and at which byte offset; links decode to :class:`~n3xus.canon.cid.CID`.

The data model maps to Python as None, bool, int (-2**64 .. 2**64-1), float, str, bytes,
list, dict with str keys, and CID. On encode we also accept, for convenience, tuples (as
arrays), bytearray and memoryview (as byte strings) and subclasses of the built-in kinds
(IntEnum as int, StrEnum as str, OrderedDict as map, NamedTuple as array); they decode to the
plain kinds. Every other type (set, datetime, Decimal, cbor2 tags and simple values, ...)
raises :class:`CanonEncodeError`.

Speed: the ledger encodes and decodes thousands of small maps per second, so both directions
use cbor2's native (Rust) codec. ``encode`` first walks the value in Python (checks kinds,
integer range, floats, depth; puts map keys in canonical order) and then lets cbor2 write it
in its plain, non-canonical mode, which writes dicts in insertion order, minimal integers and
lengths and 64-bit floats. ``decode`` lets cbor2 parse (with every tag except 42 refused and
tags that expand data overridden), re-encodes the result and compares bytes: equal bytes prove
the input was the canonical encoding of that value. Any failure or mismatch falls back to
:func:`decode_exact`, a pure-Python strict decoder that finds the precise fault and offset.
"""

from __future__ import annotations

import math
import operator
import re
import struct
from collections.abc import Callable
from typing import Any, Final

import cbor2

from .cid import CID
from .errors import CanonDecodeError, CanonEncodeError, LimitExceededError

# Largest block we encode or decode. Every IPFS implementation exchanges blocks up to 1 MiB
# over Bitswap (kubo refuses to `block put` larger ones without --allow-big-block, as peers
# would not fetch them); a canon block must be fetchable by any peer. It also bounds the work
# one decode can cost.
MAX_BLOCK_SIZE: Final = 1 << 20

# Deepest nesting of arrays and maps (a top-level container is depth 1). Real documents are a
# few levels deep and link to deeper structure by CID; 128 keeps the recursive Python walkers
# far below the interpreter's recursion limit (1000) and cbor2's native stack (its encoder
# crashes the process somewhere between 1,000 and 10,000 levels, so we check before it runs).
MAX_NESTING_DEPTH: Final = 128

# Blocks of at least this many bytes are validated by the allocation-free head scan
# (:func:`_scan`) before cbor2 builds anything. The scan checks every rule the exact decoder
# checks, nesting depth first, so hostile input is refused without allocating a value:
# measured on this machine, 1 MiB of ~1M empty arrays ending in one non-canonical byte
# cost 1.8 s and 170 MB through the fast path and the exact fallback. Below this size a
# value has at most 16k items (a few MB to build), cbor2's max_depth already stops deep
# nesting inside its parser, and the ledger's small maps skip the scan's cost.
PRESCAN_MIN_BYTES: Final = 16 * 1024

# Canonical key order is remembered per tuple of keys: maps in the hot loop share a handful
# of schemas, so the sort is paid once per schema. The cache is cleared when it holds this
# many key sets (bounds memory against maps keyed by ever-new data) ...
MAX_KEY_ORDER_CACHE: Final = 4096
# ... and maps with more keys than this are sorted every time instead of cached (such maps
# are data-keyed indexes, whose key sets rarely repeat and would be costly to keep).
MAX_CACHED_MAP_KEYS: Final = 64

INT_MIN: Final = -(1 << 64)
INT_MAX: Final = (1 << 64) - 1

# cbor2 counts a tag as a nesting level and is only a safety net here: the exact limit is
# enforced by the re-encode walk and by decode_exact, which name the offset.
_CBOR2_MAX_DEPTH: Final = 2 * MAX_NESTING_DEPTH + 2

_LINK_TAG: Final = 42

_isfinite = math.isfinite


# --- encoding ----------------------------------------------------------------------------


class _EncodeFailure(Exception):
    """Internal: raised deep in the walk, carries the path to the bad value outwards."""

    def __init__(self, message: str, *, limit: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.limit = limit
        self.path: list[str] = []

    def to_error(self) -> CanonEncodeError | LimitExceededError:
        where = "$" + "".join(reversed(self.path))
        text = f"{self.message} (at {where})"
        return LimitExceededError(text) if self.limit else CanonEncodeError(text)


_UNSEEN: Final = object()
_KEY_ORDERS: dict[tuple[Any, ...], tuple[str, ...] | None] = {}


def _key_order(keys: tuple[Any, ...]) -> tuple[str, ...] | None:
    """Canonical order of a map's (exact str) keys; None when already in that order."""
    sortable: list[tuple[int, bytes, str]] = []
    for key in keys:
        if type(key) is not str:
            raise _EncodeFailure(f"map key {key!r} is a {type(key).__name__}, not a str")
        try:
            encoded = key.encode("utf-8")
        except UnicodeEncodeError:
            raise _EncodeFailure(f"map key {key!r} is not valid UTF-8 (lone surrogate)") from None
        sortable.append((len(encoded), encoded, key))
    # Encoded keys sort by their CBOR bytes: the header holds the length, so shorter first,
    # then byte-wise. Equal keys cannot occur in a dict.
    sortable.sort()
    ordered = tuple(entry[2] for entry in sortable)
    order = None if ordered == keys else ordered
    if len(keys) <= MAX_CACHED_MAP_KEYS:
        if len(_KEY_ORDERS) >= MAX_KEY_ORDER_CACHE:
            _KEY_ORDERS.clear()
        _KEY_ORDERS[keys] = order
    return order


def _prepare(value: Any, depth: int) -> Any:
    """Check ``value`` (at nesting ``depth``) and return what cbor2 should write for it: the
    same object when it already is canonical-ready, else a copy with keys ordered and
    conveniences (tuples, enums, bytearrays) turned into plain kinds."""
    kind = type(value)
    if kind is dict:
        return _prepare_map(value, depth + 1)
    if kind is list:
        return _prepare_array(value, depth + 1)
    if kind is str or kind is bytes or kind is bool or value is None or kind is CID:
        return value
    if kind is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise _EncodeFailure(f"integer {value} is outside the CBOR range -2**64 .. 2**64-1")
    if kind is float:
        if _isfinite(value):
            return value
        raise _EncodeFailure(f"float {value} is not allowed (DAG-CBOR has no NaN or Infinity)")
    return _prepare_other(value, depth)


def _prepare_map(mapping: dict[Any, Any], depth: int) -> dict[str, Any]:
    if depth > MAX_NESTING_DEPTH:
        raise _EncodeFailure(f"nesting deeper than {MAX_NESTING_DEPTH} (a cycle?)", limit=True)
    keys = tuple(mapping)
    order = _KEY_ORDERS.get(keys, _UNSEEN)
    if order is _UNSEEN:
        if not all(type(key) is str for key in keys):
            return _prepare_map_with_odd_keys(mapping, depth)
        order = _key_order(keys)
    changed = order is not None
    ordered: tuple[str, ...] = keys if order is None else order  # type: ignore[assignment]
    values: list[Any] = []
    append = values.append
    for key in ordered:
        item = mapping[key]
        kind = type(item)
        if kind is str or kind is bytes or kind is bool or item is None or kind is CID or (
            kind is int and INT_MIN <= item <= INT_MAX
        ):
            append(item)
            continue
        try:
            prepared = _prepare(item, depth)
        except _EncodeFailure as failure:
            failure.path.append(f"[{key!r}]")
            raise
        if prepared is not item:
            changed = True
        append(prepared)
    if not changed:
        return mapping
    return dict(zip(ordered, values, strict=True))


def _prepare_map_with_odd_keys(mapping: dict[Any, Any], depth: int) -> dict[str, Any]:
    """Maps whose keys are not all exact str: str subclasses (StrEnum) become plain str;
    anything else is refused, as DAG-CBOR map keys are strings only."""
    plain: dict[str, Any] = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise _EncodeFailure(f"map key {key!r} is a {type(key).__name__}, not a str")
        plain[str.__str__(key)] = item
    return _prepare_map(plain, depth)


def _prepare_array(sequence: list[Any] | tuple[Any, ...], depth: int) -> list[Any] | tuple[Any, ...]:
    if depth > MAX_NESTING_DEPTH:
        raise _EncodeFailure(f"nesting deeper than {MAX_NESTING_DEPTH} (a cycle?)", limit=True)
    values: list[Any] | None = None
    for index, item in enumerate(sequence):
        kind = type(item)
        if kind is str or kind is bytes or kind is bool or item is None or kind is CID or (
            kind is int and INT_MIN <= item <= INT_MAX
        ):
            if values is not None:
                values.append(item)
            continue
        try:
            prepared = _prepare(item, depth)
        except _EncodeFailure as failure:
            failure.path.append(f"[{index}]")
            raise
        if prepared is not item and values is None:
            values = list(sequence[:index])
        if values is not None:
            values.append(prepared)
    return sequence if values is None else values


def _prepare_other(value: Any, depth: int) -> Any:
    """The rare kinds: subclasses and conveniences, converted to plain kinds; or refusal."""
    if isinstance(value, dict):
        return _prepare_map(dict(value), depth + 1)
    if isinstance(value, list | tuple):
        prepared = _prepare_array(value, depth + 1)
        return list(prepared) if prepared is value else prepared
    if isinstance(value, int):
        return _prepare(operator.index(value), depth)
    if isinstance(value, float):
        return _prepare(float.__float__(value), depth)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return memoryview(value).tobytes()
    raise _EncodeFailure(
        f"cannot encode {type(value).__qualname__}: not an IPLD data model kind "
        "(None, bool, int, float, str, bytes, list, dict with str keys, CID)"
    )


def _write_link(encoder: cbor2.CBOREncoder, value: Any) -> None:
    """cbor2's hook for types it does not know: after the walk, only CIDs remain. (A
    ``default`` hook, because cbor2's ``encoders`` mapping costs ~3 µs per call.)"""
    if type(value) is not CID:  # pragma: no cover - the walk admits no other type
        raise _EncodeFailure(f"cannot encode {type(value).__qualname__}")
    encoder.write(value.dag_cbor_link())


_dumps = cbor2.dumps


def encode(value: object) -> bytes:
    """The canonical DAG-CBOR bytes of ``value``.

    Raises CanonEncodeError for values outside the data model (with the path to the bad
    part) and LimitExceededError when nested deeper than MAX_NESTING_DEPTH or the result
    exceeds MAX_BLOCK_SIZE.
    """
    try:
        data = _dumps(_prepare(value, 0), default=_write_link)
    except _EncodeFailure as failure:
        raise failure.to_error() from None
    except UnicodeEncodeError as exc:
        raise CanonEncodeError(f"text is not valid UTF-8 (lone surrogate): {exc}") from None
    except cbor2.CBOREncodeError as exc:  # pragma: no cover - the walk admits only what cbor2 writes
        raise CanonEncodeError(f"cannot encode: {exc}") from exc
    if len(data) > MAX_BLOCK_SIZE:
        raise LimitExceededError(f"encoded value is {len(data)} bytes, over {MAX_BLOCK_SIZE}")
    return data


# --- decoding: fast path ------------------------------------------------------------------


class _Refused(ValueError):
    """Internal: cbor2 met something the exact decoder will explain."""


def _decode_link(value: Any, immutable: bool) -> CID:
    if type(value) is not bytes or value[:1] != b"\x00":
        raise _Refused("malformed link")
    return CID(value[1:])


def _refuse_tag(*_: Any) -> Any:
    raise _Refused("tag other than 42")


# cbor2 decodes these tags natively. Each is overridden: stringref (25/256) and shared values
# (28/29) could expand a small block into a huge value or a cycle before we compare, and
# decimal/bigfloat/rational (4/5/30) do big-number arithmetic on untrusted exponents. The
# others would be caught by the byte comparison, but refusing them early is cheaper.
_CBOR2_NATIVE_TAGS: Final = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256,
                             258, 260, 261, 1004, 43000, 55799)
_SEMANTIC_DECODERS: Final[dict[int, Callable[[Any, bool], Any]]] = {
    tag: _refuse_tag for tag in _CBOR2_NATIVE_TAGS
}
_SEMANTIC_DECODERS[_LINK_TAG] = _decode_link

# What cbor2 or the re-encode walk may raise on hostile input; all of it sends the input on to
# the exact decoder, which either explains the fault or (having accepted) is cross-checked.
_FAST_PATH_FAILURES: Final = (cbor2.CBORError, ValueError, TypeError, OverflowError,
                              RecursionError, _EncodeFailure)

_loads = cbor2.loads


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value of a canonical DAG-CBOR block; anything else raises CanonDecodeError (or
    LimitExceededError past MAX_BLOCK_SIZE / MAX_NESTING_DEPTH) with the byte offset."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    if len(data) > MAX_BLOCK_SIZE:
        raise LimitExceededError(f"block of {len(data)} bytes is over {MAX_BLOCK_SIZE}")
    scanned = len(data) >= PRESCAN_MIN_BYTES
    if scanned:
        _scan(data)  # depth and every other rule, before any allocation
    try:
        value = _loads(
            data,
            semantic_decoders=_SEMANTIC_DECODERS,
            tag_hook=_refuse_tag,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,  # keys are str/bytes only: no int hash flooding
            max_depth=_CBOR2_MAX_DEPTH,
        )
        # The scan applies every rule of the canonical form, so a scanned input needs no
        # re-encoding to prove it (that walk would double the cost of large blocks).
        canonical = scanned or _dumps(_prepare(value, 0), default=_write_link) == data
    except _FAST_PATH_FAILURES:
        canonical = False
    if canonical:
        return value
    return decode_exact(data)


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes | bytearray | memoryview):
        return memoryview(data).tobytes()
    raise TypeError(f"decode() takes bytes, not {type(data).__name__}")


# --- decoding: the exact pure-Python decoder ---------------------------------------------

_unpack_double = struct.Struct(">d").unpack_from
_MIN_ARGUMENT = {24: 24, 25: 0x100, 26: 0x10000, 27: 0x100000000}
_MAJOR_NAMES = ("unsigned integer", "negative integer", "byte string", "text string", "array",
                "map", "tag", "simple value/float")


def decode_exact(data: bytes | bytearray | memoryview) -> Any:
    """Pure-Python strict decoder: the same result as :func:`decode` (which calls it when
    cbor2's fast path does not confirm the input), slower, with precise error offsets."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    if len(data) > MAX_BLOCK_SIZE:
        raise LimitExceededError(f"block of {len(data)} bytes is over {MAX_BLOCK_SIZE}")
    _scan(data)  # refuses what the walk below would refuse, without building anything
    value, end = _ExactDecoder(data).item(0, 0)
    if end != len(data):
        raise CanonDecodeError(
            f"{len(data) - end} trailing bytes after the top-level item at offset {end}"
        )
    # Fail closed: the walker above should have refused anything non-canonical; confirm it.
    try:
        again = encode(value)
    except (CanonEncodeError, LimitExceededError) as exc:  # pragma: no cover - defensive
        raise CanonDecodeError(f"decoded value does not re-encode: {exc}") from exc
    if again != data:  # pragma: no cover - defensive
        offset = next((i for i, (a, b) in enumerate(zip(again, data, strict=False)) if a != b), len(again))
        raise CanonDecodeError(f"not canonical DAG-CBOR: re-encoding differs at offset {offset}")
    return value


class _ExactDecoder:
    """Recursive strict decoder over one buffer; positions are absolute offsets."""

    __slots__ = ("data", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)

    def _need(self, start: int, count: int, what: str) -> None:
        if start + count > self.end:
            raise CanonDecodeError(
                f"truncated {what} at offset {start}: needs {count} bytes, "
                f"{self.end - start} left"
            )

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
        if info == 31:
            raise CanonDecodeError(
                f"indefinite-length {_MAJOR_NAMES[major]} at offset {offset} is not allowed"
                if 2 <= major <= 5
                else f"invalid item head 0x{initial:02x} at offset {offset}"
            )
        if info > 27:
            raise CanonDecodeError(f"reserved additional info {info} at offset {offset}")
        size = 1 << (info - 24)
        self._need(offset + 1, size, f"{_MAJOR_NAMES[major]} head")
        argument = int.from_bytes(self.data[offset + 1:offset + 1 + size], "big")
        if argument < _MIN_ARGUMENT[info]:
            raise CanonDecodeError(
                f"non-minimal {_MAJOR_NAMES[major]} encoding at offset {offset}: "
                f"{argument} written with {size} extra bytes"
            )
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
            raise CanonDecodeError(
                f"invalid UTF-8 in text string at offset {position + exc.start} "
                f"(string starts at {offset}): {exc.reason}"
            ) from None

    def _check_depth(self, offset: int, depth: int) -> None:
        if depth > MAX_NESTING_DEPTH:
            raise LimitExceededError(
                f"nesting deeper than {MAX_NESTING_DEPTH} at offset {offset}"
            )

    def array(self, offset: int, position: int, count: int, depth: int) -> tuple[list[Any], int]:
        self._check_depth(offset, depth)
        if count > self.end - position:  # every item takes at least one byte
            raise CanonDecodeError(
                f"truncated array at offset {offset}: {count} items cannot fit in "
                f"{self.end - position} bytes"
            )
        items: list[Any] = []
        for _ in range(count):
            item, position = self.item(position, depth)
            items.append(item)
        return items, position

    def map(self, offset: int, position: int, count: int, depth: int) -> tuple[dict[str, Any], int]:
        self._check_depth(offset, depth)
        if 2 * count > self.end - position:
            raise CanonDecodeError(
                f"truncated map at offset {offset}: {count} entries cannot fit in "
                f"{self.end - position} bytes"
            )
        result: dict[str, Any] = {}
        previous = b""
        for _ in range(count):
            key_offset = position
            major, _info, length, key_start = self.head(position)
            if major != 3:
                raise CanonDecodeError(
                    f"map key at offset {key_offset} is a {_MAJOR_NAMES[major]}; "
                    "DAG-CBOR map keys must be text strings"
                )
            key, position = self.text(key_offset, key_start, length)
            encoded = self.data[key_offset:position]
            if encoded <= previous:
                if encoded == previous:
                    raise CanonDecodeError(f"duplicate map key {key!r} at offset {key_offset}")
                raise CanonDecodeError(
                    f"map keys out of canonical order at offset {key_offset}: {key!r} must "
                    "come before the previous key (keys sort by length, then bytes)"
                )
            previous = encoded
            result[key], position = self.item(position, depth)
        return result, position

    def link(self, offset: int, position: int, tag: int) -> tuple[CID, int]:
        if tag != _LINK_TAG:
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


# --- decoding: the allocation-free scan ---------------------------------------------------


# Items that are exactly one byte: integers 0..23 and -1..-24, the empty byte and text
# strings, false, true, null; and (when one more level of nesting is allowed) the empty
# array and map.
_ONE_BYTE_SCALARS: Final = re.compile(rb"[\x00-\x17\x20-\x37\x40\x60\xf4-\xf6]+")
_ONE_BYTE_ITEMS: Final = re.compile(rb"[\x00-\x17\x20-\x37\x40\x60\x80\xa0\xf4-\xf6]+")


def _truncated(what: str, start: int, count: int, end: int) -> CanonDecodeError:
    return CanonDecodeError(
        f"truncated {what} at offset {start}: needs {count} bytes, {end - start} left"
    )


def _check_utf8(data: bytes, offset: int, position: int, length: int) -> None:
    try:
        data[position:position + length].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonDecodeError(
            f"invalid UTF-8 in text string at offset {position + exc.start} "
            f"(string starts at {offset}): {exc.reason}"
        ) from None


def _scan(data: bytes) -> None:
    """Check that ``data`` is one canonical DAG-CBOR item without building its value.

    An iterative walk over the item heads with an explicit stack of open containers, so
    its memory is bounded by MAX_NESTING_DEPTH whatever the input, and the depth limit is
    enforced when a container opens, before anything is allocated for it. It applies
    every rule of :class:`_ExactDecoder`, in the same order and with the same messages
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
        elif info == 31:
            raise CanonDecodeError(
                f"indefinite-length {_MAJOR_NAMES[major]} at offset {offset} is not allowed"
                if 2 <= major <= 5
                else f"invalid item head 0x{initial:02x} at offset {offset}"
            )
        elif info > 27:
            raise CanonDecodeError(f"reserved additional info {info} at offset {offset}")
        else:
            size = 1 << (info - 24)
            if offset + 1 + size > end:
                raise _truncated(f"{_MAJOR_NAMES[major]} head", offset + 1, size, end)
            argument = int.from_bytes(data[offset + 1:offset + 1 + size], "big")
            if argument < _MIN_ARGUMENT[info]:
                raise CanonDecodeError(
                    f"non-minimal {_MAJOR_NAMES[major]} encoding at offset {offset}: "
                    f"{argument} written with {size} extra bytes"
                )
            position = offset + 1 + size

        if last_keys and last_keys[-1] is not None and remaining[-1] % 2 == 0:
            # A map key: a text string, after the previous key in canonical order.
            if major != 3:
                raise CanonDecodeError(
                    f"map key at offset {offset} is a {_MAJOR_NAMES[major]}; "
                    "DAG-CBOR map keys must be text strings"
                )
            if position + argument > end:
                raise _truncated("text string", position, argument, end)
            _check_utf8(data, offset, position, argument)
            position += argument
            encoded = data[offset:position]
            previous = last_keys[-1]
            if encoded <= previous:
                key = encoded[position - argument - offset:].decode("utf-8")
                if encoded == previous:
                    raise CanonDecodeError(f"duplicate map key {key!r} at offset {offset}")
                raise CanonDecodeError(
                    f"map keys out of canonical order at offset {offset}: {key!r} must "
                    "come before the previous key (keys sort by length, then bytes)"
                )
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
                raise LimitExceededError(
                    f"nesting deeper than {MAX_NESTING_DEPTH} at offset {offset}"
                )
            items = argument if major == 4 else 2 * argument
            if items > end - position:  # every item takes at least one byte
                what = "array" if major == 4 else "map"
                unit = "items" if major == 4 else "entries"
                raise CanonDecodeError(
                    f"truncated {what} at offset {offset}: {argument} {unit} cannot fit in "
                    f"{end - position} bytes"
                )
            if items:
                remaining.append(items)
                last_keys.append(None if major == 4 else b"")
                continue
        elif major == 6:
            position = _scan_link(data, offset, position, argument)
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
        raise CanonDecodeError(
            f"{end - position} trailing bytes after the top-level item at offset {position}"
        )


def _scan_link(data: bytes, offset: int, position: int, tag: int) -> int:
    """Check a tag at ``offset`` (its head ends at ``position``): only 42 around a byte
    string holding 0x00 and a valid binary CID. Answers the offset after it."""
    if tag != _LINK_TAG:
        raise CanonDecodeError(
            f"tag {tag} at offset {offset} is not allowed (DAG-CBOR has only tag 42, links)"
        )
    major, _info, length, start = _ExactDecoder(data).head(position)
    if major != 2:
        raise CanonDecodeError(
            f"tag 42 at offset {offset} wraps a {_MAJOR_NAMES[major]}, not a byte string"
        )
    if start + length > len(data):
        raise _truncated("link", start, length, len(data))
    if data[start:start + 1] != b"\x00":
        raise CanonDecodeError(
            f"link at offset {offset} lacks the 0x00 multibase prefix before the CID"
        )
    try:
        CID(data[start + 1:start + length])
    except CanonDecodeError as exc:
        raise CanonDecodeError(f"invalid CID in link at offset {offset}: {exc}") from None
    return start + length


def _scan_simple(data: bytes, offset: int, info: int) -> int:
    """Check a major-type-7 item (the exact decoder's rules); answers the offset after it."""
    if info in (20, 21, 22):
        return offset + 1
    if info == 27 and offset + 9 <= len(data):
        value = _unpack_double(data, offset + 1)[0]
        if _isfinite(value):
            return offset + 9
    _ExactDecoder(data).simple(offset, info)  # raises with the exact decoder's message
    raise AssertionError("unreachable: simple() accepted what the scan refused")  # pragma: no cover
