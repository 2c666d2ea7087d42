"""The node's libp2p host: identity, real TCP connections between in-process
hosts on 127.0.0.1, Noise-only security, address validation and shutdown."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import pytest
import trio
from libp2p import new_host
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.basic_host import BasicHost
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.base_transport import BaseSecureTransport
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secio.transport import ID as SECIO_PROTOCOL_ID
from libp2p.security.secio.transport import Transport as SecioTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from n3xus.node.errors import AddressError, ConfigError
from n3xus.node.p2p import host as p2p

LOCALHOST_ANY_PORT = "/ip4/127.0.0.1/tcp/0"

# RFC 8032 section 7.1, TEST 1: an ed25519 seed and the public key it yields.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC_KEY = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)
# 0.8.1 waits this long before its happy-eyeballs fallback dial (swarm.py).
HAPPY_EYEBALLS_DELAY_SECONDS = 0.25
DIAL_SAMPLES = 5


def seed(index: int) -> bytes:
    return index.to_bytes(4, "big") * 8


def base58btc(data: bytes) -> str:
    """Bitcoin base58, written out here so the peer-ID check does not rely on
    the library that produced the value."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = int.from_bytes(data, "big")
    encoded = ""
    while number:
        number, digit = divmod(number, 58)
        encoded = alphabet[digit] + encoded
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + encoded


def count_trio_tasks() -> int:
    count = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def port_of(addr: str) -> int:
    return int(Multiaddr(addr).value_for_protocol("tcp"))


@asynccontextmanager
async def node(index: int, listen: list[str] | None = None) -> AsyncIterator[tuple[BasicHost, list[str]]]:
    host = p2p.make_host(p2p.keypair_from_seed(seed(index)))
    async with p2p.running_host(host, [LOCALHOST_ANY_PORT] if listen is None else listen) as addrs:
        yield host, addrs


# -- identity ------------------------------------------------------------------


def test_same_seed_gives_same_peer_id_and_other_seeds_do_not() -> None:
    first = p2p.keypair_from_seed(seed(7))
    again = p2p.keypair_from_seed(bytearray(seed(7)))
    other = p2p.keypair_from_seed(seed(8))
    assert p2p.peer_id_of(first) == p2p.peer_id_of(again)
    assert p2p.peer_id_of(first) != p2p.peer_id_of(other)
    assert p2p.peer_id_of(first).startswith("12D3KooW")  # ed25519, identity multihash
    assert p2p.peer_id_of(p2p.make_host(again)) == p2p.peer_id_of(first)


def test_peer_id_follows_the_libp2p_spec_for_an_rfc8032_key() -> None:
    host = p2p.make_host(p2p.keypair_from_seed(RFC8032_SEED))
    assert p2p.public_key_hex(host) == RFC8032_PUBLIC_KEY.hex()
    # peer-ids spec: protobuf PublicKey{Type: Ed25519 (1), Data: key}, which is
    # 36 bytes, so it is inlined with the identity multihash (code 0x00).
    public_key_protobuf = b"\x08\x01\x12\x20" + RFC8032_PUBLIC_KEY
    expected = base58btc(b"\x00" + bytes([len(public_key_protobuf)]) + public_key_protobuf)
    assert p2p.peer_id_of(host) == expected


@pytest.mark.parametrize("bad_seed", [b"", b"\x01" * 31, b"\x01" * 33, "a" * 32])
def test_keypair_from_seed_rejects_what_is_not_a_32_byte_seed(bad_seed: object) -> None:
    with pytest.raises(ConfigError):
        p2p.keypair_from_seed(cast(bytes, bad_seed))


# -- two hosts -----------------------------------------------------------------


async def test_two_hosts_connect_and_ping_each_other() -> None:
    async with node(1) as (alice, alice_addrs), node(2) as (bob, _):
        # Port 0 became a real port, and the address names the peer.
        assert len(alice_addrs) == 1
        assert port_of(alice_addrs[0]) != 0
        assert alice_addrs[0].endswith(f"/p2p/{p2p.peer_id_of(alice)}")
        assert p2p.listen_addrs(alice) == alice_addrs

        connected_to = await p2p.connect(bob, alice_addrs[0])
        assert connected_to == p2p.peer_id_of(alice)
        assert [peer for peer, _ in p2p.connected_peers(bob)] == [p2p.peer_id_of(alice)]
        await wait_for_peer(alice, p2p.peer_id_of(bob))

        rtt_bob_to_alice = await p2p.ping(bob, connected_to)
        rtt_alice_to_bob = await p2p.ping(alice, p2p.peer_id_of(bob))
        assert 0 < rtt_bob_to_alice < 1.0
        assert 0 < rtt_alice_to_bob < 1.0

        # Connecting again reuses the connection.
        assert await p2p.connect(bob, alice_addrs[0]) == connected_to
        assert len(p2p.connected_peers(bob)) == 1


async def wait_for_peer(host: BasicHost, peer_id: str) -> None:
    with trio.fail_after(5):
        while peer_id not in [peer for peer, _ in p2p.connected_peers(host)]:
            await trio.sleep(0.01)


async def test_connect_checks_the_peer_id_in_the_address() -> None:
    async with node(1) as (_, alice_addrs), node(2) as (bob, _):
        impostor_id = p2p.peer_id_of(p2p.keypair_from_seed(seed(3)))
        transport_part = alice_addrs[0].rsplit("/p2p/", 1)[0]
        with pytest.raises(p2p.DialError):
            await p2p.connect(bob, f"{transport_part}/p2p/{impostor_id}")
        assert p2p.connected_peers(bob) == []


async def test_failed_dial_is_retried_when_the_peer_comes_back() -> None:
    async with node(1) as (_, first_addrs):
        alice_addr = first_addrs[0]
    async with node(2, listen=[]) as (bob, _):
        with pytest.raises(p2p.DialError, match="refused"):  # the real cause, unwrapped
            await p2p.connect(bob, alice_addr)
        # Same identity, same port: an explicit connect must try again at once,
        # although 0.8.1 blocks re-dials of a failed peer for 60 s by itself.
        async with node(1, listen=[alice_addr.rsplit("/p2p/", 1)[0]]):
            assert await p2p.connect(bob, alice_addr) == alice_addr.rsplit("/p2p/", 1)[1]


async def test_ping_without_a_known_address_fails_cleanly() -> None:
    async with node(2, listen=[]) as (bob, _):
        stranger = p2p.peer_id_of(p2p.keypair_from_seed(seed(9)))
        with pytest.raises(p2p.PingError):
            await p2p.ping(bob, stranger)
        with pytest.raises(AddressError):
            await p2p.ping(bob, "not-a-peer-id")


async def test_dial_time_with_one_connection_per_peer_vs_the_library_default() -> None:
    """0.8.1 makes every dial wait out its 250 ms happy-eyeballs delay unless
    max_connections_per_peer connections are already up (default 3)."""

    async def median_dial_seconds(config: ConnectionConfig | None) -> float:
        samples = []
        async with node(1) as (_, alice_addrs):
            for index in range(DIAL_SAMPLES):
                bob = p2p.make_host(p2p.keypair_from_seed(seed(50 + index)), connection_config=config)
                async with p2p.running_host(bob, []):
                    started = time.perf_counter()
                    await p2p.connect(bob, alice_addrs[0])
                    samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    ours = await median_dial_seconds(None)
    library_default = await median_dial_seconds(ConnectionConfig())
    print(f"\nmedian dial: {ours * 1000:.1f} ms (per peer 1), {library_default * 1000:.1f} ms (default)")
    assert library_default >= HAPPY_EYEBALLS_DELAY_SECONDS
    assert ours < HAPPY_EYEBALLS_DELAY_SECONDS


# -- Noise only ----------------------------------------------------------------


def foreign_host(key_pair: KeyPair, security: dict[TProtocol, BaseSecureTransport | NoiseTransport]) -> BasicHost:
    """A host from libp2p's own new_host that speaks only the given security."""
    host = new_host(
        key_pair=key_pair,
        sec_opt=security,
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=p2p.default_connection_config(),
    )
    assert isinstance(host, BasicHost)
    return host


def security_options(kind: str, key_pair: KeyPair) -> dict[TProtocol, BaseSecureTransport | NoiseTransport]:
    if kind == "plaintext":
        return {TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(key_pair)}
    if kind == "secio":
        return {TProtocol(SECIO_PROTOCOL_ID): SecioTransport(key_pair)}
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return {TProtocol(NOISE_PROTOCOL_ID): noise}


@pytest.mark.parametrize("kind", ["plaintext", "secio"])
async def test_a_dialer_without_noise_is_refused(kind: str) -> None:
    async with node(1) as (alice, alice_addrs):
        alice_id = alice.get_id()
        transport_part = Multiaddr(alice_addrs[0].rsplit("/p2p/", 1)[0])

        # Control: the same kind of foreign host with Noise gets in, so the
        # refusal below is about security and nothing else.
        control_key = p2p.keypair_from_seed(seed(20))
        control = foreign_host(control_key, security_options("noise", control_key))
        async with control.run([]):
            await control.connect(PeerInfo(alice_id, [transport_part]))
            await wait_for_peer(alice, str(control.get_id()))

        intruder_key = p2p.keypair_from_seed(seed(21))
        intruder = foreign_host(intruder_key, security_options(kind, intruder_key))
        async with intruder.run([]):
            with pytest.raises(BaseLibp2pError):
                await intruder.connect(PeerInfo(alice_id, [transport_part]))
            await trio.sleep(0.2)
            assert str(intruder.get_id()) not in [peer for peer, _ in p2p.connected_peers(alice)]
        assert p2p.inbound_connections_in_use(alice) <= 1  # only the control, if still closing


@pytest.mark.parametrize("kind", ["plaintext", "secio"])
async def test_we_do_not_dial_down_to_a_peer_without_noise(kind: str) -> None:
    listener_key = p2p.keypair_from_seed(seed(22))
    listener = foreign_host(listener_key, security_options(kind, listener_key))
    async with listener.run([Multiaddr(LOCALHOST_ANY_PORT)]):
        listener_addr = str(listener.get_addrs()[0])
        async with node(2, listen=[]) as (bob, _):
            with pytest.raises(p2p.DialError):
                await p2p.connect(bob, listener_addr)
            assert p2p.connected_peers(bob) == []


# -- addresses -----------------------------------------------------------------

PEER = "12D3KooWMbbPVGsZYh3ChQjue712NHHGNybRRXwnuSpezYjGbCDS"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not a multiaddr",
        "/foo/1.2.3.4/tcp/1",  # unknown protocol
        "/ip4/999.1.1.1/tcp/1",  # malformed IP
        "/ip4/127.0.0.1/tcp/70000",  # port out of range
        "/ip4/127.0.0.1/tcp/",  # missing value
        "/ip4/127.0.0.1/tcp/4001",  # no /p2p part
        f"/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{PEER}",  # known, but not TCP
        f"/ip4/127.0.0.1/p2p/{PEER}",  # no port
        f"/p2p/{PEER}",  # no transport at all
        "/ip4/127.0.0.1/tcp/4001/p2p/xyz",  # malformed peer ID
    ],
)
async def test_connect_rejects_bad_addresses_up_front(text: str) -> None:
    with pytest.raises(AddressError) as raised:
        p2p.parse_peer_addr(text)
    assert isinstance(raised.value, ValueError)
    async with node(2, listen=[]) as (bob, _):
        with trio.fail_after(1):  # rejected before any dial
            with pytest.raises(AddressError):
                await p2p.connect(bob, text)


def test_dial_addresses_that_are_accepted() -> None:
    for text in [
        f"/ip4/127.0.0.1/tcp/4001/p2p/{PEER}",
        f"/ip6/::1/tcp/4001/p2p/{PEER}",
        f"/dns4/node.example/tcp/4001/p2p/{PEER}",
    ]:
        peer_id, transport_addr = p2p.parse_peer_addr(text)
        assert str(peer_id) == PEER
        assert str(transport_addr) == text.rsplit("/p2p/", 1)[0]


async def test_connect_to_own_address_is_an_address_error() -> None:
    async with node(1) as (alice, alice_addrs):
        with pytest.raises(AddressError):
            await p2p.connect(alice, alice_addrs[0])


@pytest.mark.parametrize(
    "listen",
    [
        ["/ip4/127.0.0.1/udp/0"],
        [f"/ip4/127.0.0.1/tcp/0/p2p/{PEER}"],
        ["/dns4/localhost/tcp/0"],
        ["/ip4/127.0.0.1"],
        ["/ip4/127.0.0.1/tcp/x"],
        ["/ip4/192.0.2.1/tcp/0"],  # TEST-NET-1: not an address of this machine
        ["/ip4/127.0.0.1/tcp/40111", "/ip4/127.0.0.1/tcp/40111"],
    ],
)
async def test_bad_listen_addresses_raise_address_error(listen: list[str]) -> None:
    host = p2p.make_host(p2p.keypair_from_seed(seed(1)))
    with trio.fail_after(2):
        with pytest.raises(AddressError):
            async with p2p.running_host(host, listen):
                pytest.fail("the host must not start")


async def test_a_port_in_use_raises_address_error() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with trio.fail_after(2), pytest.raises(AddressError, match="already in use"):
            async with node(1, listen=[f"/ip4/127.0.0.1/tcp/{port}"]):
                pytest.fail("the host must not start")


async def test_a_second_node_on_the_same_port_raises_address_error() -> None:
    """0.8.1 listens with SO_REUSEPORT, so without the host's own check a second
    node would silently share the port with the first."""
    async with node(1) as (_, first_addrs):
        port = port_of(first_addrs[0])
        with trio.fail_after(2), pytest.raises(AddressError, match="already in use"):
            async with node(2, listen=[f"/ip4/127.0.0.1/tcp/{port}"]):
                pytest.fail("the second node must not start")


# -- lifecycle -----------------------------------------------------------------


async def test_cancellation_stops_the_host_quickly_and_completely() -> None:
    tasks_before = count_trio_tasks()
    with trio.CancelScope() as scope:
        async with node(1) as (alice, alice_addrs), node(2) as (bob, _):
            await p2p.connect(bob, alice_addrs[0])
            await p2p.ping(bob, p2p.peer_id_of(alice))
            port = port_of(alice_addrs[0])
            cancelled_at = time.perf_counter()
            scope.cancel()
            await trio.sleep_forever()
    stop_seconds = time.perf_counter() - cancelled_at
    assert scope.cancelled_caught  # cancellation was not turned into an error
    print(f"\nstopped two connected hosts in {stop_seconds * 1000:.0f} ms")
    assert stop_seconds < p2p.SHUTDOWN_GRACE_SECONDS
    # Every libp2p task is gone (listeners and identify run as system tasks)...
    with trio.fail_after(2):
        while count_trio_tasks() > tasks_before:
            await trio.sleep(0.01)
    # ... and the port is free again.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


async def test_an_error_in_the_block_comes_out_as_itself() -> None:
    with pytest.raises(KeyError):
        async with node(1):
            raise KeyError("not wrapped in an exception group")
