"""The agents' HTTP API on an in-process node (real LMDB, real libp2p host on 127.0.0.1,
the real bundled model): a full per-agent queue answers 429 ``busy`` before any stream,
the queued turns are then answered; ``node status`` names the build's inference backend
before the model is loaded; unused agent keys are removed after their TTL."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from blake3 import blake3
from nacl.signing import SigningKey
from node_api_support import api_node

from n3xus.imvu.inference import bundled_model_path
from n3xus.imvu.manifest import Generation, make_primitives, model_ref_of_file, sign_manifest
from n3xus.node.config import DataDir
from n3xus.node.runtime import Node
from n3xus.node.services.agents import (
    AGENT_KEY_DIR,
    UNUSED_AGENT_KEY_TTL_S,
    create_agent_key,
    prune_unused_agent_keys,
)

CREATOR = SigningKey(blake3(b"n3xus-agents-api-test/creator").digest())
TURN_TIMEOUT_S = 300.0  # the machine is shared: a turn may wait for other work


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    async with api_node(tmp_path, timeout=TURN_TIMEOUT_S) as pair:
        yield pair


async def create_agent(client: httpx.AsyncClient, name: str) -> str:
    made = (await client.post("/agents/keys", json={})).json()
    manifest = sign_manifest(
        CREATOR, name=name, persona="You are Nova, a cheerful stage assistant.",
        agent=bytes.fromhex(made["agent"]), model=model_ref_of_file(bundled_model_path()),
        generation=Generation(8, 2048, 0), tools=[], primitives=make_primitives(actions=["reply"]),
        time=time.time_ns() // 1_000_000)
    created = await client.post("/agents", json={"manifest": manifest.to_block().hex()})
    assert created.status_code == 200, created.text
    return str(made["agent"])


async def ask_stream(client: httpx.AsyncClient, name: str, text: str) -> list[tuple[str, Any]]:
    """One ask over SSE: its (event, data) pairs."""
    events: list[tuple[str, Any]] = []
    async with client.stream("POST", f"/agents/{name}/ask", json={"text": text}) as response:
        assert response.status_code == 200
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    return events


async def wait_for(condition: Any, what: str) -> None:
    with trio.fail_after(TURN_TIMEOUT_S):
        while not condition():
            await trio.sleep(0.01)


async def test_a_full_queue_is_429_busy_and_the_queued_turns_are_answered(
        api: tuple[Node, httpx.AsyncClient]) -> None:
    node, client = api
    agents = node.agents
    assert agents is not None
    await wait_for(lambda: agents.status()["build_backend"] is not None, "the build's backend")
    # Before the model is loaded, node status already says what the build runs on.
    status = (await client.get("/status")).json()["agents"]
    assert status["model_loaded"] is False and status["backend"] is None
    assert status["build_backend"]["backend"] in ("cpu", "gpu")
    assert status["build_backend"]["gpu_offload"] is (status["build_backend"]["backend"] == "gpu")
    assert "AVX" in status["build_backend"]["system_info"] or "NEON" in status["build_backend"]["system_info"]
    assert agents.model is None  # ... and it did not load the model to say so

    agents.max_queued_per_agent = 1  # the test hook: a queue of one per agent
    agent = await create_agent(client, "nova")
    assert (await client.post("/agents/nova/start", json={})).status_code == 200  # loads the model
    scheduler = agents.scheduler
    assert scheduler is not None and scheduler.max_queued_per_agent == 1
    answered: list[list[tuple[str, Any]]] = []

    async def ask(text: str) -> None:
        answered.append(await ask_stream(client, "nova", text))

    async with trio.open_nursery() as nursery:
        async with scheduler.hold():  # the model is busy: turns wait
            nursery.start_soon(ask, "Hello!")
            await wait_for(lambda: scheduler.stats()["serving"] == 1, "the first turn to wait for the model")
            nursery.start_soon(ask, "Hi there!")
            await wait_for(lambda: scheduler.queued() == {agent: 1}, "the second turn to queue")
            busy = await client.post("/agents/nova/ask", json={"text": "And me?"})
            assert busy.status_code == 429 and busy.headers["content-type"].startswith("application/json")
            assert busy.json()["error"]["code"] == "busy"
            assert "1 requests queued" in busy.json()["error"]["message"]
            metrics = (await client.get(node.api_url + "/metrics")).text
            assert "n3xus_inference_queued 1.0" in metrics
            assert (await client.get("/agents/nova")).json()["queued"] == 1
        # The model is free again: both accepted turns are answered, the refused one left nothing.
    assert len(answered) == 2
    for events in answered:
        assert events[-1][0] == "result" and events[-1][1]["decision"]
    decisions = (await client.get("/agents/nova/decisions")).json()["decisions"]
    assert len(decisions) == 2


def test_unused_agent_keys_are_removed_after_their_ttl(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "n")
    dd.init()
    registered, old_unused, fresh_unused = (create_agent_key(dd) for _ in range(3))
    stale = time.time() - UNUSED_AGENT_KEY_TTL_S - 60
    for agent in (registered, old_unused):
        os.utime(dd.path / AGENT_KEY_DIR / f"{agent.hex()}.key", (stale, stale))
    other = dd.path / AGENT_KEY_DIR / "notes.txt"  # not a key file: never touched
    other.write_text("x")
    os.utime(other, (stale, stale))
    assert prune_unused_agent_keys(dd, {registered}, time.time()) == [old_unused]
    left = sorted(p.name for p in (dd.path / AGENT_KEY_DIR).iterdir())
    assert left == sorted([f"{registered.hex()}.key", f"{fresh_unused.hex()}.key", "notes.txt"])
    assert prune_unused_agent_keys(dd, {registered}, time.time()) == []
