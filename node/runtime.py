"""The running node: one trio task tree that owns the data dir lock, the LMDB
environment, the libp2p host and the HTTP API.

Task tree (every task belongs to a nursery; cancelling ``Node.run`` stops all)::

    Node.run
    ├── data dir lock (flock) ─ LMDB environment (closed last)
    └── nursery
        ├── libp2p host (listeners, swarm, identify/ping handlers)
        ├── HTTP API (hypercorn trio worker; serves the operator console too)
        ├── metrics history sampler (the console's charts and live events)
        ├── agents (node/services/agents.py: registry, the model loaded lazily, the
        │   inference scheduler whose generations run in a worker thread)
        └── bootstrap dials
    later issues add here: gossipsub + discovery, federation protocol handlers,
    agent workers (inference in a worker thread), and the aiortc bridge (its own
    thread running an asyncio loop, talked to through trio memory channels)

Stopping: the owner cancels the scope that runs :meth:`Node.run` (the CLI does so
on SIGINT/SIGTERM). Cancellation unwinds every task, the run file is removed, LMDB
is closed and the lock released; nothing here ignores cancellation.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from nacl.signing import SigningKey
from prometheus_client import CollectorRegistry, Counter, Gauge

from . import __version__
from .api.agents import agent_routes
from .api.canon import canon_routes
from .api.console import ConsoleSampler, console_routes
from .api.fetch import fetch_routes
from .api.ledger import ledger_routes
from .api.node import node_routes
from .api.rooms import live_extra_routes, room_routes
from .api.server import ApiRoute, build_app
from .api.worlds_federation import world_federation_routes
from .config import DataDir, NodeConfig
from .errors import AddressError, ConfigError
from .logs import get_logger
from .p2p import host as p2p
from .p2p.blocks import BlockServer
from .p2p.discovery import Discovery, DiscoveryConfig
from .p2p.federation import Federation
from .p2p.gossip import GossipService
from .p2p.imvu import ImvuServer
from .p2p.limits import register_gate_metrics
from .p2p.live import LivePullServer
from .services.agents import DEFAULT_CONTEXT_TOKENS, AgentService
from .services.canon import CanonService
from .services.fetch import FetchService
from .services.ledger import LedgerService
from .services.ledger_federation import LedgerFederation
from .services.live import LiveNode
from .services.metrics import register_service_metrics
from .services.metrics_history import MetricsHistory
from .services.wallets import ensure_genesis
from .services.worlds_federation import WorldsFederation
from .storage import open_environment

log = get_logger("n3xus.node")

# Hypercorn waits this long for in-flight requests when the API shuts down; the
# node must be gone within 5 s of SIGTERM, so keep well under that.
API_GRACEFUL_TIMEOUT_S = 1.0
# Hypercorn's WebSocket message limit, 64 KiB: above the signaling limit (an SDP of at
# most 32 KiB plus its envelope, specs/live-signaling.md §1), so the node's own check answers an
# oversized message with a clear error; far bigger ones are cut off by the server.
LIVE_WS_MAX_MESSAGE_BYTES = 64 * 1024


@dataclass
class NodeCounters:
    """Counters shown by ``node status`` and exported at ``/metrics``."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.dials = Counter("n3xus_dials", "Outbound dials attempted", registry=self.registry)
        self.dial_failures = Counter(
            "n3xus_dial_failures", "Outbound dials that failed", registry=self.registry
        )
        self.api_requests = Counter(
            "n3xus_api_requests", "HTTP API requests served", registry=self.registry
        )
        self.peers = Gauge("n3xus_peers_connected", "Connected peers", registry=self.registry)
        self.uptime = Gauge("n3xus_uptime_seconds", "Seconds since start", registry=self.registry)

    def snapshot(self) -> dict[str, int]:
        return {
            "dials": int(self.dials._value.get()),
            "dial_failures": int(self.dial_failures._value.get()),
            "api_requests": int(self.api_requests._value.get()),
        }


def parse_api_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port). ``:0`` picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise AddressError(f"invalid API address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8741")
    host = host.strip("[]") or "127.0.0.1"
    port = int(port_text)
    if port > 65535:
        raise AddressError(f"invalid API address {text!r}: port {port} is out of range")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise AddressError(
                f"invalid API address {text!r}: host must be an IP address or localhost"
            ) from None
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    return ipaddress.ip_address(host).is_loopback


class Node:
    """One n3xus node. Construct, then run ``await nursery.start(node.run)``."""

    def __init__(
        self,
        data_dir: DataDir,
        config: NodeConfig,
        *,
        allow_remote_api: bool = False,
    ) -> None:
        if not is_loopback(config.api_host) and not allow_remote_api:
            raise AddressError(
                f"refusing to serve the API on non-loopback address {config.api_host}; "
                "pass --api-allow-remote to do so deliberately"
            )
        self.data_dir = data_dir
        self.config = config
        self.counters = NodeCounters()
        self.peer_id = ""
        self.listen_addrs: list[str] = []
        self.api_url = ""
        self._started_monotonic = 0.0
        self._host: Any = None
        self.discovery: Discovery | None = None
        self.env: Any = None
        self.canon: CanonService | None = None
        self.ledger: LedgerService | None = None
        self.block_server: BlockServer | None = None
        self.fetcher: FetchService | None = None
        # World heads announced and followed, shared worlds merged (issue 9).
        self.worlds: WorldsFederation | None = None
        # IMVU agents (node/services/agents.py); opened by run() with the ledger.
        self.agents: AgentService | None = None
        # Hello, peer scoring and witnessing (node/p2p/federation.py); set by run().
        self.federation: Federation | None = None
        self.peerbook: Any = None
        # Gossipsub and ledger federation; set by run().
        self.gossip: GossipService | None = None
        self.ledger_federation: LedgerFederation | None = None
        self.genesis: Any = None
        # Live rooms (node/services/live.py): the WebRTC bridge, rooms, recordings.
        self.live: LiveNode | None = None
        self.signing_key: SigningKey | None = None
        # Short metrics history for the operator console's charts and live view.
        self.metrics_history = MetricsHistory(ConsoleSampler(self))

    # -- lifecycle -------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``task_status.started(self)`` once fully serving."""
        seed = self.data_dir.read_identity_seed()
        token = self.data_dir.read_token()
        genesis, _ = ensure_genesis(self.data_dir)  # a dev network unless one is configured
        self.genesis = genesis
        self.signing_key = SigningKey(seed)
        key_pair = p2p.keypair_from_seed(seed)
        with self.data_dir.lock():
            # Bound before anything starts: a port in use is a clear error at once,
            # and ":0" tells us the port hypercorn will serve on.
            api_socket = bind_api_socket(self.config.api_host, self.config.api_port)
            try:
                self.env = open_environment(self.data_dir.lmdb_path, self.config.map_size_mib)
                try:
                    self.canon = CanonService(
                        self.env, SigningKey(seed), canon_origin(p2p.peer_id_of(key_pair))
                    )
                    self.ledger = LedgerService(self.env, genesis, SigningKey(seed),
                                                p2p.peer_id_of(key_pair))
                    self.agents = agent_service(self)
                    await self._serve(key_pair, token, api_socket, task_status)
                finally:
                    self.env.close()
                    log.info("node stopped", peer_id=self.peer_id)
            finally:
                if api_socket.fileno() != -1:
                    api_socket.close()

    async def _serve(self, key_pair: Any, token: str, api_socket: socket.socket,
                     task_status: Any) -> None:
        self._host = p2p.make_host(key_pair, limits=self.config.p2p_limits)
        register_gate_metrics(p2p.gate_of(self._host), self.counters.registry)
        self.peer_id = p2p.peer_id_of(self._host)
        self._started_monotonic = time.monotonic()
        async with p2p.running_host(self._host, list(self.config.listen)) as addrs:
            self.listen_addrs = list(addrs)
            async with trio.open_nursery() as nursery:
                # Live rooms first: the API serves their signaling and pages.
                self.live = await nursery.start(LiveNode(self).run)
                self.api_url = await nursery.start(self._serve_api, token, api_socket)
                self.data_dir.write_run_file(self.api_url, self.peer_id)
                nursery.start_soon(self.metrics_history.run)
                # Hello on every connection, scoring, bans, witnessing: before discovery
                # dials anyone, so no connection misses its hello.
                self.federation = Federation(self, self._host)
                self.peerbook = self.federation.peerbook
                await nursery.start(self.federation.run)
                # /n3xus/blocks/1.0.0 serving (node/p2p/blocks.py): registered before any
                # dial, so every hello lists it.
                assert self.canon is not None  # opened by run() before _serve
                self.block_server = BlockServer(self._host, self.canon.store, self.peerbook)
                self.block_server.register()
                # /n3xus/world-sync/1.0.0 (node/p2p/world_sync.py), before any dial too.
                self.worlds = WorldsFederation(self.canon, self._host, self.peerbook)
                assert self.worlds.server is not None
                self.worlds.server.register()
                # IMVU agents and /n3xus/imvu/1.0.0 (node/services/agents.py, p2p/imvu.py):
                # the handler too is registered before any dial.
                assert self.agents is not None  # opened by run() before _serve
                self.agents.host, self.agents.peerbook = self._host, self.peerbook
                self.agents.peer_id = self.peer_id
                await nursery.start(self.agents.run)
                self.agents.server = ImvuServer(self._host, self.peerbook, self.agents.answer_peer)
                self.agents.server.register()
                # /n3xus/live/1.0.0 (node/p2p/live.py): other nodes pull our rooms.
                assert self.live is not None and self.live.live is not None
                LivePullServer(self._host, self.peerbook, self.live.live).register()
                # Gossipsub and ledger federation (node/p2p/gossip.py,
                # node/services/ledger_federation.py): before any dial, like the handlers.
                gossip = await nursery.start(GossipService(
                    self._host, self.peerbook, registry=self.counters.registry).run)
                self.gossip = gossip
                # World heads are announced on /n3xus/world/<network> (worlds_federation.py).
                self.worlds.gossip, self.worlds.topic = gossip, f"/n3xus/world/{genesis_cid(self)}"
                assert self.ledger is not None
                self.ledger_federation = await nursery.start(LedgerFederation(
                    self._host, self.ledger, gossip, self.peerbook,
                    registry=self.counters.registry).run)
                # Bootstrap dials, reconnects, DHT, mDNS, keepalive (node/p2p/discovery.py).
                self.discovery = await nursery.start(Discovery(
                    self._host,
                    DiscoveryConfig(bootstrap=self.config.bootstrap, dht=self.config.dht,
                                    mdns=self.config.mdns,
                                    advertise=dial_addrs(self.listen_addrs)),
                    registry=self.counters.registry).run)
                # DAG fetches (node/services/fetch.py).
                self.fetcher = await nursery.start(FetchService(
                    self._host, self.canon, peerbook=self.peerbook, discovery=self.discovery,
                    registry=self.counters.registry).run)
                await nursery.start(self.worlds.run)
                log.info(
                    "node started",
                    peer_id=self.peer_id,
                    listen=self.listen_addrs,
                    api=self.api_url,
                    data_dir=str(self.data_dir.path),
                )
                task_status.started(self)
                await trio.sleep_forever()

    async def _serve_api(self, token: str, api_socket: socket.socket, *,
                         task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = HypercornConfig()
        # Hypercorn takes over the already-bound socket (its documented fd:// bind).
        cfg.bind = [f"fd://{api_socket.detach()}"]
        cfg.graceful_timeout = API_GRACEFUL_TIMEOUT_S
        cfg.accesslog = None
        cfg.errorlog = None  # errors surface through our own logging
        # Hypercorn refuses WebSocket messages over this before buffering them.
        cfg.websocket_max_message_size = LIVE_WS_MAX_MESSAGE_BYTES
        register_service_metrics(self.counters.registry, self.canon, self.ledger)
        app = build_app(self.routes(), token=token, registry=self.counters.registry,
                        version=__version__,
                        extra_routes=live_extra_routes(self.live, token)
                        if self.live is not None else ())
        if not is_loopback(self.config.api_host):
            log.warning("HTTP API bound to a non-loopback address", host=self.config.api_host)
        await hypercorn_serve(_CountingApp(app, self.counters.api_requests), cfg,
                              task_status=_FirstUrl(task_status))

    # -- operations used by the API (and tests) --------------------------------
    async def connect(self, multiaddr: str) -> str:
        self.counters.dials.inc()
        try:
            peer = await p2p.connect(self._host, multiaddr)
        except Exception:
            self.counters.dial_failures.inc()
            raise
        log.info("peer connected", peer_id=peer, addr=multiaddr)
        return peer

    def peers(self) -> list[dict[str, Any]]:
        """Connected peers: id, addrs, direction, connected_since, last ping RTT."""
        peers = p2p.peer_details(self._host)
        self.counters.peers.set(len(peers))
        return peers

    async def ping(self, peer_id: str) -> float:
        return await p2p.ping(self._host, peer_id)

    def uptime(self) -> float:
        return time.monotonic() - self._started_monotonic

    def status(self) -> dict[str, Any]:
        peers = self.peers()
        self.counters.uptime.set(self.uptime())
        return {
            "peer_id": self.peer_id,
            "version": __version__,
            "listen_addrs": self.listen_addrs,
            "dial_addrs": dial_addrs(self.listen_addrs),
            "api_url": self.api_url,
            "uptime_s": round(self.uptime(), 3),
            "peers": peers,
            "peer_count": len(peers),
            "counters": self.counters.snapshot(),
            "connection_gate": p2p.gate_of(self._host).snapshot(),
            "discovery": self.discovery.snapshot() if self.discovery is not None else None,
            "federation": self.federation.snapshot() if self.federation is not None else None,
            "ledger_federation": self.ledger_federation.snapshot()
            if self.ledger_federation is not None else None,
            "agents": self.agents.status() if self.agents is not None else None,
            "data_dir": str(self.data_dir.path),
        }

    def identity(self) -> dict[str, Any]:
        return {
            "peer_id": self.peer_id,
            "public_key": p2p.public_key_hex(self._host),
            "listen_addrs": self.listen_addrs,
            "dial_addrs": dial_addrs(self.listen_addrs),
        }

    # -- HTTP routes -----------------------------------------------------------
    def routes(self) -> Sequence[ApiRoute]:
        feature_routes = [
            *(canon_routes(self.canon) if self.canon is not None else []),
            *(ledger_routes(self.ledger) if self.ledger is not None else []),
            *(agent_routes(self.agents) if self.agents is not None else []),
            *(room_routes(self, self.live) if self.live is not None else []),
        ]
        return [*feature_routes, *fetch_routes(self), *world_federation_routes(self),
                *node_routes(self),
                *console_routes(self, self.metrics_history)]


def dial_addrs(listen_addrs: list[str]) -> list[str]:
    """Addresses peers can dial: a wildcard bind (0.0.0.0 / ::) is expanded to loopback
    and the addresses this host's name resolves to; others are kept as they are."""
    out: list[str] = []
    for addr in listen_addrs:
        parts = addr.split("/")  # ['', 'ip4', '0.0.0.0', 'tcp', port, 'p2p', id]
        if len(parts) > 2 and parts[2] in ("0.0.0.0", "::"):
            family = socket.AF_INET if parts[1] == "ip4" else socket.AF_INET6
            hosts = ["127.0.0.1" if family == socket.AF_INET else "::1"]
            try:
                infos = socket.getaddrinfo(socket.gethostname(), None, family)
            except OSError:  # no resolvable host name: loopback is still dialable
                infos = []
            hosts += sorted({str(info[4][0]) for info in infos} - set(hosts))
            out += ["/".join([*parts[:2], h, *parts[3:]]) for h in hosts]
        else:
            out.append(addr)
    return out


def agent_service(node: Node) -> AgentService:
    """The node's agents; ``[agents]`` in config.toml (or ``node start --model``) may name
    the GGUF file (default: the bundled model), its context size and threads."""
    from pathlib import Path

    assert node.canon is not None and node.ledger is not None
    settings = node.config.agents
    model, context, threads = (settings.get(k) for k in ("model", "context_tokens", "threads"))
    if not isinstance(model, str | None) or not isinstance(context, int | None) \
            or not isinstance(threads, int | None):
        raise ConfigError("[agents]: model is a path, context_tokens and threads integers")
    return AgentService(node.data_dir, node.env, node.canon, node.ledger,
                        model_path=Path(model).expanduser() if model else None,
                        context_tokens=context or DEFAULT_CONTEXT_TOKENS, threads=threads,
                        registry=node.counters.registry)


def genesis_cid(node: Node) -> str:
    """The network id: the genesis CID as text (as the ledger topic uses it)."""
    assert node.ledger is not None
    return str(node.ledger.genesis.cid)


def canon_origin(peer_id: str) -> str:
    """The C2SP origin line of this node's canon log checkpoints."""
    return f"n3xus.net/canon/{peer_id}"


def bind_api_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket for the API, or a clear :class:`AddressError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AddressError(
            f"cannot serve the API on {host}:{port}: {exc.strerror or exc}"
        ) from None
    return sock


class _FirstUrl:
    """Adapts hypercorn's ``started(list_of_urls)`` to ``started(url)``."""

    def __init__(self, task_status: Any) -> None:
        self._task_status = task_status

    def started(self, urls: list[str]) -> None:
        self._task_status.started(urls[0])


class _CountingApp:
    """ASGI middleware counting HTTP requests for the metrics."""

    def __init__(self, app: Any, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.counter.inc()
        await self.app(scope, receive, send)
