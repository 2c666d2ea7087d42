"""The 10-node gossip burst of ``bench/federation.py`` (issue 9), one node per process.

A real deployment runs one node per process, so each of the :data:`NODES` nodes is its own
OS process here, driven over stdin/stdout by :func:`run_burst`: the nodes share this
machine's cores as 10 nodes on one host would (in one process they shared one GIL). The
graph is the Petersen graph (3-regular, diameter 2, not a full mesh). Three kinds of node,
measured in the same run, each over the same graph with the same message bytes:

* ``ledger`` (**ours**): a real libp2p host + GossipService + LedgerFederation over its own
  LMDB ledger (fsync on). At "go" each node ingests its 100 of the 1,000 pre-signed
  transfers as a local batch (its clients' submits) and the federation publishes them. A
  transaction has *reached* a node when it is in that node's set (``Accepted``, or a
  ``Pending`` one once its predecessor let it in). None may be lost: every node must end
  with all 1,000.
* ``tcp`` (**ceiling**): the same gossip message bytes flooded over plain TCP connections,
  one process per node: a node forwards a message it has not seen to its other neighbours.
  No encryption, no muxer, no ledger work.
* ``gossip`` (informative): the gossip layer alone, the same bytes published through
  GossipService, each node's handler accepting at once (no ledger work).
* ``tcp-verify`` (informative): the TCP flood where each node also checks the signature of
  every entry of a message (one raw libsodium call per entry, on its one thread) before it
  counts and forwards the message: the least work any node that trusts no peer must do,
  so this row is the floor of what a ledger gossip can reach on this machine.

Times are ``time.perf_counter`` (CLOCK_MONOTONIC, one clock for all processes of a
machine): the coordinator notes the time, then tells every node "go"; a transaction's
latency is its latest arrival over the nodes minus that start. Each node also reports the
CPU its process used from "go" until it held everything (and how much of it was the trio
thread: libp2p, gossipsub, the federation's bookkeeping; the rest is the ledger's worker
threads: verify, apply, commit), which gives the floor: on ``c`` cores no schedule
finishes before ``sum(CPU) / c``.

Only the burst rows::

    python bench/_federation_burst.py [--json] [--repeats N]

(``python bench/_federation_burst.py node KIND INDEX DATA`` is one node, for the coordinator.)
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

NODES = 10
PETERSEN = [(i, (i + 1) % 5) for i in range(5)] + [(i, i + 5) for i in range(5)] + \
    [(5 + i, 5 + (i + 2) % 5) for i in range(5)]
BURST = 1_000
MESH_TIMEOUT_S = 60.0
ARRIVAL_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 15.0
SETTLE_S = 1.5
"""Wait once the meshes are complete: a heartbeat or two, meshes settled both ways."""
MAP_SIZE_MIB = 256
TOPIC = "/n3xus-bench/gossip"


def neighbours(node: int) -> list[int]:
    return sorted({b for a, b in PETERSEN if a == node} | {a for a, b in PETERSEN if b == node})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Burst:
    """One burst: latencies (s) of the transactions every node reached, how many were not,
    and what each node process reported (CPU, counters)."""

    latencies: list[float]
    lost: int
    reports: list[dict[str, Any]]

    @property
    def cpu_s(self) -> float:
        return sum(float(r["cpu_s"]) for r in self.reports)

    @property
    def trio_cpu_s(self) -> float:
        return sum(float(r["trio_cpu_s"]) for r in self.reports)


# --- the coordinator ------------------------------------------------------------------------


class _Node:
    def __init__(self, kind: str, index: int, data: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "node", kind, str(index), str(data)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a burst node ended early (exit {self.process.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("stop")
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def write_data(path: Path, genesis: bytes, issuance: list[bytes], transfers: list[bytes]) -> None:
    """The workload every node process reads (hex in JSON)."""
    path.write_text(json.dumps({"genesis": genesis.hex(), "issuance": [e.hex() for e in issuance],
                                "transfers": [e.hex() for e in transfers]}))


def run_burst(kind: str, data: Path) -> Burst:
    """One burst of ``kind`` over :data:`NODES` node processes (see the module docstring)."""
    nodes = [_Node(kind, index, data) for index in range(NODES)]
    try:
        addrs = [node.receive()["addr"] for node in nodes]
        for a, b in PETERSEN:
            nodes[a].ask(f"connect {addrs[b]}")
        deadline = time.monotonic() + MESH_TIMEOUT_S
        while not all(node.ask("mesh")["mesh"] >= len(neighbours(i))
                      for i, node in enumerate(nodes)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} meshes did not form")
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        for node in nodes:
            node.send("go")
        reports = [node.receive() for node in nodes]
    finally:
        for node in nodes:
            node.close()
    count = len(json.loads(data.read_text())["transfers"])
    latest: dict[int, float] = {}
    holders: dict[int, int] = {}
    for report in reports:
        for index, at in report.pop("arrivals").items():
            holders[int(index)] = holders.get(int(index), 0) + 1
            latest[int(index)] = max(latest.get(int(index), 0.0), at - started)
    reached = [latest[i] for i in range(count) if holders.get(i) == NODES]
    return Burst(reached, count - len(reached), reports)


# --- the node processes ---------------------------------------------------------------------


def _reply(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def _serve_commands(connect: Callable[[str], Awaitable[Any]], mesh: Callable[[], int],
                          go: Callable[[], Awaitable[None]]) -> None:
    """Line commands from the coordinator: connect ADDR, mesh, go, stop."""
    while True:
        command = (await trio.to_thread.run_sync(sys.stdin.readline)).strip()
        if command.startswith("connect "):
            await connect(command.split(" ", 1)[1])
            _reply(ok=True)
        elif command == "mesh":
            _reply(mesh=mesh())
        elif command == "go":
            await go()
        else:  # "stop", or the coordinator's pipe closed
            return


class _Clock:
    """CPU of the whole process and of the trio thread since :meth:`start`."""

    def start(self) -> None:
        self.cpu, self.trio_cpu = time.process_time(), time.thread_time()

    def fields(self) -> dict[str, float]:
        return {"cpu_s": time.process_time() - self.cpu,
                "trio_cpu_s": time.thread_time() - self.trio_cpu}


def _payloads(transfers: list[bytes]) -> list[tuple[int, bytes, list[int]]]:
    """(origin node, gossip message bytes, transfer indexes it carries): each node's share
    cut into messages as the federation publishes it."""
    from n3xus.node.services.ledger_federation import gossip_messages
    from n3xus.protocol.sync.messages import encode_message

    found = []
    for node in range(NODES):
        share = list(range(node, len(transfers), NODES))
        at = 0
        for message in gossip_messages([transfers[i] for i in share]):
            found.append((node, encode_message(message), share[at:at + len(message.entries)]))
            at += len(message.entries)
    return found


def _mark(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


async def _ledger_node(index: int, data: dict[str, Any], root: Path) -> None:
    from nacl.signing import SigningKey

    from n3xus.ledger.genesis import Genesis
    from n3xus.ledger.ingest import Accepted, Outcome
    from n3xus.ledger.tx import decode_tx
    from n3xus.node.p2p import host as p2p
    from n3xus.node.p2p.gossip import GossipService
    from n3xus.node.services.ledger import LedgerService
    from n3xus.node.services.ledger_federation import LedgerFederation
    from n3xus.node.storage import open_environment

    genesis = Genesis.from_bytes(bytes.fromhex(data["genesis"]))
    transfers = [bytes.fromhex(e) for e in data["transfers"]]
    position = {entry: i for i, entry in enumerate(transfers)}
    ids = [decode_tx(entry).id for entry in transfers]
    env = open_environment(root, MAP_SIZE_MIB)
    service = LedgerService(env, genesis, SigningKey(secrets.token_bytes(32)), f"bench{index}")
    service.store.ingest([bytes.fromhex(e) for e in data["issuance"]])
    host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
    arrivals: dict[int, float] = {}
    waiting: set[int] = set()  # pending here: reached once a predecessor lets it in
    complete = trio.Event()
    clock = _Clock()

    def arrived(entries: list[bytes], outcomes: list[Outcome]) -> None:
        now = time.perf_counter()
        for entry, outcome in zip(entries, outcomes, strict=True):
            at = position.get(entry)
            if at is not None and at not in arrivals:
                if isinstance(outcome, Accepted):
                    arrivals[at] = now
                    waiting.discard(at)
                else:
                    waiting.add(at)
        for at in [i for i in waiting if service.store.has(ids[i])]:
            arrivals[at] = now
            waiting.discard(at)
        if len(arrivals) == len(transfers):
            complete.set()

    try:
        async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs, \
                trio.open_nursery() as nursery:
            gossip = await nursery.start(GossipService(host).run)
            federation = await nursery.start(LedgerFederation(
                host, service, gossip, sync_interval_s=3600.0).run)  # gossip alone
            federation.on_ingested.append(arrived)
            _reply(addr=addrs[0])

            async def go() -> None:
                clock.start()
                share = transfers[index::NODES]
                arrived(share, await trio.to_thread.run_sync(service.store.ingest, share))
                federation.kick()
                with trio.move_on_after(ARRIVAL_TIMEOUT_S):
                    await complete.wait()
                _reply(arrivals=arrivals, **clock.fields(), gossip=gossip.counters.snapshot())

            await _serve_commands(lambda addr: p2p.connect(host, addr),
                                  lambda: len(gossip.mesh_peers(federation.topic)), go)
            nursery.cancel_scope.cancel()
    finally:
        env.close()


async def _gossip_node(index: int, data: dict[str, Any]) -> None:
    from n3xus.node.p2p import host as p2p
    from n3xus.node.p2p.gossip import GossipService, Verdict

    transfers = [bytes.fromhex(e) for e in data["transfers"]]
    payloads = _payloads(transfers)
    carries = {_mark(p): share for _, p, share in payloads}
    arrivals: dict[int, float] = {}
    complete = trio.Event()
    clock = _Clock()

    def arrived(payload: bytes) -> None:
        now = time.perf_counter()
        for at in carries.get(_mark(payload), ()):
            arrivals.setdefault(at, now)
        if len(arrivals) == len(transfers):
            complete.set()

    async def handler(_peer: str, payload: bytes) -> tuple[Verdict, str | None]:
        arrived(payload)
        return Verdict.ACCEPT, None

    host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
    async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs, \
            trio.open_nursery() as nursery:
        gossip = await nursery.start(GossipService(host).run)
        await gossip.join(TOPIC, handler)
        _reply(addr=addrs[0])

        async def go() -> None:
            clock.start()
            for origin, payload, _ in payloads:
                if origin == index:
                    arrived(payload)
                    await gossip.publish(TOPIC, payload)
            with trio.move_on_after(ARRIVAL_TIMEOUT_S):
                await complete.wait()
            _reply(arrivals=arrivals, **clock.fields(), gossip=gossip.counters.snapshot())

        await _serve_commands(lambda addr: p2p.connect(host, addr),
                              lambda: len(gossip.mesh_peers(TOPIC)), go)
        nursery.cancel_scope.cancel()


def _raw_checks(transfers: list[bytes]) -> Callable[[list[int]], None]:
    """Check the signatures of the transfers at the given indexes with one raw libsodium
    call each (the ``tcp-verify`` ceiling)."""
    from ledger import _raw_verifier
    from n3xus.ledger.tx import TX_SIGNATURE_TAG, decode_tx

    verify = _raw_verifier()
    triples = []
    for entry in transfers:
        tx = decode_tx(entry)
        signed = TX_SIGNATURE_TAG + tx.signed
        triples.append((tx.sig, signed, len(signed), tx.account))

    def check(indexes: list[int]) -> None:
        for at in indexes:
            if verify(*triples[at]) != 0:
                raise AssertionError("a workload signature does not verify")

    return check


async def _tcp_node(index: int, data: dict[str, Any], checked: bool = False) -> None:
    transfers = [bytes.fromhex(e) for e in data["transfers"]]
    payloads = _payloads(transfers)
    carries = {_mark(p): share for _, p, share in payloads}
    check = _raw_checks(transfers) if checked else None
    links: dict[int, trio.SocketStream] = {}
    locks = {other: trio.Lock() for other in neighbours(index)}
    seen: set[bytes] = set()
    arrivals: dict[int, float] = {}
    complete = trio.Event()
    clock = _Clock()

    async def deliver(payload: bytes, source: int | None) -> None:
        mark = _mark(payload)
        if mark in seen:
            return
        seen.add(mark)
        if check is not None and source is not None:
            check(carries.get(mark, []))
        now = time.perf_counter()
        for at in carries.get(mark, ()):
            arrivals.setdefault(at, now)
        if len(arrivals) == len(transfers):
            complete.set()
        frame = len(payload).to_bytes(4, "big") + payload
        for other, stream in list(links.items()):
            if other != source:
                async with locks[other]:
                    await stream.send_all(frame)

    async def reader(source: int, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while True:
            piece = await stream.receive_some(1 << 16)
            if not piece:
                return
            buffer += piece
            while len(buffer) >= 4 and len(buffer) >= 4 + int.from_bytes(buffer[:4], "big"):
                size = int.from_bytes(buffer[:4], "big")
                payload = bytes(buffer[4:4 + size])
                del buffer[:4 + size]
                await deliver(payload, source)

    async def accept(stream: trio.SocketStream) -> None:
        source = (await stream.receive_some(1))[0]  # the dialer names itself in one byte
        links[source] = stream
        await reader(source, stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, accept, 0)
        _reply(addr=f"{listeners[0].socket.getsockname()[1]}/{index}")

        async def connect(addr: str) -> None:
            port, other = (int(x) for x in addr.split("/"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(bytes([index]))
            links[other] = stream
            nursery.start_soon(reader, other, stream)

        async def go() -> None:
            clock.start()
            async with trio.open_nursery() as burst:
                for origin, payload, _ in payloads:
                    if origin == index:
                        burst.start_soon(deliver, payload, None)
            with trio.move_on_after(ARRIVAL_TIMEOUT_S):
                await complete.wait()
            _reply(arrivals=arrivals, **clock.fields())

        await _serve_commands(connect, lambda: len(links), go)
        nursery.cancel_scope.cancel()


def _node_main(kind: str, index: int, data_path: Path) -> None:
    from n3xus.node.logs import configure_logging

    configure_logging("warning")  # stdout is the coordinator's pipe
    data = json.loads(data_path.read_text())
    if kind == "ledger":
        root = Path(tempfile.mkdtemp(prefix=f"bench-burst-{index}-"))
        try:
            trio.run(_ledger_node, index, data, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    elif kind == "gossip":
        trio.run(_gossip_node, index, data)
    elif kind in ("tcp", "tcp-verify"):
        trio.run(_tcp_node, index, data, kind == "tcp-verify")
    else:
        raise SystemExit(f"unknown node kind {kind!r}")


# --- the rows -------------------------------------------------------------------------------


def burst_rows(genesis: bytes, issuance: list[bytes], transfers: list[bytes],
               repeats: int = 1) -> list[Any]:
    """The burst rows (``Result`` of ``_harness``): ours (ledger) vs the TCP flood, and the
    gossip layer alone; with ``repeats`` > 1, the median run's p99 of each kind."""
    from _harness import Result

    directory = Path(tempfile.mkdtemp(prefix="bench-burst-data-"))
    try:
        data = directory / "workload.json"
        write_data(data, genesis, issuance, transfers)
        kinds = ("tcp", "ledger", "gossip", "tcp-verify")
        runs: dict[str, list[Burst]] = {kind: [] for kind in kinds}
        for repeat in range(repeats):  # interleaved: a noisy moment hurts all kinds alike
            for kind in (kinds if repeat % 2 == 0 else kinds[::-1]):
                runs[kind].append(run_burst(kind, data))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    lost = {kind: [b.lost for b in found] for kind, found in runs.items()}
    if any(any(v) for v in lost.values()):
        raise AssertionError(f"transactions lost: {lost}")
    chosen = {kind: sorted(found, key=lambda b: percentile(b.latencies, 0.99))[len(found) // 2]
              for kind, found in runs.items()}
    ours, tcp, gossip, floor = (chosen[k] for k in ("ledger", "tcp", "gossip", "tcp-verify"))
    count = len(transfers)
    cores = os.cpu_count() or 1

    def ms(seconds: float) -> float:
        return round(seconds * 1000, 1)

    def per_tx_node_us(seconds: float) -> float:
        return round(seconds / (count * NODES) * 1e6, 1)

    def p99s(kind: str) -> str:
        return ", ".join(f"{ms(percentile(b.latencies, 0.99)):.0f}" for b in runs[kind])

    notes = {
        "ours median ms": ms(statistics.median(ours.latencies)),
        "ours p99 ms": ms(percentile(ours.latencies, 0.99)),
        "tcp median ms": ms(statistics.median(tcp.latencies)),
        "tcp p99 ms": ms(percentile(tcp.latencies, 0.99)),
        "p99 ms of every run (ours; tcp)": f"{p99s('ledger')}; {p99s('tcp')}",
        "lost": 0, "target p99 ms": 500,
        "CPU of the 10 node processes, us per tx per node (ours; tcp)":
            f"{per_tx_node_us(ours.cpu_s)} (trio thread {per_tx_node_us(ours.trio_cpu_s)}, "
            f"ledger threads {per_tx_node_us(ours.cpu_s - ours.trio_cpu_s)}); "
            f"{per_tx_node_us(tcp.cpu_s)}",
        f"CPU floor on {cores} cores, ms (sum of CPU / cores)": ms(ours.cpu_s / cores),
        "gossip messages ignored as copies under validation (all nodes)":
            sum(r["gossip"]["duplicates"] for r in ours.reports),
        "load average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    rows = [Result(f"gossip {count} tx burst, {NODES} processes x 3 peers: p99 vs TCP flood",
                   "tx", count, percentile(ours.latencies, 0.99), percentile(tcp.latencies, 0.99),
                   0.5, True, notes),
            Result("gossip layer alone (no ledger work): p99 vs TCP flood", "tx", count,
                   percentile(gossip.latencies, 0.99), percentile(tcp.latencies, 0.99), None,
                   False, {"median ms": ms(statistics.median(gossip.latencies)),
                           "p99 ms": ms(percentile(gossip.latencies, 0.99)),
                           "CPU us per tx per node": per_tx_node_us(gossip.cpu_s)}),
            Result("ours vs the TCP flood that also checks every signature at every node "
                   "(the least any node must do): p99", "tx", count,
                   percentile(ours.latencies, 0.99), percentile(floor.latencies, 0.99), None,
                   False, {"tcp-verify median ms": ms(statistics.median(floor.latencies)),
                           "tcp-verify p99 ms": ms(percentile(floor.latencies, 0.99)),
                           "p99 ms of every run": p99s("tcp-verify"),
                           "CPU us per tx per node": per_tx_node_us(floor.cpu_s)})]
    return rows


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _harness import parser, report
    from ledger import Workload
    from n3xus.node.logs import configure_logging

    configure_logging("warning")
    args = parser("the 10-node gossip burst rows of bench/federation.py").parse_args()
    workload = Workload(BURST)
    rows = burst_rows(bytes(workload.genesis), workload.issuance, workload.transfers[:BURST],
                      max(1, args.repeats))
    report("federation: 10-node gossip burst", rows, {}, args.json)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        _node_main(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        sys.stdout.flush()
        os._exit(0)  # the verify pool's idle threads need not be joined
    main()
