"""Errors of the protocol cores: one small hierarchy, local vs remote.

* :class:`LocalProtocolError`: *we* broke the rules, i.e. the caller used a core wrongly
  (sent in the wrong state, over a limit). A bug on our side; nothing to tell the peer
  except ``internal``.
* :class:`RemoteProtocolError`: *the peer* broke the rules. Its ``code`` is what the node
  sends in the ``error`` message before resetting the stream (unless ``send_error`` is
  false: the peer itself sent an error, or the stream is gone). The node counts these per
  peer for its score.

Decoding errors (frames, messages, blocks, evidence files) also subclass :class:`ValueError`,
as the canon codec's do, so code that only knows "bad input" can catch that.
"""

from __future__ import annotations

from .codes import ErrorCode, describe_code


class ProtocolError(Exception):
    """Base of every error of ``n3xus.protocol``; ``code`` says why, ``message`` says what."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return f"{self.code.label}: {self.message}"


class LocalProtocolError(ProtocolError):
    """The caller used a protocol core against its rules (a bug on our side)."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.INTERNAL) -> None:
        super().__init__(message, code)


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; send ``error(code, message)`` and reset the stream."""

    send_error = True


class FrameError(RemoteProtocolError, ValueError):
    """Bytes that are not a frame: a bad or oversized length prefix, a truncated frame, a
    body that is not one canonical DAG-CBOR value."""


class MessageError(RemoteProtocolError, ValueError):
    """A well-formed frame whose value is not a valid message (schema, limits, type)."""


class HelloRefused(RemoteProtocolError):
    """A hello that did not pass verification; ``code`` is the refusal reason."""


class BlockMismatchError(RemoteProtocolError, ValueError):
    """A received block whose bytes do not hash to its CID. Counted per peer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.BLOCK_MISMATCH)


class DeadlineExceeded(RemoteProtocolError):
    """The peer did not send what it had to before the core's deadline."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.TIMEOUT)


class PeerError(RemoteProtocolError):
    """The peer sent an ``error`` message: it is closing the stream; nothing to answer.
    ``code`` may be outside :class:`ErrorCode` (a newer peer): see ``raw_code``."""

    send_error = False

    def __init__(self, raw_code: int, message: str) -> None:
        try:
            code = ErrorCode(raw_code)
        except ValueError:
            code = ErrorCode.INTERNAL  # unknown to us: still the peer's refusal
        super().__init__(message, code)
        self.raw_code = raw_code

    def __str__(self) -> str:
        return f"peer sent error {describe_code(self.raw_code)}: {self.message}"


class EvidenceError(ProtocolError, ValueError):
    """A split-view proof (or other offline evidence) that does not prove what it claims."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ErrorCode.SPLIT_VIEW)
