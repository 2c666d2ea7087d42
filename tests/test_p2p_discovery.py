"""Discovery and connectivity (node/p2p/discovery.py): the reconnect plan as pure
state, then real hosts on 127.0.0.1 finding each other through the DHT and mDNS,
announcing and finding CID providers, reconnecting after a restart, and noticing
a peer behind a link that went silent."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from libp2p.host.basic_host import BasicHost
from prometheus_client import CollectorRegistry, generate_latest

from n3xus.canon.cid import CID
from n3xus.node.errors import AddressError, NodeError
from n3xus.node.p2p import discovery as disc
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.discovery import Discovery, DiscoveryConfig, ReconnectPlan, backoff_delay

LOCAL = "/ip4/127.0.0.1/tcp/0"
# B and C bootstrap from A only: they must find each other within this long.
# Measured ~1.6 s in process; the first lookups run at once and 2 s later.
FIND_EACH_OTHER_BOUND_SECONDS = 15.0
# Short keepalive settings for the in-process test, so it runs in seconds; the
# CLI test (test_p2p_cli.py) checks the node's real defaults.
FAST_KEEPALIVE = dict(keepalive_interval_s=0.5, keepalive_timeout_s=0.5, keepalive_misses=2)
FAST_BOUND = 2 * (0.5 + 0.5) + disc.DISCONNECT_TIMEOUT_SECONDS
SLACK_SECONDS = 2.0
# A CID of the canon codec (a DAG-CBOR block's BLAKE3 CID would do as well).
SOME_CID = "bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def seed(index: int) -> bytes:
    return bytes([7, index]) * 16


# -- backoff and the reconnect plan ----------------------------------------------


@given(st.integers(1, 200), st.integers(0, 2**32))
def test_backoff_doubles_is_capped_and_jittered(failures: int, rng_seed: int) -> None:
    delay = backoff_delay(failures, random.Random(rng_seed))
    nominal = min(disc.RECONNECT_BASE_DELAY_SECONDS * 2 ** min(failures - 1, 40),
                  disc.RECONNECT_MAX_DELAY_SECONDS)
    assert nominal * (1 - disc.RECONNECT_JITTER) <= delay <= nominal * (1 + disc.RECONNECT_JITTER)


def test_backoff_spreads_peers_that_failed_together() -> None:
    rng = random.Random(1)
    delays = {round(backoff_delay(5, rng), 3) for _ in range(50)}
    assert len(delays) > 40  # not in lockstep
    with pytest.raises(ValueError):
        backoff_delay(0, rng)


def test_plan_retries_with_growing_delays_and_resets_on_success() -> None:
    plan = ReconnectPlan(random.Random(3))
    plan.add_bootstrap("A", "/ip4/127.0.0.1/tcp/1/p2p/A", now=0.0)
    now = 0.0
    delays = []
    for _ in range(6):
        (target,) = plan.due(now, connected=set())
        plan.dial_started(target)
        assert plan.due(now, connected=set()) == []  # one dial at a time per peer
        delays.append(plan.dial_failed(target, now))
        assert plan.due(now + delays[-1] * 0.99, connected=set()) == []
        now += delays[-1]
    assert all(later > earlier for earlier, later in zip(delays, delays[1:], strict=False))
    (target,) = plan.due(now, connected=set())
    plan.dial_started(target)
    plan.dial_succeeded(target, now)
    assert target.failures == 0
    assert plan.due(now, connected={"A"}) == []
    assert [t.peer_id for t in plan.due(now + 1, connected=set())] == ["A"]


def test_useful_peers_are_remembered_for_a_while_and_bounded() -> None:
    plan = ReconnectPlan(random.Random(4))
    plan.add_bootstrap("boot", "/ip4/127.0.0.1/tcp/1/p2p/boot", now=0.0)
    plan.connected("B", ["/ip4/127.0.0.1/tcp/2/p2p/B"], now=0.0)
    plan.connected("C", [], now=0.0)  # no dialable address: nothing to redial
    assert {t.peer_id for t in plan.due(1.0, connected=set())} == {"boot", "B"}
    later = disc.RECENTLY_USEFUL_SECONDS + 1
    assert {t.peer_id for t in plan.due(later, connected=set())} == {"boot"}
    for index in range(disc.MAX_USEFUL_PEERS + 10):
        plan.connected(f"P{index}", [f"/ip4/127.0.0.1/tcp/3/p2p/P{index}"], now=later + index)
    useful = [t for t in plan.targets.values() if not t.bootstrap]
    assert len(useful) == disc.MAX_USEFUL_PEERS
    assert "P0" not in plan.targets and "boot" in plan.targets  # oldest forgotten first


def test_addresses_per_peer_are_bounded_and_the_configured_one_stays() -> None:
    plan = ReconnectPlan(random.Random(5))
    plan.add_bootstrap("A", "/ip4/127.0.0.1/tcp/1/p2p/A", now=0.0)
    for port in range(2, 20):
        plan.connected("A", [f"/ip4/127.0.0.1/tcp/{port}/p2p/A"], now=float(port))
    addrs = plan.targets["A"].addrs
    assert len(addrs) == disc.MAX_ADDRS_PER_PEER
    assert addrs[0] == "/ip4/127.0.0.1/tcp/1/p2p/A" and addrs[-1].endswith("/tcp/19/p2p/A")


def test_a_bad_bootstrap_address_is_refused_up_front() -> None:
    host = p2p.make_host(p2p.keypair_from_seed(seed(1)))
    with pytest.raises(AddressError):
        Discovery(host, DiscoveryConfig(bootstrap=["/ip4/127.0.0.1/tcp/1"]))


# -- real hosts ----------------------------------------------------------------------


@asynccontextmanager
async def started(index: int, config: DiscoveryConfig | None = None,
                  listen: str = LOCAL, *, registry: CollectorRegistry | None = None
                  ) -> AsyncIterator[tuple[BasicHost, str, Discovery]]:
    host = p2p.make_host(p2p.keypair_from_seed(seed(index)))
    async with p2p.running_host(host, [listen]) as addrs, trio.open_nursery() as nursery:
        discovery = await nursery.start(Discovery(host, config, registry=registry).run)
        yield host, addrs[0], discovery
        nursery.cancel_scope.cancel()


def connected(host: BasicHost) -> set[str]:
    return {peer for peer, _ in p2p.connected_peers(host)}


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started_at = time.perf_counter()
    with trio.move_on_after(seconds):
        while not condition():
            await trio.sleep(0.05)
        return time.perf_counter() - started_at
    raise AssertionError(f"not within {seconds} s: {what}")


async def test_nodes_that_know_only_a_bootstrap_peer_find_each_other() -> None:
    async with started(1) as (a, a_addr, _), \
            started(2, DiscoveryConfig(bootstrap=[a_addr])) as (b, _, b_disc):
        await wait_until(lambda: p2p.peer_id_of(a) in connected(b), 5, "B connects to A")
        async with started(3, DiscoveryConfig(bootstrap=[a_addr])) as (c, _, c_disc):
            took = await wait_until(lambda: p2p.peer_id_of(c) in connected(b),
                                    FIND_EACH_OTHER_BOUND_SECONDS, "B and C connect")
            print(f"\nB and C found each other through A's DHT in {took:.2f} s")
            assert p2p.peer_id_of(b) in connected(c)
            # Found by a DHT lookup (whichever of the two looked first).
            await wait_until(lambda: b_disc.lookups + c_disc.lookups >= 1, 5, "a lookup")
            assert b_disc.snapshot()["routing_table_size"] >= 1
            assert b_disc.snapshot()["dht_protocol"] == "/ipfs/kad/1.0.0"


async def test_providers_are_announced_and_found_through_the_dht() -> None:
    cid = CID(SOME_CID)
    async with started(1) as (a, a_addr, a_disc), \
            started(2, DiscoveryConfig(bootstrap=[a_addr])) as (b, _, _), \
            started(3, DiscoveryConfig(bootstrap=[a_addr])) as (c, _, c_disc):
        await wait_until(lambda: len(connected(a)) == 2, 10, "B and C reach A")
        assert await c_disc.find_providers(cid) == []
        assert await a_disc.provide(cid)
        providers = dict(await c_disc.find_providers(str(cid)))
        assert list(providers) == [p2p.peer_id_of(a)]
        assert a_addr in providers[p2p.peer_id_of(a)]
        assert a_addr in await c_disc.find_peer(p2p.peer_id_of(a))
        assert p2p.peer_id_of(b) not in providers


async def test_content_routing_without_the_dht_is_a_clear_error() -> None:
    async with started(1, DiscoveryConfig(dht=False)) as (_, _, discovery):
        with pytest.raises(NodeError, match="DHT is off"):
            await discovery.find_providers(SOME_CID)
        assert discovery.snapshot()["dht"] is False


async def test_a_restarted_bootstrap_peer_is_reconnected() -> None:
    registry = CollectorRegistry()
    async with started(1) as (_, a_addr, _):
        pass  # A ran once, so its port is known; now it is gone
    a_id = a_addr.rsplit("/p2p/", 1)[1]
    async with started(2, DiscoveryConfig(bootstrap=[a_addr]), registry=registry) as (b, _, disc_b):
        # B retries with growing delays while A is down ...
        await wait_until(lambda: disc_b.plan.targets[a_id].failures >= 2, 10, "two failed dials")
        async with started(1, listen=a_addr.rsplit("/p2p/", 1)[0]):
            # ... and is back within the current backoff delay once A is.
            failures = disc_b.plan.targets[a_id].failures
            # The longest delay the next failure count can draw, jitter included.
            bound = (disc.RECONNECT_BASE_DELAY_SECONDS * 2 ** failures
                     * (1 + disc.RECONNECT_JITTER))
            took = await wait_until(lambda: a_id in connected(b), bound + SLACK_SECONDS,
                                    "B reconnects")
            print(f"\nreconnected {took:.2f} s after A came back ({failures} failed "
                  f"dials before; bound {bound:.1f} s + slack)")
        counted = registry.get_sample_value("n3xus_p2p_reconnect_failures_total")
        assert counted is not None and counted >= 2


class FreezableLink:
    """A TCP relay on 127.0.0.1 standing in for a network path: ``freeze()`` stops
    it carrying bytes without closing anything, like a peer that was SIGSTOPped
    or a cable pulled somewhere between the two nodes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = trio.Event()
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, inbound: trio.SocketStream) -> None:
        outbound = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, inbound, outbound)
            nursery.start_soon(self._pump, outbound, inbound)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(65536):
                if self.frozen.is_set():
                    await trio.sleep_forever()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def freeze(self) -> None:
        self.frozen.set()


async def test_keepalive_notices_a_peer_behind_a_silent_link() -> None:
    registry = CollectorRegistry()
    async with started(1) as (a, a_addr, _), trio.open_nursery() as nursery:
        link = FreezableLink(int(a_addr.split("/")[4]))
        port = await nursery.start(link.run)
        via_link = f"/ip4/127.0.0.1/tcp/{port}/p2p/{p2p.peer_id_of(a)}"
        config = DiscoveryConfig(**FAST_KEEPALIVE)  # type: ignore[arg-type]
        async with started(2, config, registry=registry) as (b, _, disc_b):
            a_id = await p2p.connect(b, via_link)
            # Keepalive pings go through and are recorded for the peers route.
            await wait_until(lambda: _rtt(b, a_id) is not None, 5, "a keepalive ping")
            link.freeze()
            frozen_at = time.perf_counter()
            await wait_until(lambda: a_id not in connected(b), FAST_BOUND + SLACK_SECONDS,
                             "B drops A")
            took = time.perf_counter() - frozen_at
            print(f"\nsilent peer dropped {took:.2f} s after its link froze "
                  f"(bound {FAST_BOUND:.1f} s + slack)")
            assert disc_b.snapshot()["vanished_peer_bound_s"] == FAST_BOUND
            assert "n3xus_p2p_keepalive_disconnects_total 1.0" in generate_latest(registry).decode()
        nursery.cancel_scope.cancel()


def _rtt(host: BasicHost, peer: str) -> float | None:
    for detail in p2p.peer_details(host):
        if detail["peer_id"] == peer:
            value = detail["last_ping_rtt_ms"]
            return None if value is None else float(value)
    return None


async def test_peer_details_show_direction_since_and_rtt() -> None:
    async with started(1) as (a, a_addr, _), started(2) as (b, _, _):
        before = time.time()
        await p2p.connect(b, a_addr)
        await p2p.ping(b, p2p.peer_id_of(a))
        await wait_until(lambda: bool(p2p.peer_details(a)), 5, "A sees B")
        (out,) = p2p.peer_details(b)
        (into,) = p2p.peer_details(a)
        assert out["direction"] == "outbound" and into["direction"] == "inbound"
        assert out["peer_id"] == p2p.peer_id_of(a)
        assert before - 1 <= out["connected_since"] <= time.time()
        assert 0 < out["last_ping_rtt_ms"] < 1000 and into["last_ping_rtt_ms"] is None


async def test_mdns_finds_a_peer_on_the_lan_without_any_bootstrap() -> None:
    """py-libp2p's mDNS (zeroconf) works in this sandbox: multicast on eth0 is
    looped back to this machine, so two nodes on 127.0.0.1 hear each other."""
    config = DiscoveryConfig(mdns=True, dht=False)
    registries = [CollectorRegistry(), CollectorRegistry()]
    async with started(1, config, registry=registries[0]) as (a, _, a_disc), \
            started(2, config, registry=registries[1]) as (b, _, _):
        assert a_disc.mdns_active and a_disc.snapshot()["mdns"] is True
        took = await wait_until(lambda: p2p.peer_id_of(b) in connected(a)
                                or p2p.peer_id_of(a) in connected(b), 20, "mDNS discovery")
        print(f"\nmDNS: connected {took:.2f} s after both announced")
        # No bootstrap, no DHT: the dial came from an mDNS announcement.
        mdns_dials = sum(r.get_sample_value("n3xus_p2p_discovery_dials_total",
                                            {"source": "mdns"}) or 0 for r in registries)
        assert mdns_dials >= 1
