"""The trio <-> asyncio bridge: results and errors cross, cancellation crosses, calls
hold no worker thread, events flow back bounded, shutdown leaves no thread."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from n3xus.webrtc.bridge import AsyncioBridge, TrioInbox, open_bridge
from n3xus.webrtc.errors import BridgeClosedError


async def test_results_and_exceptions_cross_and_code_runs_on_the_loop_thread() -> None:
    async with open_bridge("t") as bridge:
        async def where() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        assert await bridge.run(where) == "t"

        async def fail() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await bridge.run(fail)


async def test_a_thousand_concurrent_calls_hold_no_thread_each() -> None:
    async with open_bridge() as bridge:
        threads_before = threading.active_count()
        peak = 0
        results: list[int] = []

        async def slow(i: int) -> int:
            await asyncio.sleep(0.2)
            return i

        async def call(i: int) -> None:
            results.append(await bridge.run(slow, i))

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(call, i)
            await trio.sleep(0.1)
            peak = threading.active_count()
        assert sorted(results) == list(range(1000))
        assert peak <= threads_before + 1  # not one thread per call


async def test_cancelling_the_trio_caller_cancels_the_asyncio_task() -> None:
    async with open_bridge() as bridge:
        cancelled = threading.Event()

        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with trio.move_on_after(0.2):
            await bridge.run(forever)
        with trio.fail_after(5):
            while not cancelled.is_set():
                await trio.sleep(0.01)


async def test_shutdown_cancels_leftovers_and_joins_the_thread() -> None:
    async with open_bridge("short-lived") as bridge:
        def start_forever() -> None:
            asyncio.get_running_loop().create_task(asyncio.sleep(3600))
        bridge.call_soon(start_forever)
        await trio.sleep(0.05)
    assert not any(t.name == "short-lived" for t in threading.enumerate())
    with pytest.raises(BridgeClosedError):
        await bridge.run(asyncio.sleep, 0)


async def test_the_inbox_carries_events_back_and_drops_beyond_capacity() -> None:
    async with open_bridge() as bridge:
        inbox: TrioInbox[int] = TrioInbox(capacity=3)

        async def post_many() -> None:
            for i in range(10):
                inbox.post(i)

        await bridge.run(post_many)
        await trio.sleep(0.05)
        got = [inbox._receive.receive_nowait() for _ in range(3)]
        assert got == [0, 1, 2] and inbox.dropped == 7


def test_synchronous_start_and_close() -> None:
    bridge = AsyncioBridge("sync")
    bridge.start()
    assert bridge.submit(asyncio.sleep, 0, "ok").result(5) == "ok"
    bridge.close()
    assert not bridge.running
