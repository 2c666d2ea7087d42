"""One plain line for a request that its JSON Schema refuses.

jsonschema's own messages quote the schema (``'zz' does not match '^[0-9a-f]{64}$'``,
``Additional properties are not allowed ('x' was unexpected)``) and repeat the whole
offending value. An operator reads these lines in the CLI, so each refusal is rephrased
by the keyword that failed: the field, what it must be (the schema's ``description``
where it has one), and a short form of what was sent.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema.exceptions import ValidationError

# Characters of a refused value quoted back: enough to recognise it, bounded so that a
# 1 MiB string does not come back in the error line.
MAX_SHOWN_CHARS = 60
# Unknown or missing fields named in one line; the rest are counted (the line stays short).
MAX_SHOWN_FIELDS = 3

_JSON_KINDS = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "an integer", float: "a number", type(None): "null"}
_SCHEMA_KINDS = {"object": "an object", "array": "an array", "string": "a string",
                 "boolean": "a boolean", "integer": "an integer", "number": "a number",
                 "null": "null"}


def shown(value: Any) -> str:
    """``value`` quoted for an error line, cut to MAX_SHOWN_CHARS."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=repr)
    if len(text) > MAX_SHOWN_CHARS:
        return text[:MAX_SHOWN_CHARS] + "…"
    return text


def not_matching(subject: str, value: str, schema: dict[str, Any]) -> str:
    """The line for a string that misses its schema's pattern (body fields and parameters)."""
    what = schema.get("description")
    if what:
        return f"{subject}: {shown(value)} is not {what}"
    return f"{subject}: {shown(value)} is not well-formed (expected {schema['pattern']})"


def describe(error: ValidationError, *, what: str = "request body") -> str:
    """One line naming the refused field, what it must be and what was sent."""
    where = "/".join(str(part) for part in error.absolute_path)
    subject = where or what
    inside = f"{where}: " if where else ""
    keyword, expected, value = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword == "required" and isinstance(value, dict):
        missing = [name for name in expected if name not in value]
        return f"{inside}missing {_fields(missing)}"
    if keyword == "additionalProperties" and isinstance(value, dict):
        known = schema.get("properties", {})
        extra = sorted(name for name in value if name not in known)
        return f"{inside}unknown {_fields(extra)}"
    if keyword == "type":
        kinds = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_SCHEMA_KINDS.get(kind, kind) for kind in kinds)
        return f"{subject} must be {wanted}, not {_kind_of(value)}"
    if keyword == "pattern" and isinstance(value, str):
        return not_matching(subject, value, schema)
    if keyword == "enum":
        return f"{subject} must be one of {', '.join(map(str, expected))}, not {shown(value)}"
    if keyword == "const":
        return f"{subject} must be {shown(expected)}, not {shown(value)}"
    if keyword in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=",
                "exclusiveMaximum": "<"}[keyword]
        return f"{subject} must be {sign} {expected}, not {shown(value)}"
    if keyword == "minLength":
        return (f"{subject} must not be empty" if expected == 1
                else f"{subject} must be at least {expected} characters")
    if keyword == "maxLength":
        return f"{subject} is over {expected} characters"
    if keyword == "minItems":
        return f"{subject} needs at least {expected} items"
    if keyword == "maxItems":
        return f"{subject} has more than {expected} items"
    if keyword in ("anyOf", "oneOf") and error.context:
        # A nullable field (anyOf: [schema, null]): the branch that is not null says why.
        branches = [sub for sub in error.context if sub.validator_value != "null"]
        if branches:
            return describe(max(branches, key=lambda sub: len(sub.absolute_path)), what=what)
    return f"{subject}: {shown(value)} is not valid here ({keyword})"


def _fields(names: list[str]) -> str:
    quoted = ", ".join(shown(name) for name in names[:MAX_SHOWN_FIELDS])
    if len(names) > MAX_SHOWN_FIELDS:
        quoted += f" and {len(names) - MAX_SHOWN_FIELDS} more"
    return f"field {quoted}" if len(names) == 1 else f"fields {quoted}"


def _kind_of(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)
