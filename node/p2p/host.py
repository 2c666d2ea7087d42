"""The node's libp2p host: TCP, Noise, Yamux, identify and ping on py-libp2p 0.8.1.

The node runtime uses it like this, inside its own trio nursery::

    host = make_host(keypair_from_seed(seed))
    async with running_host(host, ["/ip4/0.0.0.0/tcp/4001"]) as bound_addrs:
        print(bound_addrs)                 # e.g. /ip4/0.0.0.0/tcp/4001/p2p/12D3KooW...
        peer_id = await connect(host, "/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...")
        rtt_seconds = await ping(host, peer_id)
        print(connected_peers(host))       # [(peer id, [remote addr, ...]), ...]

Security fails closed: the host offers and accepts Noise only (the library's
default host also speaks TLS, secio and *plaintext*), and Yamux is the only muxer.
``make_host`` also applies the inbound-slot fix of :mod:`n3xus.node.p2p.patches`.

Addresses are checked before anything is started: a malformed multiaddr, an
unknown or unsupported protocol, a dial address without ``/p2p/<peer id>``, or a
listen port that is already taken raise :class:`~n3xus.node.errors.AddressError`.
"""

from __future__ import annotations

import errno
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError, MultiError
from libp2p.host.basic_host import BasicHost
from libp2p.host.ping import ID as PING_PROTOCOL_ID
from libp2p.io.utils import read_exactly
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStore
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.manager import TransportManager
from libp2p.transport.tcp.tcp import TCP
from libp2p.transport.upgrader import TransportUpgrader
from multiaddr import Multiaddr
from multiaddr.exceptions import ParseError as MultiaddrParseError
from nacl.signing import SigningKey
from trio_typing import TaskStatus

from ..errors import AddressError, ConfigError, NodeError
from .limits import ConnectionGate, ConnectionLimits
from .patches import InboundSlotReleasingSwarm, new_gate_admitted_resource_manager, tune_yamux

logger = logging.getLogger(__name__)

# An ed25519 private key is fully determined by its 32-byte seed (RFC 8032 5.1.5),
# so the same seed gives the same peer ID after every restart.
ED25519_SEED_LENGTH = 32

# 0.8.1's Swarm.dial_peer starts one dial per address and, unless the number of
# established connections reaches max_connections_per_peer, waits the full 250 ms
# happy-eyeballs delay before returning. With the default of 3 every dial to a
# peer with a single address took >= 250 ms; with 1 it returns as soon as the
# connection is up. One connection per peer is all Yamux needs anyway.
MAX_CONNECTIONS_PER_PEER = 1

# The ping protocol (/ipfs/ping/1.0.0) echoes exactly 32 random bytes.
PING_PAYLOAD_LENGTH = 32

# Last ping RTTs kept for the peers route; old entries (peers long gone) fall out.
MAX_PING_RECORDS = 1024

# A peer that has not echoed a ping within this time is treated as unreachable.
PING_TIMEOUT_SECONDS = 10.0

# Upper bound for a whole connect() call. The swarm's own dial_timeout (10 s per
# attempt, with retries) could otherwise keep an operator's command waiting for
# most of a minute on a blackholed address.
CONNECT_TIMEOUT_SECONDS = 15.0

# Time the host gets to close listeners and connections when it is stopped. 0.8.1
# sleeps 0.2 s inside every connection close (Yamux.close and SwarmConn._cleanup
# each sleep 0.1 s), so connections are closed concurrently; this bound keeps a
# stuck close from holding up the node's shutdown (which must finish in < 5 s).
SHUTDOWN_GRACE_SECONDS = 2.0

# Closing a stream sends a Yamux FIN; a peer that stopped reading must not hold a
# finished (or cancelled) ping open.
STREAM_CLOSE_TIMEOUT_SECONDS = 1.0

# Accept queue of the TCP listeners. 0.8.1 listens with a backlog of 128; a burst
# of connections (a flood, or every peer re-dialing a restarted node) beyond that
# makes the kernel drop handshakes silently before the connection gate ever sees
# them. The gate turns unwanted connections away faster once they are accepted.
# (The kernel caps it at net.core.somaxconn.)
LISTEN_BACKLOG = 1024

# Protocols that may name the host part of an address. Listening needs a literal
# IP; a dial address may also use DNS (resolved by libp2p's TCP transport).
_LISTEN_HOST_PROTOCOLS = frozenset({"ip4", "ip6"})
_DIAL_HOST_PROTOCOLS = frozenset({"ip4", "ip6", "dns", "dns4", "dns6"})

# Errors that mean "the peer or the network failed us" when they come out of a
# dial, a stream or a close: libp2p's own errors all derive from BaseLibp2pError,
# the others come from the socket and trio layers below it. Anything else is a
# bug and propagates.
NETWORK_ERRORS: tuple[type[Exception], ...] = (
    BaseLibp2pError,
    OSError,
    EOFError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)

# Later issues plug in here. Gossipsub: see _serve. Peer discovery: a bootstrap
# list / mDNS, or a RoutedHost with a peer-routing implementation in place of the
# BasicHost that make_host builds; note that 0.8.1's swarm already runs an
# auto-connector that re-dials peers in the peerstore while the node has fewer
# than ConnectionConfig.min_connections (50) connections.


class DialError(NodeError):
    """A peer could not be reached: refused, timed out, failed the Noise
    handshake, or turned out to have a different peer ID than its address said."""


class PingError(NodeError):
    """A ping got no answer in time, or a wrong one."""


def keypair_from_seed(seed: bytes) -> KeyPair:
    """The libp2p ed25519 key pair for a 32-byte seed (the node's persistent
    identity). The same seed always gives the same key pair and peer ID."""
    if not isinstance(seed, bytes | bytearray):
        raise ConfigError(f"an ed25519 seed is bytes, got {type(seed).__name__}")
    if len(seed) != ED25519_SEED_LENGTH:
        raise ConfigError(
            f"an ed25519 seed is {ED25519_SEED_LENGTH} bytes, got {len(seed)}"
        )
    private_key = Ed25519PrivateKey(SigningKey(bytes(seed)))
    return KeyPair(private_key, private_key.get_public_key())


def peer_id_of(source: BasicHost | KeyPair) -> str:
    """The peer ID (``12D3KooW...`` for ed25519) of a host or of the key pair a
    host would be made from."""
    if isinstance(source, KeyPair):
        return str(ID.from_pubkey(source.public_key))
    return str(source.get_id())


def public_key_hex(host: BasicHost) -> str:
    """The host's raw 32-byte ed25519 public key, hex-encoded."""
    return bytes(host.get_public_key().to_bytes()).hex()


def parse_peer_id(text: str | ID) -> ID:
    """A peer ID from its base58 text (``12D3KooW...``/``Qm...``)."""
    if isinstance(text, ID):
        return text
    try:
        return ID.from_base58(text)
    except ValueError as error:
        raise AddressError(f"malformed peer ID {text!r}: {error}") from error


def default_connection_config(limits: ConnectionLimits | None = None) -> ConnectionConfig:
    """The connection settings make_host uses unless given others: one connection
    per peer, and the total and handshake deadline of ``limits``."""
    limits = limits if limits is not None else ConnectionLimits()
    return ConnectionConfig(
        max_connections_per_peer=MAX_CONNECTIONS_PER_PEER,
        max_connections=limits.max_connections,
        # The swarm's own deadline for security + muxer upgrade of an inbound
        # connection is the gate's handshake deadline.
        inbound_upgrade_timeout=limits.handshake_timeout_s,
    )


def make_host(
    key_pair: KeyPair,
    *,
    connection_config: ConnectionConfig | None = None,
    limits: ConnectionLimits | None = None,
) -> BasicHost:
    """A host with TCP transport, Noise as its only security protocol, Yamux as its
    only muxer, and identify, identify-push and ping handlers (BasicHost's
    defaults). Start it with :func:`running_host`.

    This builds the swarm itself instead of calling ``libp2p.new_host``: new_host
    always constructs the upstream ``Swarm`` (with the inbound-slot leak) and, with
    no ``sec_opt``, offers plaintext and secio beside Noise and TLS.

    Inbound connections pass a :class:`~n3xus.node.p2p.limits.ConnectionGate`
    built from ``limits`` (see :mod:`n3xus.node.p2p.limits`; read it back with
    :func:`gate_of`).
    """
    limits = limits if limits is not None else ConnectionLimits()
    config = (connection_config if connection_config is not None
              else default_connection_config(limits))
    peer_id = ID.from_pubkey(key_pair.public_key)
    # The Noise static key is separate from the identity key and signed by it
    # during the handshake (libp2p noise spec), so a fresh one per host is fine.
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    upgrader = TransportUpgrader(
        secure_transports_by_protocol={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_transports_by_protocol={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
    )
    peerstore = PeerStore()
    peerstore.add_key_pair(peer_id, key_pair)
    swarm = InboundSlotReleasingSwarm(
        peer_id,
        peerstore,
        upgrader,
        transports=[TCP()],
        connection_config=config,
        transport_manager=TransportManager(),
        gate=ConnectionGate(limits),
    )
    # new_host's default resource manager (stream and memory limits), minus its
    # connection admission, which leaks under eviction (see patches.py).
    tune_yamux()  # Yamux frames that fit one Noise message (node/p2p/patches.py)
    return BasicHost(network=swarm, resource_manager=new_gate_admitted_resource_manager())


def _swarm_of(host: BasicHost) -> InboundSlotReleasingSwarm:
    swarm = host.get_network()
    if not isinstance(swarm, InboundSlotReleasingSwarm):
        raise TypeError("this host was not made by n3xus.node.p2p.host.make_host")
    return swarm


def gate_of(host: BasicHost) -> ConnectionGate:
    """The connection gate of a host made by :func:`make_host`."""
    return _swarm_of(host).gate


# -- addresses ---------------------------------------------------------------


def parse_multiaddr(text: str | Multiaddr) -> Multiaddr:
    """Parse a multiaddr, turning the library's parse errors into AddressError."""
    if isinstance(text, Multiaddr):
        return text
    if not text.strip():
        raise AddressError("empty multiaddr")
    try:
        return Multiaddr(text)
    except MultiaddrParseError as error:
        raise AddressError(f"malformed multiaddr {text!r}: {error}") from error


def _protocol_names(addr: Multiaddr) -> list[str]:
    return [protocol.name for protocol in addr.protocols()]


def parse_listen_addr(text: str | Multiaddr) -> Multiaddr:
    """A listen address: exactly ``/ip4/<ip>/tcp/<port>`` or ``/ip6/<ip>/tcp/<port>``;
    port 0 lets the system pick a free port."""
    addr = parse_multiaddr(text)
    names = _protocol_names(addr)
    if len(names) != 2 or names[0] not in _LISTEN_HOST_PROTOCOLS or names[1] != "tcp":
        raise AddressError(
            f"cannot listen on {addr}: expected /ip4/<ip>/tcp/<port> or "
            f"/ip6/<ip>/tcp/<port> (the node listens on TCP only)"
        )
    return addr


def parse_peer_addr(text: str | Multiaddr) -> tuple[ID, Multiaddr]:
    """Split a dial address ``/<ip4|ip6|dns|dns4|dns6>/<host>/tcp/<port>/p2p/<id>``
    into the peer ID and the transport address."""
    addr = parse_multiaddr(text)
    names = _protocol_names(addr)
    if not names or names[-1] != "p2p":
        raise AddressError(
            f"{addr} names no peer: a dial address ends in /p2p/<peer id>, "
            f"which the Noise handshake checks"
        )
    if len(names) != 3 or names[0] not in _DIAL_HOST_PROTOCOLS or names[1] != "tcp":
        raise AddressError(
            f"cannot dial {addr}: expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>/p2p/<id>"
        )
    peer_id_text = addr.value_for_protocol("p2p")
    peer_id = parse_peer_id(peer_id_text)
    transport_addr = addr.decapsulate(Multiaddr(f"/p2p/{peer_id_text}"))
    return peer_id, transport_addr


def _check_port_free(addr: Multiaddr) -> None:
    """Fail if another socket already listens on the address.

    0.8.1's TCP listener sets SO_REUSEPORT (for hole punching), so binding a port
    another SO_REUSEPORT listener holds -- e.g. a second node started with the same
    config -- *succeeds*, and the kernel then splits incoming connections between
    the two processes. A probe socket without SO_REUSEPORT is refused by such a
    listener, so this catches that as well as ordinary conflicts. SO_REUSEADDR is
    set so the probe ignores TIME_WAIT leftovers of a node that just restarted.
    (A listener started in the instant between probe and bind is not caught.)
    Port 0 is probed too: that reports an IP this machine does not have.
    """
    names = _protocol_names(addr)
    ip = addr.value_for_protocol(names[0])
    port = int(addr.value_for_protocol("tcp"))
    family = socket.AF_INET6 if names[0] == "ip6" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise AddressError(
                    f"cannot listen on {addr}: port {port} is already in use"
                ) from error
            raise AddressError(f"cannot listen on {addr}: {error.strerror}") from error


async def _listen_on(swarm: InboundSlotReleasingSwarm, addr: Multiaddr) -> None:
    _check_port_free(addr)
    # Swarm.listen logs and swallows bind errors and only reports a bool.
    if not await swarm.listen(addr):
        raise AddressError(f"cannot listen on {addr}: the TCP transport refused it")
    listener = swarm.listeners.get(str(addr))
    for socket_listener in getattr(listener, "listeners", []):
        # listen() again only changes the backlog of a listening socket (Linux).
        socket_listener.socket.listen(LISTEN_BACKLOG)


def listen_addrs(host: BasicHost) -> list[str]:
    """The addresses the host is bound to, each ending in ``/p2p/<peer id>`` (the
    actual port when it was asked for port 0); what other nodes pass to connect()."""
    p2p_part = Multiaddr(f"/p2p/{host.get_id()}")
    return [str(addr.encapsulate(p2p_part)) for addr in host.get_transport_addrs()]


# -- running -----------------------------------------------------------------


@asynccontextmanager
async def running_host(
    host: BasicHost, listen_on: Sequence[str | Multiaddr]
) -> AsyncIterator[list[str]]:
    """Run ``host`` for the duration of the block, listening on ``listen_on``
    (which may be empty for a dial-only host). Yields the bound addresses, as
    :func:`listen_addrs` gives them.

    All addresses are validated before anything starts. On leaving the block --
    normally, by an exception, or by cancellation of the enclosing scope -- the
    listeners are closed first, then every connection (concurrently), then the
    swarm, all within SHUTDOWN_GRACE_SECONDS.
    """
    addrs = [parse_listen_addr(text) for text in listen_on]
    seen: set[str] = set()
    for addr in addrs:
        if str(addr) in seen:
            raise AddressError(f"listen address {addr} is given twice")
        seen.add(str(addr))
    swarm = _swarm_of(host)
    stop = trio.Event()
    sole_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            bound: list[str] = await nursery.start(_serve, host, swarm, addrs, stop)
            try:
                yield bound
            finally:
                # On cancellation too: nursery exit then waits for _serve's
                # shielded, deadline-bounded shutdown.
                stop.set()
    except BaseExceptionGroup as group:
        # The nursery wraps whatever leaves the block in an exception group. Hand
        # a single error on as itself, so callers can catch AddressError (or
        # whatever their own block raised) directly.
        sole_error = _sole_exception(group)
        if sole_error is None:
            raise
    if sole_error is not None:
        raise sole_error  # outside the handler: keeps its own cause and context


def _sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


async def _serve(
    host: BasicHost,
    swarm: InboundSlotReleasingSwarm,
    addrs: Sequence[Multiaddr],
    stop: trio.Event,
    *,
    task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    # libp2p's tasks (listeners, muxers, identify) live below this task, and this
    # scope shields them from the caller's cancellation. Without the shield a
    # cancelled node would cancel them mid-close: 0.8.1 marks a connection closed
    # before its awaits, so an interrupted close is never retried and its socket
    # is left to the garbage collector. Instead the caller's block sets ``stop``
    # and we shut down in order, within SHUTDOWN_GRACE_SECONDS.
    with trio.CancelScope(shield=True) as scope:
        async with host.run([]):
            try:
                for addr in addrs:
                    await _listen_on(swarm, addr)
                # Later issues start gossipsub here (a libp2p Pubsub service over
                # a GossipSub router, run with background_trio_service so it shares
                # this shielded lifetime) and peer discovery next to it.
                task_status.started(listen_addrs(host))
                await stop.wait()
            finally:
                # Also when a listen address failed: close what did start.
                scope.deadline = trio.current_time() + SHUTDOWN_GRACE_SECONDS
                await _shutdown(host, swarm)
    if scope.cancelled_caught:
        logger.warning(
            "libp2p host did not stop within %.1f s; its remaining tasks were cancelled",
            SHUTDOWN_GRACE_SECONDS,
        )


async def _shutdown(host: BasicHost, swarm: InboundSlotReleasingSwarm) -> None:
    for listener in list(swarm.listeners.values()):
        await listener.close()  # stop accepting before closing connections
    async with trio.open_nursery() as nursery:
        for connections in list(swarm.connections.values()):
            for connection in list(connections):
                nursery.start_soon(_close_connection, connection)
    await host.close()  # identify tasks, transports, the swarm service


async def _close_connection(connection: INetConn) -> None:
    try:
        await connection.close()
    except NETWORK_ERRORS as error:
        logger.debug("error while closing a connection at shutdown: %s", error)


# -- peers -------------------------------------------------------------------


class ConnectionNotifee(INotifee):
    """A swarm notifee for code that watches connections only: stream and listen events
    are ignored; subclasses implement ``connected`` and ``disconnected``."""

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None



async def connect(host: BasicHost, multiaddr_text: str | Multiaddr) -> str:
    """Connect to the peer at ``/.../tcp/<port>/p2p/<id>`` and return its peer ID.
    Returns at once if already connected. Raises AddressError for a bad address,
    DialError if the peer cannot be reached or is not who the address says."""
    peer_id, transport_addr = parse_peer_addr(multiaddr_text)
    if peer_id == host.get_id():
        raise AddressError(f"{multiaddr_text} is this node's own address")
    swarm = _swarm_of(host)
    if swarm.gate.is_banned(str(peer_id), trio.current_time()):
        raise DialError(f"cannot connect to {multiaddr_text}: the peer is banned")
    # An explicit connect must really try again, even if an earlier dial to this
    # peer failed (0.8.1 otherwise refuses to re-dial it for 60 s).
    swarm.unblock_peer(peer_id)
    # The operator's address is authoritative: libp2p 0.8.1 dials at most one address
    # per transport class, the first the peerstore holds, so a stale TCP address of a
    # peer that restarted on a new port would otherwise be dialled instead of this one
    # (and it drops loopback addresses whenever it holds another). Here, not in the
    # swarm's dial_peer (patches.py): discovery and pubsub dial by peer id from the
    # peerstore and keep upstream's choice.
    if not swarm.get_connections(peer_id):
        host.get_peerstore().clear_addrs(peer_id)
    with trio.move_on_after(CONNECT_TIMEOUT_SECONDS) as timeout:
        try:
            await host.connect(PeerInfo(peer_id, [transport_addr]))
        except NETWORK_ERRORS as error:
            raise DialError(f"cannot connect to {multiaddr_text}: {_reason(error)}") from error
    if timeout.cancelled_caught:
        raise DialError(
            f"cannot connect to {multiaddr_text}: no connection within "
            f"{CONNECT_TIMEOUT_SECONDS:.0f} s"
        )
    return str(peer_id)


def _reason(error: BaseException) -> str:
    """The innermost message of a libp2p error: dial errors wrap the real cause
    (e.g. "Connection refused") several levels deep, partly in groups."""
    while True:
        if isinstance(error, MultiError) and error.errors:
            error = error.errors[-1]
        elif isinstance(error, BaseExceptionGroup):
            error = error.exceptions[-1]
        elif error.__cause__ is not None:
            error = error.__cause__
        else:
            break
    return str(error).replace("\n", "; ") or type(error).__name__


async def ping(host: BasicHost, peer: str | ID) -> float:
    """Round-trip time to ``peer`` in seconds, over /ipfs/ping/1.0.0 (dialing the
    peer if needed and its address is known). Raises AddressError for a malformed
    peer ID, PingError if there is no correct answer in time."""
    peer_id = parse_peer_id(peer)
    payload = secrets.token_bytes(PING_PAYLOAD_LENGTH)
    echoed = b""
    rtt = 0.0
    with trio.move_on_after(PING_TIMEOUT_SECONDS) as timeout:
        try:
            stream = await host.new_stream(peer_id, [PING_PROTOCOL_ID])
        except NETWORK_ERRORS as error:
            raise PingError(f"cannot open a ping stream to {peer_id}: {_reason(error)}") from error
        try:
            started = trio.current_time()
            await stream.write(payload)
            echoed = await read_exactly(stream, PING_PAYLOAD_LENGTH)
            rtt = trio.current_time() - started
        except NETWORK_ERRORS as error:
            raise PingError(f"ping to {peer_id} failed: {_reason(error)}") from error
        finally:
            await _close_stream(stream)
    if timeout.cancelled_caught:
        raise PingError(f"no ping answer from {peer_id} within {PING_TIMEOUT_SECONDS:.0f} s")
    if echoed != payload:
        raise PingError(f"{peer_id} answered a ping with different bytes")
    _record_ping(_swarm_of(host), str(peer_id), rtt)
    return rtt


def _record_ping(swarm: InboundSlotReleasingSwarm, peer: str, rtt: float) -> None:
    records = swarm.last_pings
    records.pop(peer, None)  # re-insert: the dict stays ordered oldest first
    records[peer] = (rtt, time.time())
    while len(records) > MAX_PING_RECORDS:
        del records[next(iter(records))]


async def _close_stream(stream: INetStream) -> None:
    # Shielded so a ping cancelled by its caller still gives the stream (and its
    # resource-manager slot) back; bounded so a dead peer cannot hold us here.
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + STREAM_CLOSE_TIMEOUT_SECONDS
        try:
            await stream.close()
        except NETWORK_ERRORS as error:
            logger.debug("error while closing a ping stream: %s", error)


def connected_peers(host: BasicHost) -> list[tuple[str, list[str]]]:
    """``(peer id, [remote address, ...])`` for each peer with an open connection,
    in no particular order."""
    swarm = _swarm_of(host)
    peers: list[tuple[str, list[str]]] = []
    for peer_id, connections in list(swarm.connections.items()):
        open_connections = [c for c in connections if not c.is_closed]
        if open_connections:
            addrs = [str(a) for c in open_connections for a in c.get_transport_addresses()]
            peers.append((str(peer_id), addrs))
    return peers


def peer_details(host: BasicHost) -> list[dict[str, Any]]:
    """What the node's peers route shows, one dict per connected peer::

        {"peer_id": "12D3KooW...", "addrs": ["/ip4/.../tcp/..."],
         "direction": "inbound" | "outbound" | "unknown",
         "connected_since": 1764400000.123,      # unix seconds, oldest connection
         "last_ping_rtt_ms": 0.412 | None,       # last successful ping (any caller)
         "last_ping_at": 1764400042.5 | None}

    Sorted by peer ID."""
    swarm = _swarm_of(host)
    details: list[dict[str, Any]] = []
    for peer_id, connections in list(swarm.connections.items()):
        open_connections = [c for c in connections if not c.is_closed]
        if not open_connections:
            continue
        first = min(open_connections, key=_connection_created_at)
        rtt, pinged_at = swarm.last_pings.get(str(peer_id), (None, None))
        details.append({
            "peer_id": str(peer_id),
            "addrs": [str(a) for c in open_connections for a in c.get_transport_addresses()],
            "direction": _direction_name(first),
            "connected_since": round(_connection_created_at(first), 3),
            "last_ping_rtt_ms": None if rtt is None else round(rtt * 1000, 3),
            "last_ping_at": None if pinged_at is None else round(pinged_at, 3),
        })
    return sorted(details, key=lambda d: str(d["peer_id"]))


def _connection_created_at(connection: INetConn) -> float:
    # SwarmConn (0.8.1) stamps time.time() when it is created.
    return float(getattr(connection, "_created_at", 0.0))


def _direction_name(connection: INetConn) -> str:
    # libp2p.rcmgr.metrics.Direction, an IntEnum: INBOUND / OUTBOUND / UNKNOWN.
    name = str(getattr(getattr(connection, "direction", None), "name", "")).lower()
    return name if name in ("inbound", "outbound") else "unknown"


async def ban_peer(host: BasicHost, peer: str | ID, seconds: float, reason: str) -> None:
    """Close every connection to ``peer`` and refuse it, in and out, for
    ``seconds``. For peer scoring and ``n3xus peers ban``; see :func:`unban_peer`."""
    peer_id = parse_peer_id(peer)
    if not seconds > 0:
        raise ValueError("a ban lasts a positive number of seconds")
    _swarm_of(host).gate.ban(str(peer_id), trio.current_time() + seconds, reason)
    with trio.move_on_after(SHUTDOWN_GRACE_SECONDS):
        try:
            await host.disconnect(peer_id)
        except NETWORK_ERRORS as error:
            logger.debug("closing banned peer %s: %s", peer_id, error)


def unban_peer(host: BasicHost, peer: str | ID) -> bool:
    """Lift a ban; False if there was none."""
    return _swarm_of(host).gate.unban(str(parse_peer_id(peer)))


def inbound_connections_in_use(host: BasicHost) -> int:
    """Inbound connection slots held right now (for metrics and the leak test):
    equals the number of live inbound connections, and drops back when they close."""
    return _swarm_of(host).inbound_slots_in_use()
