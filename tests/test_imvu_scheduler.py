"""The inference scheduler with the real bundled model: never blocks trio, fair across
agents, per-agent limits, cancellation between tokens, streaming, same bytes as a direct
run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio

from n3xus.imvu.errors import QueueFullError
from n3xus.imvu.inference import ModelSettings, bundled_model_path, load_model
from n3xus.imvu.scheduler import GenerationRequest, InferenceScheduler, backend_info, run_generation

PROMPT = "<|im_start|>user\nTell me a story about a drummer.<|im_end|>\n<|im_start|>assistant\n"
SHORT = GenerationRequest(PROMPT, "", 6)
LONG = GenerationRequest(PROMPT, "", 200)


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    llama = load_model(ModelSettings(bundled_model_path(), context_tokens=1024, threads=2))
    yield llama
    llama.close()


async def test_streams_without_blocking_and_matches_a_direct_run(model: Any) -> None:
    direct = run_generation(model, GenerationRequest(PROMPT, "", 24))
    scheduler = InferenceScheduler(model)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.005)
            ticks += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        nursery.start_soon(ticker)
        send, receive = trio.open_memory_channel[str](64)
        result = await scheduler.generate("a", GenerationRequest(PROMPT, "", 24), send)
        await send.aclose()
        pieces = [piece async for piece in receive]
        nursery.cancel_scope.cancel()
    assert result.output == direct.output and result.output_tokens == 24
    assert "".join(pieces).encode() == result.output
    # The trio loop kept running while the worker decoded (>= a tick per 5 ms of inference).
    assert ticks >= result.inference_us / 1_000_000 / 0.005 / 4
    assert backend_info(model, bundled_model_path()).backend in ("cpu", "gpu")


async def test_round_robin_across_agents_and_queue_limit(model: Any) -> None:
    scheduler = InferenceScheduler(model, max_queued_per_agent=3)
    finished: list[str] = []

    async def ask(agent: str, tag: str) -> None:
        await scheduler.generate(agent, SHORT)
        finished.append(tag)

    async with trio.open_nursery() as nursery:
        # Queue everything before the worker starts: the order then depends only on fairness.
        for i in range(3):
            nursery.start_soon(ask, "busy", f"busy{i}")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ask, "quiet", "quiet0")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(QueueFullError):
            await scheduler.generate("busy", SHORT)
        assert scheduler.queued() == {"busy": 3, "quiet": 1}
        await nursery.start(scheduler.run)
        while len(finished) < 4:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    # The quiet agent's one request is served second, not behind all of busy's (trio starts
    # the three busy tasks in no fixed order, so only the agents' order is checked).
    assert [tag.rstrip("0123456789") for tag in finished] == ["busy", "quiet", "busy", "busy"]


async def test_an_asker_that_goes_away_stops_the_generation(model: Any) -> None:
    scheduler = InferenceScheduler(model)
    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        send, receive = trio.open_memory_channel[str](256)
        with trio.move_on_after(60) as scope:
            async with trio.open_nursery() as asker:
                asker.start_soon(scheduler.generate, "a", LONG, send)
                await receive.receive()  # generation has started ...
                asker.cancel_scope.cancel()  # ... and the asker leaves
        assert not scope.cancelled_caught
        # The worker stops at the next token and the next job runs at once.
        with trio.fail_after(30):
            after = await scheduler.generate("b", SHORT)
        nursery.cancel_scope.cancel()
    assert after.output_tokens == 6
    assert scheduler.counters["cancelled"] == 1
    # Far fewer than the 200 tokens the cancelled job asked for were generated.
    assert scheduler.counters["tokens"] < 6 + 100


async def test_a_queued_job_is_dropped_when_its_asker_leaves(model: Any) -> None:
    scheduler = InferenceScheduler(model)
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.05):
            await scheduler.generate("a", SHORT)  # not running yet: stays queued, then cancelled
        assert scheduler.queued() == {}
        await nursery.start(scheduler.run)
        result = await scheduler.generate("a", SHORT)
        nursery.cancel_scope.cancel()
    assert result.output_tokens == 6 and scheduler.counters["jobs"] == 1


async def test_late_bound_requests_are_made_when_the_job_gets_the_model(model: Any) -> None:
    scheduler = InferenceScheduler(model)
    prepared: list[str] = []
    results: list[Any] = []

    def prepare() -> GenerationRequest:
        prepared.append("now")
        return SHORT

    def broken() -> GenerationRequest:
        raise KeyError("the asker's own error")

    async def late() -> None:
        results.append(await scheduler.generate_when_ready("a", prepare))

    async with trio.open_nursery() as nursery:
        await nursery.start(scheduler.run)
        async with scheduler.hold():  # the model is busy
            nursery.start_soon(late)
            with trio.fail_after(30):
                while scheduler.stats()["serving"] != 1:
                    await trio.sleep(0.005)
            await trio.sleep(0.05)
            assert prepared == [] and results == []  # waiting for the model: not prepared yet
        with trio.fail_after(60):
            while not results:
                await trio.sleep(0.005)
        assert prepared == ["now"] and results[0].output == run_generation(model, SHORT).output
        assert await scheduler.generate_when_ready("a", lambda: None) is None  # nothing to run
        with pytest.raises(KeyError, match="own error"):  # raised to the asker as raised
            await scheduler.generate_when_ready("a", broken)
        assert scheduler.stats()["serving"] == 0 and scheduler.counters["jobs"] == 1
        nursery.cancel_scope.cancel()
