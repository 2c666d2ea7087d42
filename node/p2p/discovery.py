"""Peer discovery and connectivity: bootstrap peers, mDNS on the LAN, the
Kademlia DHT, reconnects with exponential backoff and jitter, and keepalive pings.

Run one :class:`Discovery` per host, in the node's nursery, after the host is
running (see :func:`n3xus.node.p2p.host.running_host`)::

    discovery = Discovery(host, DiscoveryConfig(bootstrap=[...], mdns=False))
    await nursery.start(discovery.run)
    await discovery.provide(cid)                 # announce a CID in the DHT
    providers = await discovery.find_providers(cid)   # [(peer id, [addr, ...])]

What it does, in separate tasks:

* **reconnect** -- keeps the configured bootstrap peers and the *recently useful*
  peers (any peer this node held a connection to within RECENTLY_USEFUL_SECONDS)
  connected, re-dialing each after a failure with exponential backoff and jitter
  (:class:`ReconnectPlan`, sans-IO).
* **lookup** -- a Kademlia self-lookup over ``/ipfs/kad/1.0.0`` (the standard
  protocol ID, so js-libp2p's kad-dht interoperates), then dials peers found in
  the routing table until TARGET_PEERS are connected. It runs at once when a new
  peer connects, then at doubling intervals. This is how a node started with one
  bootstrap peer finds the others of its network: the bootstrap peer's routing
  table answers the lookup.
* **keepalive** -- pings every connected peer each KEEPALIVE_INTERVAL_SECONDS and
  closes the connection after KEEPALIVE_MISSES unanswered pings, so a vanished
  peer (killed, stopped, unplugged) is noticed within VANISHED_PEER_BOUND_SECONDS
  instead of whenever the kernel gives up on the socket.
* **mdns** (off by default, ``[p2p] mdns = true``) -- py-libp2p's mDNS service
  (zeroconf, ``_p2p._udp.local``) announces this node and dials peers it hears.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import trio
from libp2p.abc import INetworkService
from libp2p.host.basic_host import BasicHost
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from trio_typing import TaskStatus

from ...canon.cid import CID
from ..errors import AddressError, NodeError
from . import host as p2p

logger = logging.getLogger(__name__)


class _QuietCleanDhtStreamEnd(logging.Filter):
    """py-libp2p 0.8.1's DHT handler logs a WARNING "Failed to read DHT message
    from stream: " (empty reason) every time a peer closes its query stream
    normally, i.e. after every query. Those records become DEBUG; real read
    failures (with a reason) stay warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.WARNING
                and record.msg == "Failed to read DHT message from stream: %s"
                and isinstance(record.args, tuple) and record.args
                and not str(record.args[0])):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


logging.getLogger("libp2p.kad_dht.kad_dht").addFilter(_QuietCleanDhtStreamEnd())

# -- reconnect -----------------------------------------------------------------
# First retry after a failed dial, doubling per failure up to the cap. 1 s lets a
# restarting peer come back quickly; 5 min bounds the cost of a peer that is gone
# (a dial to a dead address can take CONNECT_TIMEOUT_SECONDS).
RECONNECT_BASE_DELAY_SECONDS = 1.0
RECONNECT_MAX_DELAY_SECONDS = 300.0
# Each delay is drawn uniformly from [delay * (1 - JITTER), delay * (1 + JITTER)]
# so that the peers of a node that restarts do not all re-dial it in lockstep.
RECONNECT_JITTER = 0.5
# A peer this node was connected to within this long is re-dialed when it goes
# away; after that it is forgotten (bootstrap peers never are).
RECENTLY_USEFUL_SECONDS = 3600.0
# Remembered useful peers, oldest forgotten first: bounds memory and dial load.
MAX_USEFUL_PEERS = 64
# Addresses remembered per peer (each failed one costs up to a dial timeout per
# attempt): the configured one, then the newest learnt.
MAX_ADDRS_PER_PEER = 4
# How often the reconnect task looks for due dials, and how many run at once.
RECONNECT_TICK_SECONDS = 0.5
MAX_CONCURRENT_DIALS = 8

# -- lookup --------------------------------------------------------------------
# Connections discovery tries to hold to peers found by the DHT or mDNS. Enough
# for block exchange from several peers at once, few enough for a laptop.
TARGET_PEERS = 8
# Self-lookups run when a new peer connects, then at intervals doubling from the
# first to the last: a fresh network converges in seconds, a quiet one costs a
# lookup every few minutes.
LOOKUP_FIRST_INTERVAL_SECONDS = 2.0
LOOKUP_MAX_INTERVAL_SECONDS = 300.0
# Bound on one lookup (py-libp2p's own bound is 30 s per lookup, 10 s per query).
LOOKUP_TIMEOUT_SECONDS = 20.0
# Bound on one find_providers or provide call.
CONTENT_ROUTING_TIMEOUT_SECONDS = 30.0
# Providers asked for by default (the Kademlia bucket size).
DEFAULT_PROVIDER_COUNT = 20

# -- keepalive -----------------------------------------------------------------
# A ping every 5 s costs one Yamux stream per peer; an answer may take up to 5 s
# (a loaded 2-core machine, a congested link); two misses in a row close the
# connection, which may take up to DISCONNECT_TIMEOUT_SECONDS. A peer that
# vanishes right after answering is therefore gone from the node within
# KEEPALIVE_MISSES * (interval + timeout) + DISCONNECT_TIMEOUT_SECONDS = 22 s.
KEEPALIVE_INTERVAL_SECONDS = 5.0
KEEPALIVE_TIMEOUT_SECONDS = 5.0
KEEPALIVE_MISSES = 2
# Closing a dead peer's connection must not wait on the peer.
DISCONNECT_TIMEOUT_SECONDS = 2.0
VANISHED_PEER_BOUND_SECONDS = KEEPALIVE_MISSES * (
    KEEPALIVE_INTERVAL_SECONDS + KEEPALIVE_TIMEOUT_SECONDS
) + DISCONNECT_TIMEOUT_SECONDS

# -- mDNS ----------------------------------------------------------------------
# Peers heard on the LAN waiting to be dialed; more are dropped (and heard again
# at the next announcement).
MDNS_QUEUE_SIZE = 64
# Address TTL given to peerstore entries learnt from mDNS or the DHT.
DISCOVERED_ADDR_TTL_SECONDS = 3600


@dataclass(frozen=True)
class DiscoveryConfig:
    bootstrap: Sequence[str] = ()
    dht: bool = True
    mdns: bool = False
    # Addresses announced over mDNS (wildcards already expanded); default: the
    # host's listen addresses.
    advertise: Sequence[str] = ()
    keepalive_interval_s: float = KEEPALIVE_INTERVAL_SECONDS
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_SECONDS
    keepalive_misses: int = KEEPALIVE_MISSES
    target_peers: int = TARGET_PEERS


# -- reconnect plan (sans-IO) ----------------------------------------------------


def backoff_delay(failures: int, rng: random.Random) -> float:
    """Seconds to wait after ``failures`` consecutive failed dials (>= 1):
    RECONNECT_BASE_DELAY_SECONDS doubled per further failure, capped at
    RECONNECT_MAX_DELAY_SECONDS, then spread by +-RECONNECT_JITTER."""
    if failures < 1:
        raise ValueError("backoff_delay needs at least one failure")
    exponent = min(failures - 1, 32)  # 2**32 s is far past the cap already
    delay = min(RECONNECT_BASE_DELAY_SECONDS * 2.0**exponent, RECONNECT_MAX_DELAY_SECONDS)
    return delay * rng.uniform(1.0 - RECONNECT_JITTER, 1.0 + RECONNECT_JITTER)


@dataclass
class Target:
    """A peer the node wants to stay connected to."""

    peer_id: str
    addrs: list[str]  # full dial addresses (/.../p2p/<id>); may be refreshed
    bootstrap: bool
    last_connected: float | None = None
    failures: int = 0
    next_attempt: float = 0.0
    dialing: bool = False


@dataclass
class ReconnectPlan:
    """Which peers to dial when, given what happened. Pure: the caller supplies
    clock readings and reports dial outcomes."""

    rng: random.Random = field(default_factory=random.Random)
    targets: dict[str, Target] = field(default_factory=dict)

    def add_bootstrap(self, peer_id: str, addr: str, now: float) -> None:
        target = self.targets.setdefault(peer_id, Target(peer_id, [], True, next_attempt=now))
        target.bootstrap = True
        if addr not in target.addrs:
            target.addrs.insert(0, addr)
            del target.addrs[MAX_ADDRS_PER_PEER:]

    @staticmethod
    def remember(target: Target, addr: str) -> None:
        """Add a learnt address; beyond MAX_ADDRS_PER_PEER the oldest learnt one
        goes (a bootstrap peer keeps its configured address first)."""
        if addr in target.addrs:
            return
        target.addrs.append(addr)
        if len(target.addrs) > MAX_ADDRS_PER_PEER:
            del target.addrs[1 if target.bootstrap else 0]

    def connected(self, peer_id: str, addrs: Sequence[str], now: float) -> None:
        """``peer_id`` is connected now (either direction): it is useful, its
        backoff resets, and ``addrs`` (its dialable addresses) are remembered."""
        target = self.targets.get(peer_id)
        if target is None:
            target = self.targets[peer_id] = Target(peer_id, [], False)
        target.last_connected = now
        target.failures = 0
        for addr in addrs:
            self.remember(target, addr)
        self._forget_beyond_capacity()

    def _forget_beyond_capacity(self) -> None:
        useful = [t for t in self.targets.values() if not t.bootstrap]
        if len(useful) > MAX_USEFUL_PEERS:
            useful.sort(key=lambda t: t.last_connected or 0.0)
            for target in useful[: len(useful) - MAX_USEFUL_PEERS]:
                del self.targets[target.peer_id]

    def due(self, now: float, connected: set[str]) -> list[Target]:
        """Targets to dial now: not connected, not being dialed, their backoff
        over, with an address. Forgets useful peers not seen for
        RECENTLY_USEFUL_SECONDS."""
        for peer_id, target in list(self.targets.items()):
            stale = (target.last_connected is not None
                     and now - target.last_connected > RECENTLY_USEFUL_SECONDS)
            if not target.bootstrap and stale and peer_id not in connected:
                del self.targets[peer_id]
        return [
            t for t in self.targets.values()
            if t.peer_id not in connected and not t.dialing and t.addrs
            and now >= t.next_attempt
        ]

    def dial_started(self, target: Target) -> None:
        target.dialing = True

    def dial_failed(self, target: Target, now: float) -> float:
        """Returns the backoff delay chosen."""
        target.dialing = False
        target.failures += 1
        delay = backoff_delay(target.failures, self.rng)
        target.next_attempt = now + delay
        return delay

    def dial_succeeded(self, target: Target, now: float) -> None:
        target.dialing = False
        target.failures = 0
        target.next_attempt = now
        target.last_connected = now

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        return [{
            "peer_id": t.peer_id,
            "bootstrap": t.bootstrap,
            "failures": t.failures,
            "next_attempt_in_s": round(max(0.0, t.next_attempt - now), 3),
        } for t in sorted(self.targets.values(), key=lambda t: t.peer_id)]


# -- the running service -------------------------------------------------------


class DiscoveryMetrics:
    """Prometheus counters of discovery (registered once per registry)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.reconnect_dials = PromCounter(
            "n3xus_p2p_reconnect_dials", "Dials made by the reconnect task",
            registry=registry)
        self.reconnect_failures = PromCounter(
            "n3xus_p2p_reconnect_failures", "Reconnect dials that failed", registry=registry)
        self.discovered = PromCounter(
            "n3xus_p2p_discovery_dials", "Dials to peers found by discovery",
            ["source"], registry=registry)
        self.keepalive_disconnects = PromCounter(
            "n3xus_p2p_keepalive_disconnects",
            "Connections closed after unanswered keepalive pings", registry=registry)


class Discovery:
    """See the module docstring. Construct, then ``await nursery.start(d.run)``."""

    def __init__(self, host: BasicHost, config: DiscoveryConfig | None = None, *,
                 registry: CollectorRegistry | None = None,
                 rng: random.Random | None = None) -> None:
        self.host = host
        self.config = config if config is not None else DiscoveryConfig()
        self.plan = ReconnectPlan(rng if rng is not None else random.Random())
        self.metrics = DiscoveryMetrics(registry)
        self.dht: KadDHT | None = None
        self.mdns_active = False
        self._misses: dict[str, int] = {}
        self._lookup_now = trio.Event()
        self._known_connected: set[str] = set()
        self.lookups = 0
        for addr in self.config.bootstrap:
            peer_id, _ = p2p.parse_peer_addr(addr)  # AddressError before anything runs
            self.plan.add_bootstrap(str(peer_id), addr, 0.0)

    # -- API for the node and the federation protocols --------------------------
    async def provide(self, cid: CID | str | bytes) -> bool:
        """Announce in the DHT that this node has ``cid`` (the key is the CID's
        multihash, as in IPFS and js-libp2p). False if no peer took the record."""
        dht = self._require_dht()
        with trio.move_on_after(CONTENT_ROUTING_TIMEOUT_SECONDS):
            return bool(await dht.provider_store.provide(CID(cid).multihash))
        return False

    async def find_providers(self, cid: CID | str | bytes,
                             count: int = DEFAULT_PROVIDER_COUNT) -> list[tuple[str, list[str]]]:
        """Peers that announced ``cid``: ``[(peer id, [dial address, ...]), ...]``,
        this node included if it provides it. Empty if none found in time."""
        dht = self._require_dht()
        found: list[PeerInfo] = []
        with trio.move_on_after(CONTENT_ROUTING_TIMEOUT_SECONDS):
            found = await dht.provider_store.find_providers(CID(cid).multihash, count)
        providers: dict[str, list[str]] = {}
        for info in found:  # py-libp2p lists this node twice when it is a provider
            addrs = providers.setdefault(str(info.peer_id), [])
            addrs += [a for a in _dial_addrs(info.peer_id, info.addrs) if a not in addrs]
        return list(providers.items())

    async def find_peer(self, peer_id: str) -> list[str]:
        """Dial addresses of ``peer_id`` from the DHT (empty if not found)."""
        dht = self._require_dht()
        info = None
        with trio.move_on_after(LOOKUP_TIMEOUT_SECONDS):
            info = await dht.find_peer(p2p.parse_peer_id(peer_id))
        return [] if info is None else _dial_addrs(info.peer_id, info.addrs)

    def snapshot(self) -> dict[str, Any]:
        """For ``node status``: what discovery knows and plans."""
        return {
            "dht": self.dht is not None,
            "dht_protocol": str(KAD_PROTOCOL_ID) if self.dht is not None else None,
            "routing_table_size": self.dht.get_routing_table_size() if self.dht else 0,
            "mdns": self.mdns_active,
            "lookups": self.lookups,
            "reconnect_targets": self.plan.snapshot(trio.current_time()),
            "keepalive_interval_s": self.config.keepalive_interval_s,
            "vanished_peer_bound_s": self.config.keepalive_misses * (
                self.config.keepalive_interval_s + self.config.keepalive_timeout_s)
            + DISCONNECT_TIMEOUT_SECONDS,
        }

    def _require_dht(self) -> KadDHT:
        if self.dht is None:
            raise NodeError("the DHT is off on this node ([p2p] dht = false) or not running")
        return self.dht

    # -- tasks -------------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[Discovery] = trio.TASK_STATUS_IGNORED) -> None:
        now = trio.current_time()
        for target in self.plan.targets.values():
            target.next_attempt = now
        async with trio.open_nursery() as nursery:
            if self.config.dht:
                await nursery.start(self._run_dht)
            if self.config.mdns:
                await nursery.start(self._run_mdns)
            nursery.start_soon(self._reconnect_loop)
            nursery.start_soon(self._keepalive_loop)
            nursery.start_soon(self._watch_connections)
            task_status.started(self)

    async def _run_dht(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Server mode: this node answers FIND_NODE / GET_PROVIDERS for others.
        dht = KadDHT(self.host, DHTMode.SERVER)
        try:
            async with background_trio_service(dht):
                self.dht = dht
                task_status.started()
                await self._lookup_loop(dht)
        finally:
            self.dht = None
            self.host.remove_stream_handler(KAD_PROTOCOL_ID)

    def _connected(self) -> set[str]:
        return {peer for peer, _ in p2p.connected_peers(self.host)}

    async def _watch_connections(self) -> None:
        """Turns new connections into useful peers (and wakes the lookup)."""
        while True:
            connected = self._connected()
            now = trio.current_time()
            for peer in connected - self._known_connected:
                self.plan.connected(peer, _dial_addrs(p2p.parse_peer_id(peer),
                                                      self._peerstore_addrs(peer)), now)
                if self.dht is not None:
                    await self.dht.add_peer(p2p.parse_peer_id(peer))
                self._lookup_now.set()
            for peer in self._known_connected - connected:
                self._misses.pop(peer, None)
            self._known_connected = connected
            await trio.sleep(RECONNECT_TICK_SECONDS)

    def _peerstore_addrs(self, peer: str) -> list[Multiaddr]:
        try:
            return list(self.host.get_peerstore().addrs(p2p.parse_peer_id(peer)))
        except PeerStoreError:  # never heard of, or its addresses expired
            return []

    async def _reconnect_loop(self) -> None:
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_DIALS)
        async with trio.open_nursery() as nursery:
            while True:
                now = trio.current_time()
                for target in self.plan.due(now, self._connected()):
                    # Addresses learnt since (identify, DHT) are tried too.
                    for addr in _dial_addrs(p2p.parse_peer_id(target.peer_id),
                                            self._peerstore_addrs(target.peer_id)):
                        self.plan.remember(target, addr)
                    self.plan.dial_started(target)
                    nursery.start_soon(self._redial, target, limiter)
                await trio.sleep(RECONNECT_TICK_SECONDS)

    async def _redial(self, target: Target, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            self.metrics.reconnect_dials.inc()
            if await self._dial_any(target.peer_id, target.addrs):
                self.plan.dial_succeeded(target, trio.current_time())
                return
            self.metrics.reconnect_failures.inc()
            delay = self.plan.dial_failed(target, trio.current_time())
            logger.info("peer %s unreachable (%d failures); next try in %.1f s",
                        target.peer_id, target.failures, delay)

    async def _dial_any(self, peer_id: str, addrs: Sequence[str]) -> bool:
        if p2p.gate_of(self.host).is_banned(peer_id, trio.current_time()):
            return False  # banned peers are not dialed (a failure: backoff grows)
        for addr in list(addrs):
            try:
                await p2p.connect(self.host, addr)
            except (AddressError, p2p.DialError) as error:
                logger.debug("dial %s failed: %s", addr, error)
                continue
            return True
        return False

    async def _lookup_loop(self, dht: KadDHT) -> None:
        interval = LOOKUP_FIRST_INTERVAL_SECONDS
        while True:
            with trio.move_on_after(interval):
                await self._lookup_now.wait()
            if self._lookup_now.is_set():
                self._lookup_now = trio.Event()
                interval = LOOKUP_FIRST_INTERVAL_SECONDS  # a new peer: look around soon
            else:
                interval = min(interval * 2, LOOKUP_MAX_INTERVAL_SECONDS)
            if self._connected():
                await self._lookup_and_connect(dht)

    async def _lookup_and_connect(self, dht: KadDHT) -> None:
        self_key = self.host.get_id().to_bytes()
        with trio.move_on_after(LOOKUP_TIMEOUT_SECONDS):
            await dht.peer_routing.find_closest_peers_network(self_key)
        self.lookups += 1
        connected = self._connected()
        wanted = self.config.target_peers - len(connected)
        candidates = [str(p) for p in dht.routing_table.get_peer_ids()
                      if str(p) not in connected and p != self.host.get_id()]
        async with trio.open_nursery() as nursery:  # concurrently: a dead one takes 15 s
            for peer in candidates[:max(0, wanted)]:
                addrs = _dial_addrs(p2p.parse_peer_id(peer), self._peerstore_addrs(peer))
                self.metrics.discovered.labels(source="dht").inc()
                nursery.start_soon(self._dial_any, peer, addrs)

    async def _keepalive_loop(self) -> None:
        while True:
            await trio.sleep(self.config.keepalive_interval_s)
            async with trio.open_nursery() as nursery:
                for peer in self._connected():
                    nursery.start_soon(self._keepalive, peer)

    async def _keepalive(self, peer: str) -> None:
        answered = False
        with trio.move_on_after(self.config.keepalive_timeout_s):
            try:
                await p2p.ping(self.host, peer)
                answered = True
            except p2p.PingError as error:
                logger.debug("keepalive ping to %s failed: %s", peer, error)
        if answered:
            self._misses.pop(peer, None)
            return
        misses = self._misses[peer] = self._misses.get(peer, 0) + 1
        if misses < self.config.keepalive_misses:
            return
        logger.info("peer %s did not answer %d keepalive pings; closing its connection",
                    peer, misses)
        self._misses.pop(peer, None)
        self.metrics.keepalive_disconnects.inc()
        with trio.move_on_after(DISCONNECT_TIMEOUT_SECONDS):
            try:
                await self.host.disconnect(p2p.parse_peer_id(peer))
            except p2p.NETWORK_ERRORS as error:
                logger.debug("closing %s: %s", peer, error)

    async def _run_mdns(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Imported here: zeroconf starts threads and sockets, only when asked for.
        from libp2p.discovery.mdns.mdns import MDNSDiscovery

        found_send, found_receive = trio.open_memory_channel[PeerInfo](MDNS_QUEUE_SIZE)
        token = trio.lowlevel.current_trio_token()
        advertise = _lan_addrs([a.rsplit("/p2p/", 1)[0] for a in
                                (self.config.advertise or p2p.listen_addrs(self.host))])

        def heard(info: PeerInfo) -> None:  # runs in zeroconf's thread
            token.run_sync_soon(_offer, found_send, info)

        handoff = _MdnsHandoff(self.host.get_id(), heard)
        # zeroconf binds UDP 5353, starts its thread and announces (blocking
        # calls of a second or more): run them in a worker thread.
        mdns = await trio.to_thread.run_sync(lambda: MDNSDiscovery(
            cast(INetworkService, handoff), listen_addrs=advertise))
        try:
            await trio.to_thread.run_sync(mdns.broadcaster.register)
            self.mdns_active = True
            task_status.started()
            async for info in found_receive:
                await self._dial_mdns_peer(info)
        finally:
            self.mdns_active = False
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(mdns.stop)

    async def _dial_mdns_peer(self, info: PeerInfo) -> None:
        if info.peer_id == self.host.get_id() or str(info.peer_id) in self._connected():
            return
        self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, DISCOVERED_ADDR_TTL_SECONDS)
        if len(self._connected()) >= self.config.target_peers:
            return
        self.metrics.discovered.labels(source="mdns").inc()
        await self._dial_any(str(info.peer_id), _dial_addrs(info.peer_id, info.addrs))


def _offer(channel: trio.MemorySendChannel[PeerInfo], info: PeerInfo) -> None:
    try:
        channel.send_nowait(info)
    except (trio.WouldBlock, trio.ClosedResourceError):
        logger.debug("mDNS queue full or closed; dropped %s", info.peer_id)


class _MdnsPeerstore:
    """What py-libp2p's mDNS listener writes to, from zeroconf's thread: instead
    of touching the host's peerstore there (not thread-safe), hand the peer over
    to the trio thread."""

    def __init__(self, heard: Callable[[PeerInfo], None]) -> None:
        self._heard = heard

    def add_addrs(self, peer_id: ID, addrs: Sequence[Multiaddr], ttl: int = 0) -> None:
        self._heard(PeerInfo(peer_id, list(addrs)))

    def clear_addrs(self, peer_id: ID) -> None:
        return None  # the addresses expire by their TTL


class _MdnsHandoff:
    """The two things MDNSDiscovery reads from its ``swarm`` argument."""

    def __init__(self, peer_id: ID, heard: Callable[[PeerInfo], None]) -> None:
        self._peer_id = peer_id
        self.peerstore = _MdnsPeerstore(heard)

    def get_peer_id(self) -> ID:
        return self._peer_id


def _lan_addrs(addrs: Sequence[str]) -> list[str]:
    """What to announce over mDNS: the non-loopback addresses (a LAN peer that
    dials 127.0.0.1 reaches itself), or the loopback ones if there is nothing
    else (a node listening on 127.0.0.1 only: other nodes on this machine)."""
    outside = [a for a in addrs if not a.startswith(("/ip4/127.", "/ip6/::1/"))]
    return outside or list(addrs)


def _dial_addrs(peer_id: ID, addrs: Sequence[Multiaddr | str]) -> list[str]:
    """Dialable ``/ip4|ip6|dns*/…/tcp/<port>/p2p/<id>`` forms of a peer's
    transport addresses; wildcard and unparseable ones are left out."""
    out: list[str] = []
    for addr in addrs:
        text = str(addr).split("/p2p/", 1)[0]
        if "/0.0.0.0/" in text or "/::/" in text:
            continue
        full = f"{text}/p2p/{peer_id}"
        try:
            p2p.parse_peer_addr(full)
        except AddressError:
            continue
        if full not in out:
            out.append(full)
    return out
