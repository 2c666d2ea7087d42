"""The one crossing point between trio (the node) and asyncio (aiortc).

aiortc is asyncio-only and creates loop-bound objects (futures, tasks, the
``asyncio.get_event_loop()`` it captures in constructors), while the node runs on
trio. So aiortc gets a thread of its own with its own asyncio loop, every aiortc
object is created on that loop (by running a coroutine there), and the two worlds
meet only here:

* trio -> asyncio: :meth:`AsyncioBridge.run` submits a coroutine function to the
  loop with :func:`asyncio.run_coroutine_threadsafe` and parks the calling trio task
  on a :class:`trio.Event`; the future's done-callback wakes it through the trio
  token (``run_sync_soon``). No trio worker thread is held per call, so a thousand
  concurrent calls cost a thousand parked tasks, not a thousand threads.
* asyncio -> trio: :class:`TrioInbox` is a bounded trio memory channel whose send
  side may be called from the asyncio thread (again through the trio token).

Cancelling the trio caller cancels the asyncio task. :meth:`AsyncioBridge.aclose`
cancels whatever still runs on the loop, waits for it, stops the loop and joins the
thread (from a trio worker thread, once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

import trio

from .errors import BridgeClosedError

T = TypeVar("T")

#: How long :meth:`AsyncioBridge.start` waits for the new thread's loop to exist.
#: Creating a loop takes microseconds; a second means the machine is wedged.
BRIDGE_START_TIMEOUT_S = 5.0
#: How long shutdown waits for tasks left on the loop to finish after cancelling
#: them. aiortc's own teardown (RTCP BYE, DTLS close) completes in milliseconds;
#: the bound keeps a misbehaving task from hanging the node's exit.
BRIDGE_SHUTDOWN_GRACE_S = 5.0
#: Default capacity of a :class:`TrioInbox`: signaling events (ICE candidates,
#: state changes, data-channel messages) come in small bursts; beyond this the
#: consumer is stuck and further events are dropped and counted, never queued
#: without bound.
INBOX_CAPACITY = 256


class AsyncioBridge:
    """One thread running one asyncio event loop, reachable from trio.

    Use :func:`open_bridge` from trio; :meth:`start`/:meth:`close` exist for
    synchronous owners (benchmarks, scripts).
    """

    def __init__(self, name: str = "n3xus-aiortc") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise BridgeClosedError("bridge already started")
        self._thread = threading.Thread(target=self._thread_main, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(BRIDGE_START_TIMEOUT_S):
            raise BridgeClosedError("asyncio loop thread did not start")

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The bridge's loop (for asyncio-side code that must schedule on it)."""
        if self._loop is None or self._closing:
            raise BridgeClosedError("bridge is not running")
        return self._loop

    @property
    def running(self) -> bool:
        return self._loop is not None and not self._closing

    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    async def _cancel_leftovers(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=BRIDGE_SHUTDOWN_GRACE_S)

    def close(self) -> None:
        """Synchronous shutdown: cancel leftovers, stop the loop, join the thread."""
        if self._loop is None or self._thread is None or self._closing:
            return
        loop = self._loop
        cleanup = asyncio.run_coroutine_threadsafe(self._cancel_leftovers(), loop)
        self._closing = True
        try:
            cleanup.result(BRIDGE_SHUTDOWN_GRACE_S * 2)
        except concurrent.futures.TimeoutError:
            cleanup.cancel()
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join()

    async def aclose(self) -> None:
        """Shut down from trio: the cleanup is awaited through the bridge, and the
        join happens in one trio worker thread so the trio loop keeps running."""
        if self._loop is None or self._thread is None or self._closing:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(BRIDGE_SHUTDOWN_GRACE_S * 2):
                await self.run(self._cancel_leftovers)
            self._closing = True
            loop = self._loop
            loop.call_soon_threadsafe(loop.stop)
            await trio.to_thread.run_sync(self._thread.join)

    # -- crossing ----------------------------------------------------------------------

    def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args)`` on the loop from any thread; returns its future."""
        loop = self.loop  # raises before the coroutine object exists if closed
        return asyncio.run_coroutine_threadsafe(fn(*args), loop)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Run a plain function on the loop thread (thread-safe, fire and forget)."""
        self.loop.call_soon_threadsafe(fn, *args)

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``fn(*args)`` on the asyncio loop and return its result to trio.

        The calling trio task sleeps on an event; nothing blocks a thread. If the trio
        caller is cancelled the asyncio task is cancelled too.
        """
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        future = self.submit(fn, *args)

        def wake(_: concurrent.futures.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass  # the trio side is gone; nobody is waiting for this result

        future.add_done_callback(wake)
        try:
            await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()


@asynccontextmanager
async def open_bridge(name: str = "n3xus-aiortc") -> AsyncIterator[AsyncioBridge]:
    """Start a bridge for the duration of a trio ``async with`` block."""
    bridge = AsyncioBridge(name)
    bridge.start()
    try:
        yield bridge
    finally:
        await bridge.aclose()


class TrioInbox(Generic[T]):
    """A bounded trio channel that the asyncio thread may post into.

    Create it on the trio side; hand :meth:`post` to asyncio-side code; consume with
    ``async for item in inbox``. When the trio consumer falls behind by more than the
    capacity, new items are dropped and counted in :attr:`dropped` (never queued
    without bound, never blocking the asyncio loop).
    """

    def __init__(self, capacity: int = INBOX_CAPACITY) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._send, self._receive = trio.open_memory_channel[T](capacity)
        self.dropped = 0

    def post(self, item: T) -> bool:
        """Thread-safe; returns False when the trio run has already finished."""
        try:
            self._token.run_sync_soon(self._deliver, item)
        except trio.RunFinishedError:
            return False
        return True

    def _deliver(self, item: T) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1

    def close(self) -> None:
        """Called from trio: the consumer's ``async for`` ends after what is queued."""
        self._send.close()

    def close_threadsafe(self) -> None:
        """Called from the asyncio thread: same as :meth:`close`, delivered in order."""
        try:
            self._token.run_sync_soon(self._send.close)
        except trio.RunFinishedError:
            pass  # nothing left to notify

    async def receive(self) -> T:
        return await self._receive.receive()

    def __aiter__(self) -> TrioInbox[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
