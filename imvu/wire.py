"""``/n3xus/imvu/1.0.0``: one agent asks another, on this node or a peer (specs/imvu.md §11).

Framing and the ``error`` message are those of every n3xus protocol (specs/protocol.md:
unsigned-varint length-prefixed frames of one strict DAG-CBOR map with a text ``type``). One
exchange per stream: the asker opens a stream, sends one ``ask``; the answering node sends
zero or more ``token`` frames (only if the ask said ``stream``), then exactly one ``answer``
or ``error``, and closes. Decoders require the fields they know and ignore others (a later
``1.x`` may add optional fields).

:class:`AgentExchange` is sans-IO: feed it the stream's bytes, it returns messages; ask it
to send, it returns bytes. Its transition table (:data:`TRANSITIONS`) is data, rendered into
the spec; an illegal step raises LocalProtocolError (ours) or MessageError (the peer's).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from n3xus.canon.cid import CID
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import LocalProtocolError, MessageError, PeerError
from n3xus.protocol.framing import FrameDecoder, decode_message, encode_error, encode_message

from .prompt import MAX_CONTEXT_CHARS, MAX_CONTEXT_ITEMS, MAX_REQUEST_CHARS, Request

PROTOCOL_ID: Final = "/n3xus/imvu/1.0.0"
# An ask carries at most a request and its context (~18 KB of text); 64 KiB leaves room
# for UTF-8 and framing while bounding what a peer can make us buffer.
MAX_FRAME_BYTES: Final = 64 * 1024
# Agent names are manifest names; a key in hex is 64 characters.
MAX_AGENT_CHARS: Final = 64
# A token frame carries one decoded piece (a few characters; 64 allows any merged UTF-8).
MAX_TOKEN_CHARS: Final = 64
MAX_RESULT_CHARS: Final = 1024
MAX_REASON_CHARS: Final = 1024
# Error codes this protocol adds; proposed for the 64.. range that protocol/codes.py keeps
# for later protocols (registered in specs/imvu.md §11.4 until that table lists them).
UNKNOWN_AGENT: Final = 64
AGENT_STOPPED: Final = 65


@dataclass(frozen=True)
class Ask:
    agent: str  # the answering agent's name (or key in hex) on the receiving node
    sender: bytes  # the asking agent's key (the receiving node pairs it with the peer id)
    text: str
    context: tuple[str, ...] = ()
    stream: bool = False

    def to_map(self) -> dict[str, Any]:
        return {"type": "ask", "agent": self.agent, "sender": self.sender, "text": self.text,
                "context": list(self.context), "stream": self.stream}


@dataclass(frozen=True)
class Token:
    text: str

    def to_map(self) -> dict[str, Any]:
        return {"type": "token", "text": self.text}


@dataclass(frozen=True)
class Answer:
    verdict: str  # "allow", "refuse" or "escalate"
    primitive: str
    reason: str
    action: str  # the action kind taken or proposed ("" if none parsed)
    result: str  # the reply text or the tool's result ("" unless executed)
    decision: CID | None  # the decision payload on the answering node (auditable there)

    def to_map(self) -> dict[str, Any]:
        return {"type": "answer", "verdict": self.verdict, "primitive": self.primitive,
                "reason": self.reason, "action": self.action, "result": self.result,
                "decision": self.decision}


Message = Ask | Token | Answer


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise MessageError(message, ErrorCode.MALFORMED)


def _text(raw: dict[str, Any], name: str, max_chars: int, min_chars: int = 0) -> str:
    value = raw.get(name)
    _need(type(value) is str and min_chars <= len(value) <= max_chars,
          f"{raw['type']}.{name} must be text of {min_chars}..{max_chars} characters")
    return str(value)


def parse_message(raw: dict[str, Any]) -> Message:
    """A decoded message map (protocol.framing.decode_message) as one of ours."""
    kind = raw["type"]
    if kind == "ask":
        sender, context, stream = raw.get("sender"), raw.get("context"), raw.get("stream")
        if type(sender) is not bytes or len(sender) != 32:
            raise MessageError("ask.sender must be a 32-byte key", ErrorCode.MALFORMED)
        if type(context) is not list or len(context) > MAX_CONTEXT_ITEMS or not all(
                type(c) is str and len(c) <= MAX_CONTEXT_CHARS for c in context):
            raise MessageError(f"ask.context must be at most {MAX_CONTEXT_ITEMS} texts of "
                               f"{MAX_CONTEXT_CHARS} characters", ErrorCode.MALFORMED)
        if type(stream) is not bool:
            raise MessageError("ask.stream must be a boolean", ErrorCode.MALFORMED)
        return Ask(_text(raw, "agent", MAX_AGENT_CHARS, 1), sender,
                   _text(raw, "text", MAX_REQUEST_CHARS, 1), tuple(context), stream)
    if kind == "token":
        return Token(_text(raw, "text", MAX_TOKEN_CHARS, 1))
    if kind == "answer":
        verdict, decision = raw.get("verdict"), raw.get("decision")
        _need(verdict in ("allow", "refuse", "escalate"), "answer.verdict must be allow, refuse or escalate")
        _need(decision is None or type(decision) is CID, "answer.decision must be a CID or null")
        return Answer(str(verdict), _text(raw, "primitive", 32), _text(raw, "reason", MAX_REASON_CHARS),
                      _text(raw, "action", 32), _text(raw, "result", MAX_RESULT_CHARS), decision)
    raise MessageError(f"unknown message type {kind!r}", ErrorCode.UNSUPPORTED)


def request_from_ask(ask: Ask, remote_peer: str, time_ms: int) -> Request:
    """The request an answering node runs for ``ask``: the sender names the asking agent
    and the peer id the connection authenticated (never a value the peer chose alone)."""
    return Request(f"agent:{ask.sender.hex()}@{remote_peer}", ask.text, time_ms, ask.context)


class Role(StrEnum):
    ASKER = "asker"
    ANSWERER = "answerer"


class State(StrEnum):
    IDLE = "idle"
    WAITING = "waiting"  # asker: ask sent; answerer: ask received, answer not yet sent
    DONE = "done"


# (role, state, event) -> next state. An event is "send <type>" or "receive <type>";
# "error" is the shared error message. Anything absent is illegal.
TRANSITIONS: Final[dict[tuple[Role, State, str], State]] = {
    (Role.ASKER, State.IDLE, "send ask"): State.WAITING,
    (Role.ASKER, State.WAITING, "receive token"): State.WAITING,  # only if the ask streamed
    (Role.ASKER, State.WAITING, "receive answer"): State.DONE,
    (Role.ASKER, State.WAITING, "receive error"): State.DONE,
    (Role.ANSWERER, State.IDLE, "receive ask"): State.WAITING,
    (Role.ANSWERER, State.WAITING, "send token"): State.WAITING,  # only if the ask streamed
    (Role.ANSWERER, State.WAITING, "send answer"): State.DONE,
    (Role.ANSWERER, State.IDLE, "send error"): State.DONE,  # e.g. the first frame was malformed
    (Role.ANSWERER, State.WAITING, "send error"): State.DONE,
}


class AgentExchange:
    """One side of one ``/n3xus/imvu/1.0.0`` exchange (module doc)."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = State.IDLE
        self.streaming = False
        self._frames = FrameDecoder(MAX_FRAME_BYTES)

    def _step(self, event: str, local: bool) -> None:
        following = TRANSITIONS.get((self.role, self.state, event))
        if following is None:
            message = f"{self.role.value} cannot {event} in state {self.state.value}"
            if local:
                raise LocalProtocolError(message)
            raise MessageError(message, ErrorCode.UNEXPECTED_MESSAGE)
        self.state = following

    def send(self, message: Message) -> bytes:
        """The frame for ``message``, after checking it is legal now and well-formed."""
        raw = message.to_map()
        self._step(f"send {raw['type']}", local=True)
        if isinstance(message, Token) and not self.streaming:
            raise LocalProtocolError("tokens are sent only when the ask asked for a stream")
        try:
            parse_message(raw)
        except MessageError as exc:
            raise LocalProtocolError(f"refusing to send a malformed {raw['type']}: {exc.message}") from exc
        if isinstance(message, Ask):
            self.streaming = message.stream
        return encode_message(raw, MAX_FRAME_BYTES)

    def send_error(self, code: int, text: str) -> bytes:
        self._step("send error", local=True)
        return encode_error(code, text)

    def receive_data(self, data: bytes, now: float) -> list[Message]:
        """Messages completed by ``data``; a peer's ``error`` raises PeerError."""
        self._frames.receive_data(data, now)
        messages: list[Message] = []
        while (body := self._frames.next_frame()) is not None:
            try:
                raw = decode_message(body)
            except PeerError:  # the peer's error message: the exchange ends here
                self._step("receive error", local=False)
                raise
            message = parse_message(raw)
            self._step(f"receive {raw['type']}", local=False)
            if isinstance(message, Token) and not self.streaming:
                raise MessageError("a token for an ask that did not stream", ErrorCode.UNEXPECTED_MESSAGE)
            if isinstance(message, Ask):
                self.streaming = message.stream
            messages.append(message)
        return messages

    def receive_eof(self) -> None:
        """The peer closed its side; before DONE that is a truncated exchange."""
        self._frames.receive_eof()
        if self.role is Role.ASKER and self.state is not State.DONE:
            raise MessageError("the stream ended before an answer", ErrorCode.TRUNCATED)
