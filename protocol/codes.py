"""The registry of error codes carried by ``error`` messages of every n3xus protocol.

One enum, one table: :data:`ERROR_CODE_TABLE` is rendered into ``specs/protocol.md`` §4 and a
test compares the two, so the numbers in the text and in the code cannot drift. Codes are
never reused: a retired code stays in the enum with a ``retired`` note.

Ranges (like the multicodec table, by owner): 0 is never sent; 1-15 apply to every protocol
(framing, state, deadlines); 16-31 belong to ``/n3xus/hello``; 32-47 to ``/n3xus/blocks``;
48-63 to witnessing; 64-79 to ``/n3xus/imvu``; 80-1023 are reserved for later n3xus
protocols (ledger sync, live); 1024 and above are private-use for experiments and MUST NOT
be sent to peers that did not announce them. A receiver MUST accept an unknown code (it
logs the number and the text).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final


class ErrorCode(IntEnum):
    """Why a stream is being closed with an error (the ``code`` of an ``error`` message)."""

    MALFORMED = 1
    FRAME_TOO_LARGE = 2
    TRUNCATED = 3
    UNEXPECTED_MESSAGE = 4
    TIMEOUT = 5
    INTERNAL = 6
    BUSY = 7
    UNSUPPORTED = 8
    WRONG_NETWORK = 16
    UNSUPPORTED_VERSION = 17
    BAD_SIGNATURE = 18
    IDENTITY_MISMATCH = 19
    REPLAYED = 20
    STALE = 21
    POLICY_DENIED = 22
    BAD_CHECKPOINT = 23
    BLOCK_MISMATCH = 32
    TOO_MANY_WANTS = 33
    UNEXPECTED_BLOCK = 34
    SPLIT_VIEW = 48
    INCONSISTENT_PROOF = 49
    UNKNOWN_AGENT = 64
    AGENT_STOPPED = 65

    @property
    def label(self) -> str:
        """The code's text name as logs and ``peers list --json`` show it (``wrong-network``)."""
        return self.name.lower().replace("_", "-")


FIRST_PRIVATE_CODE: Final = 1024
MAX_ERROR_CODE: Final = 0xFFFF
"""Largest code a peer may send: 16 bits are plenty for a registry and keep logs tidy."""

_MEANINGS: Final[dict[ErrorCode, tuple[str, str]]] = {
    # code: (protocols, meaning)
    ErrorCode.MALFORMED: ("all", "a frame that is not one canonical DAG-CBOR value, or a message that does not match its schema"),
    ErrorCode.FRAME_TOO_LARGE: ("all", "a length prefix over the protocol's maximum frame size (refused before the body is read)"),
    ErrorCode.TRUNCATED: ("all", "the stream ended inside a frame, or before the exchange was complete"),
    ErrorCode.UNEXPECTED_MESSAGE: ("all", "a message that the state table does not allow in the current state"),
    ErrorCode.TIMEOUT: ("all", "a deadline passed: no frame, a frame too slow, or an exchange not completed in time"),
    ErrorCode.INTERNAL: ("all", "the sender failed for a reason of its own; not the receiver's fault"),
    ErrorCode.BUSY: ("all", "the sender is over a resource limit (streams, rate); the receiver may retry later"),
    ErrorCode.UNSUPPORTED: ("all", "a message type the sender does not implement"),
    ErrorCode.WRONG_NETWORK: ("hello", "the peer's network (genesis CID) is not one this node accepts"),
    ErrorCode.UNSUPPORTED_VERSION: ("hello", "the peer's software major version differs from ours"),
    ErrorCode.BAD_SIGNATURE: ("hello", "the hello's signature does not verify under its key"),
    ErrorCode.IDENTITY_MISMATCH: ("hello", "the hello's key is not the key of the connection's authenticated peer id"),
    ErrorCode.REPLAYED: ("hello", "the hello is not bound to this connection (nonces or peer ids differ)"),
    ErrorCode.STALE: ("hello", "the hello's time is further from ours than the allowed clock skew"),
    ErrorCode.POLICY_DENIED: ("hello", "this node's federation policy does not admit the peer"),
    ErrorCode.BAD_CHECKPOINT: ("hello", "a checkpoint in the hello is malformed, of the wrong origin, or not signed by the peer"),
    ErrorCode.BLOCK_MISMATCH: ("blocks", "a block's bytes do not hash to its CID (or its codec/hash cannot be verified)"),
    ErrorCode.TOO_MANY_WANTS: ("blocks", "more outstanding wants than the per-peer limit"),
    ErrorCode.UNEXPECTED_BLOCK: ("blocks", "a block, have or dont-have for a CID that was not wanted"),
    ErrorCode.SPLIT_VIEW: ("witness", "the peer's log signed two checkpoints that cannot both be true"),
    ErrorCode.INCONSISTENT_PROOF: ("witness", "a consistency proof from the peer does not verify"),
    ErrorCode.UNKNOWN_AGENT: ("imvu", "no agent of that name or key on the answering node"),
    ErrorCode.AGENT_STOPPED: ("imvu", "the agent exists but is stopped (takes no new turns)"),
}


def error_code_table() -> list[tuple[str, str, str, str]]:
    """Rows ``(code, name, protocols, meaning)`` of the registry, in code order."""
    return [(str(int(code)), f"`{code.label}`", *_MEANINGS[code]) for code in ErrorCode]


def describe_code(code: int) -> str:
    """``wrong-network (16)`` for a registered code, ``unknown (1234)`` otherwise."""
    try:
        return f"{ErrorCode(code).label} ({code})"
    except ValueError:
        return f"unknown ({code})"
