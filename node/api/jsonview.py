"""DAG-CBOR values <-> JSON for the CLI and the HTTP API, in the DAG-JSON manner:
a link is ``{"/": "<cid>"}``, bytes are ``{"/": {"bytes": "<base64, no padding>"}}``.

Only these two reserved shapes are special; any other map is a plain map. (Full
DAG-JSON is a codec with its own canonical form; here JSON is only a view.)
"""

from __future__ import annotations

import base64
from typing import Any

from n3xus.canon.cid import CID


def to_json(value: Any) -> Any:
    if isinstance(value, CID):
        return {"/": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"/": {"bytes": base64.b64encode(bytes(value)).decode().rstrip("=")}}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    """The DAG-CBOR value for a parsed JSON value. Raises ValueError on a malformed
    reserved shape (a bad CID or bad base64)."""
    if isinstance(value, dict):
        if set(value) == {"/"}:
            inner = value["/"]
            if isinstance(inner, str):
                return CID(inner)
            if isinstance(inner, dict) and set(inner) == {"bytes"} and isinstance(inner["bytes"], str):
                text = inner["bytes"]
                try:
                    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
                except ValueError as exc:
                    raise ValueError(f"bad base64 in bytes value: {exc}") from exc
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value
