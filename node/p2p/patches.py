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
upstream ``finally`` releases the slot. The limit itself is left as it is: it
still bounds *concurrent* inbound connections, which is what it is for.
"""

from __future__ import annotations

import logging

from libp2p.abc import IMuxedConn
from libp2p.io.abc import ReadWriteCloser
from libp2p.metrics.swarm import SwarmEvent
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.exceptions import SwarmException
from libp2p.network.swarm import Swarm
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

logger = logging.getLogger(__name__)


class InboundSlotReleasingSwarm(Swarm):
    """A 0.8.1 ``Swarm`` whose inbound connections give their slot back when they
    close, not when the swarm stops. See the module docstring."""

    async def _do_handle_inbound_connection(
        self,
        read_write_closer: ReadWriteCloser,
        maddr: Multiaddr,
        failure_event: SwarmEvent,
    ) -> None:
        # Replaces swarm.py 0.8.1 lines 2001-2073. The caller
        # (_handle_inbound_connection) holds one inbound slot for exactly as long
        # as this coroutine runs and releases it in its ``finally``.
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
            await read_write_closer.close()
            return

        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed_conn = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
        except SwarmException as error:
            # Peers that do not speak Noise, a full node, a handshake timeout:
            # expected churn. upgrade_inbound_raw_conn has already closed what it
            # opened; trio's serve_listeners closes the socket when we return.
            logger.debug("inbound connection on %s not upgraded: %s", maddr, error)
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
        return int(self._inbound_limiter.borrowed_tokens)

    def inbound_slot_capacity(self) -> int:
        """Concurrent inbound connections the swarm accepts."""
        return int(self._inbound_limiter.total_tokens)
