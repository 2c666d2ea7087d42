"""JSON Schemas (draft 2020-12) of every JSON message of a live room.

These dicts are the normative schemas: specs/live-signaling.md embeds them verbatim and a
test checks that the text and this module agree. Validation uses ``jsonschema``
(the reference validator of the field); the size limits are checked before any
parsing, the rate limits in :mod:`n3xus.webrtc.signaling`.
"""

from __future__ import annotations

from typing import Any

#: Longest display name, chat text and reaction; world keys/values (bytes of JSON).
MAX_NAME_CHARS = 64
MAX_CHAT_CHARS = 2000
MAX_REACTION_CHARS = 16
MAX_WORLD_KEY_CHARS = 256
MAX_WORLD_VALUE_CHARS = 4096
#: SDP text carried in a signaling message (see sdp.MAX_SDP_BYTES for the reason).
MAX_SDP_CHARS = 32 * 1024
#: Largest browser mesh of a room page (room-page members joined directly to each
#: other, §4.5). A full mesh costs every tab one DTLS/SCTP association per other member
#: and n(n-1)/2 connections in all; at 8 a newcomer's offers (at most 7) plus its hello
#: and its offer to the node still fit one signaling burst (SIGNAL_BURST = 10). Beyond
#: it the whole room falls back to the node as the hub (the roster says ``mesh: false``).
MAX_MESH_PEERS = 8
#: Node-assigned peer ids are 16 lower-case hex digits (``secrets.token_hex(8)``).
_PEER_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$"}

_ROOM_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}
_ROLE = {"enum": ["owner", "performer", "collaborator", "viewer"]}
_SDP = {"type": "string", "minLength": 10, "maxLength": MAX_SDP_CHARS}
#: A room member as the node names it (peer id, display name, role; set by the node).
_MEMBER = {
    "type": "object",
    "properties": {"peer": _PEER_ID, "name": {"type": "string", "maxLength": MAX_NAME_CHARS},
                   "role": _ROLE},
    "required": ["peer", "name", "role"],
    "additionalProperties": False,
}


def _message(type_: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"const": type_}, **properties},
        "required": ["type", *required],
        "additionalProperties": False,
    }


#: Browser -> node, over the signaling WebSocket (specs/live-signaling.md §1.2).
CLIENT_SIGNAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "n3xus/live-signal-client/v1",
    "oneOf": [
        _message("hello", {
            "v": {"const": 1},
            "token": {"type": "string", "minLength": 1, "maxLength": 512},
            "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_CHARS},
            "mesh": {"type": "boolean"},
        }, ["v", "token"]),
        _message("offer", {"sdp": _SDP}, ["sdp"]),
        _message("peer-offer", {"to": _PEER_ID, "sdp": _SDP}, ["to", "sdp"]),
        _message("peer-answer", {"to": _PEER_ID, "sdp": _SDP}, ["to", "sdp"]),
        _message("end", {}, []),
        _message("ping", {"t": {"type": "number"}}, []),
        _message("bye", {}, []),
    ],
}

#: Node -> browser, over the signaling WebSocket (specs/live-signaling.md §1.3).
SERVER_SIGNAL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "n3xus/live-signal-server/v1",
    "oneOf": [
        _message("welcome", {
            "v": {"const": 1},
            "peer": {"type": "string"},
            "room": _ROOM_NAME,
            "role": _ROLE,
            "live": {"type": "boolean"},
            "ice_servers": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "urls": {"type": "array", "items": {"type": "string"}},
                    "username": {"type": "string"},
                    "credential": {"type": "string"},
                },
                "required": ["urls"],
                "additionalProperties": False,
            }},
        }, ["v", "peer", "room", "role", "live", "ice_servers"]),
        _message("answer", {"sdp": _SDP}, ["sdp"]),
        _message("roster", {
            "mesh": {"type": "boolean"},
            "peers": {"type": "array", "maxItems": MAX_MESH_PEERS, "items": _MEMBER},
        }, ["mesh", "peers"]),
        _message("peer-offer", {"from": _MEMBER, "sdp": _SDP}, ["from", "sdp"]),
        _message("peer-answer", {"from": _MEMBER, "sdp": _SDP}, ["from", "sdp"]),
        _message("live", {"live": {"type": "boolean"}}, ["live"]),
        _message("pong", {"t": {"type": "number"}}, []),
        _message("error", {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "fatal": {"type": "boolean"},
        }, ["code", "message", "fatal"]),
    ],
}

#: Browser -> node, over the ``room`` data channel (specs/live-signaling.md §2).
DATA_MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "n3xus/live-data/v1",
    "oneOf": [
        _message("chat", {"text": {"type": "string", "minLength": 1,
                                    "maxLength": MAX_CHAT_CHARS}}, ["text"]),
        _message("reaction", {"emoji": {"type": "string", "minLength": 1,
                                         "maxLength": MAX_REACTION_CHARS}}, ["emoji"]),
        _message("world-edit", {
            "world": _ROOM_NAME,
            "op": {"enum": ["set", "delete"]},
            "key": {"type": "string", "minLength": 1, "maxLength": MAX_WORLD_KEY_CHARS},
            "value": {"type": "string", "maxLength": MAX_WORLD_VALUE_CHARS},
            "id": {"type": "string", "maxLength": 64},
        }, ["world", "op", "key"]),
        _message("ping", {"t": {"type": "number"}}, []),
    ],
}

#: Browser <-> browser, over a ``mesh`` data channel (specs/live-signaling.md §2.2). The node
#: never sees these; each page checks them against this schema before use, and the
#: sender is the peer the node named in the ``peer-offer``/``peer-answer``.
MESH_MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "n3xus/live-mesh/v1",
    "oneOf": [
        _message("presence", {"name": {"type": "string", "minLength": 1,
                                       "maxLength": MAX_NAME_CHARS}}, ["name"]),
        _message("chat", {"text": {"type": "string", "minLength": 1,
                                    "maxLength": MAX_CHAT_CHARS}}, ["text"]),
        DATA_MESSAGE_SCHEMA["oneOf"][2],
        _message("ping", {"t": {"type": "number"}}, ["t"]),
        _message("pong", {"t": {"type": "number"}}, ["t"]),
    ],
}
