"""Validation of the messages browsers send on a room's data channel (sans-IO)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from .errors import SignalingError
from .rooms import Permission, Role, allows
from .schemas import DATA_MESSAGE_SCHEMA

#: One data-channel message: a chat line or a world edit is well under this; SCTP
#: would carry megabytes, and every member would then get them.
MAX_DATA_MESSAGE_BYTES = 8 * 1024
#: Sustained data-channel messages per member: chat, reactions and world edits are
#: human-paced (a few per second); 10/s lets a burst of reactions through while one
#: member cannot make the node fan out a flood to everyone.
DATA_RATE_PER_S = 10.0
#: Burst allowance on top of the rate (a quick series of edits or emoji taps).
DATA_BURST = 30
#: Which permission each message type needs (a viewer may chat but not edit).
MESSAGE_PERMISSION = {
    "chat": Permission.CHAT,
    "reaction": Permission.REACT,
    "world-edit": Permission.EDIT,
    "ping": None,
}

_VALIDATOR = jsonschema.Draft202012Validator(DATA_MESSAGE_SCHEMA)


class DataMessageError(SignalingError):
    """A refused data-channel message (the sender gets an ``error`` back)."""


def _first_error(validator: jsonschema.Draft202012Validator, message: Any) -> str | None:
    if validator.is_valid(message):
        return None
    if isinstance(message, dict) and isinstance(message.get("type"), str):
        # oneOf errors are unreadable; report against the branch of this type.
        for branch in validator.schema["oneOf"]:
            if branch["properties"]["type"].get("const") == message["type"]:
                error = jsonschema.exceptions.best_match(
                    jsonschema.Draft202012Validator(branch).iter_errors(message))
                if error is not None:
                    where = "/".join(str(p) for p in error.absolute_path) or "message"
                    return f"{where}: {error.message}"
        return f"unknown message type {message['type'][:40]!r}"
    return "message must be a JSON object with a string 'type'"


def parse_json_message(raw: str | bytes, limit: int,
                       validator: jsonschema.Draft202012Validator) -> dict[str, Any]:
    """Size check, JSON parse and schema check, in that order; clear errors."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > limit:
        raise SignalingError(f"message of {size} bytes exceeds {limit}", code="too-large")
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SignalingError(f"message is not JSON: {exc}", code="bad-json") from None
    problem = _first_error(validator, message)
    if problem is not None:
        raise SignalingError(problem, code="bad-message")
    assert isinstance(message, dict)
    return message


def parse_data_message(raw: str | bytes, role: Role) -> dict[str, Any]:
    try:
        message = parse_json_message(raw, MAX_DATA_MESSAGE_BYTES, _VALIDATOR)
    except SignalingError as exc:
        raise DataMessageError(exc.message, code=exc.code) from None
    needed = MESSAGE_PERMISSION[message["type"]]
    if needed is not None and not allows(role, needed):
        raise DataMessageError(f"role {role.value} may not send {message['type']}",
                               code="forbidden")
    return message
