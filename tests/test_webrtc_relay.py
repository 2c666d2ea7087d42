"""The encoded relay with real aiortc peers: a performer sending synthetic VP8, viewers
decoding what the node forwards, keyframe requests, a slow subscriber, a performer
that reloads. Signaling goes through the real handler over an in-memory socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from webrtc_support import (
    TOKEN_KEY,
    MemorySocket,
    accept_answer,
    close_peer,
    incoming_ssrcs,
    join,
    new_performer,
    new_viewer,
    offer,
    outgoing_ssrcs,
    rgb_close,
    send_pli,
    snapshot,
)

from n3xus.webrtc.bridge import AsyncioBridge, open_bridge
from n3xus.webrtc.relay import KEYFRAME_REQUEST_INTERVAL_S
from n3xus.webrtc.rooms import Role
from n3xus.webrtc.service import LiveService, open_live_service

ROOM = "stage"


@asynccontextmanager
async def live_and_clients() -> AsyncIterator[tuple[LiveService, AsyncioBridge, trio.Nursery]]:
    async with open_live_service(TOKEN_KEY) as live, open_bridge("clients") as clients:
        async with trio.open_nursery() as nursery:
            yield live, clients, nursery
            nursery.cancel_scope.cancel()


async def go_live(live: LiveService, clients: AsyncioBridge, nursery: trio.Nursery,
                  rgb: tuple[int, int, int] = (200, 40, 40)) -> tuple[object, MemorySocket]:
    socket, welcome = await join(live, nursery, ROOM, Role.PERFORMER, "performer")
    assert welcome["role"] == "performer"
    performer, sdp = await clients.run(new_performer, rgb)
    answer = await offer(socket, sdp)
    assert answer["type"] == "answer", answer
    await clients.run(accept_answer, performer, answer["sdp"])
    return performer, socket


async def add_viewer(live: LiveService, clients: AsyncioBridge, nursery: trio.Nursery,
                     name: str) -> tuple[object, MemorySocket]:
    socket, _ = await join(live, nursery, ROOM, Role.VIEWER, name)
    viewer, sdp = await clients.run(new_viewer)
    answer = await offer(socket, sdp)
    assert answer["type"] == "answer", answer
    await clients.run(accept_answer, viewer, answer["sdp"])
    return viewer, socket


async def wait_frames(clients: AsyncioBridge, peer: object, at_least: int,
                      timeout: float = 20.0) -> int:
    with trio.fail_after(timeout):
        while True:
            frames, _, _ = await clients.run(snapshot, peer)
            if frames >= at_least:
                return frames
            await trio.sleep(0.1)


async def test_viewers_decode_the_performers_frames_and_the_node_never_decodes() -> None:
    async with live_and_clients() as (live, clients, nursery):
        performer, _ = await go_live(live, clients, nursery)
        viewers = [await add_viewer(live, clients, nursery, f"v{i}") for i in range(3)]
        for viewer, _ in viewers:
            await wait_frames(clients, viewer, 30)
        for viewer, _ in viewers:
            frames, rgb, sizes = await clients.run(snapshot, viewer)
            assert sizes == {(640, 480)}
            assert rgb_close(rgb), rgb
        stats = await live.stats(ROOM)
        video = stats["relays"]["video"]
        assert stats["live"] and video["subscribers"] == 3
        assert video["frames_in"] >= 30 and video["rejected_frames"] == 0
        for per_viewer in stats["viewers"].values():
            assert per_viewer["video"]["dropped"] == 0
        # Each viewer gets its own stream identity, none of them the performer's.
        seen = [await clients.run(incoming_ssrcs, viewer) for viewer, _ in viewers]
        assert all(len(s) >= 1 for s in seen)
        assert len(set().union(*seen)) == sum(len(s) for s in seen)  # all distinct
        assert not set().union(*seen) & await clients.run(outgoing_ssrcs, performer)
        for viewer, _ in viewers:
            await clients.run(close_peer, viewer)
        await clients.run(close_peer, performer)


async def test_a_joining_viewer_and_a_viewer_pli_reach_the_performer_as_keyframes() -> None:
    async with live_and_clients() as (live, clients, nursery):
        performer, _ = await go_live(live, clients, nursery)
        first, _ = await add_viewer(live, clients, nursery, "first")
        await wait_frames(clients, first, 10)
        before = (await live.stats(ROOM))["relays"]["video"]
        await trio.sleep(KEYFRAME_REQUEST_INTERVAL_S * 2)

        # A late joiner can only start at a keyframe: the node asks the performer.
        late, _ = await add_viewer(live, clients, nursery, "late")
        await wait_frames(clients, late, 5)
        after_join = (await live.stats(ROOM))["relays"]["video"]
        assert after_join["keyframe_requests_sent"] > before["keyframe_requests_sent"]
        assert after_join["keyframes_in"] > before["keyframes_in"]

        # A viewer's own RTCP PLI travels to the performer too.
        await trio.sleep(KEYFRAME_REQUEST_INTERVAL_S * 2)
        assert await clients.run(send_pli, first)
        # (A keyframe may also come for other reasons, e.g. a loss; wait for ours.)
        with trio.fail_after(10):
            while True:
                now = (await live.stats(ROOM))["relays"]["video"]
                if now["keyframe_requests_sent"] > after_join["keyframe_requests_sent"]:
                    break
                await trio.sleep(0.05)
        with trio.fail_after(10):  # and the performer answers it with a keyframe
            while not (await live.stats(ROOM))["relays"]["video"]["keyframe_answered"]:
                await trio.sleep(0.05)
        for peer in (first, late, performer):
            await clients.run(close_peer, peer)


async def test_a_slow_subscriber_is_resynchronised_without_hurting_the_others() -> None:
    async with live_and_clients() as (live, clients, nursery):
        performer, _ = await go_live(live, clients, nursery)
        fast, _ = await add_viewer(live, clients, nursery, "fast")
        await wait_frames(clients, fast, 10)
        async with live.subscribe(ROOM, capacity=4) as slow:
            first = await slow.next()
            assert first is not None and first.keyframe  # a subscriber starts at a keyframe
            start = await clients.run(snapshot, fast)
            await trio.sleep(2.0)  # the slow consumer reads nothing for 60 frames
            resumed = await slow.next()
            while resumed is not None and resumed.index <= first.index + 4:
                resumed = await slow.next()  # the 4 frames it could hold
            assert resumed is not None and resumed.keyframe  # resumes at a keyframe
            assert slow.frames.stats.dropped > 0 and slow.frames.stats.resyncs >= 1
            end = await clients.run(snapshot, fast)
        assert end[0] - start[0] >= 40  # ~60 frames in 2 s reached the fast viewer
        stats = await live.stats(ROOM)
        assert all(v["video"]["dropped"] == 0 for v in stats["viewers"].values())
        await clients.run(close_peer, fast)
        await clients.run(close_peer, performer)


async def test_a_performer_who_reloads_leaves_viewers_playing() -> None:
    async with live_and_clients() as (live, clients, nursery):
        performer, socket = await go_live(live, clients, nursery, rgb=(200, 40, 40))
        viewer, viewer_socket = await add_viewer(live, clients, nursery, "viewer")
        await wait_frames(clients, viewer, 15)
        # The performer's tab reloads: its connection drops, it comes back, green now.
        await clients.run(close_peer, performer)
        await socket.hang_up()
        ended = await viewer_socket.recv()
        assert ended == {"type": "live", "live": False}
        frames_before, _, _ = await clients.run(snapshot, viewer)
        performer2, _ = await go_live(live, clients, nursery, rgb=(40, 200, 40))
        assert (await viewer_socket.recv())["live"] is True
        await wait_frames(clients, viewer, frames_before + 30)
        with trio.fail_after(10):
            while True:
                _, rgb, _ = await clients.run(snapshot, viewer)
                if rgb_close(rgb, (40, 200, 40)):
                    break
                await trio.sleep(0.2)
        await clients.run(close_peer, viewer)
        await clients.run(close_peer, performer2)


async def test_a_viewer_that_drops_leaves_the_others_playing() -> None:
    async with live_and_clients() as (live, clients, nursery):
        performer, _ = await go_live(live, clients, nursery)
        stays, _ = await add_viewer(live, clients, nursery, "stays")
        drops, _ = await add_viewer(live, clients, nursery, "drops")
        await wait_frames(clients, drops, 10)
        await clients.run(close_peer, drops)  # gone without a word on signaling
        frames, _, _ = await clients.run(snapshot, stays)
        await wait_frames(clients, stays, frames + 45)
        with trio.fail_after(10):
            while (await live.stats(ROOM))["relays"]["video"]["subscribers"] != 1:
                await trio.sleep(0.1)  # the node noticed and let go of its queue
        await clients.run(close_peer, stays)
        await clients.run(close_peer, performer)
