"""The room's data channel with real aiortc peers: presence, chat between members,
world edits reaching the node (and refused for viewers), malformed messages."""

from __future__ import annotations

import json
from typing import Any

import trio
from webrtc_support import (
    TOKEN_KEY,
    ChannelPeer,
    channel_accept,
    channel_send,
    channel_state,
    join,
    new_room_member,
    offer,
)

from n3xus.webrtc.bridge import AsyncioBridge, open_bridge
from n3xus.webrtc.datachannel import DATA_BURST
from n3xus.webrtc.rooms import Role
from n3xus.webrtc.service import LiveService, open_live_service

ROOM = "studio"


async def member(live: LiveService, clients: AsyncioBridge, nursery: trio.Nursery,
                 role: Role, name: str) -> ChannelPeer:
    socket, _ = await join(live, nursery, ROOM, role, name)
    peer, sdp = await clients.run(new_room_member)
    answer = await offer(socket, sdp)
    assert answer["type"] == "answer", answer
    await clients.run(channel_accept, peer, answer["sdp"])
    with trio.fail_after(10):
        while not (await clients.run(channel_state, peer))[0]:
            await trio.sleep(0.05)
    return peer


async def wait_for(clients: AsyncioBridge, peer: ChannelPeer, kind: str,
                   match: Any = lambda m: True) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            _, received = await clients.run(channel_state, peer)
            for message in received:
                if message["type"] == kind and match(message):
                    return message
            await trio.sleep(0.05)


async def test_chat_presence_and_world_edits_over_the_room_channel() -> None:
    edits: list[tuple[str, dict[str, Any]]] = []

    async def apply_edit(room: str, edit: dict[str, Any]) -> bool:
        edits.append((room, edit))
        return True

    async with open_live_service(TOKEN_KEY, world_edit=apply_edit) as live, \
            open_bridge("clients") as clients, trio.open_nursery() as nursery:
        ada = await member(live, clients, nursery, Role.COLLABORATOR, "ada")
        bob = await member(live, clients, nursery, Role.VIEWER, "bob")
        presence = await wait_for(clients, ada, "presence", lambda m: len(m["members"]) == 2)
        assert {m["name"] for m in presence["members"]} == {"ada", "bob"}

        await clients.run(channel_send, bob, {"type": "chat", "text": "hello from bob"})
        chat = await wait_for(clients, ada, "chat")
        assert chat["text"] == "hello from bob"
        assert chat["from"]["name"] == "bob" and chat["from"]["role"] == "viewer"

        # A viewer may not edit the world: a clear error, nothing applied.
        await clients.run(channel_send, bob, {"type": "world-edit", "world": ROOM, "op": "set",
                                              "key": "sky", "value": "red"})
        refused = await wait_for(clients, bob, "error")
        assert refused["code"] == "forbidden"
        # A collaborator's edit reaches the node, which applies it and tells everyone.
        await clients.run(channel_send, ada, {"type": "world-edit", "world": ROOM, "op": "set",
                                              "key": "sky", "value": "blue"})
        applied = await wait_for(clients, bob, "world-edit")
        assert applied["applied"] is True and applied["value"] == "blue"
        assert [(r, e["key"], e["value"]) for r, e in edits] == [(ROOM, "sky", "blue")]

        # Malformed messages are refused to their sender only.
        await clients.run(channel_send, ada, {"type": "chat"})
        error = await wait_for(clients, ada, "error")
        assert error["code"] == "bad-message" and "text" in error["message"]
        # Pings (latency probes, answered to the sender only) are not rate-limited, and
        # a short chat line that says "ping" is still a chat line.
        async def pings(peer: ChannelPeer) -> None:
            for i in range(2 * DATA_BURST):
                peer.channel.send(json.dumps({"type": "ping", "t": i}))
            peer.channel.send(json.dumps({"type": "chat", "text": "ping"}))

        await clients.run(pings, ada)
        await wait_for(clients, ada, "pong", lambda m: m["t"] == 2 * DATA_BURST - 1)
        await wait_for(clients, bob, "chat", lambda m: m["text"] == "ping")

        # A flood is cut at the rate limit: the sender is told, the others get the burst.
        async def flood(peer: ChannelPeer) -> None:
            for i in range(3 * DATA_BURST):
                peer.channel.send(json.dumps({"type": "chat", "text": f"spam {i}"}))

        await clients.run(flood, bob)
        limited = await wait_for(clients, bob, "error", lambda m: m["code"] == "rate-limited")
        assert "messages/s" in limited["message"]
        await trio.sleep(0.5)
        _, seen = await clients.run(channel_state, ada)
        spam = [m for m in seen if m["type"] == "chat" and m["text"].startswith("spam")]
        assert DATA_BURST // 2 <= len(spam) <= DATA_BURST + 10
        for peer in (ada, bob):
            await clients.run(peer.pc.close)
        nursery.cancel_scope.cancel()
