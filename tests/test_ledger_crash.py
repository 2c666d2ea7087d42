"""kill -9 in the middle of ingesting: every acknowledged batch survives, and the state
root after restart equals a replay of the log (a real subprocess, a real SIGKILL)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import pytest
from ledger_support import presigned_workload

from n3xus.ledger.ingest import Accepted
from n3xus.ledger.memory import replay_log as replay
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.tx import decode_tx

ACCOUNTS = 20
TRANSFERS = 3_000
BATCH = 100
TESTS_DIR = Path(__file__).resolve().parent

# The child ingests the whole workload in batches and prints "ACK <batch> <log size>" after
# each committed batch. Entries accepted by an earlier (killed) run come back as replays, so
# a restarted child simply resumes.
CHILD = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
import lmdb
from ledger_support import presigned_workload
from n3xus.ledger.store import LedgerStore

genesis, entries = presigned_workload({ACCOUNTS}, {TRANSFERS})
env = lmdb.open(sys.argv[1], max_dbs=64, map_size=1 << 28)
store = LedgerStore(env, genesis)
print("READY", flush=True)
for batch, start in enumerate(range(0, len(entries), {BATCH})):
    store.ingest(entries[start:start + {BATCH}])
    print("ACK", batch, store.log_size(), flush=True)
print("DONE", flush=True)
"""


def run_child(path: Path, kill_after_acks: int | None, rng: random.Random) -> list[int]:
    """Run the ingesting child; SIGKILL it a random moment after ``kill_after_acks`` acks.
    Returns the acknowledged batch numbers."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    acked: list[int] = []
    try:
        for line in child.stdout:
            word, *rest = line.split()
            if word == "ACK":
                acked.append(int(rest[0]))
                if kill_after_acks is not None and len(acked) >= kill_after_acks:
                    time.sleep(rng.uniform(0, 0.02))  # land inside the next batch
                    os.kill(child.pid, signal.SIGKILL)
                    break
    finally:
        child.wait(timeout=120)
    if kill_after_acks is None:
        assert child.returncode == 0
    else:
        assert child.returncode == -signal.SIGKILL
    return acked


@pytest.mark.slow
def test_kill_9_during_ingest_loses_nothing_acknowledged(tmp_path: Path) -> None:
    genesis, entries = presigned_workload(ACCOUNTS, TRANSFERS)
    reference = replay([genesis.block] + entries, genesis=genesis)  # all of them are valid
    ids = [decode_tx(entry).id for entry in entries]
    rng = random.Random(20240611)
    path = tmp_path / "ledger"
    acked_total: set[int] = set()
    for kill_after in (3, 4, 2):
        acked_total.update(run_child(path, kill_after, rng))
        env = lmdb.open(str(path), max_dbs=64, map_size=1 << 28)
        try:
            store = LedgerStore(env, genesis)
            for batch in acked_total:
                for tx_id in ids[batch * BATCH:(batch + 1) * BATCH]:
                    assert store.index_of(tx_id) is not None, f"acked batch {batch} lost"
            root = store.state_root()
            assert replay(store.iter_log(), genesis=genesis).state_root() == root
            assert store.rebuild_state() == root
        finally:
            env.close()
    # A final run completes the workload; the result equals ingesting it in one go.
    run_child(path, None, rng)
    env = lmdb.open(str(path), max_dbs=64, map_size=1 << 28)
    try:
        store = LedgerStore(env, genesis)
        assert list(store.iter_log()) == reference.log
        assert store.state_root() == reference.state_root() == store.rebuild_state()
        assert not any(isinstance(o, Accepted) for o in store.ingest(entries[:5]))
    finally:
        env.close()
