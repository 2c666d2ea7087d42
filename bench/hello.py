"""The signed hello: verification cost and exchange time, each against its ceiling.

* verification: ``verify_hello`` on a complete hello (schema parse, identity, ed25519
  signature, session, clock, version, policy, and both checkpoint notes opened and their
  signatures checked) vs the three bare ed25519 verifications with PyNaCl (the hello's and
  the two notes') -- the part no implementation can skip; also the first-contact cost (no
  cached key derivations);
* exchange: the four-frame ``/n3xus/hello/1.0.0`` exchange (two signatures made, two hellos
  verified) on a fresh stream between two n3xus hosts vs two 32-byte ping round trips on a
  fresh stream of the same connection (the exchange's two round trips without the crypto);
* informational: connect -> both sides accepted, with the node's HelloService on both hosts
  (fresh connection each time: TCP + Noise + Yamux + the hello), median and p95.

    python bench/hello.py [--json] [--large] [--repeats N]
"""

from __future__ import annotations

import logging
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from nacl.signing import SigningKey, VerifyKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Result, parser, report  # noqa: E402
from n3xus.canon.checkpoint import Checkpoint  # noqa: E402
from n3xus.canon.cid import cid_of  # noqa: E402
from n3xus.node.p2p import host as p2p  # noqa: E402
from n3xus.node.p2p.hello import HelloService  # noqa: E402
from n3xus.node.services.peers import PeerBook  # noqa: E402
from n3xus.protocol.hello import (  # noqa: E402
    HELLO_PROTOCOL_ID,
    FederationPolicy,
    HelloConfig,
    HelloExchange,
    Role,
    Session,
    sign_hello,
    verify_hello,
)
from n3xus.protocol.identity import canon_origin, ledger_origin  # noqa: E402

NETWORK = cid_of(b"bench network")


def config_for(seed: bytes) -> HelloConfig:
    key = SigningKey(seed)
    peer = HelloConfig(key, "0.1.0", "bench", (), (), NETWORK, FederationPolicy((NETWORK,))).peer_id
    canon = Checkpoint(canon_origin(peer), 1000, os.urandom(32)).sign(canon_origin(peer), key)
    origin = ledger_origin(NETWORK, peer)
    ledger = Checkpoint(origin, 5000, os.urandom(32)).sign(origin, key)
    return HelloConfig(key, "0.1.0", "bench/0.1.0", ("/ipfs/ping/1.0.0", "/n3xus/blocks/1.0.0",
                                                     HELLO_PROTOCOL_ID), ("witness",),
                       NETWORK, FederationPolicy((NETWORK,)), canon, ledger)


def measure_verification(count: int, repeats: int) -> Result:
    ours_config, theirs_config = config_for(bytes([1]) * 32), config_for(bytes([2]) * 32)
    session = Session(theirs_config.peer_id, ours_config.peer_id, os.urandom(32), os.urandom(32))
    now = time.time_ns() // 1_000_000
    hello = sign_hello(theirs_config, session, now)
    verify_key = VerifyKey(hello.key)
    from n3xus.canon.note import parse_note
    from n3xus.protocol import identity
    from n3xus.protocol.hello import Hello

    # The three signatures no implementation can skip: the hello's and its two notes'.
    signed = [(hello.signing_bytes(), hello.signature)]
    for note in (theirs_config.canon_checkpoint, theirs_config.ledger_checkpoint):
        assert note is not None
        parsed = parse_note(note)
        text = parsed.text.encode()
        signed.append((text, parsed.signatures[0].signature))
    message = hello.to_message()

    def one() -> None:
        verify_hello(Hello.parse(message), config=ours_config, session=session,
                     sender=Role.INITIATOR, sender_peer_id=theirs_config.peer_id, now_ms=now)

    def ours() -> None:
        for _ in range(count):
            one()

    def ceiling() -> None:
        for _ in range(count):
            for data, signature in signed:
                verify_key.verify(data, signature)

    cold = []  # a peer never seen before: no cached key derivations
    for _ in range(min(count, 200)):
        identity.origin_verifier.cache_clear()
        identity.peer_id_of.cache_clear()
        started = time.perf_counter()
        one()
        cold.append(time.perf_counter() - started)

    ours_times, ceiling_times = [], []
    for i in range(repeats):
        for fn, out in ((ours, ours_times), (ceiling, ceiling_times))[:: 1 if i % 2 == 0 else -1]:
            started = time.perf_counter()
            fn()
            out.append(time.perf_counter() - started)
    return Result("hello verification", "hellos", count, statistics.median(ours_times),
                  statistics.median(ceiling_times), None, True,
                  {"verify_hello_us (peer seen before)": round(statistics.median(ours_times) / count * 1e6, 1),
                   "verify_hello_us (first contact)": round(statistics.median(cold) * 1e6, 1),
                   "three_ed25519_verifications_us": round(statistics.median(ceiling_times) / count * 1e6, 1),
                   "hello_bytes": len(hello.to_block())})


async def _exchange(initiator: Any, responder_id: Any, config: HelloConfig, remote: str) -> None:
    stream = await initiator.new_stream(responder_id, [TProtocol(HELLO_PROTOCOL_ID)])
    core = HelloExchange(Role.INITIATOR, config, local_peer=config.peer_id, remote_peer=remote,
                         now=trio.current_time())
    await stream.write(core.start())
    while not core.finished:
        out = core.receive_data(await stream.read(65536), now=trio.current_time(),
                                wall_ms=time.time_ns() // 1_000_000)
        if out:
            await stream.write(out)
    assert core.result is not None, core.error
    await stream.close()


async def _responder(config: HelloConfig, stream: Any) -> None:
    core = HelloExchange(Role.RESPONDER, config, local_peer=config.peer_id,
                         remote_peer=str(stream.muxed_conn.peer_id), now=trio.current_time())
    while not core.finished:
        data = await stream.read(65536)
        if not data:
            break
        out = core.receive_data(data, now=trio.current_time(), wall_ms=time.time_ns() // 1_000_000)
        if out:
            await stream.write(out)
    await stream.close()


async def measure_exchange(count: int, repeats: int) -> Result:
    a_config, b_config = config_for(bytes([3]) * 32), config_for(bytes([4]) * 32)
    a = p2p.make_host(p2p.keypair_from_seed(bytes([3]) * 32))
    b = p2p.make_host(p2p.keypair_from_seed(bytes([4]) * 32))

    async def handler(stream: Any) -> None:
        await _responder(b_config, stream)

    b.set_stream_handler(TProtocol(HELLO_PROTOCOL_ID), handler)
    async with p2p.running_host(a, []), p2p.running_host(b, ["/ip4/127.0.0.1/tcp/0"]) as addrs:
        b_id = p2p.parse_peer_id(await p2p.connect(a, addrs[0]))

        async def ours() -> None:
            for _ in range(count):
                await _exchange(a, b_id, a_config, b_config.peer_id)

        async def ceiling() -> None:
            for _ in range(count):
                stream = await a.new_stream(b_id, [p2p.PING_PROTOCOL_ID])
                for _ in range(2):
                    await stream.write(b"p" * 32)
                    await p2p.read_exactly(stream, 32)
                await stream.close()

        ours_times, ceiling_times = [], []
        for i in range(repeats):
            for fn, out in ((ours, ours_times), (ceiling, ceiling_times))[:: 1 if i % 2 == 0 else -1]:
                started = time.perf_counter()
                await fn()
                out.append(time.perf_counter() - started)
    return Result("hello exchange (existing connection)", "exchanges", count,
                  statistics.median(ours_times), statistics.median(ceiling_times), None, True,
                  {"exchange_ms": round(statistics.median(ours_times) / count * 1000, 2),
                   "two_ping_round_trips_ms": round(statistics.median(ceiling_times) / count * 1000, 2)})


async def measure_fresh_connections(count: int) -> dict[str, Any]:
    """connect() -> both HelloServices accepted, on a fresh connection each time."""
    b_seed = secrets.token_bytes(32)
    b = p2p.make_host(p2p.keypair_from_seed(b_seed))
    b_book = PeerBook(p2p.gate_of(b))
    b_config = config_for(b_seed)
    times: list[float] = []
    async with p2p.running_host(b, ["/ip4/127.0.0.1/tcp/0"]) as addrs, trio.open_nursery() as nursery:
        async def b_make() -> HelloConfig:
            return b_config

        await nursery.start(HelloService(b, b_book, b_make).run)
        for _ in range(count):
            seed = secrets.token_bytes(32)
            a = p2p.make_host(p2p.keypair_from_seed(seed))
            a_book, a_config = PeerBook(p2p.gate_of(a)), config_for(seed)
            async with p2p.running_host(a, []), trio.open_nursery() as inner:
                async def a_make(config: HelloConfig = a_config) -> HelloConfig:
                    return config

                await inner.start(HelloService(a, a_book, a_make).run)
                started = time.perf_counter()
                await p2p.connect(a, addrs[0])
                a_id = str(a.get_id())
                while not (a_book.is_accepted(b_config.peer_id) and b_book.is_accepted(a_id)):
                    await trio.sleep(0.001)
                times.append(time.perf_counter() - started)
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    times.sort()
    return {"fresh connection + hello, both sides accepted (median ms)": round(statistics.median(times) * 1000, 1),
            "fresh connection + hello (p95 ms)": round(times[int(len(times) * 0.95) - 1] * 1000, 1),
            "fresh connections measured": len(times)}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    logging.disable(logging.WARNING)
    verification = measure_verification(2000 if args.large else 300, args.repeats)
    exchange = trio.run(measure_exchange, 200 if args.large else 40, args.repeats)
    fresh = trio.run(measure_fresh_connections, 100 if args.large else 20)
    report("hello: verification and exchange vs their ceilings", [verification, exchange], fresh,
           args.json)


if __name__ == "__main__":
    main()
