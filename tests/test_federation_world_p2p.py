"""``/n3xus/world-sync/1.0.0`` between two real in-process nodes (libp2p on 127.0.0.1, hello,
LMDB): an announcement on a stream makes the follower sync at once; head requests answer
the node's head (and nothing for an unknown world); a malformed request is answered with
its error code and costs the sender score; a refused head changes nothing."""

from __future__ import annotations

from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from test_api_openapi import _start

from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.world_sync import announce, request_head
from n3xus.node.runtime import Node
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import PeerError
from n3xus.protocol.framing import FrameDecoder, decode_message, encode_message
from n3xus.protocol.world_sync import PROTOCOL_ID, Announce

WAIT_S = 20.0


def service(node: Node):  # type: ignore[no-untyped-def]
    assert node.worlds is not None and node.canon is not None
    return node.worlds


async def test_announce_head_request_and_a_malformed_request(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        a = await _start(nursery, tmp_path / "a")
        b = await _start(nursery, tmp_path / "b", network_of=tmp_path / "a")
        assert a.canon is not None and b.canon is not None
        await a.connect(b.listen_addrs[0])
        b.canon.world_update("garden", {"rose": 1}, [])
        # Announcements by stream in this test (gossip is the other carrier).
        service(b).gossip = None

        outcome = await service(a).follow("garden", b.listen_addrs[0])
        assert outcome.result == "adopted" and outcome.commits_verified == 1

        head = await request_head(a._host, a.peerbook, b.peer_id, "garden")
        assert head.head == b.canon.world_head("garden")[0] and head.owner is None
        nothing = await request_head(a._host, a.peerbook, b.peer_id, "no-such-world")
        assert nothing.head is None and nothing.author is None

        # B writes and announces on a stream: A syncs at once, without an anti-entropy round.
        write = b.canon.world_update("garden", {"tulip": 2}, [])
        await announce(b._host, b.peerbook, a.peer_id, Announce(
            "garden", write.commit_cid, write.commit.author, None))
        with trio.fail_after(WAIT_S):
            while a.canon.world_head("garden")[0] != write.commit_cid:
                await trio.sleep(0.05)
        assert a.canon.world("garden").get("tulip") == 2

        # A head that does not verify (not a commit at all) is refused and changes nothing.
        bogus = b.canon.put_block(b"not a commit", "raw", "blake3", True)
        await announce(b._host, b.peerbook, a.peer_id, Announce(
            "garden", bogus, write.commit.author, None))
        with trio.fail_after(WAIT_S):
            while service(a).stats["garden"].last_rejected != str(bogus):
                await trio.sleep(0.05)
        assert a.canon.world_head("garden")[0] == write.commit_cid

        # A malformed request: an error frame with `malformed`, and the sender pays.
        stream = await b._host.new_stream(p2p.parse_peer_id(a.peer_id), [TProtocol(PROTOCOL_ID)])
        await stream.write(encode_message({"type": "head-request", "world": 7}, 1024))
        decoder = FrameDecoder(1024)
        body = None
        with trio.fail_after(WAIT_S):
            while body is None:
                decoder.receive_data(await stream.read(1024), trio.current_time())
                body = decoder.next_frame()
        try:
            decode_message(body)
            raise AssertionError("no error answer")
        except PeerError as exc:
            assert exc.code == ErrorCode.MALFORMED
        await stream.close()  # the penalty follows the error frame's linger
        with trio.fail_after(WAIT_S):
            while (record := a.peerbook.get(b.peer_id)) is None or \
                    record.penalties["malformed"] < 1:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
