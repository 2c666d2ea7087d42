"""Block exchange between two nodes: /n3xus/blocks/1.0.0 over libp2p vs the same bytes over
a raw TCP socket, in the same run; and ledger federation (``_federation_ledger.py``: a gossip
burst over 10 nodes vs a TCP flood, catch-up vs local ingest, verify ahead of apply).

A server process (this script with ``--serve``) holds two DAGs in its LMDB block store:
10,000 blocks of 1 KiB (a file chunked at 1 KiB) and one 100 MiB file (256 KiB chunks). The
client (this process) fetches each into a fresh LMDB store:

* **ours**: the node's path: a FetchService (DagFetch planner, BlocksRequester, verify each
  block against its CID, store in batches) talking to a BlockServer over libp2p (TCP, Noise,
  Yamux) -- what ``n3xus canon fetch`` does;
* **ceiling**: the same blocks read from the same store by the server, sent over a plain TCP
  socket as ``varint(len cid) cid varint(len data) data`` in DAG order (no wants, no
  encryption, no multiplexing), verified and stored by the client the same way.

So the ratio is what libp2p plus the wire protocol cost on top of the work any node-to-node
transfer does (read, hash, write). ``transport`` lines (informational) compare the bare
transports: 64 MiB through one libp2p stream vs one TCP socket, nothing stored.

Also measured: the hello handshake between two nodes (median of fresh connections), when
the hello service is present.

    python bench/federation.py [--json] [--large] [--repeats N]
"""

from __future__ import annotations

import io
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
from functools import partial
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nacl.signing import SigningKey  # noqa: E402

from _harness import Result, parser, report  # noqa: E402
from n3xus.canon import car, files  # noqa: E402
from n3xus.canon.blockstore import digest_matches  # noqa: E402
from n3xus.canon.cid import CID  # noqa: E402
from n3xus.canon.multiformats import encode_varint  # noqa: E402
from n3xus.node.p2p import host as p2p  # noqa: E402
from n3xus.node.p2p.blocks import BlockServer  # noqa: E402
from n3xus.node.services.canon import CanonService  # noqa: E402
from n3xus.node.services.fetch import FLUSH_BYTES, FetchService  # noqa: E402
from n3xus.node.storage import open_environment  # noqa: E402

SMALL_BLOCKS = 10_000
SMALL_BLOCK_BYTES = 1024
LARGE_FILE_BYTES = 100 * 1024 * 1024
TRANSPORT_BYTES = 64 * 1024 * 1024
MAP_SIZE_MIB = 4096
HANDSHAKES = 15
TCP_PIECE = 1024 * 1024
SINK = TProtocol("/n3xus-bench/sink/1.0.0")


def _canon(path: Path) -> CanonService:
    env = open_environment(path, MAP_SIZE_MIB)
    return CanonService(env, SigningKey(secrets.token_bytes(32)), "bench/federation")


# --- the server process -----------------------------------------------------------------


async def _raw_serve(canon: CanonService, stream: trio.SocketStream) -> None:
    """Raw TCP ceiling: read a root CID line, send every block of its DAG, then 0."""
    line = b""
    while not line.endswith(b"\n"):
        piece = await stream.receive_some(256)
        if not piece:
            return
        line += piece
    root = CID(line.strip().decode())
    out = bytearray()
    for cid, data in car.iter_dag(canon.store, [root]):
        raw = bytes(cid)
        out += encode_varint(len(raw)) + raw + encode_varint(len(data)) + data
        if len(out) >= TCP_PIECE:
            await stream.send_all(out)
            out = bytearray()
    await stream.send_all(bytes(out) + encode_varint(0))


def serve(directory: Path, large_bytes: int) -> None:
    canon = _canon(directory / "lmdb")
    # 1 KiB chunks: SMALL_BLOCKS raw leaves under a few DAG-CBOR nodes.
    with canon.store.session() as session:
        small = files.add_stream(session, io.BytesIO(os.urandom(SMALL_BLOCKS * SMALL_BLOCK_BYTES)),
                                 chunk_size=SMALL_BLOCK_BYTES)
        session.pin(small, "small")
    large, _ = canon.add_file(io.BytesIO(os.urandom(large_bytes)), pin=True)

    async def main() -> None:
        host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
        BlockServer(host, canon.store).register()
        host.set_stream_handler(SINK, _libp2p_sink)
        async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs, \
                trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, partial(_raw_serve, canon),
                                                    0, host="127.0.0.1"))
            sink = await nursery.start(partial(trio.serve_tcp, _sink, 0, host="127.0.0.1"))
            print(json.dumps({"addr": addrs[0], "small": str(small), "large": str(large),
                              "pid": os.getpid(),
                              "tcp_port": listeners[0].socket.getsockname()[1],
                              "sink_port": sink[0].socket.getsockname()[1]}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the client closes it
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _libp2p_sink(stream: Any) -> None:
    try:
        while await stream.read(TCP_PIECE):
            pass
    except EOFError:
        pass  # the pusher half-closed: everything arrived
    await stream.write(b"k")
    await stream.close()


async def _sink(stream: trio.SocketStream) -> None:
    while await stream.receive_some(TCP_PIECE):
        pass
    await stream.send_all(b"k")


# --- the client -----------------------------------------------------------------------------


class _Fresh:
    """A fresh LMDB store for each timed fetch (so every run stores everything)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-fed-"))
        self.count = 0

    def canon(self) -> CanonService:
        self.count += 1
        return _canon(self.root / f"s{self.count}")

    def clean(self, canon: CanonService) -> None:
        canon.env.close()
        shutil.rmtree(self.root / f"s{self.count}", ignore_errors=True)


async def _fetch_ours(host: Any, peer_addr: str, root: CID, canon: CanonService) -> int:
    async with trio.open_nursery() as nursery:
        service = await nursery.start(FetchService(host, canon, announce=False).run)
        job = await service.fetch(root, [peer_addr], pin=False)
        nursery.cancel_scope.cancel()
    if job.state != "done":
        raise RuntimeError(f"fetch failed: {job.error}")
    return int(job.status()["blocks_fetched"])


async def _fetch_raw(port: int, root: CID, canon: CanonService) -> int:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"{root}\n".encode())
    buffer = bytearray()
    batch: list[tuple[CID, bytes]] = []
    size = 0
    blocks = 0
    done = False
    while not done:
        piece = await stream.receive_some(TCP_PIECE)
        if not piece:
            raise RuntimeError("raw server closed early")
        buffer += piece
        offset = 0
        while True:
            parsed = _parse_block(buffer, offset)
            if parsed is None:
                break
            if parsed == "end":
                done = True
                break
            cid, data, offset = parsed
            if not digest_matches(cid, data):
                raise RuntimeError(f"block {cid} does not match")
            batch.append((cid, data))
            size += len(data)
            blocks += 1
            if size >= FLUSH_BYTES:
                await trio.to_thread.run_sync(canon.store.put_blocks, batch)
                batch, size = [], 0
        del buffer[:offset]
    if batch:
        await trio.to_thread.run_sync(canon.store.put_blocks, batch)
    await stream.aclose()
    return blocks


def _varint(buffer: bytearray, offset: int) -> tuple[int, int] | None:
    value = shift = 0
    while offset < len(buffer):
        byte = buffer[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            return value, offset
        shift += 7
    return None


def _parse_block(buffer: bytearray, offset: int) -> tuple[CID, bytes, int] | str | None:
    head = _varint(buffer, offset)
    if head is None:
        return None
    cid_len, at = head
    if cid_len == 0:
        return "end"
    if at + cid_len > len(buffer):
        return None
    cid = CID(bytes(buffer[at:at + cid_len]))
    body = _varint(buffer, at + cid_len)
    if body is None:
        return None
    data_len, at = body
    if at + data_len > len(buffer):
        return None
    return cid, bytes(buffer[at:at + data_len]), at + data_len


async def _push_libp2p(host: Any, info: dict[str, Any], total: int) -> float:
    piece = os.urandom(TCP_PIECE)
    stream = await host.new_stream(p2p.parse_peer_id(info["addr"].rsplit("/", 1)[1]), [SINK])
    started = time.perf_counter()
    for _ in range(total // TCP_PIECE):
        await stream.write(piece)
    await stream.close()  # half-close: the sink answers once it has read everything
    await stream.read(1)
    return time.perf_counter() - started


async def _push_tcp(info: dict[str, Any], total: int) -> float:
    piece = os.urandom(TCP_PIECE)
    tcp = await trio.open_tcp_stream("127.0.0.1", info["sink_port"])
    started = time.perf_counter()
    for _ in range(total // TCP_PIECE):
        await tcp.send_all(piece)
    await tcp.send_eof()
    await tcp.receive_some(1)
    elapsed = time.perf_counter() - started
    await tcp.aclose()
    return elapsed


async def _handshakes(count: int) -> dict[str, Any]:
    """Median time from dial to a completed hello (Noise, Yamux, identify, the signed hello
    both ways) between two hosts of this process, each with its PeerBook and HelloService;
    and the median cost of verifying one hello."""
    from n3xus.canon.cid import cid_of
    from n3xus.node import __version__
    from n3xus.node.p2p.hello import HelloService
    from n3xus.node.services.peers import PeerBook
    from n3xus.protocol.hello import FederationPolicy, HelloConfig

    network = cid_of(b"bench network", "raw")

    def config_of(key: bytes) -> HelloConfig:
        return HelloConfig(signing_key=SigningKey(key), version=__version__, agent="bench",
                           protocols=(), capabilities=(), network=network,
                           policy=FederationPolicy((network,)))

    def configured(key: bytes) -> Callable[[], Awaitable[HelloConfig]]:
        async def make() -> HelloConfig:
            return config_of(key)
        return make

    server_key = secrets.token_bytes(32)
    server = p2p.make_host(p2p.keypair_from_seed(server_key))
    server_book = PeerBook(p2p.gate_of(server))
    times: list[float] = []
    exchange_times: list[float] = []
    async with p2p.running_host(server, ["/ip4/127.0.0.1/tcp/0"]) as addrs, \
            trio.open_nursery() as nursery:
        server_hello = await nursery.start(HelloService(server, server_book,
                                                        configured(server_key)).run)
        for _ in range(count):
            key = secrets.token_bytes(32)
            client = p2p.make_host(p2p.keypair_from_seed(key))
            book = PeerBook(p2p.gate_of(client))
            async with p2p.running_host(client, []), trio.open_nursery() as inner:
                await inner.start(HelloService(client, book, configured(key)).run)
                started = time.perf_counter()
                await p2p.connect(client, addrs[0])
                if not await book.wait_accepted(p2p.peer_id_of(server), 10.0):
                    raise RuntimeError("the hello did not complete")
                times.append(time.perf_counter() - started)
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    exchange_times = list(server_hello.durations)
    return {"handshake (dial + Noise + hello) median ms": round(statistics.median(times) * 1000, 1),
            "hello exchange alone (responder side) median ms":
                round(statistics.median(exchange_times) * 1000, 1) if exchange_times else None}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (Linux /proc), threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _timed(fresh: _Fresh, work: Callable[[CanonService], Awaitable[int]],
                 server_pid: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of both processes) of one fetch into a fresh store."""
    canon = fresh.canon()
    cpu = _cpu_seconds(os.getpid()) + _cpu_seconds(server_pid)
    started = time.perf_counter()
    await work(canon)
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(os.getpid()) + _cpu_seconds(server_pid) - cpu
    fresh.clean(canon)
    return wall, cpu


async def measure(info: dict[str, Any], repeats: int, large_bytes: int) -> list[Result]:
    fresh = _Fresh()
    host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
    results = []
    async with p2p.running_host(host, []):
        await p2p.connect(host, info["addr"])
        cases = [("10,000 blocks of 1 KiB", CID(info["small"]), SMALL_BLOCKS, "blocks", None),
                 (f"{large_bytes >> 20} MiB file", CID(info["large"]), large_bytes >> 20, "MiB",
                  0.5)]
        for name, root, units, unit, target in cases:
            ours_work = partial(_fetch_ours, host, info["addr"], root)
            raw_work = partial(_fetch_raw, info["tcp_port"], root)
            await ours_work(fresh.canon())  # warm up both paths (and check they work)
            await raw_work(fresh.canon())
            ours: list[tuple[float, float]] = []
            ceiling: list[tuple[float, float]] = []
            for index in range(repeats):  # interleaved: a noisy moment hurts both alike
                pair = [(ours, ours_work), (ceiling, raw_work)]
                for times, work in (pair if index % 2 == 0 else pair[::-1]):
                    times.append(await _timed(fresh, work, info["pid"]))
            # CPU per unit does not depend on what else runs on the machine (wall time
            # does, a lot, on a shared 2-core box): the same comparison in CPU.
            cpu_ours = statistics.median(c for _, c in ours)
            cpu_ceiling = statistics.median(c for _, c in ceiling)
            notes = {"CPU of both processes, ms per " + unit.rstrip("s"):
                     f"ours {cpu_ours / units * 1000:.3f}, ceiling "
                     f"{cpu_ceiling / units * 1000:.3f} (CPU ratio {cpu_ceiling / cpu_ours:.3f})"}
            results.append(Result(f"{name}: libp2p fetch vs raw TCP", unit, units,
                                  statistics.median(w for w, _ in ours),
                                  statistics.median(w for w, _ in ceiling), target, True, notes))
        pushes: dict[str, list[float]] = {"libp2p": [], "tcp": []}
        for _ in range(repeats):
            pushes["libp2p"].append(await _push_libp2p(host, info, TRANSPORT_BYTES))
            pushes["tcp"].append(await _push_tcp(info, TRANSPORT_BYTES))
        results.append(Result(f"transport only: {TRANSPORT_BYTES >> 20} MiB, one stream vs TCP",
                              "MiB", TRANSPORT_BYTES >> 20, statistics.median(pushes["libp2p"]),
                              statistics.median(pushes["tcp"]), None, False, {}))
    shutil.rmtree(fresh.root, ignore_errors=True)
    return results


def build(args: Any) -> tuple[list[Result], dict[str, Any]]:
    large_bytes = LARGE_FILE_BYTES * (4 if args.large else 1)
    directory = Path(tempfile.mkdtemp(prefix="bench-fed-server-"))
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(directory),
                               str(large_bytes)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert server.stdout is not None and server.stdin is not None
        info = json.loads(server.stdout.readline())
        results = trio.run(measure, info, args.repeats, large_bytes)
        extra = trio.run(_handshakes, HANDSHAKES)
        # Ledger federation (issue 9): gossip burst, catch-up, verify ahead of apply.
        from _federation_ledger import rows as ledger_rows

        ledger_results, ledger_extra = ledger_rows(args.large)
        results += ledger_results
        extra.update(ledger_extra)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)
    return results, extra


if __name__ == "__main__":
    from n3xus.node.logs import configure_logging

    configure_logging("warning")  # stdout carries the report only
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        arguments = parser(__doc__.splitlines()[0]).parse_args()
        found, extra = build(arguments)
        report("federation: block exchange", found, extra, arguments.json)
