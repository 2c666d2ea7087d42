"""``/n3xus/hello/1.0.0``: the signed handshake every connection starts with (specs/protocol-hello.md).

The initiator (the side that dialed) opens a stream and sends ``hello-start`` with a fresh
32-byte nonce. The responder answers with its signed ``hello``; the initiator verifies it and
sends its own; the responder verifies that and answers ``hello-accept``. Each hello signs
both peer ids and both nonces of *this* connection, so it is worthless on any other, and a
time within :data:`MAX_CLOCK_SKEW_MS` of the verifier's clock. A failed check is answered
with an ``error`` whose code is the refusal reason.

:class:`HelloExchange` is the sans-IO state machine of one side: bytes in, bytes out, a
deadline as data. Its transitions are :data:`INITIATOR_TRANSITIONS` and
:data:`RESPONDER_TRANSITIONS`, the same tables the spec shows. A completed exchange yields a
verified :class:`PeerHello`, which :meth:`PeerHello.handshake_entry` turns into the payload of
a ``handshake`` canon-log entry.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from n3xus.canon.checkpoint import Checkpoint
from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode
from n3xus.canon.errors import CanonError

from . import schema
from .codes import ErrorCode
from .errors import (
    DeadlineExceeded,
    FrameError,
    HelloRefused,
    LocalProtocolError,
    MessageError,
    PeerError,
    ProtocolError,
    RemoteProtocolError,
)
from .framing import FrameDecoder, decode_message, encode_message, error_frame_for
from .identity import (
    MAX_PEER_ID_CHARS,
    canon_origin,
    ledger_origin,
    origin_verifier,
    peer_id_of,
)

HELLO_PROTOCOL_ID: Final = "/n3xus/hello/1.0.0"
HELLO_SIGNATURE_TAG: Final = b"n3xus/hello/v1\x00"
HELLO_FORMAT_VERSION: Final = 1
NONCE_BYTES: Final = 32
"""Nonce size: 256 random bits never repeat, so a hello never fits a second connection."""
MAX_CLOCK_SKEW_MS: Final = 5 * 60 * 1000
"""How far a hello's time may be from the verifier's clock: consumer clocks drift by
seconds to minutes (Kerberos allows 5 minutes). The nonces, not the time, stop replays;
the time bounds how long a captured hello says anything about its signer."""
HELLO_TIMEOUT_S: Final = 10.0
"""Seconds for the whole exchange from the stream's opening: two round trips and two
signature checks take milliseconds; a peer that has not finished in 10 s is stalling."""
MAX_HELLO_NOTE_BYTES: Final = 16 * 1024
"""Largest signed checkpoint in a hello: the body is under 300 bytes and each (co)signature
line about 100; 16 KiB holds a hundred cosignatures (canon's note limit is 128 KiB)."""
MAX_PROTOCOL_IDS: Final = 64
MAX_PROTOCOL_ID_CHARS: Final = 256
"""Protocol ids a hello lists, and their length: as the canon log's handshake entry."""
MAX_CAPABILITIES: Final = 32
MAX_CAPABILITY_CHARS: Final = 64
MAX_POLICY_NETWORKS: Final = 16
"""Networks one node federates with: a handful; 16 bounds the hello."""
MAX_POLICY_PEERS: Final = 256
"""Peer ids in each of the policy's allow and deny lists (256 x 52 characters = 13 KiB)."""
MAX_AGENT_CHARS: Final = 128
MAX_VERSION_CHARS: Final = 64
MAX_TIME_MS: Final = (1 << 63) - 1
MAX_HELLO_FRAME_BYTES: Final = 128 * 1024
"""Largest hello frame: two notes at their limit (32 KiB), both peer lists (27 KiB), the
protocol ids (17 KiB) and the rest (3 KiB) come to about 80 KiB; 128 KiB with room."""

HELLO_LIMITS: Final[list[tuple[str, int | float, str]]] = [
    ("MAX_HELLO_FRAME_BYTES", MAX_HELLO_FRAME_BYTES, "largest frame on a hello stream: every field at its limit is about 80 KiB"),
    ("NONCE_BYTES", NONCE_BYTES, "bytes of each nonce; 256 random bits never repeat"),
    ("MAX_CLOCK_SKEW_MS", MAX_CLOCK_SKEW_MS, "how far a hello's time may be from the verifier's clock"),
    ("HELLO_TIMEOUT_S", HELLO_TIMEOUT_S, "seconds for the whole exchange from the stream's opening"),
    ("MAX_HELLO_NOTE_BYTES", MAX_HELLO_NOTE_BYTES, "bytes of each signed checkpoint in a hello"),
    ("MAX_PROTOCOL_IDS", MAX_PROTOCOL_IDS, "protocol ids in a hello"),
    ("MAX_PROTOCOL_ID_CHARS", MAX_PROTOCOL_ID_CHARS, "characters of one protocol id"),
    ("MAX_CAPABILITIES", MAX_CAPABILITIES, "capabilities in a hello"),
    ("MAX_CAPABILITY_CHARS", MAX_CAPABILITY_CHARS, "characters of one capability"),
    ("MAX_POLICY_NETWORKS", MAX_POLICY_NETWORKS, "networks in a policy"),
    ("MAX_POLICY_PEERS", MAX_POLICY_PEERS, "peer ids in each of allow and deny"),
    ("MAX_PEER_ID_CHARS", MAX_PEER_ID_CHARS, "characters of a peer id"),
    ("MAX_AGENT_CHARS", MAX_AGENT_CHARS, "characters of the agent text"),
    ("MAX_VERSION_CHARS", MAX_VERSION_CHARS, "characters of the version text"),
]

# Semantic versioning 2.0.0: MAJOR.MINOR.PATCH without leading zeros, optional pre-release
# and build parts.
_SEMVER: Final = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_CAPABILITY: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_HELLO_FIELDS: Final = {"type", "v", "key", "version", "agent", "protocols", "capabilities",
                        "network", "canon", "ledger", "policy", "session", "time", "sig"}


def software_major(version: str) -> int:
    found = _SEMVER.fullmatch(version)
    if found is None:
        raise ValueError(f"{version!r} is not a semantic version")
    return int(found.group(1))


# --- the hello's parts -------------------------------------------------------------------


def _sorted_links(links: Sequence[CID]) -> list[CID]:
    return sorted(set(links), key=bytes)


@dataclass(frozen=True)
class FederationPolicy:
    """Whom a node federates with: peers of ``networks`` (genesis CIDs), except the peer
    ids in ``deny``, and only those in ``allow`` when it is not empty."""

    networks: tuple[CID, ...]
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def to_map(self) -> dict[str, Any]:
        return {"networks": _sorted_links(self.networks),
                "allow": sorted(set(self.allow), key=lambda p: p.encode()),
                "deny": sorted(set(self.deny), key=lambda p: p.encode())}

    @classmethod
    def from_map(cls, value: Any) -> FederationPolicy:
        schema.need(type(value) is dict, "policy must be a map")
        schema.fields(value, {"networks", "allow", "deny"}, "policy")
        networks = schema.array(value["networks"], "policy networks", MAX_POLICY_NETWORKS)
        for item in networks:
            schema.link(item, "a policy network")
        raw = [bytes(item) for item in networks]
        schema.need(all(a < b for a, b in zip(raw, raw[1:], strict=False)),
                    "policy networks must be sorted by their binary CIDs without duplicates")
        allow = schema.sorted_texts(value["allow"], "policy allow", MAX_POLICY_PEERS, MAX_PEER_ID_CHARS)
        deny = schema.sorted_texts(value["deny"], "policy deny", MAX_POLICY_PEERS, MAX_PEER_ID_CHARS)
        return cls(tuple(networks), allow, deny)

    def refusal(self, peer_id: str, network: CID | None) -> HelloRefused | None:
        """Why this policy does not admit ``peer_id`` of ``network`` (None: admitted).
        ``network`` None checks the peer alone (before its hello arrived)."""
        if peer_id in self.deny:
            return HelloRefused(f"peer {peer_id} is on the deny list", ErrorCode.POLICY_DENIED)
        if self.allow and peer_id not in self.allow:
            return HelloRefused(f"peer {peer_id} is not on the allow list", ErrorCode.POLICY_DENIED)
        if network is not None and network not in self.networks:
            return HelloRefused(f"network {network} is not one this node accepts",
                                ErrorCode.WRONG_NETWORK)
        return None


@dataclass(frozen=True)
class Session:
    """What binds a hello to one connection: both peer ids and both nonces."""

    initiator: str
    responder: str
    initiator_nonce: bytes
    responder_nonce: bytes

    def to_map(self) -> dict[str, Any]:
        return {"initiator": self.initiator, "responder": self.responder,
                "initiator_nonce": self.initiator_nonce, "responder_nonce": self.responder_nonce}

    @classmethod
    def from_map(cls, value: Any) -> Session:
        schema.need(type(value) is dict, "session must be a map")
        schema.fields(value, {"initiator", "responder", "initiator_nonce", "responder_nonce"}, "session")
        return cls(
            schema.text(value["initiator"], "session initiator", MAX_PEER_ID_CHARS, 1),
            schema.text(value["responder"], "session responder", MAX_PEER_ID_CHARS, 1),
            schema.byte_string(value["initiator_nonce"], "initiator nonce", NONCE_BYTES),
            schema.byte_string(value["responder_nonce"], "responder nonce", NONCE_BYTES),
        )


@dataclass(frozen=True)
class Hello:
    """A signed hello. ``unsigned`` is the exact map that was signed (all fields but
    ``sig``, including any this version does not know); the attributes are its parsed parts."""

    key: bytes
    version: str
    agent: str
    protocols: tuple[str, ...]
    capabilities: tuple[str, ...]
    network: CID
    canon: str | None
    ledger: str | None
    policy: FederationPolicy
    session: Session
    time: int
    signature: bytes = field(repr=False)
    unsigned: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def peer_id(self) -> str:
        return peer_id_of(self.key)

    def signing_bytes(self) -> bytes:
        return HELLO_SIGNATURE_TAG + encode(dict(self.unsigned))

    def to_message(self) -> dict[str, Any]:
        return {**self.unsigned, "sig": self.signature}

    def to_block(self) -> bytes:
        """The hello's canonical DAG-CBOR bytes (what a node may store as evidence)."""
        return encode(self.to_message())

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    def signature_valid(self) -> bool:
        try:
            VerifyKey(self.key).verify(self.signing_bytes(), self.signature)
        except (BadSignatureError, ValueError, TypeError):
            return False
        return True

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> Hello:
        """Check a ``hello`` message's schema (not its signature or meaning)."""
        schema.fields(value, _HELLO_FIELDS, "hello")
        schema.need(value["type"] == "hello", "not a hello message")
        schema.need(value["v"] == HELLO_FORMAT_VERSION and type(value["v"]) is int,
                    f"hello format {value['v']!r} is not {HELLO_FORMAT_VERSION}", ErrorCode.UNSUPPORTED_VERSION)
        version = schema.text(value["version"], "hello version", MAX_VERSION_CHARS, 1)
        schema.need(_SEMVER.fullmatch(version) is not None, f"hello version {version!r} is not semver")
        capabilities = schema.sorted_texts(value["capabilities"], "capabilities", MAX_CAPABILITIES,
                                           MAX_CAPABILITY_CHARS)
        schema.need(all(_CAPABILITY.fullmatch(c) for c in capabilities),
                    "capabilities are lower-case words joined by '-'")
        protocols = schema.sorted_texts(value["protocols"], "protocols", MAX_PROTOCOL_IDS,
                                        MAX_PROTOCOL_ID_CHARS)
        schema.need(all(p.startswith("/") for p in protocols), "protocol ids start with '/'")
        notes = []
        for name in ("canon", "ledger"):
            note = value[name]
            schema.need(note is None or (type(note) is str and 0 < len(note.encode("utf-8")) <= MAX_HELLO_NOTE_BYTES),
                        f"hello {name} checkpoint must be null or a note of at most {MAX_HELLO_NOTE_BYTES} bytes")
            notes.append(note)
        return cls(
            key=schema.byte_string(value["key"], "hello key", 32),
            version=version,
            agent=schema.text(value["agent"], "hello agent", MAX_AGENT_CHARS),
            protocols=protocols,
            capabilities=capabilities,
            network=schema.link(value["network"], "hello network"),
            canon=notes[0],
            ledger=notes[1],
            policy=FederationPolicy.from_map(value["policy"]),
            session=Session.from_map(value["session"]),
            time=schema.integer(value["time"], "hello time", MAX_TIME_MS),
            signature=schema.byte_string(value["sig"], "hello signature", 64),
            unsigned={k: v for k, v in value.items() if k != "sig"},
        )


@dataclass(frozen=True)
class HelloConfig:
    """What this node says in its hello, and its policy. ``canon_checkpoint`` and
    ``ledger_checkpoint`` are its latest signed checkpoint notes (None before the first)."""

    signing_key: SigningKey
    version: str
    agent: str
    protocols: tuple[str, ...]
    capabilities: tuple[str, ...]
    network: CID
    policy: FederationPolicy
    canon_checkpoint: str | None = None
    ledger_checkpoint: str | None = None
    max_skew_ms: int = MAX_CLOCK_SKEW_MS

    @property
    def peer_id(self) -> str:
        return peer_id_of(bytes(self.signing_key.verify_key))


def sign_hello(config: HelloConfig, session: Session, time_ms: int) -> Hello:
    """Our signed hello for ``session`` at wall-clock ``time_ms``."""
    unsigned = {
        "type": "hello", "v": HELLO_FORMAT_VERSION, "key": bytes(config.signing_key.verify_key),
        "version": config.version, "agent": config.agent,
        "protocols": sorted(set(config.protocols), key=lambda p: p.encode()),
        "capabilities": sorted(set(config.capabilities), key=lambda c: c.encode()),
        "network": config.network, "canon": config.canon_checkpoint,
        "ledger": config.ledger_checkpoint, "policy": config.policy.to_map(),
        "session": session.to_map(), "time": time_ms,
    }
    signature = config.signing_key.sign(HELLO_SIGNATURE_TAG + encode(unsigned)).signature
    try:
        return Hello.parse({**unsigned, "sig": signature})
    except MessageError as exc:  # our own configuration breaks the schema
        raise LocalProtocolError(f"our hello is invalid: {exc.message}") from exc


# --- verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerHello:
    """A verified hello of the peer: who it is, what it runs, what its logs are at."""

    hello: Hello
    role: Role
    canon_checkpoint: Checkpoint | None
    ledger_checkpoint: Checkpoint | None

    @property
    def peer_id(self) -> str:
        return self.hello.peer_id

    def handshake_entry(self, *, direction: str, addresses: Sequence[str], time_ms: int) -> dict[str, Any]:
        """The payload of a ``handshake`` v1 canon-log entry (specs/canon-log.md §2.2) for
        this completed exchange; ``direction`` is ``outbound`` when we dialed."""
        if direction not in ("inbound", "outbound"):
            raise ValueError("direction is 'inbound' or 'outbound'")
        return {"peer": self.peer_id, "addresses": [a for a in addresses if a.startswith("/")][:32],
                "protocols": list(self.hello.protocols), "agent": self.hello.agent[:256],
                "direction": direction, "time": time_ms}


def _open_note(note: str | None, origin: str, what: str) -> Checkpoint | None:
    if note is None:
        return None
    try:
        checkpoint, _ = Checkpoint.open(note, origin_verifier(origin))
    except (CanonError, ValueError) as exc:
        raise HelloRefused(f"{what} checkpoint: {exc}", ErrorCode.BAD_CHECKPOINT) from None
    return checkpoint


def verify_hello(hello: Hello, *, config: HelloConfig, session: Session, sender: Role,
                 sender_peer_id: str, now_ms: int) -> PeerHello:
    """Check a parsed hello in the order of the spec; raise HelloRefused with the reason."""
    if hello.peer_id != sender_peer_id:
        raise HelloRefused(f"hello key is of {hello.peer_id}, the connection's peer is "
                           f"{sender_peer_id}", ErrorCode.IDENTITY_MISMATCH)
    if not hello.signature_valid():
        raise HelloRefused("hello signature does not verify", ErrorCode.BAD_SIGNATURE)
    if hello.session != session:
        raise HelloRefused("hello is bound to another connection (nonces or peer ids differ)",
                           ErrorCode.REPLAYED)
    if abs(hello.time - now_ms) > config.max_skew_ms:
        raise HelloRefused(f"hello time is {(hello.time - now_ms) / 1000:+.0f} s from ours "
                           f"(at most {config.max_skew_ms / 1000:.0f} s)", ErrorCode.STALE)
    if software_major(hello.version) != software_major(config.version):
        raise HelloRefused(f"peer runs version {hello.version}, we run {config.version}: "
                           "major versions differ", ErrorCode.UNSUPPORTED_VERSION)
    refusal = config.policy.refusal(sender_peer_id, hello.network)
    if refusal is not None:
        raise refusal
    canon = _open_note(hello.canon, canon_origin(sender_peer_id), "canon log")
    ledger = _open_note(hello.ledger, ledger_origin(hello.network, sender_peer_id), "ledger")
    return PeerHello(hello, sender, canon, ledger)


# --- the state machine -------------------------------------------------------------------


class Role(StrEnum):
    INITIATOR = "initiator"
    RESPONDER = "responder"

    @property
    def other(self) -> Role:
        return Role.RESPONDER if self is Role.INITIATOR else Role.INITIATOR


class HelloState(StrEnum):
    IDLE = "idle"
    AWAIT_START = "await-start"
    AWAIT_HELLO = "await-hello"
    AWAIT_ACCEPT = "await-accept"
    DONE = "done"
    FAILED = "failed"
    REFUSED_BY_PEER = "refused-by-peer"


class HelloInput(StrEnum):
    START = "start"
    RECV_START = "receive hello-start"
    RECV_HELLO = "receive valid hello"
    RECV_ACCEPT = "receive hello-accept"
    RECV_ERROR = "receive error"
    REFUSE = "refuse"
    DEADLINE = "deadline"
    EOF = "end of stream"


class HelloAction(StrEnum):
    NONE = "-"
    SEND_START = "send hello-start"
    SEND_HELLO = "send hello"
    SEND_ACCEPT = "send hello-accept"
    SEND_ERROR = "send error"


Transitions = dict[tuple[HelloState, HelloInput], tuple[HelloAction, HelloState]]


def _failures(*states: HelloState) -> Transitions:
    """The rows every waiting state shares: a refusal (a malformed, unexpected or invalid
    message; we send the reason), the peer's error, the deadline, the end of the stream."""
    rows: Transitions = {}
    for state in states:
        rows[(state, HelloInput.REFUSE)] = (HelloAction.SEND_ERROR, HelloState.FAILED)
        rows[(state, HelloInput.RECV_ERROR)] = (HelloAction.NONE, HelloState.REFUSED_BY_PEER)
        rows[(state, HelloInput.DEADLINE)] = (HelloAction.SEND_ERROR, HelloState.FAILED)
        rows[(state, HelloInput.EOF)] = (HelloAction.NONE, HelloState.FAILED)
    return rows


INITIATOR_TRANSITIONS: Final[Transitions] = {
    (HelloState.IDLE, HelloInput.START): (HelloAction.SEND_START, HelloState.AWAIT_HELLO),
    (HelloState.AWAIT_HELLO, HelloInput.RECV_HELLO): (HelloAction.SEND_HELLO, HelloState.AWAIT_ACCEPT),
    (HelloState.AWAIT_ACCEPT, HelloInput.RECV_ACCEPT): (HelloAction.NONE, HelloState.DONE),
    **_failures(HelloState.AWAIT_HELLO, HelloState.AWAIT_ACCEPT),
}
RESPONDER_TRANSITIONS: Final[Transitions] = {
    (HelloState.AWAIT_START, HelloInput.RECV_START): (HelloAction.SEND_HELLO, HelloState.AWAIT_HELLO),
    (HelloState.AWAIT_HELLO, HelloInput.RECV_HELLO): (HelloAction.SEND_ACCEPT, HelloState.DONE),
    **_failures(HelloState.AWAIT_START, HelloState.AWAIT_HELLO),
}
TERMINAL_STATES: Final = frozenset({HelloState.DONE, HelloState.FAILED, HelloState.REFUSED_BY_PEER})

_INPUT_OF_TYPE: Final = {"hello-start": HelloInput.RECV_START, "hello": HelloInput.RECV_HELLO,
                         "hello-accept": HelloInput.RECV_ACCEPT}


class HelloExchange:
    """One side of a hello exchange on one stream, sans-IO.

    ``local_peer`` and ``remote_peer`` are the connection's authenticated peer ids (from the
    secure channel). Feed the stream's bytes to :meth:`receive_data` and write back what it
    answers; likewise :meth:`start` (initiator), :meth:`receive_eof` and, when
    :attr:`deadline` passes, :meth:`check_deadline`. The outcome is in :attr:`state`:
    ``done`` with :attr:`result`, or ``failed`` / ``refused-by-peer`` with :attr:`error`
    (a :class:`RemoteProtocolError` whose code is the reason). After a failure the node
    writes what the call answered (the error frame) and resets the stream.
    """

    def __init__(self, role: Role, config: HelloConfig, *, local_peer: str, remote_peer: str,
                 now: float, nonce: bytes | None = None) -> None:
        if local_peer == remote_peer:
            raise LocalProtocolError("a node does not hello itself")
        if local_peer != config.peer_id:
            raise LocalProtocolError("local_peer is not the peer id of the signing key")
        self.role = role
        self.config = config
        self.local_peer = local_peer
        self.remote_peer = remote_peer
        self.nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        if len(self.nonce) != NONCE_BYTES:
            raise LocalProtocolError(f"a nonce has {NONCE_BYTES} bytes")
        self.table = INITIATOR_TRANSITIONS if role is Role.INITIATOR else RESPONDER_TRANSITIONS
        self.state = HelloState.IDLE if role is Role.INITIATOR else HelloState.AWAIT_START
        self._frames = FrameDecoder(MAX_HELLO_FRAME_BYTES)
        self._expires = now + HELLO_TIMEOUT_S
        self._peer_nonce: bytes | None = None
        self.result: PeerHello | None = None
        self.error: RemoteProtocolError | None = None
        self.sent_hello: Hello | None = None

    # -- the node's calls ---------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def deadline(self) -> float | None:
        """When :meth:`check_deadline` must be called if nothing arrives (None: finished)."""
        if self.finished:
            return None
        frame = self._frames.deadline
        return self._expires if frame is None else min(self._expires, frame)

    def start(self) -> bytes:
        """The initiator's first frame (``hello-start``)."""
        if self.role is not Role.INITIATOR:
            raise LocalProtocolError("only the initiator starts a hello exchange")
        action = self._step(HelloInput.START, local=True)
        assert action is HelloAction.SEND_START
        return encode_message({"type": "hello-start", "nonce": self.nonce}, MAX_HELLO_FRAME_BYTES)

    def receive_data(self, data: bytes, *, now: float, wall_ms: int) -> bytes:
        """Process bytes from the peer; answers the bytes to write (maybe none)."""
        if self.finished:
            if data:
                raise RemoteProtocolError("data after the hello exchange ended",
                                          ErrorCode.UNEXPECTED_MESSAGE)
            return b""
        output = bytearray()
        try:
            self._frames.receive_data(data, now)
            self._frames.check_deadline(now)
            while not self.finished:
                body = self._frames.next_frame()
                if body is None:
                    break
                output += self._on_frame(body, wall_ms)
            if not self.finished and now >= self._expires:
                raise DeadlineExceeded(f"hello not complete within {HELLO_TIMEOUT_S:.0f} s")
        except PeerError as exc:
            self._fail(HelloInput.RECV_ERROR, exc)
        except RemoteProtocolError as exc:
            output += self._refuse(exc)
        return bytes(output)

    def receive_eof(self) -> bytes:
        if self.finished:
            return b""
        self._frames.receive_eof()
        try:
            while not self.finished and self._frames.next_frame() is not None:
                raise RemoteProtocolError("frame after the stream's end", ErrorCode.UNEXPECTED_MESSAGE)
        except FrameError as exc:
            self._fail(HelloInput.EOF, exc)
            return b""
        self._fail(HelloInput.EOF, RemoteProtocolError("stream ended before the hello exchange "
                                                       "completed", ErrorCode.TRUNCATED))
        return b""

    def check_deadline(self, now: float) -> bytes:
        """Call when :attr:`deadline` has passed: answers the ``timeout`` error frame."""
        deadline = self.deadline
        if deadline is None or now < deadline:
            return b""
        error = DeadlineExceeded(f"hello not complete within its deadline ({HELLO_TIMEOUT_S:.0f} s)")
        return self._refuse(error, HelloInput.DEADLINE)

    # -- internals ------------------------------------------------------------------------

    def _step(self, event: HelloInput, *, local: bool = False) -> HelloAction:
        found = self.table.get((self.state, event))
        if found is None:
            if local:
                raise LocalProtocolError(f"{event.value!r} is not allowed in state {self.state.value!r}")
            raise RemoteProtocolError(f"{event.value!r} is not allowed in state {self.state.value!r}",
                                      ErrorCode.UNEXPECTED_MESSAGE)
        action, self.state = found
        return action

    def _refuse(self, error: RemoteProtocolError, event: HelloInput = HelloInput.REFUSE) -> bytes:
        self.error = error
        action = self._step(event, local=True)
        return error_frame_for(error) if action is HelloAction.SEND_ERROR else b""

    def _fail(self, event: HelloInput, error: RemoteProtocolError) -> None:
        self.error = error
        self._step(event, local=True)

    def _session(self) -> Session:
        if self._peer_nonce is None:
            raise LocalProtocolError("no peer nonce yet")
        if self.role is Role.INITIATOR:
            return Session(self.local_peer, self.remote_peer, self.nonce, self._peer_nonce)
        return Session(self.remote_peer, self.local_peer, self._peer_nonce, self.nonce)

    def _on_frame(self, body: bytes, wall_ms: int) -> bytes:
        message = decode_message(body)
        kind = message["type"]
        event = _INPUT_OF_TYPE.get(kind)
        if event is None:
            raise MessageError(f"unknown hello message type {kind!r}", ErrorCode.UNSUPPORTED)
        if (self.state, event) not in self.table:
            raise RemoteProtocolError(f"{kind!r} is not allowed in state {self.state.value!r}",
                                      ErrorCode.UNEXPECTED_MESSAGE)
        if event is HelloInput.RECV_START:
            schema.fields(message, {"nonce"}, "hello-start")
            self._peer_nonce = schema.byte_string(message["nonce"], "hello-start nonce", NONCE_BYTES)
            refusal = self.config.policy.refusal(self.remote_peer, None)
            if refusal is not None:  # a denied peer gets no signature of ours
                raise refusal
        elif event is HelloInput.RECV_HELLO:
            hello = Hello.parse(message)
            if self.role is Role.INITIATOR:
                # The responder's hello carries its nonce: the session is now complete.
                self._peer_nonce = hello.session.responder_nonce
            self.result = verify_hello(hello, config=self.config, session=self._session(),
                                       sender=self.role.other, sender_peer_id=self.remote_peer,
                                       now_ms=wall_ms)
        action = self._step(event)
        if action is HelloAction.SEND_HELLO:
            self.sent_hello = sign_hello(self.config, self._session(), wall_ms)
            return encode_message(self.sent_hello.to_message(), MAX_HELLO_FRAME_BYTES)
        if action is HelloAction.SEND_ACCEPT:
            return encode_message({"type": "hello-accept"}, MAX_HELLO_FRAME_BYTES)
        return b""


def describe_failure(error: ProtocolError | None) -> dict[str, Any] | None:
    """The refusal as the operator sees it (``peers list --json``, the log): the code's
    number and name, the message, and who refused (``us`` or the ``peer``)."""
    if error is None:
        return None
    if isinstance(error, PeerError):
        code = error.raw_code
        reason = error.code.label if code == int(error.code) else "unknown"
        return {"code": code, "reason": reason, "message": error.message, "by": "peer"}
    return {"code": int(error.code), "reason": error.code.label, "message": error.message, "by": "us"}
