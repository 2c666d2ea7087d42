"""``/n3xus/witness/1.0.0``: fetching checkpoints and consistency proofs, gossiping
split-view proofs (specs/protocol-witness.md). Sans-IO.

One request and one response per stream. The requester (a witness) opens a stream and sends
one of

* ``get-checkpoints`` -> ``checkpoints`` {canon, ledger}: the responder's latest signed
  checkpoint notes (what its hello carries, without a new connection);
* ``get-consistency`` {log, old, new} -> ``consistency`` {proof, seed}: the RFC 9162
  consistency proof between sizes old < new of the responder's ``log`` ("canon" or
  "ledger"), and ``seed``, the root of its tree at size ``old`` (a fork path's first hash
  when ``old`` is a power of two: protocol-hello.md §8);
* ``split-view`` {proof}: a split-view proof file (protocol-hello.md §8.1) -> ``ack`` {new}.

The responder answers with the response or an ``error``; either side resets on a protocol
error. :class:`WitnessRequester` and :class:`WitnessResponder` run the two state tables
:data:`REQUESTER_TRANSITIONS` and :data:`RESPONDER_TRANSITIONS`, which the spec shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from . import schema
from .codes import ErrorCode
from .errors import DeadlineExceeded, LocalProtocolError, MessageError, RemoteProtocolError
from .framing import FrameDecoder, decode_message, encode_message
from .hello import MAX_HELLO_NOTE_BYTES
from .witness import MAX_FORK_PATH_HASHES, MAX_SPLIT_VIEW_BYTES

WITNESS_PROTOCOL_ID: Final = "/n3xus/witness/1.0.0"
MAX_WITNESS_FRAME_BYTES: Final = 64 * 1024
"""Largest frame: a split-view proof (at most 37,444 bytes) or two checkpoint notes
(2 x 16 KiB) with their map; 64 KiB with room."""
WITNESS_TIMEOUT_S: Final = 10.0
"""Seconds for a whole request/response from the stream's opening: a proof is a few
hundred hashes read from LMDB; a responder that needs longer is stalling."""
MAX_TREE_SIZE: Final = (1 << 63) - 1
LOG_NAMES: Final = ("canon", "ledger")

WITNESS_LIMITS: Final[list[tuple[str, int | float, str]]] = [
    ("MAX_WITNESS_FRAME_BYTES", MAX_WITNESS_FRAME_BYTES, "largest frame: a split-view proof or two notes, with room"),
    ("WITNESS_TIMEOUT_S", WITNESS_TIMEOUT_S, "seconds for one request and its response"),
    ("MAX_HELLO_NOTE_BYTES", MAX_HELLO_NOTE_BYTES, "bytes of each checkpoint note (as in the hello)"),
    ("MAX_FORK_PATH_HASHES", MAX_FORK_PATH_HASHES, "hashes in a consistency proof"),
    ("MAX_SPLIT_VIEW_BYTES", MAX_SPLIT_VIEW_BYTES, "bytes of a gossiped split-view proof"),
]


@dataclass(frozen=True)
class GetCheckpoints:
    pass


@dataclass(frozen=True)
class GetConsistency:
    log: str
    old: int
    new: int


@dataclass(frozen=True)
class SplitViewGossip:
    proof: bytes


Request = GetCheckpoints | GetConsistency | SplitViewGossip


@dataclass(frozen=True)
class Checkpoints:
    canon: str | None
    ledger: str | None


@dataclass(frozen=True)
class Consistency:
    proof: tuple[bytes, ...]
    seed: bytes


@dataclass(frozen=True)
class Ack:
    new: bool


Response = Checkpoints | Consistency | Ack
_RESPONSE_TYPE: Final = {GetCheckpoints: "checkpoints", GetConsistency: "consistency",
                         SplitViewGossip: "ack"}


def _note(value: Any, what: str) -> str | None:
    schema.need(value is None or (type(value) is str and 0 < len(value.encode("utf-8")) <= MAX_HELLO_NOTE_BYTES),
                f"{what} must be null or a note of at most {MAX_HELLO_NOTE_BYTES} bytes")
    return value


def encode_request(request: Request) -> bytes:
    if isinstance(request, GetCheckpoints):
        message: dict[str, Any] = {"type": "get-checkpoints"}
    elif isinstance(request, GetConsistency):
        message = {"type": "get-consistency", "log": request.log, "old": request.old,
                   "new": request.new}
    else:
        message = {"type": "split-view", "proof": request.proof}
    return encode_message(message, MAX_WITNESS_FRAME_BYTES)


def parse_request(message: dict[str, Any]) -> Request:
    kind = message["type"]
    if kind == "get-checkpoints":
        return GetCheckpoints()
    if kind == "get-consistency":
        schema.fields(message, {"log", "old", "new"}, "get-consistency")
        log = message["log"]
        schema.need(log in LOG_NAMES, "log must be 'canon' or 'ledger'")
        old = schema.integer(message["old"], "old size", MAX_TREE_SIZE)
        new = schema.integer(message["new"], "new size", MAX_TREE_SIZE)
        schema.need(0 < old < new, "a consistency proof needs 0 < old < new")
        return GetConsistency(log, old, new)
    if kind == "split-view":
        schema.fields(message, {"proof"}, "split-view")
        proof = message["proof"]
        schema.need(type(proof) is bytes and 0 < len(proof) <= MAX_SPLIT_VIEW_BYTES,
                    f"split-view proof must be 1..{MAX_SPLIT_VIEW_BYTES} bytes")
        return SplitViewGossip(proof)
    raise MessageError(f"unknown witness request {kind!r}", ErrorCode.UNSUPPORTED)


def encode_response(response: Response) -> bytes:
    if isinstance(response, Checkpoints):
        message: dict[str, Any] = {"type": "checkpoints", "canon": response.canon,
                                   "ledger": response.ledger}
    elif isinstance(response, Consistency):
        message = {"type": "consistency", "proof": list(response.proof), "seed": response.seed}
    else:
        message = {"type": "ack", "new": response.new}
    return encode_message(message, MAX_WITNESS_FRAME_BYTES)


def parse_response(message: dict[str, Any], request: Request) -> Response:
    expected = _RESPONSE_TYPE[type(request)]
    schema.need(message["type"] == expected, f"expected {expected!r}, got {message['type']!r}",
                ErrorCode.UNEXPECTED_MESSAGE)
    if isinstance(request, GetCheckpoints):
        schema.fields(message, {"canon", "ledger"}, "checkpoints")
        return Checkpoints(_note(message["canon"], "canon"), _note(message["ledger"], "ledger"))
    if isinstance(request, GetConsistency):
        schema.fields(message, {"proof", "seed"}, "consistency")
        proof = schema.array(message["proof"], "consistency proof", MAX_FORK_PATH_HASHES)
        for item in proof:
            schema.byte_string(item, "a proof hash", 32)
        return Consistency(tuple(proof), schema.byte_string(message["seed"], "seed", 32))
    schema.fields(message, {"new"}, "ack")
    schema.need(type(message["new"]) is bool, "ack new must be a boolean")
    return Ack(message["new"])


# --- state machines ------------------------------------------------------------------------


class WitnessState(StrEnum):
    IDLE = "idle"
    AWAIT_RESPONSE = "await-response"
    AWAIT_REQUEST = "await-request"
    ANSWERING = "answering"
    DONE = "done"
    FAILED = "failed"


class WitnessInput(StrEnum):
    SEND_REQUEST = "send request"
    RECV_REQUEST = "receive request"
    SEND_RESPONSE = "send response"
    RECV_RESPONSE = "receive response"
    RECV_ERROR = "receive error"
    REFUSE = "refuse"
    DEADLINE = "deadline"
    EOF = "end of stream"


WitnessTransitions = dict[tuple[WitnessState, WitnessInput], WitnessState]

REQUESTER_TRANSITIONS: Final[WitnessTransitions] = {
    (WitnessState.IDLE, WitnessInput.SEND_REQUEST): WitnessState.AWAIT_RESPONSE,
    (WitnessState.AWAIT_RESPONSE, WitnessInput.RECV_RESPONSE): WitnessState.DONE,
    (WitnessState.AWAIT_RESPONSE, WitnessInput.RECV_ERROR): WitnessState.FAILED,
    (WitnessState.AWAIT_RESPONSE, WitnessInput.REFUSE): WitnessState.FAILED,
    (WitnessState.AWAIT_RESPONSE, WitnessInput.DEADLINE): WitnessState.FAILED,
    (WitnessState.AWAIT_RESPONSE, WitnessInput.EOF): WitnessState.FAILED,
}
RESPONDER_TRANSITIONS: Final[WitnessTransitions] = {
    (WitnessState.AWAIT_REQUEST, WitnessInput.RECV_REQUEST): WitnessState.ANSWERING,
    (WitnessState.ANSWERING, WitnessInput.SEND_RESPONSE): WitnessState.DONE,
    (WitnessState.AWAIT_REQUEST, WitnessInput.RECV_ERROR): WitnessState.FAILED,
    (WitnessState.AWAIT_REQUEST, WitnessInput.REFUSE): WitnessState.FAILED,
    (WitnessState.AWAIT_REQUEST, WitnessInput.DEADLINE): WitnessState.FAILED,
    (WitnessState.AWAIT_REQUEST, WitnessInput.EOF): WitnessState.FAILED,
}


def witness_table(table: WitnessTransitions) -> list[tuple[str, str, str]]:
    return [(state.value, event.value, after.value) for (state, event), after in table.items()]


class _Side:
    table: WitnessTransitions

    def __init__(self, state: WitnessState, now: float) -> None:
        self.state = state
        self.frames = FrameDecoder(MAX_WITNESS_FRAME_BYTES)
        self.expires = now + WITNESS_TIMEOUT_S

    @property
    def deadline(self) -> float | None:
        if self.state in (WitnessState.DONE, WitnessState.FAILED, WitnessState.ANSWERING):
            return None
        frame = self.frames.deadline
        return self.expires if frame is None else min(frame, self.expires)

    def check_deadline(self, now: float) -> None:
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self._step(WitnessInput.DEADLINE)
            raise DeadlineExceeded(f"witness exchange not complete within {WITNESS_TIMEOUT_S:.0f} s")

    def _step(self, event: WitnessInput) -> None:
        after = self.table.get((self.state, event))
        if after is None:
            raise LocalProtocolError(f"{event.value!r} in state {self.state.value!r}")
        self.state = after

    def _next_message(self, data: bytes, now: float) -> dict[str, Any] | None:
        """The one message of this side, once complete; raises (and fails) on errors."""
        try:
            self.frames.receive_data(data, now)
            self.frames.check_deadline(now)
            body = self.frames.next_frame()
            if body is None:
                return None
            if self.frames.buffered:
                raise RemoteProtocolError("bytes after the one message of a witness stream",
                                          ErrorCode.UNEXPECTED_MESSAGE)
            return decode_message(body)
        except RemoteProtocolError as exc:
            self.state = WitnessState.FAILED
            raise exc from None

    def receive_eof(self) -> None:
        if self.state in (WitnessState.DONE, WitnessState.FAILED):
            return
        self._step(WitnessInput.EOF)
        raise RemoteProtocolError("stream ended before the witness exchange completed",
                                  ErrorCode.TRUNCATED)


class WitnessRequester(_Side):
    """Sends one request (:meth:`start`), then feed it bytes until it answers the response."""

    table = REQUESTER_TRANSITIONS

    def __init__(self, request: Request, now: float) -> None:
        super().__init__(WitnessState.IDLE, now)
        self.request = request

    def start(self) -> bytes:
        self._step(WitnessInput.SEND_REQUEST)
        return encode_request(self.request)

    def receive_data(self, data: bytes, now: float) -> Response | None:
        """The response once complete (None: more bytes needed). Raises the peer's
        PeerError, or a RemoteProtocolError to answer with an error frame."""
        message = self._next_message(data, now)
        if message is None:
            return None
        try:
            response = parse_response(message, self.request)
        except RemoteProtocolError:
            self.state = WitnessState.FAILED
            raise
        self._step(WitnessInput.RECV_RESPONSE)
        return response


class WitnessResponder(_Side):
    """Reads one request (:meth:`receive_data`), then the node answers it (:meth:`respond`)."""

    table = RESPONDER_TRANSITIONS

    def __init__(self, now: float) -> None:
        super().__init__(WitnessState.AWAIT_REQUEST, now)

    def receive_data(self, data: bytes, now: float) -> Request | None:
        message = self._next_message(data, now)
        if message is None:
            return None
        try:
            request = parse_request(message)
        except RemoteProtocolError:
            self.state = WitnessState.FAILED
            raise
        self._step(WitnessInput.RECV_REQUEST)
        return request

    def respond(self, response: Response) -> bytes:
        self._step(WitnessInput.SEND_RESPONSE)
        return encode_response(response)


def consistency_response(proof: Sequence[bytes], seed: bytes) -> Consistency:
    return Consistency(tuple(proof), seed)
