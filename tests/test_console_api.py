"""The console's server side: the metrics history, and the console routes of a real
node (session check, views, the live-event stream and its auth, static assets)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import jsonschema
import pytest
import trio
from openapi_spec_validator import validate

from n3xus.node.api.console import ASSETS, CONTENT_SECURITY_POLICY, MAX_EVENT_STREAMS
from n3xus.node.config import DataDir, NodeConfig
from n3xus.node.runtime import Node
from n3xus.node.services import metrics_history as mh
from n3xus.node.services.metrics_history import MetricsHistory


async def _no_sample() -> dict[str, float]:
    return {}


async def test_history_keeps_the_newest_samples_and_wakes_waiters() -> None:
    history = MetricsHistory(_no_sample, interval_s=1, capacity=3)
    assert history.columns()["seq"] == [] and history.last_seq == 0
    for i in range(5):
        history.record({"a": i, "b": 10 * i}, at=100.0 + i)
    cols = history.columns()
    assert cols["seq"] == [3, 4, 5] and cols["time"] == [102.0, 103.0, 104.0]
    assert cols["series"] == {"a": [2.0, 3.0, 4.0], "b": [20.0, 30.0, 40.0]}
    assert [s.seq for s in history.since(4)] == [5]
    history.record({"a": 9, "c": 1})  # a series that appears later: None before it
    assert history.columns()["series"]["c"] == [None, None, 1.0]
    assert history.columns()["series"]["b"][-1] is None

    got: list[int] = []

    async def waiter() -> None:
        got.extend(s.seq for s in await history.wait_after(history.last_seq))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.05)
        assert got == []  # parked until the next sample
        history.record({"a": 1})
    assert got == [7]


async def test_history_caps_the_number_of_series() -> None:
    history = MetricsHistory(_no_sample)
    history.record({f"s{i}": i for i in range(mh.MAX_SERIES + 10)})
    assert len(history.series) == mh.MAX_SERIES
    with pytest.raises(ValueError):
        MetricsHistory(_no_sample, interval_s=0)


async def test_sampler_failures_leave_a_gap_not_a_crash() -> None:
    calls = 0

    async def flaky() -> dict[str, float]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError("disk went away")
        return {"x": calls}

    history = MetricsHistory(flaky, interval_s=0.01)
    with trio.move_on_after(0.3):
        await history.run()
    assert calls >= 3 and 2.0 not in history.columns()["series"]["x"]


async def test_console_routes_of_a_running_node(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "n")
    dd.init()
    node = Node(dd, NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), api_port=0, map_size_mib=128))
    token = dd.read_token()
    auth = {"Authorization": f"Bearer {token}"}
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        async with httpx.AsyncClient(base_url=node.api_url, timeout=30) as client:
            # The page and every asset: served from the package with the strict CSP.
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            for name in ASSETS:
                res = await client.get(f"/console/{name}")
                assert res.status_code == 200 and res.content, name
                again = await client.get(f"/console/{name}", headers={"If-None-Match": res.headers["etag"]})
                assert again.status_code == 304
            for src in ('src="/console/app.js"', 'href="/console/app.css"', 'href="/console/icon.svg"'):
                assert src in page.text
            assert "<script>" not in page.text and "style=" not in page.text
            assert (await client.get("/console/secret.txt")).status_code == 404
            # Session check: 200 either way, so a sign-in attempt is not a failed request.
            for header, expected in ((auth, True), ({"Authorization": f"bearer {token}"}, True),
                                     ({"Authorization": "Bearer nope"}, False), ({}, False)):
                res = await client.get("/api/v1/console/session", headers=header)
                assert res.status_code == 200 and res.json() == {"signed_in": expected}

            for path in ("node", "canon", "ledger", "metrics", "events"):
                assert (await client.get(f"/api/v1/console/{path}")).status_code == 401, path

            view = (await client.get("/api/v1/console/node", headers=auth)).json()
            assert view["peer_id"] == node.peer_id and view["data_dir"]["path"] == str(dd.path)
            assert view["data_dir"]["allocated_bytes"] > 0 and view["data_dir"]["files"] >= 3
            assert "no_peers" in [w["code"] for w in view["warnings"]]
            await client.post("/api/v1/worlds/w", json={"set": {"k": 1}}, headers=auth)
            canon = (await client.get("/api/v1/console/canon", headers=auth)).json()
            stats = (await client.get("/api/v1/canon/stats", headers=auth)).json()
            assert (canon["blocks"], canon["pins"]) == (stats["blocks"], stats["pins"])
            assert [w["world"] for w in canon["worlds"]] == ["w"] and canon["checkpoint"] is None
            assert canon["worlds"][0]["writer"] == view["public_key"]
            ledger = (await client.get("/api/v1/console/ledger", headers=auth)).json()
            assert ledger["scanned"] == 1 and ledger["accounts"] == []  # genesis only
            # Every console route is in the OpenAPI document, and its answers match it.
            doc = (await client.get("/api/v1/openapi.json")).json()
            validate(doc)
            console_ops = {(m, p): op for p, item in doc["paths"].items()
                           for m, op in item.items() if op["tags"] == ["console"]}
            assert set(console_ops) == {("get", "/"), ("get", "/console/{asset}")} | {
                ("get", f"/api/v1/console/{n}")
                for n in ("session", "node", "canon", "ledger", "metrics", "events")}
            assert [p["name"] for p in console_ops[("get", "/api/v1/console/events")]["parameters"]] == ["after"]
            assert "429" in console_ops[("get", "/api/v1/console/events")]["responses"]
            assert "text/event-stream" in console_ops[("get", "/api/v1/console/events")]["responses"]["200"]["content"]
            for name in ("session", "node", "canon", "ledger", "metrics"):
                answer = (await client.get(f"/api/v1/console/{name}", headers=auth)).json()
                schema = console_ops[("get", f"/api/v1/console/{name}")]["responses"]["200"][
                    "content"]["application/json"]["schema"]
                jsonschema.validate(answer, schema)

            # The live stream: samples as server-sent events, resumable with after=SEQ.
            with trio.fail_after(20):
                async with client.stream("GET", "/api/v1/console/events?after=0", headers=auth) as res:
                    assert res.headers["content-type"].startswith("text/event-stream")
                    kind, hello, events = "", {}, []
                    async for line in res.aiter_lines():
                        if line.startswith("event: "):
                            kind = line[7:]
                        elif line.startswith("data: ") and kind == "hello":
                            hello = json.loads(line[6:])
                        elif line.startswith("data: ") and kind == "sample":
                            events.append(json.loads(line[6:]))
                            if len(events) == 2:
                                break
            assert hello["boot"] == (await client.get("/api/v1/console/metrics", headers=auth)).json()["boot"]
            assert events[0]["seq"] == 1 and events[1]["seq"] == 2
            assert events[1]["values"]["worlds"] == 1.0 and "n3xus_api_requests_total" in events[1]["values"]
            history = (await client.get("/api/v1/console/metrics", headers=auth,
                                        params={"after": events[0]["seq"]})).json()
            assert history["seq"][0] == events[1]["seq"]
            assert (await client.get("/api/v1/console/metrics?after=-1", headers=auth)).status_code == 400
            # A seq from before a restart (past the end) gets the whole new history.
            stale = (await client.get("/api/v1/console/metrics?after=999999", headers=auth)).json()
            assert stale["seq"][0] == 1
            # The number of open streams is bounded; a closed stream gives its slot back.
            async with AsyncExitStack() as streams:
                readers = []  # kept referenced: a collected line iterator closes its stream
                for _ in range(MAX_EVENT_STREAMS):
                    res = await streams.enter_async_context(
                        client.stream("GET", "/api/v1/console/events", headers=auth))
                    assert res.status_code == 200
                    readers.append(res.aiter_lines())
                    await readers[-1].__anext__()  # the stream is running
                async with client.stream("GET", "/api/v1/console/events", headers=auth) as res:
                    assert res.status_code == 429
            with trio.fail_after(10):
                while True:  # the server notices the disconnects
                    async with client.stream("GET", "/api/v1/console/events", headers=auth) as res:
                        if res.status_code == 200:
                            break
                    await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
