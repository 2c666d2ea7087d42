"""Deterministic simulation of ledger federation (FoundationDB / TigerBeetle VOPR style).

One process, one seed, one simulated clock: ``nodes`` in-memory ledgers (the real engine
of ``n3xus.ledger``, real ed25519 signatures) each driven by the real sync core
(``protocol/sync/ledger.py``), connected by a random graph of ``degree`` peers over a
simulated network that loses, duplicates, delays (so reorders) messages, partitions the
graph for a while, and crashes and restarts nodes (a crash loses the node's volatile sync
state; its ledger, like LMDB, keeps every committed batch). Clients submit transfers to
their home node, and conflicts on purpose: double spends (one account signing two
transactions at one seq, sent to two nodes at the same moment) and two buyers of one
edition at two nodes. After the traffic stops and the network heals, every node must reach
the same state root, equal to a ledger fed the union of all entries.

Everything random comes from one ``random.Random(seed)``; nothing iterates a set or reads
a real clock, so a seed replays exactly (``SimResult.trace`` hashes every delivery).
Messages go through their DAG-CBOR encoding unless ``wire=False``.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from blake3 import blake3
from nacl.signing import SigningKey

from n3xus.canon.cid import CID, cid_of
from n3xus.ledger.errors import EquivocationError, TxRejected
from n3xus.ledger.genesis import Genesis
from n3xus.ledger.ingest import Accepted
from n3xus.ledger.memory import MemoryLedger
from n3xus.ledger.tx import AccountChain, Op
from n3xus.protocol.sync.ledger import LedgerSync
from n3xus.protocol.sync.messages import Message, decode_message, encode_message

T0_MS: Final = 1_700_000_000_000
FUNDING: Final = 1_000
PRICE: Final = 50
ARTIFACT: Final = cid_of(b"n3xus sim artifact", codec="raw")


@dataclass
class SimConfig:
    nodes: int = 12
    seed: int = 0
    degree: int = 3
    users: int = 10
    transfers: int = 40
    double_spends: int = 2
    races: int = 1  # two buyers of one edition
    loss: float = 0.05
    duplicate: float = 0.03
    latency_ms: tuple[int, int] = (5, 400)
    partitions: int = 1
    crashes: int = 2
    traffic_ms: int = 20_000
    settle_ms: int = 60_000
    tick_ms: int = 1_000
    clock_skew_ms: int = 1_500
    wire: bool = True


@dataclass
class SimResult:
    config: SimConfig
    roots: list[bytes]
    reference_root: bytes
    converged: bool
    trace: str
    stats: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        distinct = len(set(self.roots))
        return (f"seed={self.config.seed} nodes={self.config.nodes} converged={self.converged} "
                f"distinct_roots={distinct} root={self.reference_root.hex()[:16]} "
                f"trace={self.trace[:16]} "
                + " ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))
                + f" seconds={self.seconds:.1f}")


class _Verified:
    """Signature checks memoised across the simulated nodes: each distinct entry is
    verified once for real (the check is a pure function of the bytes); nodes then admit
    it with ``verify=False``. Entries that failed are never marked."""

    def __init__(self) -> None:
        self.good: dict[bytes, None] = {}


class _SimLedger(MemoryLedger):
    def __init__(self, genesis: Genesis, verified: _Verified) -> None:
        super().__init__(genesis)
        self._verified = verified

    def ingest(self, entries: Any, *, verify: bool = True, now_ms: int | None = None) -> Any:
        listed = list(entries)
        known = all(entry in self._verified.good for entry in listed)
        outcomes = super().ingest(listed, verify=verify and not known, now_ms=now_ms)
        for entry, outcome in zip(listed, outcomes, strict=True):
            if isinstance(outcome, Accepted):
                self._verified.good[entry] = None
        return outcomes


class _Client:
    def __init__(self, name: str, key: SigningKey, genesis: Genesis, home: int) -> None:
        self.name = name
        self.chain = AccountChain(key, genesis.cid)
        self.home = home
        self.last_time = 0

    @property
    def account(self) -> bytes:
        return self.chain.account

    def when(self, now: int) -> int:
        self.last_time = max(now, self.last_time + 1)
        return self.last_time


class Simulation:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        rng = self.rng
        seed_bytes = config.seed.to_bytes(8, "big")
        self.issuer = SigningKey(blake3(b"n3xus-sim/issuer" + seed_bytes).digest())
        platform = bytes(SigningKey(blake3(b"n3xus-sim/platform" + seed_bytes).digest()).verify_key)
        self.genesis = Genesis.create("n3xus-sim", [bytes(self.issuer.verify_key)], 10**15, platform)
        self.verified = _Verified()
        self.ledgers = [_SimLedger(self.genesis, self.verified) for _ in range(config.nodes)]
        self.syncs = [LedgerSync(ledger, random.Random(rng.getrandbits(64))) for ledger in self.ledgers]
        self.skews = [rng.randint(-config.clock_skew_ms, config.clock_skew_ms)
                      for _ in range(config.nodes)]
        self.links: dict[tuple[int, int], None] = {}
        self._connect()
        self.up = [True] * config.nodes
        self.cut: dict[int, int] | None = None  # node -> side, while partitioned
        self.queue: list[tuple[int, int, str, tuple[Any, ...]]] = []
        self.sequence = 0
        self.now = 0
        self.trace = blake3()
        self.stats: dict[str, int] = {"sent": 0, "delivered": 0, "lost": 0, "duplicated": 0,
                                      "cut": 0, "to_down": 0, "submitted": 0, "refused": 0}
        self.clients = [_Client(f"user{n}", SigningKey(blake3(b"n3xus-sim/user%d" % n + seed_bytes).digest()),
                                self.genesis, rng.randrange(config.nodes)) for n in range(config.users)]
        self.issuer_client = _Client("issuer", self.issuer, self.genesis, 0)

    # --- topology and scheduling ---------------------------------------------------------

    def _connect(self) -> None:
        count, degree = self.config.nodes, self.config.degree
        if count < 2:
            return
        order = list(range(count))
        self.rng.shuffle(order)
        for a, b in zip(order, order[1:] + order[:1], strict=True):  # a ring: connected
            self._link(a, b)
        for node in range(count):
            while sum(1 for (x, _) in self.links if x == node) < min(degree, count - 1):
                self._link(node, self.rng.randrange(count))

    def _link(self, a: int, b: int) -> None:
        if a != b and (a, b) not in self.links:
            self.links[(a, b)] = None
            self.links[(b, a)] = None
            self.syncs[a].add_peer(b)
            self.syncs[b].add_peer(a)

    def at(self, when: int, kind: str, *args: Any) -> None:
        self.sequence += 1
        heapq.heappush(self.queue, (when, self.sequence, kind, args))

    def clock(self, node: int) -> int:
        return T0_MS + self.now + self.skews[node]

    # --- the network ---------------------------------------------------------------------

    def send(self, source: int, sends: list[tuple[Any, Message]]) -> None:
        config = self.config
        encoded: dict[int, Any] = {}
        for target, message in sends:
            self.stats["sent"] += 1
            payload: Any = message
            if config.wire:
                key = id(message)
                if key not in encoded:
                    encoded[key] = encode_message(message)
                payload = encoded[key]
            if self.rng.random() < config.loss:
                self.stats["lost"] += 1
                continue
            copies = 2 if self.rng.random() < config.duplicate else 1
            self.stats["duplicated"] += copies - 1
            for _ in range(copies):
                delay = self.rng.randint(*config.latency_ms)
                self.at(self.now + delay, "deliver", source, target, payload)

    def deliver(self, source: int, target: int, payload: Any) -> None:
        if not self.up[target]:
            self.stats["to_down"] += 1
            return
        if self.cut is not None and self.cut[source] != self.cut[target]:
            self.stats["cut"] += 1
            return
        self.stats["delivered"] += 1
        message = decode_message(payload) if self.config.wire else payload
        if self.config.wire:
            self.trace.update(self.now.to_bytes(8, "big") + bytes((source % 256, target % 256)) + payload)
        else:
            self.trace.update(self.now.to_bytes(8, "big") + repr((source, target)).encode())
        self.send(target, self.syncs[target].receive(source, message, self.clock(target)))

    # --- clients ---------------------------------------------------------------------------

    def submit(self, node: int, envelope: bytes) -> bool:
        """A client's submit at ``node``; the node gossips it on acceptance."""
        self.stats["submitted"] += 1
        if not self.up[node]:
            self.stats["refused"] += 1
            return False
        try:
            self.ledgers[node].submit(envelope, now_ms=self.clock(node))
            accepted = True
        except EquivocationError:
            accepted = True  # kept: it froze the account here, and is handed on
        except TxRejected:
            accepted = False
            self.stats["refused"] += 1
        self.send(node, self.syncs[node].announce())
        return accepted

    def client_tx(self, client: _Client, node: int, op: Op, args: dict[str, Any]) -> bytes | None:
        chain = client.chain
        seq, prev = chain.seq, chain.prev
        envelope = chain.sign(op, args, time_ms=client.when(T0_MS + self.now))
        if not self.submit(node, envelope):
            chain.seq, chain.prev = seq, prev  # refused: the seq is still free
            return None
        return envelope

    def schedule_workload(self) -> None:
        config, rng = self.config, self.rng
        for number, client in enumerate(self.clients):
            self.at(10 + number, "fund", client)
        traffic = config.traffic_ms
        for _ in range(config.transfers):
            self.at(rng.randint(1_000, traffic), "transfer", rng.randrange(config.users))
        for _ in range(config.double_spends):
            self.at(rng.randint(2_000, traffic), "double_spend", rng.randrange(config.users))
        for _ in range(config.races):
            self.at(rng.randint(2_000, traffic // 2), "mint_and_list", rng.randrange(config.users))
        for _ in range(config.partitions):
            start = rng.randint(0, traffic)
            self.at(start, "partition")
            self.at(start + rng.randint(2_000, traffic // 2), "heal")
        for _ in range(config.crashes):
            node = rng.randrange(config.nodes)
            start = rng.randint(1_000, traffic)  # after the funding at node 0
            self.at(start, "crash", node)
            self.at(start + rng.randint(1_000, traffic // 2), "restart", node)
        for node in range(config.nodes):
            self.at(rng.randint(0, config.tick_ms), "tick", node)
        self.at(traffic + 1, "heal")

    def on_fund(self, client: _Client) -> None:
        self.client_tx(self.issuer_client, 0, Op.ISSUE, {"to": client.account, "amount": FUNDING})

    def on_transfer(self, number: int) -> None:
        client = self.clients[number]
        to = self.rng.choice(self.clients).account
        self.client_tx(client, client.home, Op.TRANSFER, {"to": to, "amount": self.rng.randint(1, 300)})

    def on_double_spend(self, number: int) -> None:
        client = self.clients[number]
        chain = client.chain
        when = client.when(T0_MS + self.now)
        # The home node and one of its peers: both are likely to hold the account's
        # previous transaction, so both accept, and the fork must be found by the network.
        a = client.home
        peers = list(self.syncs[a].peers)
        b = self.rng.choice(peers) if peers else a
        first = chain.sign_at(chain.seq, chain.prev, Op.TRANSFER,
                              {"to": self.clients[0].account, "amount": 200}, time_ms=when)
        second = chain.sign(Op.TRANSFER, {"to": self.clients[-1].account, "amount": 200},
                            time_ms=when)
        self.submit(a, first)
        self.submit(b, second)

    def on_mint_and_list(self, number: int) -> None:
        creator = self.clients[number]
        mint = self.client_tx(creator, creator.home, Op.MINT, {
            "artifact": ARTIFACT, "metadata": {"n": number}, "editions": 1, "royalty_bps": 1000,
            "creator_bps": 8000, "platform_bps": 2000})
        if mint is None:
            return
        asset = creator.chain.prev
        listing = self.client_tx(creator, creator.home, Op.LIST,
                                 {"asset": asset, "price": PRICE, "edition": 1})
        if listing is None:
            return
        self.at(self.now + 3_000, "race", asset, creator.chain.prev, number)

    def on_race(self, asset: CID, listing: CID, creator: int) -> None:
        buyers = [n for n in range(len(self.clients)) if n != creator]
        if len(buyers) < 2:
            return
        for number in self.rng.sample(buyers, 2):
            client = self.clients[number]  # each buyer at their own home node
            self.client_tx(client, client.home, Op.BUY, {"asset": asset, "price": PRICE,
                                                         "edition": 1, "listing": listing})

    # --- faults ----------------------------------------------------------------------------

    def on_partition(self) -> None:
        self.cut = {node: self.rng.randrange(2) for node in range(self.config.nodes)}

    def on_heal(self) -> None:
        self.cut = None

    def on_crash(self, node: int) -> None:
        self.up[node] = False

    def on_restart(self, node: int) -> None:
        if self.up[node]:
            return
        self.up[node] = True
        # Volatile state is gone; the ledger (durable) is kept. Same peers.
        peers = list(self.syncs[node].peers)
        self.syncs[node] = LedgerSync(self.ledgers[node], random.Random(self.rng.getrandbits(64)))
        for peer in peers:
            self.syncs[node].add_peer(peer)

    def on_tick(self, node: int) -> None:
        end = self.config.traffic_ms + self.config.settle_ms
        if self.up[node]:
            self.send(node, self.syncs[node].tick(self.clock(node)))
        if self.now < end:
            self.at(self.now + self.config.tick_ms + self.rng.randint(0, 100), "tick", node)

    # --- running -----------------------------------------------------------------------------

    def run(self) -> SimResult:
        started = time.perf_counter()
        self.schedule_workload()
        handlers: dict[str, Callable[..., None]] = {"deliver": self.deliver, "fund": self.on_fund, "transfer": self.on_transfer,
                    "double_spend": self.on_double_spend, "mint_and_list": self.on_mint_and_list,
                    "race": self.on_race, "partition": self.on_partition, "heal": self.on_heal,
                    "crash": self.on_crash, "restart": self.on_restart, "tick": self.on_tick}
        end = self.config.traffic_ms + self.config.settle_ms
        while self.queue:
            when, _, kind, args = heapq.heappop(self.queue)
            if when > end + 10_000:
                break
            self.now = when
            handlers[kind](*args)
        roots = [ledger.state_root() for ledger in self.ledgers]
        union = MemoryLedger(self.genesis)
        seen: dict[bytes, None] = {}
        for ledger in self.ledgers:
            for entry in ledger.log[1:]:
                if entry not in seen:
                    seen[entry] = None
        union.ingest(list(seen))
        reference = union.state_root()
        self.stats["frozen"] = len([k for k in union.state if k[:1] == b"F"])
        self.stats["replays"] = sum(ledger.replays for ledger in self.ledgers)
        self.stats["entries"] = len(seen)
        # Anti-entropy must also come to rest: every node's sync digest the same (a
        # summary that never agreed would keep nodes exchanging forever).
        digests = {self.syncs[node].digest() for node in range(self.config.nodes)}
        self.stats["digests"] = len(digests)
        converged = all(root == reference for root in roots) and len(digests) == 1
        return SimResult(self.config, roots, reference, converged, self.trace.hexdigest(),
                         self.stats, time.perf_counter() - started)


def simulate(config: SimConfig) -> SimResult:
    return Simulation(config).run()
