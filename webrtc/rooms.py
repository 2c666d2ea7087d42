"""Rooms, roles and room tokens (sans-IO: callers pass the clock and the key).

A room token grants one role in one room until it expires. It is issued by the
node and verified only by the node that issued it, so it is MACed, not signed:
HMAC-SHA256 under a 32-byte secret the node keeps (0600) and never sends. (A
signature would let other nodes verify it, but a node serves its own viewers with
its own tokens -- specs/live.md §2 -- so nothing needs that, and a MAC key is one
more key the node can rotate without touching its identity.)

Token text (specs/live.md §2)::

    "n3xrt1." base64url(payload) "." base64url(HMAC-SHA256(key, TAG || payload))

where payload is the strict DAG-CBOR map ``{"exp", "iat", "role", "room", "v": 1}``
(times in ms since the epoch) and TAG is ``n3xus/room-token/v1`` followed by 0x00.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any

from n3xus.canon import codec

from .errors import ForbiddenError, TokenError

TOKEN_PREFIX = "n3xrt1."
TOKEN_MAC_TAG = b"n3xus/room-token/v1\x00"
TOKEN_KEY_BYTES = 32
#: A token is a few dozen payload bytes + 32 MAC bytes; the cap stops a peer from
#: making us base64-decode and CBOR-parse megabytes before the MAC check fails.
MAX_TOKEN_CHARS = 512
#: Default token lifetime: an evening's performance. Links are re-issued per show.
DEFAULT_TOKEN_TTL_MS = 12 * 3600 * 1000
#: Longest lifetime the node issues: a week, so a leaked link dies on its own.
MAX_TOKEN_TTL_MS = 7 * 24 * 3600 * 1000
#: Clock skew tolerated on ``iat`` (a token from slightly in the future).
TOKEN_CLOCK_SKEW_MS = 60 * 1000
#: Room names are URL path segments and canon pin names: lower-case, short.
ROOM_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class Role(enum.StrEnum):
    OWNER = "owner"
    PERFORMER = "performer"
    COLLABORATOR = "collaborator"
    VIEWER = "viewer"


class Permission(enum.StrEnum):
    PUBLISH = "publish"  # send camera/microphone to the relay ("Go live")
    WATCH = "watch"  # receive the relayed performance
    CHAT = "chat"  # chat and presence on the room's data channel
    REACT = "react"  # reactions on the audience page
    EDIT = "edit"  # world edits on the room's data channel
    END = "end"  # end the live performance (the performer's "End", the owner's stop)


#: The role table: data shared by specs/live.md §1 and the code (a test compares).
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OWNER: frozenset(Permission),
    Role.PERFORMER: frozenset(
        {Permission.PUBLISH, Permission.WATCH, Permission.CHAT, Permission.REACT,
         Permission.EDIT, Permission.END}
    ),
    Role.COLLABORATOR: frozenset(
        {Permission.WATCH, Permission.CHAT, Permission.REACT, Permission.EDIT}
    ),
    Role.VIEWER: frozenset({Permission.WATCH, Permission.CHAT, Permission.REACT}),
}


def check_room_name(name: str) -> str:
    if not ROOM_NAME_RE.match(name):
        raise TokenError(f"invalid room name {name[:70]!r}", code="bad-room")
    return name


def allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


def require(role: Role, permission: Permission) -> None:
    if not allows(role, permission):
        raise ForbiddenError(f"role {role.value} may not {permission.value}")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token (or the node's API token) lets a connection do."""

    room: str
    role: Role
    expires_ms: int
    issued_ms: int

    def allows(self, permission: Permission) -> bool:
        return allows(self.role, permission)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise TokenError("room token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("room token is not base64url") from None


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, TOKEN_MAC_TAG + payload, hashlib.sha256).digest()


class RoomTokens:
    """Issues and verifies room tokens under one node secret."""

    def __init__(self, key: bytes) -> None:
        if len(key) != TOKEN_KEY_BYTES:
            raise ValueError(f"room token key must be {TOKEN_KEY_BYTES} bytes")
        self._key = key

    def issue(self, room: str, role: Role, *, now_ms: int,
              ttl_ms: int = DEFAULT_TOKEN_TTL_MS) -> str:
        check_room_name(room)
        if not 0 < ttl_ms <= MAX_TOKEN_TTL_MS:
            raise ValueError(f"token lifetime must be 1..{MAX_TOKEN_TTL_MS} ms")
        payload = codec.encode(
            {"exp": now_ms + ttl_ms, "iat": now_ms, "role": Role(role).value, "room": room, "v": 1}
        )
        return TOKEN_PREFIX + _b64(payload) + "." + _b64(_mac(self._key, payload))

    def verify(self, token: str, *, room: str, now_ms: int) -> Grant:
        """The grant of ``token`` for ``room``, or :class:`TokenError` (fails closed)."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("room token missing or too long")
        if not token.startswith(TOKEN_PREFIX):
            raise TokenError("not a n3xus room token (v1)")
        body = token[len(TOKEN_PREFIX):]
        parts = body.split(".")
        if len(parts) != 2:
            raise TokenError("room token must have a payload and a MAC")
        payload, mac = _unb64(parts[0]), _unb64(parts[1])
        # MAC first: nothing of an unauthenticated payload is parsed or trusted.
        if not hmac.compare_digest(mac, _mac(self._key, payload)):
            raise TokenError("room token MAC does not verify (forged, or another node's)")
        try:
            fields: Any = codec.decode(payload)
        except ValueError as exc:
            raise TokenError(f"room token payload is not DAG-CBOR: {exc}") from None
        if not isinstance(fields, dict) or set(fields) != {"exp", "iat", "role", "room", "v"}:
            raise TokenError("room token payload has the wrong fields")
        if fields["v"] != 1:
            raise TokenError(f"room token version {fields['v']!r} is not supported")
        exp, iat, token_room, role = fields["exp"], fields["iat"], fields["room"], fields["role"]
        if type(exp) is not int or type(iat) is not int or not isinstance(token_room, str):
            raise TokenError("room token payload has the wrong types")
        try:
            grant_role = Role(role)
        except ValueError:
            raise TokenError(f"room token has unknown role {role!r}") from None
        if token_room != room:
            raise TokenError(f"room token is for another room ({token_room!r})", code="wrong-room")
        if now_ms >= exp:
            raise TokenError("room token has expired", code="token-expired")
        if iat > now_ms + TOKEN_CLOCK_SKEW_MS:
            raise TokenError("room token is issued in the future")
        return Grant(token_room, grant_role, exp, iat)
