"""Errors of the live-performance package (``n3xus.webrtc``).

Local errors are things this node did wrong or cannot do (a closed bridge, a room
that does not exist); remote errors are things a peer sent that we refuse (a bad
signaling message, a forged or expired token, an SDP without VP8). Every remote
error carries a stable ``code`` (the ``error.code`` of the signaling ``error``
message, specs/live-signaling.md §1.4) so a browser can act on it without parsing text.
Decoder errors also subclass :class:`ValueError`, as everywhere in n3xus.
"""

from __future__ import annotations


class LiveError(Exception):
    """Base of every error raised by ``n3xus.webrtc``."""


class LocalLiveError(LiveError):
    """This node cannot do what was asked (its own state, not the peer's input)."""


class BridgeClosedError(LocalLiveError):
    """The asyncio bridge is not running (never started, or already shut down)."""


class RemoteLiveError(LiveError):
    """A peer sent something we refuse. ``code`` is the wire error code."""

    code = "bad-request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class SignalingError(RemoteLiveError, ValueError):
    """A signaling message that is malformed, oversized or not allowed now."""

    code = "bad-message"


class RateLimitedError(SignalingError):
    """A peer sent signaling messages faster than the room allows."""

    code = "rate-limited"


class TokenError(RemoteLiveError, ValueError):
    """A room token that is malformed, forged, expired or for another room/role."""

    code = "bad-token"


class ForbiddenError(RemoteLiveError):
    """The token is valid but its role may not do this (a viewer publishing)."""

    code = "forbidden"


class CodecError(RemoteLiveError, ValueError):
    """An SDP offer without a codec the relay can forward (VP8 video)."""

    code = "no-usable-codec"


class PullProtocolError(RemoteLiveError, ValueError):
    """A malformed /n3xus/live/1.0.0 message. ``wire_code`` is the common error code
    (specs/protocol.md §4) to send before resetting the stream."""

    code = "bad-pull-message"
    wire_code = 1  # malformed

    def __init__(self, message: str, *, code: str | None = None,
                 wire_code: int | None = None) -> None:
        super().__init__(message, code=code)
        if wire_code is not None:
            self.wire_code = int(wire_code)


class TipRefusedError(RemoteLiveError):
    """The node's ledger refused a tip envelope (its ``code`` is the ledger's reason)."""

    code = "tip-refused"
