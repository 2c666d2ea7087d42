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
from collections.abc import Callable
from typing import Any, Final

import cbor2

from ._codec_exact import ExactDecoder, scan
from .cid import CID
from .codec_limits import INT_MAX as INT_MAX
from .codec_limits import INT_MIN as INT_MIN
from .codec_limits import LINK_TAG
from .codec_limits import MAX_BLOCK_SIZE as MAX_BLOCK_SIZE
from .codec_limits import MAX_NESTING_DEPTH as MAX_NESTING_DEPTH
from .errors import CanonDecodeError, CanonEncodeError, LimitExceededError

# Blocks of at least this many bytes are validated by the allocation-free head scan
# (:func:`n3xus.canon._codec_exact.scan`) before cbor2 builds anything. The scan checks every rule the exact decoder
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

# cbor2 counts a tag as a nesting level and is only a safety net here: the exact limit is
# enforced by the re-encode walk and by decode_exact, which name the offset.
_CBOR2_MAX_DEPTH: Final = 2 * MAX_NESTING_DEPTH + 2

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
_SEMANTIC_DECODERS[LINK_TAG] = _decode_link

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
        scan(data)  # depth and every other rule, before any allocation
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


# --- decoding: the exact pure-Python decoder (the walkers live in _codec_exact) -----------


def decode_exact(data: bytes | bytearray | memoryview) -> Any:
    """Pure-Python strict decoder: the same result as :func:`decode` (which calls it when
    cbor2's fast path does not confirm the input), slower, with precise error offsets."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    if len(data) > MAX_BLOCK_SIZE:
        raise LimitExceededError(f"block of {len(data)} bytes is over {MAX_BLOCK_SIZE}")
    scan(data)  # refuses what the walk below would refuse, without building anything
    value = ExactDecoder(data).decode()
    # Fail closed: the walker above should have refused anything non-canonical; confirm it.
    try:
        again = encode(value)
    except (CanonEncodeError, LimitExceededError) as exc:  # pragma: no cover - defensive
        raise CanonDecodeError(f"decoded value does not re-encode: {exc}") from exc
    if again != data:  # pragma: no cover - defensive
        offset = next((i for i, (a, b) in enumerate(zip(again, data, strict=False)) if a != b), len(again))
        raise CanonDecodeError(f"not canonical DAG-CBOR: re-encoding differs at offset {offset}")
    return value
