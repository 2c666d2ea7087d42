"""Gossipsub on the node: py-libp2p 0.8.1's GossipSub, configured for federation traffic.

Measured on 0.8.1 (issue 9), its defaults do not fit a ledger network: a 120 s heartbeat
(mesh repairs and IHAVE gossip once every two minutes), "adaptive gossip" that stretches
the heartbeat further in small networks, a 10 messages/s per-peer-per-topic cap that also
throttles the node's own publishes, 32-message outbound queues per peer that drop silently
when full, a 32-message subscription channel that drops silently, and a validation cache
that remembers an *ignored* message as invalid for 5 minutes. Here, without editing the
library (subclasses and constructor arguments only):

* heartbeat :data:`HEARTBEAT_S` = 1 s, adaptive gossip off, spam cap off;
* the cap is replaced by the node's peer scoring: a handler's ``REJECT`` penalizes the
  forwarding peer in the PeerBook (authenticated by Noise, so attribution is sound), and a
  peer over :data:`PEER_MESSAGE_RATE` has its excess ignored and pays ``flood``;
* outbound queues of :data:`OUTBOUND_QUEUE_MESSAGES`; every drop (queue full, oversized,
  pending messages pruned) is counted in ``n3xus_gossip_dropped_total{reason}``;
* messages are consumed by the topic handler during validation (no subscription channel),
  and validation results are never cached (gossipsub's seen-cache already drops copies of
  accepted messages; an ignored one may be valid when a later copy comes from an accepted peer);
* a copy of a message that arrives while the message is being validated waits for that
  verdict instead of being validated (ingested) again: gossipsub marks a message seen only
  after validation, so under load every neighbour's copy was ingested and, being valid,
  forwarded once more (measured on the 10-node burst: up to 27 validations per node for
  18 distinct messages);
* RPCs are sent without the signed peer record 0.8.1 attaches to each one (each receiver
  checked its signature twice per RPC); addresses come from the hello and identify;
* message ids are content addressed (BLAKE3 of the data), so the same bytes published by two
  nodes are one message; messages are not signed by the publishing peer (``strict_signing``
  off): the entries they carry are signed by their authors, and the peer held responsible
  for a message is the one that forwarded it.

Usage::

    gossip = GossipService(host, peerbook, registry=registry)
    await nursery.start(gossip.run)
    await gossip.join("/n3xus/ledger/<network>", handler)   # handler(peer, data) -> Verdict
    await gossip.publish("/n3xus/ledger/<network>", data)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from blake3 import blake3
from libp2p.exceptions import ValidationError
from libp2p.host.basic_host import BasicHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.rpc_queue import RpcQueue
from libp2p.tools.anyio_service import background_trio_service
from prometheus_client import CollectorRegistry, Counter

from n3xus.protocol.limits import TokenBucket

from .host import NETWORK_ERRORS

logger = logging.getLogger(__name__)

HEARTBEAT_S: Final = 1
"""Mesh maintenance and IHAVE gossip every second (go-libp2p's default): a lost message is
offered again by IHAVE within a few seconds, not minutes."""
DEGREE: Final = 6
DEGREE_LOW: Final = 4
DEGREE_HIGH: Final = 12
"""The gossipsub spec's recommended mesh degree (D=6, 4..12)."""
OUTBOUND_QUEUE_MESSAGES: Final = 1024
"""RPCs queued per peer before drops: a burst of a thousand messages to a peer whose link
is momentarily slow fits; 0.8.1's 32 dropped the tail of every burst."""
MAX_CONCURRENT_VALIDATIONS: Final = 64
"""Messages validated at once (each waits on its topic handler, e.g. a batched ledger
ingest): enough for the handler to batch a burst, bounded so a flood queues."""
VALIDATION_TIMEOUT_S: Final = 30.0
"""A handler taking longer is a local overload, not the peer's fault: the message is
ignored (not penalized); anti-entropy fetches what it carried. 0.8.1's 5 s timed out
under a catch-up's ingest load."""
SEEN_TTL_S: Final = 120
"""Message ids remembered, to drop copies: two minutes of traffic (0.8.1's default)."""
PEER_MESSAGE_RATE: Final = 1000.0
PEER_MESSAGE_BURST: Final = 5000.0
"""Messages per second (and burst) accepted from one forwarding peer. A ledger message
carries up to 256 entries, so this is ~256,000 entries/s per peer, far above an honest
network's rate; the excess is ignored (anti-entropy recovers anything valid in it) and
each ignored message costs the peer ``flood``."""
MESSAGE_ID_BYTES: Final = 20
STREAM_RESET_S: Final = 1.0
"""Time given to resetting the gossip streams when the service stops (node shutdown must
finish within 5 s)."""


class Verdict(enum.Enum):
    """A topic handler's judgement of one message."""

    ACCEPT = "accept"   # valid: forward it
    IGNORE = "ignore"   # not forwarded, the peer is not at fault (duplicate, overload)
    REJECT = "reject"   # invalid: not forwarded, the forwarding peer is penalized


Handler = Callable[[str, bytes], Awaitable[tuple[Verdict, str | None]]]
"""``handler(peer_id, data) -> (verdict, penalty label)``; the label (a PeerBook penalty
reason, e.g. ``malformed``) is used with ``REJECT``."""


def message_id(msg: rpc_pb2.Message) -> bytes:
    """Content-addressed message id: the first 20 bytes of BLAKE3(data)."""
    return blake3(msg.data).digest()[:MESSAGE_ID_BYTES]


class GossipCounters:
    """Prometheus counters of the gossip layer (``_total`` series)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.dropped = Counter("n3xus_gossip_dropped", "Gossipsub RPCs or messages dropped, "
                               "by reason", ["reason"], registry=registry)
        self.messages = Counter("n3xus_gossip_messages", "Gossip messages received, by "
                                "verdict", ["verdict"], registry=registry)
        self.published = Counter("n3xus_gossip_published", "Gossip messages published by "
                                 "this node", registry=registry)
        self.duplicates = Counter("n3xus_gossip_duplicates", "Copies of a message received "
                                  "while it was being validated (ignored, not validated "
                                  "again)", registry=registry)
        for reason in ("queue_full", "oversized", "pending_pruned"):
            self.dropped.labels(reason)
        for verdict in Verdict:
            self.messages.labels(verdict.value)

    def snapshot(self) -> dict[str, Any]:
        def value(counter: Any) -> int:
            return int(counter._value.get())

        return {"published": value(self.published), "duplicates": value(self.duplicates),
                "received": {v.value: value(self.messages.labels(v.value)) for v in Verdict},
                "dropped": {r: value(self.dropped.labels(r))
                            for r in ("queue_full", "oversized", "pending_pruned")}}


class _CountingGossipSub(GossipSub):
    """GossipSub whose drops are counted."""

    def __init__(self, counters: GossipCounters, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._counters = counters

    def _handle_dropped_rpc(self, peer_id: ID, rpc: rpc_pb2.RPC, reason: str) -> None:
        self._counters.dropped.labels("oversized" if reason == "oversized"
                                      else "queue_full").inc()
        logger.info("gossip to %s dropped (%s): %d messages", peer_id, reason, len(rpc.publish))
        super()._handle_dropped_rpc(peer_id, rpc, reason)

    def _prune_pending_messages(self, peer_id: ID) -> None:
        before = len(self._pending_messages.get(peer_id, ()))
        super()._prune_pending_messages(peer_id)
        pruned = before - len(self._pending_messages.get(peer_id, ()))
        if pruned > 0:
            self._counters.dropped.labels("pending_pruned").inc(pruned)


class _SizedQueues(dict[ID, RpcQueue]):
    """Pubsub's per-peer outbound queues, each made :data:`OUTBOUND_QUEUE_MESSAGES` deep as
    Pubsub registers it (0.8.1 hard-codes 32 in ``_handle_new_peer``)."""

    def __setitem__(self, peer_id: ID, queue: RpcQueue) -> None:
        queue._queue.max_size = OUTBOUND_QUEUE_MESSAGES
        super().__setitem__(peer_id, queue)


class _NodePubsub(Pubsub):
    """Pubsub whose topic handlers consume messages while validating them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer_queues = _SizedQueues()
        self._limit = trio.Semaphore(MAX_CONCURRENT_VALIDATIONS)

    stopping = False

    async def continuously_read_stream(self, stream: Any) -> None:
        """0.8.1's read loop, ended quietly when the service stops: the streams live in the
        host's connections, which outlive this service, and a message read while the
        service's nursery closes would raise "Nursery is closed" into the connection."""
        try:
            await super().continuously_read_stream(stream)
        except RuntimeError:
            if not self.stopping:
                raise

    async def write_msg(self, stream: Any, rpc_msg: rpc_pb2.RPC) -> bool:
        """Send ``rpc_msg`` without a signed peer record: 0.8.1 attaches the host's record
        to every RPC and each receiver checks its Ed25519 signature twice per RPC (pubsub's
        read loop, then gossipsub's ``handle_rpc``) for addresses a node learns from the
        hello and identify anyway."""
        rpc_msg.ClearField("senderRecord")
        return await super().write_msg(stream, rpc_msg)

    def notify_subscriptions(self, publish_message: rpc_pb2.Message) -> None:
        """Nothing: the handler already consumed the message during validation (0.8.1
        would queue it on a 32-deep channel nobody reads, and warn when it is full)."""

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """Run the topic validators, uncached, with a deadline."""
        async with self._limit:
            for validator in self.get_msg_validators(msg):
                valid = False
                with trio.move_on_after(VALIDATION_TIMEOUT_S):
                    if validator.is_async:
                        valid = await validator.validator(msg_forwarder, msg)  # type: ignore[misc]
                    else:
                        valid = bool(validator.validator(msg_forwarder, msg))
                if not valid:
                    raise ValidationError("the topic handler did not accept the message")


class _Validation:
    """A message under validation; copies that arrive meanwhile wait for its verdict."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.verdict = Verdict.IGNORE  # if the handler fails or is cancelled: no fault known
        self.label: str | None = None


class GossipService:
    """The node's gossipsub: join topics with a handler, publish to them."""

    def __init__(self, host: BasicHost, peerbook: Any = None, *,
                 registry: CollectorRegistry | None = None) -> None:
        self.host = host
        self.peerbook = peerbook
        self.counters = GossipCounters(registry)
        self.router = _CountingGossipSub(
            self.counters, protocols=[PROTOCOL_ID_V11], degree=DEGREE, degree_low=DEGREE_LOW,
            degree_high=DEGREE_HIGH, heartbeat_interval=HEARTBEAT_S,
            adaptive_gossip_enabled=False, spam_protection_enabled=False,
            # Mesh "IP diversity" counts addresses; peers on one host or behind one NAT all
            # share one, and the PeerBook already scores peers by what they do.
            eclipse_protection_enabled=False)
        self.pubsub = _NodePubsub(host, self.router, strict_signing=False,
                                  msg_id_constructor=message_id, seen_ttl=SEEN_TTL_S)
        self._rates: dict[str, TokenBucket] = {}
        self._validating: dict[bytes, _Validation] = {}
        self._running = trio.Event()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with background_trio_service(self.pubsub), background_trio_service(self.router):
            try:
                await self.pubsub.wait_until_ready()
                self._running.set()
                task_status.started(self)
                async with trio.open_nursery() as nursery:
                    # Connections that came up before pubsub's notifee was registered.
                    for peer_id in list(self.host.get_network().connections):
                        nursery.start_soon(self._ensure_stream, peer_id)
                    await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await self._close_streams()

    async def _close_streams(self) -> None:
        """Stop serving pubsub and reset its streams before the service stops (they belong
        to connections that outlive it)."""
        self.pubsub.stopping = True
        for protocol in self.router.get_protocols():
            self.host.remove_stream_handler(protocol)
        with trio.move_on_after(STREAM_RESET_S):
            for stream in list(self.pubsub.peers.values()):
                try:
                    await stream.reset()
                except NETWORK_ERRORS as exc:
                    logger.debug("resetting a gossip stream at stop: %s", exc)

    async def _ensure_stream(self, peer_id: ID) -> None:
        try:
            await self.pubsub.ensure_peer_stream(peer_id)
        except NETWORK_ERRORS as exc:
            logger.debug("no gossip stream to %s: %s", peer_id, exc)

    async def join(self, topic: str, handler: Handler) -> None:
        """Subscribe to ``topic``; every message received on it goes to ``handler``, whose
        verdict decides whether it is forwarded and whether its forwarder is penalized."""
        await self._running.wait()

        async def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            return await self._validate(handler, forwarder, msg)

        self.pubsub.set_topic_validator(topic, validate, True)
        await self.pubsub.subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        await self.pubsub.publish(topic, data)
        self.counters.published.inc()

    def mesh_peers(self, topic: str) -> list[str]:
        return sorted(str(p) for p in self.router.mesh.get(topic, ()))

    def topic_peers(self, topic: str) -> list[str]:
        return sorted(str(p) for p in self.pubsub.peer_topics.get(topic, ()))

    async def _validate(self, handler: Handler, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        if forwarder == self.host.get_id():
            return True  # our own publish: the publisher checked it
        peer = str(forwarder)
        if self.peerbook is not None and not self.peerbook.is_accepted(peer):
            # No completed hello (yet): the hello gates every n3xus exchange.
            return self._verdict(Verdict.IGNORE)
        if not self._within_rate(peer):
            if self.peerbook is not None:
                self.peerbook.penalize(peer, "flood")
            return self._verdict(Verdict.IGNORE)
        verdict, label = await self._judge_once(handler, peer, msg)
        if verdict is Verdict.REJECT and self.peerbook is not None:
            self.peerbook.penalize(peer, label or "malformed")
        return self._verdict(verdict)

    async def _judge_once(self, handler: Handler, peer: str,
                          msg: rpc_pb2.Message) -> tuple[Verdict, str | None]:
        """The handler's verdict on ``msg``, asked once per message id at a time.

        Gossipsub marks a message seen only once it is valid, so copies that arrive from
        other peers while the first is being validated would each be validated again (a
        second ingest of the same entries) and, if valid, forwarded again. A copy instead
        waits for the first one's verdict: ``REJECT`` holds for it too (its forwarder sent
        the same invalid bytes), ``ACCEPT`` becomes ``IGNORE`` (already being forwarded)."""
        key = message_id(msg)
        first = self._validating.get(key)
        if first is not None:
            await first.done.wait()
            if first.verdict is Verdict.ACCEPT:
                self.counters.duplicates.inc()
                return Verdict.IGNORE, None
            return first.verdict, first.label
        validation = self._validating[key] = _Validation()
        try:
            validation.verdict, validation.label = await handler(peer, bytes(msg.data))
        finally:
            validation.done.set()
            del self._validating[key]
        return validation.verdict, validation.label

    def _verdict(self, verdict: Verdict) -> bool:
        self.counters.messages.labels(verdict.value).inc()
        return verdict is Verdict.ACCEPT

    def _within_rate(self, peer: str) -> bool:
        now = trio.current_time()
        bucket = self._rates.get(peer)
        if bucket is None:
            if len(self._rates) >= 4096:  # bounded: forget the oldest peer's bucket
                self._rates.pop(next(iter(self._rates)))
            bucket = self._rates[peer] = TokenBucket(PEER_MESSAGE_RATE, PEER_MESSAGE_BURST, now)
        return bucket.take(1, now) <= 0
