"""Strict schema checks shared by the IMVU decoders (manifests, blocks, approvals, wire).

Every decoder here takes a decoded DAG-CBOR value and accepts exactly one shape: a map
with exactly the named keys, each of exactly the named kind and range. A failure raises
the caller's error class with a message naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NoReturn

from n3xus.canon.cid import CID
from n3xus.canon.codec import decode
from n3xus.canon.errors import CanonError

# Times and counters are signed-64-bit safe for every implementation (specs/README.md §2).
MAX_U63 = (1 << 63) - 1


class Checker:
    """Field checks raising ``error`` (a ValueError subclass) prefixed by ``what``."""

    def __init__(self, error: type[ValueError], what: str) -> None:
        self.error = error
        self.what = what

    def fail(self, message: str) -> NoReturn:
        raise self.error(f"{self.what}: {message}")

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)

    def decode(self, data: bytes, max_bytes: int) -> Any:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            self.fail("expected bytes")
        if len(data) > max_bytes:
            self.fail(f"{len(data)} bytes, over the limit of {max_bytes}")
        try:
            return decode(bytes(data))
        except CanonError as exc:
            self.fail(f"not strict DAG-CBOR: {exc}")

    def mapping(self, value: Any, fields: Iterable[str], name: str = "") -> dict[str, Any]:
        where = name or "value"
        if type(value) is not dict:
            self.fail(f"{where} must be a map")
        wanted = set(fields)
        missing, extra = sorted(wanted - set(value)), sorted(set(value) - wanted)
        if missing:
            self.fail(f"{where}: missing fields {missing}")
        if extra:
            self.fail(f"{where}: unknown fields {extra}")
        return value

    def integer(self, value: Any, name: str, low: int = 0, high: int = MAX_U63) -> int:
        if type(value) is not int or not low <= value <= high:
            self.fail(f"{name} must be an integer in {low}..{high}")
        return value

    def boolean(self, value: Any, name: str) -> bool:
        if type(value) is not bool:
            self.fail(f"{name} must be a boolean")
        return value

    def text(self, value: Any, name: str, max_chars: int, min_chars: int = 0,
             pattern: re.Pattern[str] | None = None) -> str:
        if type(value) is not str or not min_chars <= len(value) <= max_chars:
            self.fail(f"{name} must be a text of {min_chars}..{max_chars} characters")
        if pattern is not None and pattern.fullmatch(value) is None:
            self.fail(f"{name} {value!r} does not match {pattern.pattern}")
        return value

    def blob(self, value: Any, name: str, size: int) -> bytes:
        if type(value) is not bytes or len(value) != size:
            self.fail(f"{name} must be {size} bytes")
        return value

    def link(self, value: Any, name: str) -> CID:
        if type(value) is not CID:
            self.fail(f"{name} must be a CID link")
        return value

    def optional_link(self, value: Any, name: str) -> CID | None:
        if value is not None and type(value) is not CID:
            self.fail(f"{name} must be a CID link or null")
        return value

    def array(self, value: Any, name: str, max_items: int) -> list[Any]:
        if type(value) is not list:
            self.fail(f"{name} must be a list")
        if len(value) > max_items:
            self.fail(f"{name} has {len(value)} items, over the limit of {max_items}")
        return value

    def sorted_unique_texts(self, value: Any, name: str, max_items: int, max_chars: int,
                            allowed: Iterable[str] | None = None,
                            pattern: re.Pattern[str] | None = None) -> tuple[str, ...]:
        """A list of texts in strictly ascending order (one canonical form per set)."""
        items = self.array(value, name, max_items)
        texts = [self.text(item, f"an item of {name}", max_chars, 1, pattern) for item in items]
        if texts != sorted(set(texts)):
            self.fail(f"{name} must be sorted and without duplicates")
        if allowed is not None:
            unknown = sorted(set(texts) - set(allowed))
            if unknown:
                self.fail(f"{name}: unknown items {unknown}")
        return tuple(texts)
