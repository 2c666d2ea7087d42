"""Ledger federation rows of ``bench/federation.py`` (issue 9).

* **gossip burst**: 10 nodes on loopback in this process, each with 3 peers (the Petersen
  graph: 3-regular, diameter 2, not a full mesh), each a real host + GossipService +
  LedgerFederation over its own LMDB ledger. 1,000 pre-signed transfers are handed to the
  nodes at once (100 per node, as a local batch) and the time until each transaction is
  held by every node is measured (median, p99; none may be lost). Ceiling: the same gossip
  message bytes flooded over plain TCP connections along the same graph (each node forwards
  a message it has not seen to its other neighbours), no ledger work, same run.
  ratio = ceiling p99 / ours p99 (target >= 0.5, i.e. within twice the raw broadcast).
* **catch-up**: a node N transactions behind syncs from one peer over
  ``/n3xus/ledger-sync/2.0.0`` until the state roots are equal, against the same node's
  local ingest of the same entries (``LedgerStore.ingest`` in batches of 1,000, fsync: the
  figure of ``bench/ledger.py``). ratio = local time / catch-up time (target >= 0.5).
* **verify ahead of apply**: the node's ingest path (signatures on a pool of all cores, then
  the ordered apply without a second check) against one core's raw libsodium verify of the
  same transactions. ratio = ingest rate / raw verify rate (target >= 1.5 on 2 cores).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio
from nacl.signing import SigningKey

from _harness import Result
from ledger import Workload, _raw_verifier
from n3xus.ledger.tx import decode_tx
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.gossip import GossipService
from n3xus.node.services.ledger import LedgerService
from n3xus.node.services.ledger_federation import (
    LedgerFederation,
    ParallelVerifier,
    admit_checked,
    gossip_messages,
)
from n3xus.node.storage import open_environment
from n3xus.protocol.sync.messages import encode_message

NODES = 10
PETERSEN = [(i, (i + 1) % 5) for i in range(5)] + [(i, i + 5) for i in range(5)] + \
    [(5 + i, 5 + (i + 2) % 5) for i in range(5)]
BURST = 1_000
CATCH_UP = 30_000
CATCH_UP_LARGE = 100_000
VERIFY_TXS = 20_000
# Entries per write transaction in the verify-ahead row: one fsync per batch costs little,
# and the pipeline has several batches to overlap.
VERIFY_BATCH = 2_000
MAP_SIZE_MIB = 2048
MESH_TIMEOUT_S = 30.0
ARRIVAL_TIMEOUT_S = 120.0


class _Node:
    def __init__(self, root: Path, index: int, workload: Workload) -> None:
        self.env = open_environment(root / f"n{index}", MAP_SIZE_MIB)
        self.service = LedgerService(self.env, workload.genesis, SigningKey(secrets.token_bytes(32)),
                                     f"bench{index}")
        self.host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
        self.addr = ""
        self.gossip: GossipService | None = None
        self.federation: LedgerFederation | None = None


async def _start(nursery: trio.Nursery, node: _Node, interval_s: float) -> None:
    addrs = await nursery.start(_run_host, node.host)
    node.addr = addrs[0]
    node.gossip = await nursery.start(GossipService(node.host).run)
    node.federation = await nursery.start(LedgerFederation(
        node.host, node.service, node.gossip, sync_interval_s=interval_s).run)


async def _run_host(host: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs:
        task_status.started(addrs)
        await trio.sleep_forever()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- gossip burst ---------------------------------------------------------------------------


async def _gossip_burst(root: Path, workload: Workload) -> tuple[list[float], int]:
    nodes = [_Node(root, i, workload) for i in range(NODES)]
    for node in nodes:
        node.service.store.ingest(workload.issuance)
    txs = workload.transfers[:BURST]
    ids = [decode_tx(raw).id for raw in txs]
    holders: dict[bytes, set[int]] = {tx_id: set() for tx_id in ids}
    reached: dict[bytes, float] = {}
    started = 0.0

    def arrived(index: int, entries: list[bytes]) -> None:
        now = time.perf_counter()
        for entry in entries:
            tx_id = decode_tx(entry).id
            seen = holders.get(tx_id)
            if seen is not None and index not in seen:
                seen.add(index)
                if len(seen) == NODES:
                    reached[tx_id] = now - started

    async with trio.open_nursery() as nursery:
        for node in nodes:
            await _start(nursery, node, 3600.0)  # anti-entropy off: gossip alone
        for index, node in enumerate(nodes):
            assert node.federation is not None
            node.federation.on_ingested.append(
                lambda entries, _outcomes, index=index: arrived(index, entries))
        for a, b in PETERSEN:
            await p2p.connect(nodes[a].host, nodes[b].addr)
        with trio.fail_after(MESH_TIMEOUT_S):
            while not all(node.gossip and len(node.gossip.mesh_peers(node.federation.topic)) >= 3
                          for node in nodes if node.federation):
                await trio.sleep(0.05)
        await trio.sleep(1.5)  # a heartbeat or two: meshes settled both ways
        started = time.perf_counter()

        async def local(index: int) -> None:
            node = nodes[index]
            assert node.federation is not None
            batch = txs[index::NODES]
            await trio.to_thread.run_sync(node.service.store.ingest, batch)
            arrived(index, batch)
            node.federation.kick()

        async with trio.open_nursery() as burst:
            for index in range(NODES):
                burst.start_soon(local, index)
        with trio.move_on_after(ARRIVAL_TIMEOUT_S):
            while len(reached) < len(ids):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    for node in nodes:
        node.env.close()
    return list(reached.values()), len(ids) - len(reached)


async def _tcp_burst(workload: Workload) -> tuple[list[float], int]:
    """The ceiling: the same gossip message bytes flooded over TCP along the same graph."""
    txs = workload.transfers[:BURST]
    payloads = [(index, encode_message(m)) for index in range(NODES)
                for m in gossip_messages(txs[index::NODES])]
    neighbours: dict[int, list[int]] = {i: [] for i in range(NODES)}
    for a, b in PETERSEN:
        neighbours[a].append(b)
        neighbours[b].append(a)
    links: dict[tuple[int, int], trio.SocketStream] = {}
    locks = {(a, b): trio.Lock() for x, y in PETERSEN for a, b in ((x, y), (y, x))}
    seen: list[set[bytes]] = [set() for _ in range(NODES)]
    holders: dict[bytes, int] = {}
    reached: list[float] = []
    counts = {hashlib.blake2b(p, digest_size=16).digest(): len(decode_message_entries(p))
              for _, p in payloads}
    started = 0.0

    async def deliver(node: int, data: bytes, source: int | None) -> None:
        mark = hashlib.blake2b(data, digest_size=16).digest()
        if mark in seen[node]:
            return
        seen[node].add(mark)
        holders[mark] = holders.get(mark, 0) + 1
        if holders[mark] == NODES:
            reached.extend([time.perf_counter() - started] * counts[mark])
        frame = len(data).to_bytes(4, "big") + data
        for other in neighbours[node]:
            if other != source:
                async with locks[(node, other)]:
                    await links[(node, other)].send_all(frame)

    async def reader(node: int, source: int, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while True:
            piece = await stream.receive_some(1 << 16)
            if not piece:
                return
            buffer += piece
            while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
                size = int.from_bytes(buffer[:4], "big")
                data = bytes(buffer[4:4 + size])
                del buffer[:4 + size]
                await deliver(node, data, source)

    async with trio.open_nursery() as nursery:
        listeners = []
        accepted: dict[int, trio.MemorySendChannel[trio.SocketStream]] = {}
        for node in range(NODES):
            send, receive = trio.open_memory_channel[trio.SocketStream](NODES)
            accepted[node] = send

            async def handler(stream: trio.SocketStream, send: Any = send) -> None:
                await send.send(stream)
                await trio.sleep_forever()

            listeners.append((await nursery.start(partial(trio.serve_tcp, handler, 0,
                                                          host="127.0.0.1")))[0])
            listeners[-1].receive = receive  # type: ignore[attr-defined]
        for a, b in PETERSEN:
            port = listeners[b].socket.getsockname()[1]
            out = await trio.open_tcp_stream("127.0.0.1", port)
            inbound = await listeners[b].receive.receive()  # type: ignore[attr-defined]
            links[(a, b)], links[(b, a)] = out, inbound
            nursery.start_soon(reader, b, a, inbound)
            nursery.start_soon(reader, a, b, out)
        started = time.perf_counter()
        async with trio.open_nursery() as burst:
            for node, data in payloads:
                burst.start_soon(deliver, node, data, None)
        with trio.move_on_after(ARRIVAL_TIMEOUT_S):
            while len(reached) < len(txs):
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    return reached, len(txs) - len(reached)


async def _gossip_transport(workload: Workload) -> tuple[list[float], int]:
    """The gossip layer alone: the same message bytes published on the same graph through
    GossipService, each node's handler accepting at once (no ledger work)."""
    from n3xus.node.p2p.gossip import Verdict

    txs = workload.transfers[:BURST]
    payloads = [(index, encode_message(m)) for index in range(NODES)
                for m in gossip_messages(txs[index::NODES])]
    sizes = {hashlib.blake2b(p, digest_size=16).digest(): len(decode_message_entries(p))
             for _, p in payloads}
    holders: dict[bytes, int] = {}
    reached: list[float] = []
    started = 0.0
    topic = "/n3xus-bench/gossip"

    def arrived(data: bytes) -> None:
        mark = hashlib.blake2b(data, digest_size=16).digest()
        holders[mark] = holders.get(mark, 0) + 1
        if holders[mark] == NODES:
            reached.extend([time.perf_counter() - started] * sizes[mark])

    async def handler(_peer: str, data: bytes) -> tuple[Verdict, str | None]:
        arrived(data)
        return Verdict.ACCEPT, None

    hosts = [p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32))) for _ in range(NODES)]
    async with trio.open_nursery() as nursery:
        addrs = [(await nursery.start(_run_host, host))[0] for host in hosts]
        services = [await nursery.start(GossipService(host).run) for host in hosts]
        for service in services:
            await service.join(topic, handler)
        for a, b in PETERSEN:
            await p2p.connect(hosts[a], addrs[b])
        with trio.fail_after(MESH_TIMEOUT_S):
            while not all(len(s.mesh_peers(topic)) >= 3 for s in services):
                await trio.sleep(0.05)
        await trio.sleep(1.5)
        started = time.perf_counter()
        for index, data in payloads:
            arrived(data)  # held by its publisher
            await services[index].publish(topic, data)
        with trio.move_on_after(ARRIVAL_TIMEOUT_S):
            while len(reached) < len(txs):
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    return reached, len(txs) - len(reached)


def decode_message_entries(payload: bytes) -> tuple[bytes, ...]:
    from n3xus.protocol.sync.messages import Gossip, decode_message

    message = decode_message(payload)
    assert isinstance(message, Gossip)
    return message.entries


# --- catch-up -------------------------------------------------------------------------------


async def _catch_up(root: Path, workload: Workload, count: int) -> float:
    source, behind = _Node(root, 100, workload), _Node(root, 101, workload)
    entries = workload.issuance + workload.transfers[:count]
    for start in range(0, len(entries), 1000):
        source.service.store.ingest(entries[start:start + 1000], verify=False)
    target = source.service.store.state_root()
    async with trio.open_nursery() as nursery:
        await _start(nursery, source, 3600.0)
        await _start(nursery, behind, 0.2)
        started = time.perf_counter()
        await p2p.connect(behind.host, source.addr)
        while behind.service.store.log_size() < len(entries) + 1 or \
                await trio.to_thread.run_sync(behind.service.store.state_root) != target:
            await trio.sleep(0.05)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    source.env.close()
    behind.env.close()
    return elapsed


def _local_ingest(root: Path, workload: Workload, count: int) -> float:
    from n3xus.ledger.store import LedgerStore

    env = open_environment(root / "local", MAP_SIZE_MIB)
    store = LedgerStore(env, workload.genesis)
    entries = workload.issuance + workload.transfers[:count]
    started = time.perf_counter()
    for start in range(0, len(entries), 1000):
        store.ingest(entries[start:start + 1000])
    elapsed = time.perf_counter() - started
    env.close()
    return elapsed


# --- verify ahead of apply ------------------------------------------------------------------


def _verify_rows(root: Path, workload: Workload) -> tuple[float, float, int]:
    from n3xus.ledger.store import LedgerStore

    txs = workload.transfers[:VERIFY_TXS]
    verify = _raw_verifier()
    started = time.perf_counter()
    for sig, message, key in workload.triples[:VERIFY_TXS]:
        if verify(sig, message, len(message), key) != 0:
            raise AssertionError("a workload signature does not verify")
    raw = time.perf_counter() - started
    env = open_environment(root / "verify", MAP_SIZE_MIB)
    store = LedgerStore(env, workload.genesis)
    store.ingest(workload.issuance)
    verifier = ParallelVerifier()
    parts = [txs[start:start + VERIFY_BATCH] for start in range(0, len(txs), VERIFY_BATCH)]
    started = time.perf_counter()
    # The node's pipeline: batch i+1 is verified on the pool while batch i is applied.
    ahead = verifier.check_ahead(store, parts[0])
    for index, part in enumerate(parts):
        checked = ahead()
        if index + 1 < len(parts):
            ahead = verifier.check_ahead(store, parts[index + 1])
        admit_checked(store, part, checked, sort=False, now=None)
    ours = time.perf_counter() - started
    verifier.close()
    env.close()
    return ours, raw, verifier.workers


def rows(large: bool) -> tuple[list[Result], dict[str, Any]]:
    count = CATCH_UP_LARGE if large else CATCH_UP
    workload = Workload(max(count, BURST, VERIFY_TXS))
    root = Path(tempfile.mkdtemp(prefix="bench-fed-ledger-"))
    extra: dict[str, Any] = {}
    try:
        ours, lost = trio.run(_gossip_burst, root, workload)
        tcp, tcp_lost = trio.run(_tcp_burst, workload)
        if lost or tcp_lost:
            raise AssertionError(f"transactions lost: {lost} (ours), {tcp_lost} (tcp)")
        ours_p99, tcp_p99 = _percentile(ours, 0.99), _percentile(tcp, 0.99)
        notes = {"ours median ms": round(statistics.median(ours) * 1000, 1),
                 "ours p99 ms": round(ours_p99 * 1000, 1),
                 "tcp median ms": round(statistics.median(tcp) * 1000, 1),
                 "tcp p99 ms": round(tcp_p99 * 1000, 1), "lost": lost,
                 "target p99 ms": 500}
        results = [Result(f"gossip {BURST} tx burst, {NODES} nodes x 3 peers: p99 vs TCP flood",
                          "tx", BURST, ours_p99, tcp_p99, 0.5, True, notes)]
        gossip_only, gossip_lost = trio.run(_gossip_transport, workload)
        results.append(Result("gossip layer alone (no ledger work): p99 vs TCP flood", "tx",
                              BURST, _percentile(gossip_only, 0.99), tcp_p99, None, False,
                              {"median ms": round(statistics.median(gossip_only) * 1000, 1),
                               "p99 ms": round(_percentile(gossip_only, 0.99) * 1000, 1),
                               "lost": gossip_lost}))
        local = _local_ingest(root, workload, count)
        caught = trio.run(_catch_up, root, workload, count)
        results.append(Result(f"catch-up of {count:,} tx over ledger-sync vs local ingest",
                              "tx", count, caught, local, 0.5, True, {}))
        ours_v, raw_v, workers = _verify_rows(root, workload)
        results.append(Result(f"ingest, verify on {workers} cores ahead of apply, vs 1-core raw "
                              "verify", "tx", VERIFY_TXS, ours_v, raw_v, 1.5, True,
                              {"cpu count": os.cpu_count(),
                               "load average": " ".join(f"{x:.1f}" for x in os.getloadavg())}))
        extra["ledger catch-up workload"] = (f"{count:,} transfers among 100 accounts"
                                             + ("" if large else "; --large: 100,000"))
        return results, extra
    finally:
        shutil.rmtree(root, ignore_errors=True)
