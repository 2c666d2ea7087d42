"""libp2p round trips through the node's host vs raw TCP on loopback.

Ours: 32-byte echo round trips over one /ipfs/ping/1.0.0 stream between two n3xus
hosts (TCP + Noise + Yamux, as the node runs them). Ceiling: the same round trips
over a plain trio TCP connection with nothing in between. Both in one trio run,
interleaved. The ratio shows what security + multiplexing cost per message.

``--flood`` adds the connection-abuse measurements of issue 8 (informational
lines, not in the ratio), each on the node's host and on py-libp2p's own swarm
(the node before node/p2p/limits.py) in the same run:

* lockout: FLOOD_SILENT silent TCP connections, then FLOOD_DIALS fresh peers
  dial and ping: how many are refused, and how long the others take;
* rate: FLOOD_RATE new silent connections a second for FLOOD_RATE_SECONDS while
  a fresh peer dials and pings every second: how many dials are refused.

    python bench/p2p.py [--json] [--large] [--repeats N] [--flood]
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Result, parser, report  # noqa: E402
from n3xus.node.p2p import host as p2p  # noqa: E402

PAYLOAD = b"n" * 32


async def _echo_server(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass  # the client went away at the end of the run: nothing to do


async def _tcp_round_trips(stream: trio.SocketStream, n: int) -> None:
    for _ in range(n):
        await stream.send_all(PAYLOAD)
        got = b""
        while len(got) < len(PAYLOAD):
            got += await stream.receive_some(len(PAYLOAD) - len(got))


async def _p2p_round_trips(stream: object, n: int) -> None:
    for _ in range(n):
        await stream.write(PAYLOAD)  # type: ignore[attr-defined]
        got = b""
        while len(got) < len(PAYLOAD):
            got += await stream.read(len(PAYLOAD) - len(got))  # type: ignore[attr-defined]


async def measure(round_trips: int, repeats: int) -> Result:
    import secrets

    server = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
    client = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
    ours: list[float] = []
    ceiling: list[float] = []
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _echo_server, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with p2p.running_host(server, ["/ip4/127.0.0.1/tcp/0"]) as addrs, \
                p2p.running_host(client, []):
            await p2p.connect(client, addrs[0])
            stream = await client.new_stream(server.get_id(), [p2p.PING_PROTOCOL_ID])
            await _p2p_round_trips(stream, 10)  # warm up both paths
            await _tcp_round_trips(tcp, 10)
            for _ in range(repeats):
                t = time.perf_counter()
                await _p2p_round_trips(stream, round_trips)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                await _tcp_round_trips(tcp, round_trips)
                ceiling.append(time.perf_counter() - t)
            await stream.close()
        await tcp.aclose()
        nursery.cancel_scope.cancel()
    return Result("32-byte round trips (ping stream)", "round-trips", round_trips,
                  statistics.median(ours), statistics.median(ceiling), None, True, {})


# The numbers: 250 silent connections filled every inbound slot; at 40 new
# silent connections a second, fresh dials were refused.
FLOOD_SILENT = 250
FLOOD_DIALS = 5
FLOOD_RATE = 40
FLOOD_RATE_SECONDS = 15
# A fresh dial + ping that takes longer than this counts as refused.
FLOOD_DIAL_TIMEOUT_S = 5.0


def _upstream_host(seed: bytes) -> Any:
    """py-libp2p's own new_host (upstream Swarm), Noise and Yamux only: the node's
    host as it was before the connection gate."""
    from libp2p import new_host
    from libp2p.crypto.x25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.network.config import ConnectionConfig
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
    from libp2p.security.noise.transport import Transport as NoiseTransport
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
    from libp2p.stream_muxer.yamux.yamux import Yamux

    key_pair = p2p.keypair_from_seed(seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_new_key_pair().private_key)
    # The library's connection defaults (10 s upgrade timeout, 250 inbound
    # slots), with the one setting the node had before: one connection per peer.
    return new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE): noise},
                    muxer_opt={TProtocol(YAMUX): Yamux},
                    connection_config=ConnectionConfig(
                        max_connections_per_peer=p2p.MAX_CONNECTIONS_PER_PEER))


@asynccontextmanager
async def _flood_server(kind: str) -> AsyncIterator[str]:
    import secrets

    from multiaddr import Multiaddr

    if kind == "ours":
        host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
        async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs:
            yield addrs[0]
    else:
        host = _upstream_host(secrets.token_bytes(32))
        async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            yield str(host.get_addrs()[0])


async def _silent(port: int, held: list[trio.socket.SocketType]) -> None:
    sock = trio.socket.socket()
    try:
        await sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        return
    held.append(sock)


async def _fresh_dial(addr: str) -> float | None:
    """Seconds for a brand-new peer to connect and ping, None if refused."""
    import secrets

    client = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
    async with p2p.running_host(client, []):
        started = time.perf_counter()
        with trio.move_on_after(FLOOD_DIAL_TIMEOUT_S):
            try:
                await p2p.ping(client, await p2p.connect(client, addr))
                return time.perf_counter() - started
            except (p2p.DialError, p2p.PingError):
                return None
    return None


async def _lockout(kind: str) -> dict[str, Any]:
    async with _flood_server(kind) as addr:
        held: list[trio.socket.SocketType] = []
        async with trio.open_nursery() as nursery:
            for _ in range(FLOOD_SILENT):
                nursery.start_soon(_silent, int(addr.split("/")[4]), held)
        dials = [await _fresh_dial(addr) for _ in range(FLOOD_DIALS)]
        for sock in held:
            sock.close()
    ok = [d for d in dials if d is not None]
    return {"refused": f"{len(dials) - len(ok)}/{len(dials)}",
            "median_ms": round(statistics.median(ok) * 1000, 1) if ok else None}


async def _rate(kind: str) -> dict[str, Any]:
    async with _flood_server(kind) as addr:
        held: list[trio.socket.SocketType] = []
        dials: list[float | None] = []
        async with trio.open_nursery() as nursery:
            async def flood() -> None:
                for _ in range(FLOOD_RATE * FLOOD_RATE_SECONDS):
                    nursery.start_soon(_silent, int(addr.split("/")[4]), held)
                    await trio.sleep(1 / FLOOD_RATE)

            nursery.start_soon(flood)
            for _ in range(FLOOD_RATE_SECONDS):
                await trio.sleep(1.0)
                dials.append(await _fresh_dial(addr))
        for sock in held:
            sock.close()
    ok = [d for d in dials if d is not None]
    return {"refused": f"{len(dials) - len(ok)}/{len(dials)}",
            "median_ms": round(statistics.median(ok) * 1000, 1) if ok else None}


async def measure_floods() -> dict[str, Any]:
    logging.disable(logging.CRITICAL)  # libp2p logs every refused connection
    out: dict[str, Any] = {}
    for kind in ("upstream", "ours"):
        out[f"flood {FLOOD_SILENT} silent, then {FLOOD_DIALS} dials ({kind})"] = await _lockout(kind)
        out[f"flood {FLOOD_RATE}/s silent for {FLOOD_RATE_SECONDS} s, "
            f"a dial each second ({kind})"] = await _rate(kind)
    return out


def main() -> None:
    arg_parser = parser(__doc__.splitlines()[0])
    arg_parser.add_argument("--flood", action="store_true",
                            help="also measure silent-connection floods (about a minute)")
    args = arg_parser.parse_args()
    round_trips = 20_000 if args.large else 2_000
    result = trio.run(measure, round_trips, args.repeats)
    extra = trio.run(measure_floods) if args.flood else {}
    report("libp2p (Noise+Yamux) vs raw TCP round trips", [result], extra, args.json)


if __name__ == "__main__":
    main()
