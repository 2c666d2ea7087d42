"""``/metrics`` of a real node (issue 7 §6): canon store and log, ledger log, accepted
and rejected transactions by reason, frozen accounts, checkpoint size, per-route
latency histograms, process resources; names as Prometheus conventions say."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from nacl.signing import SigningKey
from node_api_support import api_node
from prometheus_client.parser import text_string_to_metric_families

from n3xus.canon.blockstore import StoreStats
from n3xus.canon.cid import CID
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.runtime import Node
from n3xus.node.services import metrics as service_metrics
from n3xus.node.services.wallets import ensure_genesis


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    # Every scrape sees the store as it is now (the node reuses a scan for 15 s).
    monkeypatch.setattr(service_metrics, "STORE_SCAN_INTERVAL_S", 0.0)
    async with api_node(tmp_path, base_path="") as pair:
        yield pair


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers={"Authorization": ""})  # public
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_metrics_follow_the_node(api: tuple[Node, httpx.AsyncClient]) -> None:
    node, c = api
    before = await scrape(c)
    for name in ("n3xus_canon_blocks", "n3xus_canon_stored_bytes", "n3xus_canon_pins",
                 "n3xus_canon_corrupt_blocks", "n3xus_canon_log_entries",
                 "n3xus_ledger_log_entries", "n3xus_ledger_frozen_accounts",
                 "n3xus_ledger_checkpoint_entries", "n3xus_ledger_transactions_accepted_total",
                 "process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "n3xus_dials_total", "n3xus_api_requests_total"):
        assert (name, ()) in before, name
    assert value(before, "process_resident_memory_bytes") > 10_000_000
    assert value(before, "n3xus_canon_blocks") == 0 and value(before, "n3xus_ledger_log_entries") == 1

    # Canon: two blocks, a pin, a world commit (a logged entry), a corrupt block.
    v1 = "/api/v1"
    first = (await c.post(f"{v1}/canon/blocks", content=b"a" * 1000)).json()["cid"]
    await c.post(f"{v1}/canon/blocks", content=b"b" * 24, params={"pin": "false"})
    await c.post(f"{v1}/worlds/w", json={"set": {"k": 1}})
    blocks_db = node.env.open_db(b"canon/blocks")
    with node.env.begin(write=True, db=blocks_db) as txn:
        txn.put(bytes(CID(first)), b"c" * 1000)
    assert (await c.get(f"{v1}/canon/blocks/{first}")).status_code == 500
    after = await scrape(c)
    stats = (await c.get(f"{v1}/canon/stats")).json()
    assert value(after, "n3xus_canon_blocks") == stats["blocks"] >= 4
    assert value(after, "n3xus_canon_stored_bytes") == stats["bytes"] >= 1024
    assert value(after, "n3xus_canon_pins") == stats["pins"] >= 2  # the block, world/w, ...
    assert value(after, "n3xus_canon_corrupt_blocks") == 1
    assert value(after, "n3xus_canon_log_entries") == 1

    # Ledger: one accepted, two rejected for two reasons, an equivocation that freezes.
    genesis, _ = ensure_genesis(node.data_dir)
    issuer = AccountChain(SigningKey(node.data_dir.read_identity_seed()), genesis.cid)
    alice = AccountChain(SigningKey(bytes(range(32))), genesis.cid)
    bob = bytes(SigningKey(bytes(range(1, 33))).verify_key)
    assert (await c.post(f"{v1}/ledger/txs", content=issuer.sign(
        Op.ISSUE, {"to": alice.account, "amount": 5}, time_ms=1))).status_code == 200
    over = alice.sign_at(0, None, Op.TRANSFER, {"to": bob, "amount": 50}, time_ms=2)
    assert (await c.post(f"{v1}/ledger/txs", content=over)).json()["error"]["code"] == "overdraft"
    assert (await c.post(f"{v1}/ledger/txs", content=b"\xa1x")).status_code == 422
    assert (await c.post(f"{v1}/ledger/txs", content=alice.sign_at(
        0, None, Op.TRANSFER, {"to": bob, "amount": 1}, time_ms=3))).status_code == 200
    assert (await c.post(f"{v1}/ledger/txs", content=alice.sign_at(
        0, None, Op.TRANSFER, {"to": bob, "amount": 2}, time_ms=3))).status_code == 422
    await c.post(f"{v1}/ledger/checkpoint")
    ledger = await scrape(c)
    status = (await c.get(f"{v1}/ledger/status")).json()
    assert value(ledger, "n3xus_ledger_transactions_accepted_total") == 2
    assert value(ledger, "n3xus_ledger_transactions_rejected_total", reason="overdraft") == 1
    assert value(ledger, "n3xus_ledger_transactions_rejected_total", reason="equivocation") == 1
    assert sum(v for (n, _), v in ledger.items()
               if n == "n3xus_ledger_transactions_rejected_total") == 3
    assert value(ledger, "n3xus_ledger_log_entries") == status["log_size"] >= 3
    assert value(ledger, "n3xus_ledger_frozen_accounts") == len(status["frozen_accounts"]) == 1
    assert value(ledger, "n3xus_ledger_checkpoint_entries") == status["log_size"]

    # Per-route latency histograms and answers by status, labelled by route template.
    route = "/api/v1/canon/blocks/{cid}"
    assert value(ledger, "n3xus_api_request_duration_seconds_count", method="GET", route=route) == 1
    assert value(ledger, "n3xus_api_request_duration_seconds_bucket", method="GET", route=route,
                 le="+Inf") == 1
    assert value(ledger, "n3xus_api_responses_total", method="GET", route=route, status="500") == 1
    assert value(ledger, "n3xus_api_responses_total", method="POST", route="/api/v1/ledger/txs",
                 status="422") == 3
    # Conventions: counters end in _total, units are in the names of unit-bearing ones.
    text = (await c.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name.startswith("n3xus_") and not family.name.endswith("_created"):
            if family.type == "counter" and family.samples:
                assert any(s.name.endswith("_total") for s in family.samples), family.name
            if "duration" in family.name or "bytes" in family.name or "uptime" in family.name:
                assert family.name.endswith(("_seconds", "_bytes")), family.name


async def test_collecting_on_the_event_loop_never_scans_the_store(
        api: tuple[Node, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch) -> None:
    """A block store scan on the trio thread would stall every task of the node: a
    collection there reports the last scan (made by a /metrics scrape or the console's
    sampler, both in worker threads), or no store totals before any scan -- never a
    fresh scan, never an invented value."""
    node, c = api
    assert node.canon is not None
    loop_thread = threading.get_ident()  # the test runs on the node's trio thread
    real_stats = node.canon.store.stats
    scans_on_the_loop: list[str] = []

    def stats_off_the_loop() -> StoreStats:
        if threading.get_ident() == loop_thread:
            scans_on_the_loop.append("scan")
            raise AssertionError("the block store was scanned on the event loop")
        return real_stats()  # worker threads (scrapes, the console's sampler) still scan

    monkeypatch.setattr(node.canon.store, "stats", stats_off_the_loop)

    # A collector that has not scanned yet has no store totals to report on the loop.
    # (The node's own collector may already have scanned: the console samples it at start.)
    collector = service_metrics.CanonCollector(node.canon)
    before_any_scan = {f.name for f in collector.collect()}
    assert "n3xus_canon_log_entries" in before_any_scan
    assert "n3xus_canon_blocks" not in before_any_scan  # nothing scanned yet: not invented
    await c.post("/api/v1/canon/blocks", content=b"x")
    in_thread = await trio.to_thread.run_sync(lambda: list(collector.collect()))
    assert {f.name: f.samples[0].value for f in in_thread}["n3xus_canon_blocks"] == 1
    await c.post("/api/v1/canon/blocks", content=b"y")
    on_loop = {f.name: f.samples[0].value for f in collector.collect()}
    assert on_loop["n3xus_canon_blocks"] == 1  # the last scan, though the store has 2 now

    # The node's registry: /metrics scans in a worker thread; the loop gets that scan.
    scraped = await scrape(c)
    assert value(scraped, "n3xus_canon_blocks") == 2
    node_on_loop = {f.name: f.samples[0].value for f in node.counters.registry.collect()
                    if f.name == "n3xus_canon_blocks"}
    assert node_on_loop == {"n3xus_canon_blocks": 2}
    assert not scans_on_the_loop
