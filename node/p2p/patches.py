"""Fixes to py-libp2p 0.8.1 internals that the node's host needs, in one place.

Everything here is written against the internals of ``libp2p.network.swarm.Swarm``
0.8.1 (pyproject pins ``libp2p>=0.8.1,<0.9``). ``tests/test_node_swarm_leak.py``
pins both the upstream bug and the fix, so a libp2p upgrade that changes these
internals fails loudly instead of silently reintroducing the leak.

The inbound connection slot leak
================================

``Swarm._handle_inbound_connection`` (swarm.py 0.8.1, lines 1947-1999) takes one
token of ``Swarm._inbound_limiter`` -- a ``trio.CapacityLimiter`` of
``max_connections - min_connections`` tokens, 300 - 50 = 250 with the default
``ConnectionConfig`` -- for every accepted TCP connection, and gives it back in a
``finally`` when ``_do_handle_inbound_connection`` returns. But after a successful
upgrade that inner handler never returns while the swarm runs (lines 2057-2060)::

    raw_conn = RawConnection(read_write_closer, False)
    await self.upgrade_inbound_raw_conn(raw_conn, maddr)
    # Intentional barrier: keep handler alive.
    await self.manager.wait_finished()

``manager.wait_finished()`` waits for the *whole swarm service* to stop, not for
this connection to close. When the peer disconnects, the connection is removed
from ``Swarm.connections``, but its handler task keeps sleeping, holding its slot,
its ``RawConnection`` and socket object, until the node shuts down. After 250
inbound connections in total -- open or long closed -- ``acquire_nowait()`` raises
``WouldBlock`` on every new one and the node closes it unanswered: it refuses
every new inbound peer for the rest of its life. (The pre-multiplexed QUIC branch
at lines 2030-2045 has the same barrier.)

The fix (:class:`InboundSlotReleasingSwarm`) keeps the handler alive exactly as
long as its own connection: it waits for the Yamux connection's ``event_closed``,
which ``Yamux.close`` sets on every path -- a local close, the swarm closing the
peer, the remote's GO_AWAY or EOF, a read error. Then the handler returns and the
upstream ``finally`` releases the slot.

Connection gating
=================

The swarm also replaces the upstream inbound admission (one ``CapacityLimiter``
of 250 tokens, held for up to 10 s by connections that never say a word) with
:class:`~n3xus.node.p2p.limits.ConnectionGate`: a small pool of pending
(pre-handshake) connections with eviction of the oldest, a handshake deadline,
per-address limits, and established capacity that unauthenticated connections
cannot take. ``_handle_inbound_connection`` (swarm.py 0.8.1 lines 1947-1999) is
overridden for that; the upstream limiter is no longer used.

Bans hold in both directions
============================

A banned peer (peer scoring, ``n3xus peers ban``) is refused by the gate after its
inbound handshake, but connections are also opened *by this node*: any
``host.new_stream(peer)`` dials a peer it is not connected to (py-libp2p's pubsub, for
one, retries opening its stream to every peer it saw connect, and so redialed a peer
moments after the ban closed its connection). So the swarm itself refuses: ``dial_peer``
never dials a banned peer, and ``add_conn`` -- where every upgraded connection, inbound
or outbound, is registered -- closes a banned peer's connection instead of registering
it. A banned peer never shows up as connected and no protocol sees it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Final

import trio
from libp2p.abc import IMuxedConn
from libp2p.io.abc import ReadWriteCloser
from libp2p.metrics.swarm import SwarmEvent
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.rcmgr.manager import ConnectionScope, ResourceManager
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH
from libp2p.stream_muxer.yamux import yamux as yamux_module
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from .limits import ConnectionGate, Refusal, Ticket

logger = logging.getLogger(__name__)

# Closing a refused or evicted socket must not wait on the peer.
SOCKET_CLOSE_TIMEOUT_SECONDS = 0.5


class PeerBannedError(SwarmException):
    """A connection to or from a peer the connection gate bans: not dialed, not kept.
    ``connection``: the upgraded inbound connection, for the inbound handler to close once
    it has counted the refusal (outbound ones are closed before this is raised)."""

    def __init__(self, message: str, connection: IMuxedConn | None = None) -> None:
        super().__init__(message)
        self.connection = connection


class InboundSlotReleasingSwarm(Swarm):
    """A 0.8.1 ``Swarm`` whose inbound connections give their slot back when they
    close, not when the swarm stops, and pass the connection gate. See the module
    docstring. ``make_host`` sets :attr:`gate` and the handshake deadline
    (``connection_config.inbound_upgrade_timeout``) from the same limits."""

    def __init__(self, *args: Any, gate: ConnectionGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate if gate is not None else ConnectionGate()
        # peer ID -> (RTT seconds, unix time) of its last successful ping, for
        # the peers route (written by n3xus.node.p2p.host.ping).
        self.last_pings: dict[str, tuple[float, float]] = {}
        # The upstream auto-connector re-dials any peerstore entry while the node
        # has fewer than min_connections (50) connections, with its own backoff.
        # The node's discovery (n3xus.node.p2p.discovery) decides whom to dial,
        # with named backoff constants, so this one is kept from running. Its
        # bookkeeping methods (record_*) still work; its periodic loop and the
        # swarm's trigger on every disconnect (_schedule_auto_connect) are off.
        self.auto_connector.run_background_task = _no_background_task  # type: ignore[method-assign]

    def _refusal_if_banned(self, peer_id: Any) -> PeerBannedError | None:
        if self.gate.is_banned(str(peer_id), trio.current_time()):
            return PeerBannedError(f"peer {peer_id} is banned")
        return None

    async def dial_peer(self, peer_id: Any) -> Any:
        # Every dial by peer id (new_stream, pubsub, the DHT, ...) comes through here.
        refusal = self._refusal_if_banned(peer_id)
        if refusal is not None:
            raise refusal
        return await super().dial_peer(peer_id)

    async def add_conn(self, muxed_conn: IMuxedConn, direction: str = "unknown") -> Any:
        # Every upgraded connection is registered here, inbound and outbound (dials by
        # address too): the last point where a ban can keep it out of the swarm.
        refusal = self._refusal_if_banned(muxed_conn.peer_id)
        if refusal is None:
            return await super().add_conn(muxed_conn, direction)
        if direction == "inbound":
            refusal.connection = muxed_conn  # see _do_handle_inbound_connection
        else:
            await _close_muxed_quietly(muxed_conn)
        raise refusal

    def _schedule_auto_connect(self) -> None:
        return None  # see __init__: the node's discovery does the re-dialing

    async def _handle_inbound_connection(
        self, read_write_closer: ReadWriteCloser, maddr: Multiaddr
    ) -> None:
        # Replaces swarm.py 0.8.1 lines 1947-1999 (the 250-token limiter).
        remote = read_write_closer.get_remote_address()
        ip = remote[0] if remote is not None else ""
        admission = self.gate.accept(ip, trio.current_time())
        for evicted in admission.evicted:
            if evicted.on_evict is not None:
                evicted.on_evict()
        ticket = admission.ticket
        if ticket is None:
            logger.debug("inbound connection from %s refused: %s", ip, admission.refused)
            await _close_quietly(read_write_closer)
            return
        handler_scope = trio.CancelScope()
        # Eviction cancels the handler mid-handshake; the socket is closed in the
        # ``finally`` below. (Cancellation skips upstream's release of the
        # resource manager's connection slot, which is why make_host installs
        # GateAdmittedResourceManager: connection admission is the gate's job.)
        ticket.on_evict = handler_scope.cancel
        try:
            with handler_scope:
                await self._do_handle_inbound_connection(read_write_closer, maddr, ticket)
        finally:
            self.gate.release(ticket)
            # Evicted mid-handshake, refused, or done: the socket is ours to close
            # (trio's serve_listeners leaves that to the handler). Idempotent.
            await _close_quietly(read_write_closer)

    async def _do_handle_inbound_connection(
        self,
        read_write_closer: ReadWriteCloser,
        maddr: Multiaddr,
        ticket: Ticket | SwarmEvent,
    ) -> None:
        # Replaces swarm.py 0.8.1 lines 2001-2073. The caller holds the
        # connection's gate ticket for exactly as long as this coroutine runs
        # and releases it in its ``finally``.
        if not isinstance(ticket, Ticket):
            raise TypeError("the gated swarm's inbound handler needs its gate ticket")
        if isinstance(read_write_closer, IMuxedConn):
            # Only transports that hand over a ready multiplexed connection (QUIC,
            # WebTransport) take this branch upstream, and it carries the same
            # leak. The node registers TCP alone, so this cannot happen; refuse
            # rather than run the leaking path if a later change adds one.
            logger.warning("refusing a pre-multiplexed inbound connection on %s", maddr)
            await read_write_closer.close()
            return

        # Same connection-gate check as upstream (IP allow/deny lists).
        remote_maddr = self._build_remote_multiaddr(read_write_closer)
        if remote_maddr is not None and not await self.connection_gate.is_allowed(
            remote_maddr
        ):
            logger.debug("inbound connection from %s denied by the gate", remote_maddr)
            self.gate.fail(ticket, Refusal.HANDSHAKE_FAILED)
            return

        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed_conn = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
        except PeerBannedError as error:
            # Its handshake proved a banned key; add_conn kept it out of the swarm. The
            # refusal is counted before the peer can see the connection close.
            self.gate.fail(ticket, Refusal.BANNED)
            logger.debug("inbound connection on %s refused: %s", maddr, error)
            if error.connection is not None:
                await _close_muxed_quietly(error.connection)
            return
        except SwarmException as error:
            # Peers that do not speak Noise, a full node, a handshake timeout:
            # expected churn. upgrade_inbound_raw_conn has already closed what it
            # opened; the caller closes the socket when we return.
            timed_out = isinstance(error.__context__, trio.TooSlowError)
            self.gate.fail(ticket, Refusal.HANDSHAKE_TIMEOUT if timed_out
                           else Refusal.HANDSHAKE_FAILED)
            logger.debug("inbound connection on %s not upgraded: %s", maddr, error)
            return

        if ticket.closed:
            # Evicted in the instant between its handshake and here.
            await muxed_conn.close()
            return
        refusal = self.gate.complete(ticket, str(muxed_conn.peer_id), trio.current_time())
        if refusal is not None:
            # A banned key, or too many established connections (in all, or
            # from this address).
            # upgrade_inbound_raw_conn already registered the connection; close
            # it through the muxer so the swarm forgets it too.
            logger.debug("closing an inbound connection after its handshake: %s", refusal)
            await muxed_conn.close()
            return

        if not isinstance(muxed_conn, Yamux):
            # make_host registers Yamux as the only muxer; fail closed on anything
            # else instead of waiting on an event we cannot rely on.
            logger.warning("closing an inbound connection with an unexpected muxer")
            await muxed_conn.close()
            return
        # The fix: wait for *this* connection, not for the whole swarm.
        await muxed_conn.event_closed.wait()

    def inbound_slots_in_use(self) -> int:
        """Inbound slots currently held: the number of inbound connections alive
        (or being upgraded). Returns to 0 when every inbound peer has left."""
        return self.gate.in_use()

    def inbound_slot_capacity(self) -> int:
        """Concurrent inbound connections the swarm holds: the pending pool plus
        the established capacity."""
        return self.gate.limits.max_pending + self.gate.limits.max_inbound


class _UncountedConnectionScope(ConnectionScope):
    def close(self) -> None:
        self.closed = True  # nothing was counted, so nothing to give back


class GateAdmittedResourceManager(ResourceManager):
    """py-libp2p 0.8.1's resource manager (stream and memory limits, as
    ``new_resource_manager`` configures it), with connection admission taken
    out: the swarm asks it for a connection scope before and after every
    inbound upgrade, and a handshake cancelled in between (an evicted pending
    connection) never gives its pre-upgrade slot back -- measured: one leaked
    slot per eviction, and at the manager's 10,000-connection limit (earlier,
    once its graceful degradation starts cutting limits at high "usage") it
    refuses every connection. Connection limits are the ConnectionGate's and the
    swarm's ``max_connections``; this manager admits every connection uncounted.
    """

    def open_connection(self, peer_id: Any | None = None, endpoint_ip: str | None = None,
                        direction: str = "inbound") -> ConnectionScope | None:
        return _UncountedConnectionScope(str(peer_id) if peer_id is not None else "", self)


def new_gate_admitted_resource_manager() -> GateAdmittedResourceManager:
    """Same settings as 0.8.1's ``new_resource_manager()`` defaults."""
    return GateAdmittedResourceManager(
        limits=None, allowlist_config=None, enable_metrics=True, connection_limits=None,
        enable_connection_tracking=True, memory_limits=None, enable_memory_limits=True,
        enable_connection_pooling=False, enable_memory_pooling=True,
        enable_circuit_breaker=True, enable_graceful_degradation=True,
    )


async def _no_background_task(nursery: trio.Nursery) -> None:
    return None


async def _close_muxed_quietly(connection: IMuxedConn) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + SOCKET_CLOSE_TIMEOUT_SECONDS
        await connection.close()  # Yamux.close logs and absorbs its own I/O errors


async def _close_quietly(read_write_closer: ReadWriteCloser) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + SOCKET_CLOSE_TIMEOUT_SECONDS
        try:
            await read_write_closer.close()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            logger.debug("error closing an inbound socket: %s", error)


# -- Yamux framing over Noise ------------------------------------------------------------
# py-libp2p 0.8.1 cuts stream data into Yamux frames of 64 KiB *including* the 12-byte
# header (yamux.MAX_MESSAGE_SIZE, read at call time), but a Noise transport message holds at
# most 65,519 bytes of plaintext (65,535 - the 16-byte tag): every full frame became two
# Noise messages (65,519 + 17 bytes), two encryptions, two socket writes and two reads.
# Frames of at most one Noise message remove that (measured: 20 % less CPU per byte moved,
# both sides). The frame size is the sender's choice; peers accept any size within their
# window, so this changes nothing on the wire but the cut points.
YAMUX_FRAME_BYTES: Final = MAX_PLAINTEXT_LENGTH
# 0.8.1 also sends a WINDOW_UPDATE after every read by default (PY_YAMUX_RELEASE_ON_READ=1);
# "0" is go-yamux's rule, one update when half the window has been consumed (measured: 16 %
# less CPU per byte). An operator's own PY_YAMUX_RELEASE_ON_READ wins.
YAMUX_RELEASE_ON_READ: Final = "0"


def tune_yamux() -> None:
    """Apply the two settings above (process-wide: py-libp2p reads them per call)."""
    yamux_module.MAX_MESSAGE_SIZE = YAMUX_FRAME_BYTES
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", YAMUX_RELEASE_ON_READ)
