"""The node's federation layer: the hello on every connection, the PeerBook (scores, bans,
traffic) and the witness of peers' logs, wired to the node's host, canon log and ledger.

``Node.run`` starts it in its nursery before discovery dials anyone::

    federation = Federation(node, host)
    node.peerbook = federation.peerbook           # the scoring API other modules call
    await nursery.start(federation.run)

The HTTP API reads :meth:`Federation.peer_fields` for each connected peer (``hello``,
``score``, ``banned``, ``refusal``, ``traffic``) and :meth:`Federation.other_peers` for the
refused or banned ones no longer connected; ``n3xus peers ban/unban`` call :meth:`ban` and
:meth:`unban`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import trio
from libp2p.host.basic_host import BasicHost

from n3xus.canon.errors import CanonError
from n3xus.protocol.hello import MAX_PROTOCOL_IDS, HelloConfig, PeerHello
from n3xus.protocol.limits import TokenBucket

from ..logs import get_logger
from ..services.peers import BAN_THRESHOLD, DEFAULT_BAN_SECONDS, PeerBook
from . import host as p2p
from .hello import (
    AGENT_NAME,
    CAPABILITIES,
    HelloService,
    SigningClock,
    advertised_version,
    federation_settings,
    latest_checkpoints,
    record_handshake,
)
from .witness import WitnessService

if TYPE_CHECKING:
    from ..runtime import Node

log = get_logger("n3xus.federation")

HANDSHAKE_RECORDS_PER_HOUR: Final = 60.0
HANDSHAKE_RECORD_BURST: Final = 10.0
"""Handshake entries written per peer: every completed hello, up to a burst of 10 and then
one a minute. A peer that reconnects in a loop would otherwise grow our signed, append-only
log (and its pinned hello blocks) without bound; its hellos still complete and are counted
(``handshakes_not_recorded``)."""
MAX_RECORD_BUDGETS: Final = 4096
"""Peers whose handshake-record budget is remembered (oldest forgotten first)."""
MAX_OPERATOR_BAN_S: Final = 365 * 24 * 3600.0
"""Longest ban ``n3xus peers ban --for`` accepts: a year; forever is ``deny`` in the
federation policy, which peers see in the hello."""


class Federation:
    def __init__(self, node: Node, host: BasicHost) -> None:
        from .. import __version__

        self.node = node
        self.host = host
        self.settings = federation_settings(node.config.federation)
        self.version = advertised_version(__version__)
        self.agent = f"{AGENT_NAME}/{__version__}"
        self.peerbook = PeerBook(
            p2p.gate_of(host),
            ban_threshold=self.settings.ban_threshold if self.settings.ban_threshold is not None
            else BAN_THRESHOLD,
            ban_seconds=self.settings.ban_seconds or DEFAULT_BAN_SECONDS)
        self.signing_clock = SigningClock()
        self.hello = HelloService(host, self.peerbook, self.hello_config, on_done=self._on_done)
        self.witness = WitnessService(node, host, self.peerbook, self.signing_clock)
        self.handshakes_recorded = 0
        self.handshakes_not_recorded = 0
        self._record_budget: dict[str, TokenBucket] = {}
        self._nursery: trio.Nursery | None = None

    # -- our hello ---------------------------------------------------------------------------
    def protocols(self) -> tuple[str, ...]:
        """The protocol ids this host serves (its stream handlers)."""
        handlers = self.host.get_mux().handlers
        names = sorted({str(p) for p in handlers if p and str(p).startswith("/")},
                       key=lambda p: p.encode())
        return tuple(names[:MAX_PROTOCOL_IDS])

    async def hello_config(self) -> HelloConfig:
        # Signing a fresh checkpoint writes (and syncs) LMDB: not on the event loop.
        return await trio.to_thread.run_sync(self._hello_config)

    def _hello_config(self) -> HelloConfig:
        node = self.node
        assert node.signing_key is not None and node.genesis is not None
        canon_note, ledger_note = latest_checkpoints(node.canon, node.ledger, node.signing_key,
                                                     self.signing_clock)
        return HelloConfig(
            signing_key=node.signing_key, version=self.version, agent=self.agent,
            protocols=self.protocols(), capabilities=CAPABILITIES, network=node.genesis.cid,
            policy=self.settings.policy(node.genesis.cid), canon_checkpoint=canon_note,
            ledger_checkpoint=ledger_note)

    def _on_done(self, result: PeerHello, direction: str, addrs: list[str]) -> None:
        self.witness.hello_received(result)
        now = trio.current_time()
        budget = self._record_budget.get(result.peer_id)
        if budget is None:
            if len(self._record_budget) >= MAX_RECORD_BUDGETS:
                self._record_budget.pop(next(iter(self._record_budget)))
            budget = self._record_budget[result.peer_id] = TokenBucket(
                HANDSHAKE_RECORDS_PER_HOUR / 3600, HANDSHAKE_RECORD_BURST, now)
        if budget.take(1, now) > 0:
            self.handshakes_not_recorded += 1
            log.info("handshake not recorded: the peer reconnects too often", peer_id=result.peer_id)
        elif self._nursery is not None:
            self._nursery.start_soon(self._record, result, direction, addrs)

    async def _record(self, result: PeerHello, direction: str, addrs: list[str]) -> None:
        """The handshake entry, written in a worker thread (two synced LMDB writes)."""
        canon = self.node.canon
        if canon is None:
            return
        try:
            index = await trio.to_thread.run_sync(
                lambda: record_handshake(canon, result, direction=direction, addresses=addrs))
        except (CanonError, ValueError) as exc:
            log.error("cannot record a handshake in the canon log", peer_id=result.peer_id,
                      error=str(exc))
            return
        self.handshakes_recorded += 1
        log.info("handshake recorded", peer_id=result.peer_id, log_index=index)

    # -- the task ------------------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.hello.run)
            await nursery.start(self.witness.run)
            nursery.start_soon(self.peerbook.run, self._disconnect)
            # Connections that came up before the notifee was registered.
            for connections in list(self.host.get_network().connections.values()):
                for conn in list(connections):
                    if not conn.is_closed:
                        self.hello.connection_opened(conn)
            task_status.started(self)

    async def _disconnect(self, peer_id: str) -> None:
        with trio.move_on_after(p2p.SHUTDOWN_GRACE_SECONDS):
            try:
                await self.host.disconnect(p2p.parse_peer_id(peer_id))
            except p2p.NETWORK_ERRORS as exc:
                log.debug("disconnecting a banned peer", peer_id=peer_id, error=str(exc))

    # -- operator --------------------------------------------------------------------------
    async def ban(self, peer_id: str, seconds: float | None, reason: str = "operator") -> dict[str, Any]:
        seconds = self.peerbook.ban_seconds if seconds is None else seconds
        if not 0 < seconds <= MAX_OPERATOR_BAN_S:
            raise ValueError(f"a ban lasts 0 < seconds <= {MAX_OPERATOR_BAN_S:.0f}")
        self.peerbook.ban(peer_id, seconds, reason)
        await self._disconnect(peer_id)
        return {"peer_id": peer_id, "banned": self.peerbook.ban_state(peer_id)}

    def unban(self, peer_id: str) -> dict[str, Any]:
        return {"peer_id": peer_id, "was_banned": self.peerbook.unban(peer_id)}

    # -- views -----------------------------------------------------------------------------
    def peer_fields(self, peer_id: str) -> dict[str, Any]:
        return self.peerbook.describe(peer_id)

    def other_peers(self, connected: set[str]) -> list[dict[str, Any]]:
        return self.peerbook.others(connected)

    def snapshot(self) -> dict[str, Any]:
        durations = sorted(self.hello.durations)
        median = durations[len(durations) // 2] if durations else None
        return {"hellos_completed": self.hello.completed, "hellos_refused": self.hello.refused,
                "hello_median_ms": None if median is None else round(median * 1000, 2),
                "handshakes_recorded": self.handshakes_recorded,
                "handshakes_not_recorded": self.handshakes_not_recorded,
                "bans_issued": self.peerbook.bans_issued,
                "witness": self.witness.snapshot()}
