"""The signaling handler: bad input gets a clear error, loses nothing, and leaves the
room's other peers as they were. Real service, real aiortc, in-memory socket."""

from __future__ import annotations

import json
import re

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from webrtc_support import TOKEN_KEY, MemorySocket, join, offer

from n3xus.webrtc.bridge import open_bridge
from n3xus.webrtc.rooms import Role, RoomTokens
from n3xus.webrtc.service import LiveService, open_live_service
from n3xus.webrtc.signaling import CLOSE_POLICY, MAX_SIGNAL_MESSAGE_BYTES, SIGNAL_BURST

ROOM = "hall"
NOW_MS = 1_800_000_000_000


def clock() -> int:
    return NOW_MS


async def connect(live: LiveService, nursery: trio.Nursery, room: str = ROOM) -> MemorySocket:
    socket = MemorySocket()
    nursery.start_soon(live.serve_signaling, socket, room)
    return socket


async def viewer_offer_sdp(kind: str = "video") -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_hello_with_a_good_token_is_welcomed_with_host_only_ice() -> None:
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        socket, welcome = await join(live, n, ROOM, Role.COLLABORATOR, "ada")
        assert welcome["role"] == "collaborator" and welcome["room"] == ROOM
        assert welcome["ice_servers"] == [] and welcome["live"] is False
        await socket.send({"type": "ping", "t": 5})
        assert await socket.recv() == {"type": "pong", "t": 5}
        n.cancel_scope.cancel()


async def test_tokens_for_another_room_expired_or_forged_are_refused_and_closed() -> None:
    tokens = RoomTokens(TOKEN_KEY)
    other_node = RoomTokens(bytes(32))
    cases = {
        "wrong-room": tokens.issue("elsewhere", Role.OWNER, now_ms=NOW_MS),
        "token-expired": tokens.issue(ROOM, Role.OWNER, now_ms=NOW_MS - 10_000, ttl_ms=5_000),
        "bad-token": other_node.issue(ROOM, Role.OWNER, now_ms=NOW_MS),
    }
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        for code, token in cases.items():
            socket = await connect(live, n)
            await socket.send({"type": "hello", "v": 1, "token": token})
            error = await socket.recv()
            assert error["type"] == "error" and error["code"] == code and error["fatal"], error
            await trio.sleep(0.01)
            assert socket.closed == (CLOSE_POLICY, code)
        n.cancel_scope.cancel()


async def test_anything_before_hello_is_fatal_and_a_bad_room_name_too() -> None:
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        socket = await connect(live, n)
        await socket.send({"type": "offer", "sdp": "v=0\r\n" * 3})
        error = await socket.recv()
        assert error["code"] == "unexpected-message" and error["fatal"]
        socket = await connect(live, n, room="Not A Room")
        error = await socket.recv()
        assert error["code"] == "bad-room" and error["fatal"]
        n.cancel_scope.cancel()


async def test_malformed_messages_after_hello_get_errors_and_the_connection_lives() -> None:
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        socket, _ = await join(live, n, ROOM, Role.VIEWER)
        bad = [
            ("{not json", "bad-json", "not JSON"),
            (json.dumps([1, 2]), "bad-message", "JSON object"),
            (json.dumps({"type": "dance"}), "bad-message", "unknown message type"),
            (json.dumps({"type": "offer"}), "bad-message", "'sdp' is a required property"),
            (json.dumps({"type": "offer", "sdp": 5}), "bad-message", "sdp"),
            (json.dumps({"type": "ping", "extra": 1}), "bad-message", "extra"),
            (json.dumps({"type": "hello", "v": 1, "token": "x"}), "unexpected-message",
             "not allowed in state ready"),
        ]
        for raw, code, words in bad:
            await socket.send(raw)
            error = await socket.recv()
            assert error["type"] == "error" and error["code"] == code, (raw, error)
            assert words in error["message"] and error["fatal"] is False, (raw, error)
            await trio.sleep(0.25)  # stay under the rate limit
        await socket.send({"type": "ping", "t": 1})
        assert (await socket.recv())["type"] == "pong"
        assert socket.closed is None
        n.cancel_scope.cancel()


async def test_an_oversized_message_or_a_flood_closes_only_that_connection() -> None:
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        bystander, _ = await join(live, n, ROOM, Role.VIEWER, "bystander")
        big, _ = await join(live, n, ROOM, Role.VIEWER, "big")
        await big.send({"type": "offer", "sdp": "v=0\r\n" + "a" * MAX_SIGNAL_MESSAGE_BYTES})
        error = await big.recv()
        assert error["code"] == "too-large" and error["fatal"]
        flood, _ = await join(live, n, ROOM, Role.VIEWER, "flood")
        for _ in range(SIGNAL_BURST + 5):
            await flood.send({"type": "ping"})
        replies = [await flood.recv() for _ in range(SIGNAL_BURST - 1)]  # hello took one
        assert {r["type"] for r in replies} <= {"pong"}
        error = await flood.recv()
        assert error["code"] == "rate-limited" and error["fatal"]
        await trio.sleep(0.01)
        assert flood.closed is not None and big.closed is not None
        await bystander.send({"type": "ping", "t": 2})
        assert await bystander.recv() == {"type": "pong", "t": 2}
        n.cancel_scope.cancel()


async def test_offers_the_relay_cannot_serve_are_refused_with_the_reason() -> None:
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, \
            open_bridge("clients") as clients, trio.open_nursery() as n:
        viewer, _ = await join(live, n, ROOM, Role.VIEWER)
        # A viewer may not publish.
        from webrtc_support import new_performer
        peer, publish_sdp = await clients.run(new_performer)
        error = await offer(viewer, publish_sdp)
        assert error["code"] == "forbidden" and not error["fatal"]
        # An SDP without VP8 (H.264 only) has no usable codec.
        watch_sdp = await clients.run(viewer_offer_sdp)
        h264_only = re.sub(r"a=rtpmap:(\d+) VP8/90000", r"a=rtpmap:\1 H264/90000", watch_sdp)
        assert "VP8" not in h264_only
        error = await offer(viewer, h264_only)
        assert error["code"] == "no-usable-codec" and "VP8" in error["message"]
        # Garbage that looks like SDP.
        error = await offer(viewer, "v=0\r\nm=video\r\n")
        assert error["code"] == "bad-message" and "media line" in error["message"]
        # The connection still works: a good offer is answered.
        answer = await offer(viewer, watch_sdp)
        assert answer["type"] == "answer" and "VP8" in answer["sdp"]
        assert "H264" not in answer["sdp"]  # the answer keeps the forwarded codec only
        assert "a=candidate" in answer["sdp"] and " srflx " not in answer["sdp"]
        await clients.run(peer.pc.close)
        n.cancel_scope.cancel()


async def test_only_performers_and_owners_may_end_the_performance() -> None:
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        viewer, _ = await join(live, n, ROOM, Role.VIEWER)
        await viewer.send({"type": "end"})
        error = await viewer.recv()
        assert error["code"] == "forbidden" and not error["fatal"]
        n.cancel_scope.cancel()


async def _answer_mangled_offers(count: int) -> dict[str, int]:
    import random

    from n3xus.webrtc.engine import LiveEngine
    from n3xus.webrtc.errors import RemoteLiveError

    lines = (await viewer_offer_sdp()).split("\r\n")
    engine = LiveEngine()
    rng = random.Random(11)
    outcomes: dict[str, int] = {}
    for i in range(count):
        mangled = list(lines)
        for _ in range(rng.randint(1, 3)):
            j = rng.randrange(len(mangled))
            op = rng.random()
            if op < 0.4:
                del mangled[j]
            elif op < 0.7:
                mangled[j] = mangled[j][: rng.randrange(len(mangled[j]) + 1)]
            else:
                mangled[j] = mangled[j].replace(" ", "  ", 1) + rng.choice(["x", " 99", ":", "/"])
        try:
            await engine.answer("fuzz", f"p{i}", Role.VIEWER, "x", "\r\n".join(mangled))
            outcome = "answered"
        except RemoteLiveError as exc:
            outcome = exc.code
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    await engine.aclose()
    return outcomes


async def test_mangled_offers_are_answered_or_refused_with_a_code() -> None:
    """Mutations of a real offer: aiortc's parser trips on them in many ways; every
    one must come back as an answer or a coded error, never as a crash."""
    async with open_bridge("fuzz") as bridge:
        outcomes = await bridge.run(_answer_mangled_offers, 80)
    assert sum(outcomes.values()) == 80
    assert outcomes.get("bad-sdp", 0) > 0 and outcomes.get("answered", 0) > 0
    assert set(outcomes) <= {"answered", "bad-sdp", "bad-message", "forbidden",
                             "no-usable-codec", "too-large"}


async def mesh_join(live: LiveService, nursery: trio.Nursery, room: str, role: Role,
                    name: str) -> tuple[MemorySocket, str]:
    socket = MemorySocket()
    nursery.start_soon(live.serve_signaling, socket, room)
    await socket.send({"type": "hello", "v": 1, "name": name, "mesh": True,
                       "token": live.issue_token(room, role.value)})
    welcome = await socket.recv_reply("welcome")
    return socket, str(welcome["peer"])


async def test_mesh_signals_are_relayed_only_between_mesh_members_of_one_room() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        ada, ada_id = await mesh_join(live, n, ROOM, Role.COLLABORATOR, "ada")
        assert (await ada.recv_reply("roster"))["peers"] == [
            {"peer": ada_id, "name": "ada", "role": "collaborator"}]
        bob, bob_id = await mesh_join(live, n, ROOM, Role.COLLABORATOR, "bob")
        roster = await ada.recv_reply("roster")
        assert roster["mesh"] is True and [p["peer"] for p in roster["peers"]] == [ada_id, bob_id]
        # The sender is named by the node, never by the browser.
        await ada.send({"type": "peer-offer", "to": bob_id, "sdp": sdp})
        relayed = await bob.recv_reply("peer-offer")
        assert relayed == {"type": "peer-offer", "sdp": sdp,
                           "from": {"peer": ada_id, "name": "ada", "role": "collaborator"}}
        await bob.send({"type": "peer-answer", "to": ada_id, "sdp": sdp})
        assert (await ada.recv_reply("peer-answer"))["from"]["peer"] == bob_id
        # A member of another room, a non-mesh page (an audience page) and itself are
        # not reachable: a clear, non-fatal error, the connection stays.
        eve, eve_id = await mesh_join(live, n, "other", Role.COLLABORATOR, "eve")
        viewer, viewer_welcome = await join(live, n, ROOM, Role.VIEWER, "vic")
        for target in (eve_id, viewer_welcome["peer"], ada_id):
            await ada.send({"type": "peer-offer", "to": target, "sdp": sdp})
            error = await ada.recv_reply("error")
            assert error["code"] == "no-such-peer" and error["fatal"] is False
        await eve.send({"type": "peer-offer", "to": ada_id, "sdp": sdp})
        assert (await eve.recv_reply("error"))["code"] == "no-such-peer"
        # A page that did not join the mesh may not signal peers; a bad id is refused.
        await viewer.send({"type": "peer-offer", "to": ada_id, "sdp": sdp})
        assert (await viewer.recv_reply("error"))["code"] == "forbidden"
        await ada.send({"type": "peer-offer", "to": "not-an-id", "sdp": sdp})
        assert (await ada.recv_reply("error"))["code"] == "bad-message"
        assert live.peer_signals_relayed == 2
        # Leaving updates everyone's roster.
        await bob.hang_up()
        roster = await ada.recv_reply("roster")
        assert [p["peer"] for p in roster["peers"]] == [ada_id]
        n.cancel_scope.cancel()


async def test_above_max_mesh_peers_the_room_falls_back_to_the_node_hub() -> None:
    from n3xus.webrtc.schemas import MAX_MESH_PEERS
    sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    async with open_live_service(TOKEN_KEY, clock_ms=clock) as live, trio.open_nursery() as n:
        members = [await mesh_join(live, n, ROOM, Role.COLLABORATOR, f"m{i}")
                   for i in range(MAX_MESH_PEERS + 1)]
        first, _ = members[0]
        # The last roster the first member sees says: no mesh, use the node.
        for _ in range(MAX_MESH_PEERS + 1):
            roster = await first.recv_reply("roster")
        assert roster == {"type": "roster", "mesh": False, "peers": []}
        await first.send({"type": "peer-offer", "to": members[1][1], "sdp": sdp})
        assert (await first.recv_reply("error"))["code"] == "mesh-full"
        n.cancel_scope.cancel()


PEER_OFFER = json.dumps({"type": "peer-offer", "to": "0123456789abcdef",
                         "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"})


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_peer_signals_get_a_clean_error_or_parse(data: st.DataObject) -> None:
    from n3xus.webrtc.errors import SignalingError
    from n3xus.webrtc.signaling import PeerSignal, SignalingSession, State
    raw = bytearray(PEER_OFFER.encode())
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.integers(0, len(raw) - 1), max_size=3))
    for i in flips:
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    session = SignalingSession(0.0)
    session.state = State.READY
    try:
        event = session.receive(bytes(raw[:cut] if cut < len(raw) else raw), 0.0)
    except SignalingError as exc:
        assert exc.code in {"bad-json", "bad-message", "unexpected-message"}
    else:
        assert isinstance(event, PeerSignal) and session.state is State.READY
