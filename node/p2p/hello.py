"""``/n3xus/hello/1.0.0`` on the node: every new connection runs the signed hello.

The sans-IO exchange is :class:`n3xus.protocol.hello.HelloExchange`; this module runs it on
the node's libp2p host (specs/protocol-hello.md §2):

* the dialer of a connection is the initiator: as soon as the connection is up
  (a libp2p notifee), :class:`HelloService` opens a hello stream and runs the exchange;
* the listener is the responder (the stream handler); an inbound connection whose hello has
  not completed within ``HELLO_TIMEOUT_S + NO_HELLO_GRACE_S`` is closed (``no-hello``);
* a completed exchange marks the peer accepted in the PeerBook (other ``/n3xus/`` streams are
  served only then: :func:`n3xus.node.p2p.streams.admit`), appends a ``handshake`` v2 entry to
  the canon log that links the peer's signed hello, stored as a block, and starts witnessing
  the peer's checkpoints (the PeerBook's ``on_accepted`` listeners);
* a refusal either way (another network, another major version, a bad signature, a replayed
  or stale hello, a policy denial, garbage) is logged with its code and reason, kept in the
  PeerBook for ``peers list --json`` (``refusal``), counted against the peer's score when the
  fault is the peer's, and the connection is closed.

Test hook: the environment variable ``N3XUS_TEST_ADVERTISED_VERSION`` replaces the software
version the node advertises (and compares majors against) -- the test suite starts a node
"of another major version" with it. It is not a configuration setting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.abc import INetConn, INetStream, INetwork
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from nacl.signing import SigningKey

from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonError
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import DeadlineExceeded, HelloRefused, RemoteProtocolError
from n3xus.protocol.hello import (
    HELLO_PROTOCOL_ID,
    HELLO_TIMEOUT_S,
    FederationPolicy,
    Hello,
    HelloConfig,
    HelloExchange,
    HelloState,
    PeerHello,
    Role,
    describe_failure,
    software_major,
)

from ..errors import ConfigError
from ..logs import get_logger
from .host import NETWORK_ERRORS, SHUTDOWN_GRACE_SECONDS, ConnectionNotifee
from .streams import CoreStream, StreamClosed, guarded

if TYPE_CHECKING:
    from ..services.canon import CanonService
    from ..services.ledger import LedgerService
    from ..services.peers import PeerBook

log = get_logger("n3xus.hello")

TEST_VERSION_ENV: Final = "N3XUS_TEST_ADVERTISED_VERSION"
NO_HELLO_GRACE_S: Final = 5.0
"""Beyond HELLO_TIMEOUT_S, how long an inbound connection may stay without a completed
hello: covers the dialer's stream negotiation on a loaded machine. Then it is closed."""
MAX_PENDING_CONNECTIONS: Final = 1024
"""New connections queued for their hello (above the gate's total connection limit)."""
OPEN_STREAM_TIMEOUT_S: Final = 10.0
"""Opening the hello stream (multistream negotiation) on a fresh connection."""
AGENT_NAME: Final = "n3xus-py"
CAPABILITIES: Final = ("witness",)
"""Feature tokens this node announces: it answers /n3xus/witness requests."""
INCOMPATIBLE_BACKOFF_S: Final = 300.0
"""A peer refused for what it is rather than what it did (another network, another major
version, a policy denial) is banned this long, either way round: without it the two nodes'
reconnect loops would redo the refused hello every backoff step. `n3xus peers unban` lifts
it after a configuration change."""
INCOMPATIBLE: Final = frozenset({ErrorCode.WRONG_NETWORK, ErrorCode.UNSUPPORTED_VERSION,
                                 ErrorCode.POLICY_DENIED})
MAX_RECOGNITION_PEERS: Final = 32
"""Addresses recorded in a handshake entry (canon log's MAX_ADDRESSES)."""


def advertised_version(version: str) -> str:
    """Our version, or the test hook's (which must be semver)."""
    override = os.environ.get(TEST_VERSION_ENV)
    if override:
        software_major(override)  # ValueError for junk: fail at start, not per hello
        return override
    return version


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class FederationSettings:
    """``[federation]`` in config.toml: networks accepted besides our own, peer allow and
    deny lists, and the score ban (threshold, seconds)."""

    networks: tuple[CID, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    ban_seconds: float | None = None
    ban_threshold: float | None = None

    def policy(self, own_network: CID) -> FederationPolicy:
        networks = tuple(dict.fromkeys((own_network, *self.networks)))
        return FederationPolicy(networks, self.allow, self.deny)


def federation_settings(raw: Mapping[str, Any] | None) -> FederationSettings:
    """Parse the ``[federation]`` table; ConfigError names a bad key."""
    raw = dict(raw or {})
    known = {"networks", "allow", "deny", "ban_seconds", "ban_threshold"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown [federation] keys {unknown}; known: {sorted(known)}")

    def texts(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"federation.{key} must be a list of texts")
        return tuple(value)

    try:
        networks = tuple(CID(text) for text in texts("networks"))
    except (CanonError, ValueError) as exc:
        raise ConfigError(f"federation.networks: {exc}") from None
    numbers: dict[str, float | None] = {}
    for key in ("ban_seconds", "ban_threshold"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"federation.{key} must be a number")
        numbers[key] = None if value is None else float(value)
    if numbers["ban_seconds"] is not None and not numbers["ban_seconds"] > 0:
        raise ConfigError("federation.ban_seconds must be positive")
    return FederationSettings(networks, texts("allow"), texts("deny"),
                              numbers["ban_seconds"], numbers["ban_threshold"])


CHECKPOINT_REFRESH_S: Final = 10.0
"""A hello or a witness answer signs fresh checkpoints of our logs (when they grew) at most
this often; in between it shows the last ones. Signing a ledger checkpoint computes its state
root: a node that many peers dial must not do that per connection."""


@dataclass
class SigningClock:
    """When this node last signed fresh checkpoints for a hello (monotonic seconds)."""

    last: float = float("-inf")


def latest_checkpoints(canon: CanonService | None, ledger: LedgerService | None,
                       key: SigningKey, clock: SigningClock) -> tuple[str | None, str | None]:
    """Our latest signed canon-log and ledger checkpoints, signing fresh ones when the
    logs grew since and the last signing is :data:`CHECKPOINT_REFRESH_S` old (a hello shows
    where our logs are now). Blocking (LMDB writes): call it in a worker thread."""
    fresh = time.monotonic() - clock.last >= CHECKPOINT_REFRESH_S
    canon_note = None
    if canon is not None:
        canon_note = canon.log.last_checkpoint()
        size = len(canon.log)
        signed = 0 if canon_note is None else int(canon_note.split("\n")[1])
        if size > 0 and (canon_note is None or (fresh and signed < size)):
            canon_note = canon.log.checkpoint(key)
    ledger_note = None if ledger is None else ledger.checkpoint(fresh=fresh)
    if fresh:
        clock.last = time.monotonic()
    return canon_note, ledger_note


# -- the record of a completed exchange -------------------------------------------------


def record_handshake(canon: CanonService, result: PeerHello, *, direction: str,
                     addresses: Sequence[str]) -> int:
    """Keep the peer's signed hello as a pinned block and append a ``handshake`` v2 entry
    linking it; answers the entry's index."""
    block = result.hello.to_block()
    with canon.store.session() as session:
        cid = session.put(block)
        session.pin(cid, f"n3xus/hello/{cid}", recursive=False)
    payload = result.handshake_entry(direction=direction, addresses=addresses,
                                     time_ms=_now_ms())
    payload["addresses"] = payload["addresses"][:MAX_RECOGNITION_PEERS]
    payload["hello"] = cid
    for _attempt in range(3):  # another writer may move the head between sign and write
        try:
            entry = canon.log.append(canon.key, "handshake", payload, version=2,
                                     time=max(_now_ms(), canon.log.head().time))
            return entry.seq
        except CanonError as exc:
            last = exc
    raise last


def verify_recognition(payload: Mapping[str, Any], hello_block: bytes, log_peer_id: str) -> Hello:
    """Check a ``handshake`` v2 entry of ``log_peer_id``'s canon log offline: the linked
    block is a hello signed by the entry's peer, for a session between the two nodes.
    Raises HelloRefused with the reason."""
    from n3xus.canon.cid import cid_of
    from n3xus.canon.codec import decode

    if cid_of(hello_block) != payload.get("hello"):
        raise HelloRefused("the hello block does not match the entry's link", ErrorCode.BAD_SIGNATURE)
    hello = Hello.parse(decode(hello_block))
    if hello.peer_id != payload.get("peer"):
        raise HelloRefused("the hello is signed by another peer", ErrorCode.IDENTITY_MISMATCH)
    if not hello.signature_valid():
        raise HelloRefused("the hello's signature does not verify", ErrorCode.BAD_SIGNATURE)
    if {hello.session.initiator, hello.session.responder} != {log_peer_id, hello.peer_id}:
        raise HelloRefused("the hello is for a session with another node", ErrorCode.REPLAYED)
    return hello


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the service ---------------------------------------------------------------------------


@dataclass
class _ConnectionHello:
    """The hello of one connection: started once, done once."""

    stream_seen: bool = False
    finished: trio.Event | None = None


class _Notifee(ConnectionNotifee):
    """New and closed connections, handed to the service's task (never blocks libp2p)."""

    def __init__(self, service: HelloService) -> None:
        self.service = service

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.service.connection_opened(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.service.connection_closed(conn)


class HelloService:
    """Runs the hello on every connection of ``host``. ``make_config`` builds our hello's
    configuration (awaited per exchange: checkpoints move, and signing one writes LMDB, so
    the node does it in a worker thread); ``on_done`` is called with
    (peer hello, direction, addresses) after each completed exchange."""

    def __init__(self, host: BasicHost, peerbook: PeerBook,
                 make_config: Callable[[], Awaitable[HelloConfig]],
                 *, on_done: Callable[[PeerHello, str, list[str]], None] | None = None) -> None:
        self.host = host
        self.peerbook = peerbook
        self.make_config = make_config
        self.on_done = on_done
        self.local_peer = str(host.get_id())
        self._connections: dict[int, _ConnectionHello] = {}
        self._send, self._receive = trio.open_memory_channel[INetConn](MAX_PENDING_CONNECTIONS)
        self.completed = 0
        self.refused = 0
        self.durations: list[float] = []  # seconds per completed exchange (last 256)

    # -- libp2p callbacks ------------------------------------------------------------------
    def connection_opened(self, conn: INetConn) -> None:
        self._state(conn)
        try:
            self._send.send_nowait(conn)
        except (trio.WouldBlock, trio.ClosedResourceError):
            # This connection runs no hello: its /n3xus/ streams stay refused.
            log.warning("too many connections waiting for their hello; one runs none",
                        peer_id=str(conn.muxed_conn.peer_id))

    def connection_closed(self, conn: INetConn) -> None:
        self._connections.pop(id(conn.muxed_conn), None)
        peer = conn.muxed_conn.peer_id
        still_open = [c for c in self.host.get_network().connections.get(peer, [])
                      if c is not conn and not c.is_closed]
        if not still_open:
            self.peerbook.disconnected(str(peer))

    def _state(self, conn: INetConn | Any) -> _ConnectionHello:
        key = id(conn.muxed_conn)
        state = self._connections.get(key)
        if state is None:
            state = self._connections[key] = _ConnectionHello(finished=trio.Event())
        return state

    # -- the task --------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.host.set_stream_handler(TProtocol(HELLO_PROTOCOL_ID), self._handle_stream)
        self.host.get_network().register_notifee(_Notifee(self))
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            async for conn in self._receive:
                nursery.start_soon(self._on_connection, conn)

    async def _on_connection(self, conn: INetConn) -> None:
        peer = str(conn.muxed_conn.peer_id)
        if conn.is_closed:  # gone before its turn (connection_closed already ran)
            self._connections.pop(id(conn.muxed_conn), None)
            return
        self.peerbook.connected(peer)
        direction = _direction(conn)
        if direction == "outbound":
            await self._initiate(conn, peer)
            return
        state = self._state(conn)
        assert state.finished is not None
        with trio.move_on_after(HELLO_TIMEOUT_S + NO_HELLO_GRACE_S):
            await state.finished.wait()
            return
        if conn.is_closed:
            return
        log.warning("hello refused", peer_id=peer, code=int(ErrorCode.TIMEOUT), reason="no-hello",
                    message="the dialer never completed a hello", by="us")
        self.peerbook.penalize(peer, "no-hello")
        self.peerbook.refused(peer, {"code": int(ErrorCode.TIMEOUT), "reason": "no-hello",
                                     "message": "the dialer never completed a hello on its "
                                                "connection", "by": "us"})
        await _close(conn)

    async def _initiate(self, conn: INetConn, peer: str) -> None:
        state = self._state(conn)
        state.stream_seen = True
        self.peerbook.hello_started(peer)
        started = trio.current_time()
        stream: INetStream | None = None
        with trio.move_on_after(OPEN_STREAM_TIMEOUT_S):
            try:
                stream = await self.host.new_stream(conn.muxed_conn.peer_id,
                                                    [TProtocol(HELLO_PROTOCOL_ID)])
            except NETWORK_ERRORS as exc:
                log.debug("cannot open a hello stream", peer_id=peer, error=str(exc))
        if stream is None:
            if not conn.is_closed:
                self._finish(state, conn, peer, None, RemoteProtocolError(
                    "the peer does not speak /n3xus/hello/1.0.0", ErrorCode.UNSUPPORTED),
                    "outbound", started, by_peer=True)
                await _close(conn)
            return
        await self._exchange(state, conn, stream, Role.INITIATOR, started)

    async def _handle_stream(self, stream: INetStream) -> None:
        conn: Any = stream.muxed_conn
        state = self._state(stream)
        peer = str(conn.peer_id)
        if state.stream_seen or not self.peerbook.count_stream(peer, "hello"):
            # One hello per connection (protocol-hello.md §2).
            async with guarded(stream, peerbook=self.peerbook, protocol="hello") as channel:
                await channel.fail(RemoteProtocolError("a second hello stream on this "
                                                       "connection", ErrorCode.UNEXPECTED_MESSAGE))
            return
        state.stream_seen = True
        await self._exchange(state, getattr(stream, "swarm_conn", None), stream, Role.RESPONDER,
                             trio.current_time())

    async def _exchange(self, state: _ConnectionHello, conn: INetConn | None,
                        stream: INetStream, role: Role, started: float) -> None:
        peer = str(stream.muxed_conn.peer_id)
        self.peerbook.hello_started(peer)
        direction = "outbound" if role is Role.INITIATOR else "inbound"
        exchange: HelloExchange | None = None
        error: RemoteProtocolError | None = None
        async with guarded(stream, peerbook=self.peerbook, protocol="hello") as channel:
            config = await self.make_config()
            exchange = HelloExchange(role, config, local_peer=self.local_peer,
                                     remote_peer=peer, now=trio.current_time())
            try:
                await _drive(channel, exchange, self.peerbook, direction, started)
            except StreamClosed as exc:
                error = RemoteProtocolError(f"the stream closed mid-exchange: {exc}",
                                            ErrorCode.TRUNCATED)
        if exchange is None:
            return
        if exchange.state is HelloState.DONE and exchange.result is not None:
            self._finish(state, conn, peer, exchange.result, None, direction, started)
            return
        failure = exchange.error or error or channel.error
        self._finish(state, conn, peer, None, failure if isinstance(failure, RemoteProtocolError) else
                     RemoteProtocolError("the hello exchange did not complete", ErrorCode.INTERNAL),
                     direction, started, by_peer=exchange.state is HelloState.REFUSED_BY_PEER)
        if conn is not None:
            await _close(conn)
        else:
            await _disconnect(self.host, peer)

    def _finish(self, state: _ConnectionHello, conn: INetConn | None, peer: str,
                result: PeerHello | None, error: RemoteProtocolError | None, direction: str,
                started: float, *, by_peer: bool = False) -> None:
        elapsed = trio.current_time() - started
        if state.finished is not None:
            state.finished.set()
        if result is not None:
            self.completed += 1
            self.durations = [*self.durations[-255:], elapsed]
            if not self.peerbook.is_accepted(peer):  # _drive marks responders before accept
                self.peerbook.accepted(peer, result, direction=direction, elapsed_s=elapsed)
            log.info("hello completed", peer_id=peer, direction=direction,
                     version=result.hello.version, elapsed_ms=round(elapsed * 1000, 1))
            if self.on_done is not None:
                addrs = [str(a) for a in (conn.get_transport_addresses() if conn is not None else [])]
                self.on_done(result, direction, addrs)
            return
        if self.peerbook.is_accepted(peer) and self._other_connection(conn):
            # A duplicate connection (both dialed at once) lost its exchange; the peer stays
            # recognised on the other one.
            log.info("hello on a duplicate connection did not complete", peer_id=peer,
                     error=str(error))
            return
        self.refused += 1
        refusal = describe_failure(error)
        if refusal is not None and by_peer:
            refusal["by"] = "peer"
        self.peerbook.refused(peer, refusal)
        log.warning("hello refused", peer_id=peer, direction=direction,
                    **({} if refusal is None else refusal))
        if error is not None and error.code in INCOMPATIBLE and not self.peerbook.is_banned(peer):
            self.peerbook.ban(peer, INCOMPATIBLE_BACKOFF_S,
                              f"hello refused ({error.code.label}, by {refusal and refusal['by']})")


    def _other_connection(self, conn: INetConn | None) -> bool:
        """Whether the peer of ``conn`` has another open connection."""
        if conn is None:
            return False
        connections = self.host.get_network().connections.get(conn.muxed_conn.peer_id, [])
        return any(c is not conn and not c.is_closed for c in connections)


async def _drive(channel: CoreStream, exchange: HelloExchange, peerbook: PeerBook,
                 direction: str, started: float) -> None:
    """Run the exchange to its end. A responder whose exchange completes is marked
    accepted before it sends ``hello-accept``, so the initiator's next stream is served."""
    if exchange.role is Role.INITIATOR:
        await channel.send(exchange.start())
    while not exchange.finished:
        try:
            data = await channel.receive(exchange.deadline)
        except DeadlineExceeded:
            await channel.fail(exchange.error or DeadlineExceeded("hello not complete in time"),
                               frame=exchange.check_deadline(trio.current_time()))
            return
        if not data:
            exchange.receive_eof()
            break
        output = exchange.receive_data(data, now=trio.current_time(), wall_ms=_now_ms())
        if exchange.state is HelloState.DONE and exchange.result is not None:
            peerbook.accepted(exchange.remote_peer, exchange.result, direction=direction,
                              elapsed_s=trio.current_time() - started)
        if exchange.state is HelloState.FAILED and exchange.error is not None:
            await channel.fail(exchange.error, frame=output)
            return
        await channel.send(output)
    if exchange.state is HelloState.DONE:
        await channel.close()
    elif exchange.error is not None and exchange.state is HelloState.FAILED:
        await channel.fail(exchange.error, frame=b"")
    else:
        await channel.reset()


def _direction(conn: INetConn) -> str:
    name = str(getattr(getattr(conn, "direction", None), "name", "")).lower()
    return name if name in ("inbound", "outbound") else "unknown"


async def _close(conn: INetConn) -> None:
    with trio.move_on_after(SHUTDOWN_GRACE_SECONDS):
        try:
            await conn.close()
        except NETWORK_ERRORS as exc:
            log.debug("closing a refused connection", error=str(exc))


async def _disconnect(host: BasicHost, peer: str) -> None:
    from .host import parse_peer_id

    with trio.move_on_after(SHUTDOWN_GRACE_SECONDS):
        try:
            await host.disconnect(parse_peer_id(peer))
        except NETWORK_ERRORS as exc:
            log.debug("disconnecting a refused peer", error=str(exc))
