"""A raw py-libp2p peer against a running CLI node, for the abuse tests of the wire
protocols (tests/test_federation_scoring.py: the hello; tests/test_live_pull_abuse.py:
``/n3xus/live/1.0.0``): it completes or breaks a hello by hand, and reads the node's
penalties back through the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.host.basic_host import BasicHost
from nacl.signing import SigningKey

from conftest import CliNode, run_cli
from n3xus.canon.cid import CID
from n3xus.node.p2p import host as p2p
from n3xus.protocol.errors import PeerError
from n3xus.protocol.framing import FrameDecoder, decode_message, encode_frame, encode_message
from n3xus.protocol.hello import (
    HELLO_PROTOCOL_ID,
    HELLO_TIMEOUT_S,
    MAX_HELLO_FRAME_BYTES,
    FederationPolicy,
    HelloConfig,
    HelloExchange,
    HelloState,
    Role,
)

HELLO = TProtocol(HELLO_PROTOCOL_ID)
READ_TIMEOUT_S = HELLO_TIMEOUT_S + 5.0
# The raw peer's identity: a host made with p2p.keypair_from_seed(seed) and RawPeer(...,
# seed) must agree (the hello binds the signing key to the connection's peer id).
RAW_SEED = bytes([0x5A]) * 32


def cli_json(*args: str) -> Any:
    res = run_cli(*args, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def peer_entry(node: CliNode, peer_id: str) -> dict[str, Any] | None:
    listed = cli_json("peers", "list", "--data-dir", str(node.data_dir))
    for peer in [*listed["peers"], *listed["others"]]:
        if peer["peer_id"] == peer_id:
            return peer  # type: ignore[no-any-return]
    return None


def penalties(node: CliNode, peer_id: str) -> dict[str, int]:
    entry = peer_entry(node, peer_id)
    return {} if entry is None or entry["traffic"] is None else entry["traffic"]["penalties"]


async def read_error(stream: Any) -> int | None:
    """The code of the error frame the node sends (None: the stream ended without one)."""
    frames = FrameDecoder(MAX_HELLO_FRAME_BYTES)
    with trio.move_on_after(READ_TIMEOUT_S):
        while True:
            try:
                data = await stream.read(65536)
            except p2p.NETWORK_ERRORS:
                return None
            if not data:
                return None
            frames.receive_data(data, trio.current_time())
            while (body := frames.next_frame()) is not None:
                try:
                    decode_message(body)
                except PeerError as error:
                    return error.raw_code
    raise AssertionError("the node neither answered nor closed the stream")


class RawPeer:
    """A py-libp2p host that speaks ``/n3xus/hello/1.0.0`` by hand to a CLI node (its
    libp2p identity and hello key are both ``seed``), so a test can complete a hello and
    then open any protocol's stream raw, or break the hello itself."""

    def __init__(self, host: BasicHost, target: CliNode, network: CID,
                 seed: bytes = RAW_SEED) -> None:
        self.host = host
        self.target = target
        self.target_id = p2p.parse_peer_id(target.peer_id)
        self.peer_id = p2p.peer_id_of(host)
        self.config = HelloConfig(
            signing_key=SigningKey(seed), version="0.1.0", agent="raw-test-peer",
            protocols=(), capabilities=(), network=network, policy=FederationPolicy((network,)))

    async def stream(self, protocol: TProtocol = HELLO) -> Any:
        await p2p.connect(self.host, self.target.listen_addr)
        return await self.host.new_stream(self.target_id, [protocol])

    async def done(self) -> None:
        """Drop the connection (the node closes it after a refusal anyway)."""
        with trio.move_on_after(5):
            await self.host.disconnect(self.target_id)
        await trio.sleep(0.3)

    async def send_raw(self, data: bytes, *, half_close: bool = False) -> int | None:
        stream = await self.stream()
        await stream.write(data)
        if half_close:
            await stream.close()
        code = await read_error(stream)
        await self.done()
        return code

    async def exchange(self, tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                       replay: dict[str, Any] | None = None) -> tuple[int | None, HelloExchange]:
        """A hello exchange by hand: hello-start, read the node's hello, then our hello
        (tampered or replayed as asked); answers the node's error code (None: accepted)."""
        stream = await self.stream()
        core = HelloExchange(Role.INITIATOR, self.config, local_peer=self.peer_id,
                             remote_peer=self.target.peer_id, now=trio.current_time())
        await stream.write(core.start())
        frames = FrameDecoder(MAX_HELLO_FRAME_BYTES)
        while True:  # the node's hello
            frames.receive_data(await stream.read(65536), trio.current_time())
            body = frames.next_frame()
            if body is not None:
                break
        out = core.receive_data(encode_frame(body, MAX_HELLO_FRAME_BYTES),
                                now=trio.current_time(), wall_ms=time.time_ns() // 1_000_000)
        assert core.sent_hello is not None and core.state is HelloState.AWAIT_ACCEPT
        message = core.sent_hello.to_message()
        if replay is not None:
            message = replay
        elif tamper is not None:
            message = tamper(message)
            out = encode_message(message, MAX_HELLO_FRAME_BYTES) if "type" in message \
                else encode_frame(b"\xa0", MAX_HELLO_FRAME_BYTES)
        if replay is not None:
            out = encode_message(replay, MAX_HELLO_FRAME_BYTES)
        await stream.write(out)
        code = await read_error(stream) if (tamper or replay) else None
        if code is None and not (tamper or replay):
            while core.state is not HelloState.DONE:
                core.receive_data(await stream.read(65536), now=trio.current_time(),
                                  wall_ms=time.time_ns() // 1_000_000)
            await stream.close()
        return code, core


def network_of(node: CliNode) -> CID:
    return CID(cli_json("node", "init", "--data-dir", str(node.data_dir))["network"])


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    with trio.move_on_after(seconds):
        while not condition():
            await trio.sleep(0.2)
        return
    raise AssertionError(f"not within {seconds} s: {what}")
