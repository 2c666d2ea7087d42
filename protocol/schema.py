"""Small strict checks for message fields; every failure is a :class:`MessageError`.

Messages are DAG-CBOR maps. A decoder requires the fields of its schema with their exact
kinds (a DAG-CBOR integer is never a boolean) and ignores fields it does not know, so that a
compatible addition (a new ``<minor>`` of the protocol) can add optional fields; signed
messages sign every field, known or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from n3xus.canon.cid import CID

from .codes import ErrorCode
from .errors import MessageError


def need(condition: bool, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
    if not condition:
        raise MessageError(message, code)


def fields(value: Mapping[str, Any], required: set[str], what: str) -> Mapping[str, Any]:
    missing = sorted(required - set(value))
    need(not missing, f"{what}: missing fields {missing}")
    return value


def integer(value: Any, what: str, maximum: int) -> int:
    need(type(value) is int and 0 <= value <= maximum, f"{what} must be an integer 0..{maximum}")
    return int(value)


def text(value: Any, what: str, max_chars: int, min_chars: int = 0) -> str:
    need(type(value) is str and min_chars <= len(value) <= max_chars,
         f"{what} must be text of {min_chars}..{max_chars} characters")
    return str(value)


def byte_string(value: Any, what: str, size: int) -> bytes:
    need(type(value) is bytes and len(value) == size, f"{what} must be {size} bytes")
    return bytes(value)


def link(value: Any, what: str, max_bytes: int | None = None) -> CID:
    need(type(value) is CID, f"{what} must be a CID (tag 42)")
    if max_bytes is not None:
        need(len(bytes(value)) <= max_bytes, f"{what}: CID over {max_bytes} bytes")
    return value


def array(value: Any, what: str, max_items: int) -> list[Any]:
    need(type(value) is list, f"{what} must be an array")
    need(len(value) <= max_items, f"{what} has {len(value)} items, over {max_items}")
    return list(value)


def sorted_texts(value: Any, what: str, max_items: int, max_chars: int) -> tuple[str, ...]:
    """An array of distinct texts in ascending order of their UTF-8 bytes."""
    items = array(value, what, max_items)
    for item in items:
        text(item, f"an item of {what}", max_chars, 1)
    encoded = [item.encode("utf-8") for item in items]
    need(all(a < b for a, b in zip(encoded, encoded[1:], strict=False)),
         f"{what} must be sorted by UTF-8 bytes without duplicates")
    return tuple(items)
