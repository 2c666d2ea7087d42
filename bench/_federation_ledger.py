"""Ledger federation rows of ``bench/federation.py`` (issue 9).

* **gossip burst** (``_federation_burst.py``): 10 nodes, one OS process each (as deployed),
  each with 3 peers (the Petersen graph: 3-regular, diameter 2, not a full mesh), each a real
  host + GossipService + LedgerFederation over its own LMDB ledger. 1,000 pre-signed
  transfers are handed to the nodes at once (100 per node, as a local batch) and the time
  until each transaction is in every node's set is measured (median, p99; none may be
  lost). Ceiling: the same gossip message bytes flooded over plain TCP along the same graph
  by 10 processes (each forwards a message it has not seen to its other neighbours), no
  ledger work, same run. ratio = ceiling p99 / ours p99 (target >= 0.5, i.e. within twice
  the raw broadcast). The row also reports the nodes' CPU per transaction and the floor it
  sets on the machine's cores.
* **catch-up**: a node N transactions behind syncs from one peer over
  ``/n3xus/ledger-sync/2.0.0`` until the state roots are equal, against the same node's
  local ingest of the same entries (``LedgerStore.ingest`` in batches of 1,000, fsync: the
  figure of ``bench/ledger.py``). ratio = local time / catch-up time (target >= 0.5).
* **verify ahead of apply**: the node's ingest path (signatures on a pool of all cores, then
  the ordered apply without a second check) against one core's raw libsodium verify of the
  same transactions. ratio = ingest rate / raw verify rate (target >= 1.5 on 2 cores).
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _federation_burst import BURST, burst_rows
from nacl.signing import SigningKey

from _harness import Result
from ledger import Workload, _raw_verifier
from n3xus.ledger.ingest import Accepted
from n3xus.node.p2p import host as p2p
from n3xus.node.p2p.gossip import GossipService
from n3xus.node.services.ledger import LedgerService
from n3xus.node.services.ledger_federation import (
    LedgerFederation,
    ParallelVerifier,
    admit_checked,
)
from n3xus.node.storage import open_environment

BURST_REPEATS_LARGE = 3
"""Bursts of each kind with ``--large`` (the median run's p99 is reported); one by default:
a burst of 10 node processes takes ~30 s of setup on this machine."""
CATCH_UP = 30_000
CATCH_UP_LARGE = 100_000
VERIFY_TXS = 20_000
# Entries per write transaction in the verify-ahead row: one fsync per batch costs little,
# and the pipeline has several batches to overlap.
VERIFY_BATCH = 2_000
VERIFY_REPEATS = 3
"""Interleaved pairs (raw verify, our ingest) in the verify-ahead row; medians reported."""
MAP_SIZE_MIB = 2048


class _Node:
    def __init__(self, root: Path, index: int, workload: Workload) -> None:
        self.env = open_environment(root / f"n{index}", MAP_SIZE_MIB)
        self.service = LedgerService(self.env, workload.genesis, SigningKey(secrets.token_bytes(32)),
                                     f"bench{index}")
        self.host = p2p.make_host(p2p.keypair_from_seed(secrets.token_bytes(32)))
        self.addr = ""
        self.gossip: GossipService | None = None
        self.federation: LedgerFederation | None = None


async def _start(nursery: trio.Nursery, node: _Node, interval_s: float) -> None:
    addrs = await nursery.start(_run_host, node.host)
    node.addr = addrs[0]
    node.gossip = await nursery.start(GossipService(node.host).run)
    node.federation = await nursery.start(LedgerFederation(
        node.host, node.service, node.gossip, sync_interval_s=interval_s).run)


async def _run_host(host: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with p2p.running_host(host, ["/ip4/127.0.0.1/tcp/0"]) as addrs:
        task_status.started(addrs)
        await trio.sleep_forever()


# --- catch-up -------------------------------------------------------------------------------


async def _catch_up(root: Path, workload: Workload, count: int) -> float:
    source, behind = _Node(root, 100, workload), _Node(root, 101, workload)
    entries = workload.issuance + workload.transfers[:count]
    for start in range(0, len(entries), 1000):
        source.service.store.ingest(entries[start:start + 1000], verify=False)
    target = source.service.store.state_root()
    async with trio.open_nursery() as nursery:
        await _start(nursery, source, 3600.0)
        await _start(nursery, behind, 0.2)
        started = time.perf_counter()
        await p2p.connect(behind.host, source.addr)
        while behind.service.store.log_size() < len(entries) + 1 or \
                await trio.to_thread.run_sync(behind.service.store.state_root) != target:
            await trio.sleep(0.05)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    source.env.close()
    behind.env.close()
    return elapsed


def _local_ingest(root: Path, workload: Workload, count: int) -> float:
    from n3xus.ledger.store import LedgerStore

    env = open_environment(root / "local", MAP_SIZE_MIB)
    store = LedgerStore(env, workload.genesis)
    entries = workload.issuance + workload.transfers[:count]
    started = time.perf_counter()
    for start in range(0, len(entries), 1000):
        store.ingest(entries[start:start + 1000])
    elapsed = time.perf_counter() - started
    env.close()
    return elapsed


# --- verify ahead of apply ------------------------------------------------------------------


def _verify_once(root: Path, workload: Workload, name: str) -> dict[str, float]:
    """One interleaved pair: wall and CPU seconds of the raw verify and of our ingest."""
    from n3xus.ledger.store import LedgerStore

    txs = workload.transfers[:VERIFY_TXS]
    verify = _raw_verifier()
    cpu, started = time.thread_time(), time.perf_counter()
    for sig, message, key in workload.triples[:VERIFY_TXS]:
        if verify(sig, message, len(message), key) != 0:
            raise AssertionError("a workload signature does not verify")
    found = {"raw": time.perf_counter() - started, "raw cpu": time.thread_time() - cpu}
    env = open_environment(root / name, MAP_SIZE_MIB)
    store = LedgerStore(env, workload.genesis)
    store.ingest(workload.issuance)
    verifier = ParallelVerifier()
    parts = [txs[start:start + VERIFY_BATCH] for start in range(0, len(txs), VERIFY_BATCH)]
    cpu, ledger_cpu, started = time.process_time(), time.thread_time(), time.perf_counter()
    # The node's pipeline: batch i is applied while batch i+1's signatures are checked.
    for part, checked in zip(parts, verifier.pipelined(store, parts), strict=True):
        outcomes = admit_checked(store, part, checked, sort=False, now=None)
        if not all(isinstance(o, Accepted) and o.applied for o in outcomes):
            raise AssertionError("a transfer of the verify-ahead row did not apply")
    found.update({"ours": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                  "ledger cpu": time.thread_time() - ledger_cpu, "workers": verifier.workers})
    env.close()
    return found


def _verify_rows(root: Path, workload: Workload, repeats: int = VERIFY_REPEATS) -> Result:
    runs = [_verify_once(root, workload, f"verify{n}") for n in range(repeats)]

    def median(name: str) -> float:
        return statistics.median(run[name] for run in runs)

    cores = os.cpu_count() or 1
    per_tx = {name: median(name) / VERIFY_TXS * 1e6 for name in ("raw cpu", "cpu", "ledger cpu")}
    # Wall time on a shared machine says more about the neighbours than about us: the CPU
    # each transaction costs gives the rate these cores would reach if they were ours.
    bound = per_tx["raw cpu"] / max(per_tx["cpu"] / cores, per_tx["ledger cpu"])
    notes = {"cpu count": cores,
             "load average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
             "wall ratios of the runs": " ".join(f"{run['raw'] / run['ours']:.2f}"
                                                 for run in runs),
             "CPU us per tx": (f"raw verify {per_tx['raw cpu']:.1f}; ours {per_tx['cpu']:.1f} "
                               f"(all threads), of which the ledger thread "
                               f"{per_tx['ledger cpu']:.1f}"),
             f"ratio these {cores} cores allow from CPU": f"{bound:.2f}"}
    return Result(f"ingest, verify on {int(median('workers'))} cores ahead of apply, vs 1-core "
                  "raw verify", "tx", VERIFY_TXS, median("ours"), median("raw"), 1.5, True,
                  notes)


def rows(large: bool) -> tuple[list[Result], dict[str, Any]]:
    count = CATCH_UP_LARGE if large else CATCH_UP
    workload = Workload(max(count, BURST, VERIFY_TXS))
    root = Path(tempfile.mkdtemp(prefix="bench-fed-ledger-"))
    extra: dict[str, Any] = {}
    try:
        results = burst_rows(bytes(workload.genesis), workload.issuance,
                             workload.transfers[:BURST], BURST_REPEATS_LARGE if large else 1)
        local = _local_ingest(root, workload, count)
        caught = trio.run(_catch_up, root, workload, count)
        results.append(Result(f"catch-up of {count:,} tx over ledger-sync vs local ingest",
                              "tx", count, caught, local, 0.5, True, {}))
        results.append(_verify_rows(root, workload))
        extra["ledger catch-up workload"] = (f"{count:,} transfers among 100 accounts"
                                             + ("" if large else "; --large: 100,000"))
        return results, extra
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    # The verify-ahead row alone: python bench/_federation_ledger.py [--repeats N] [--json]
    from _harness import parser, report

    arguments = parser("ledger ingest, verify ahead of apply").parse_args()
    only = Path(tempfile.mkdtemp(prefix="bench-fed-verify-"))
    try:
        row = _verify_rows(only, Workload(VERIFY_TXS), arguments.repeats)
    finally:
        shutil.rmtree(only, ignore_errors=True)
    report("ledger ingest, verify ahead of apply", [row], {}, arguments.json)
