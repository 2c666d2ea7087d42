"""libp2p round trips through the node's host vs raw TCP on loopback.

Ours: 32-byte echo round trips over one /ipfs/ping/1.0.0 stream between two n3xus
hosts (TCP + Noise + Yamux, as the node runs them). Ceiling: the same round trips
over a plain trio TCP connection with nothing in between. Both in one trio run,
interleaved. The ratio shows what security + multiplexing cost per message.

    python bench/p2p.py [--json] [--large] [--repeats N]
"""

from __future__ import annotations

import statistics
import sys
import time
from functools import partial
from pathlib import Path

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


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    round_trips = 20_000 if args.large else 2_000
    result = trio.run(measure, round_trips, args.repeats)
    report("libp2p (Noise+Yamux) vs raw TCP round trips", [result], {}, args.json)


if __name__ == "__main__":
    main()
