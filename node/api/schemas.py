"""Building blocks of the API's JSON Schemas (OpenAPI 3.1 uses JSON Schema 2020-12).

Route modules describe their bodies, parameters and answers with these, and the one
route table feeds three consumers: the router, the boundary checks of
:mod:`.server` (bodies and parameters are validated before a handler runs) and the
OpenAPI document. Media types are named here once.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
DAG_CBOR = "application/vnd.ipld.dag-cbor"
CAR = "application/vnd.ipld.car; version=1"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"

# Largest integer a query or path parameter may carry: LMDB keys and the log indexes
# are unsigned 64-bit, and anything larger is an error at the boundary, not an
# OverflowError deep inside.
MAX_U64 = 2**64 - 1
MAX_I63 = 2**63 - 1
# Editions are numbered in 32 bits (specs/ledger.md).
MAX_U32 = 2**32 - 1

STRING: Schema = {"type": "string"}
BOOLEAN: Schema = {"type": "boolean"}
INTEGER: Schema = {"type": "integer", "minimum": 0}
NUMBER: Schema = {"type": "number"}
BINARY: Schema = {"type": "string", "format": "binary"}
CID_TEXT: Schema = {"type": "string", "description": "a CID (CIDv1 base32 `bafy…`, or base58btc)",
                    "minLength": 1}
HEX32: Schema = {"type": "string", "pattern": "^[0-9a-f]{64}$",
                 "description": "32 bytes as lowercase hex (an ed25519 public key / account)"}
HEX: Schema = {"type": "string", "pattern": "^[0-9a-f]*$"}
ANY: Schema = {}  # any JSON value (DAG-JSON view of a DAG-CBOR value)


def obj(required: dict[str, Schema] | None = None, optional: dict[str, Schema] | None = None,
        *, extra: bool = False, description: str | None = None) -> Schema:
    """An object with ``required`` and ``optional`` properties; other properties are
    refused unless ``extra`` (answers may grow fields; requests may not smuggle them)."""
    properties = {**(required or {}), **(optional or {})}
    schema: Schema = {"type": "object", "properties": properties,
                      "required": sorted(required or {})}
    if not extra:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def arr(items: Schema, *, max_items: int | None = None) -> Schema:
    schema: Schema = {"type": "array", "items": items}
    if max_items is not None:
        schema["maxItems"] = max_items
    return schema


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def integer(minimum: int = 0, maximum: int = MAX_U64) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


ERROR: Schema = obj({"error": obj({"code": STRING, "message": STRING})},
                    description="Every 4xx/5xx answer: a machine code and one human line.")
