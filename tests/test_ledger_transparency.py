"""The ledger's transparency log: the Merkle tree follows the ledger log in the same LMDB
transaction, checkpoints commit (size, root, state) and are never inconsistent (also
across reopening), and inclusion, consistency and state proofs verify offline."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_support import account, make_genesis, presigned_workload
from tlog_support import LOG_KEY, NODE, LedgerNet, build_history, open_env

from n3xus.canon import merkle
from n3xus.canon.checkpoint import Checkpoint, ProofBundle
from n3xus.canon.cid import CID
from n3xus.canon.note import parse_note
from n3xus.ledger.audit import (
    open_checkpoint,
    verify_bundle,
    verify_consistency,
    verify_inclusion_bundle,
    verify_state_bundle,
)
from n3xus.ledger.errors import (
    CheckpointRefusedError,
    LedgerCorruptError,
    ProofUnavailableError,
)
from n3xus.ledger.memory import replay_log as replay
from n3xus.ledger.rules import OWNER, edition_key
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.transparency import (
    META_DB,
    TREE_DB,
    TransparencyLog,
    balance_key,
    ledger_origin,
)
from n3xus.ledger.tx import Op

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    environment = open_env(tmp_path / "ledger")
    yield environment
    environment.close()


@pytest.fixture
def net(env: lmdb.Environment) -> LedgerNet:
    return LedgerNet(env)


def expected_root(store: LedgerStore, size: int | None = None) -> bytes:
    """The RFC 9162 BLAKE3 root over the raw log entries, computed independently."""
    entries = list(store.iter_log(0, size))
    return merkle.MerkleTree(merkle.BLAKE3, [merkle.BLAKE3.leaf_hash(e) for e in entries]).root()


# --- the tree follows the log ----------------------------------------------------------------


def test_tree_follows_every_commit_and_genesis_is_leaf_0(net: LedgerNet) -> None:
    assert net.tlog.size() == net.store.log_size() == 1
    assert net.tlog.leaf_hash(0) == merkle.BLAKE3.leaf_hash(net.genesis.block)
    build_history(net)
    size = net.store.log_size()
    assert net.tlog.size() == size > 10
    assert net.tlog.root() == expected_root(net.store)
    assert net.tlog.verify_tree() == size
    for old in range(1, size):
        assert net.tlog.root(old) == expected_root(net.store, old)
        proof = net.tlog.consistency_proof(old)
        merkle.verify_consistency(merkle.BLAKE3, old, size, proof, net.tlog.root(old),
                                  net.tlog.root())


def test_catches_up_with_a_store_used_before_it(tmp_path: Path) -> None:
    genesis, entries = presigned_workload(5, 40)
    env = open_env(tmp_path / "a")
    store = LedgerStore(env, genesis)
    store.ingest(entries[:30])  # no transparency log yet
    tlog = TransparencyLog(env, store, ledger_origin(genesis.cid, NODE))
    store.ingest(entries[30:])
    assert tlog.size() == store.log_size() == 1 + len(entries)
    assert tlog.root() == expected_root(store)
    assert tlog.verify_tree() == tlog.size()
    env.close()


def test_a_failed_batch_writes_no_tree_nodes(net: LedgerNet) -> None:
    net.fund("alice", 10)
    size, root = net.tlog.size(), net.tlog.root()

    def abort(txn: lmdb.Transaction, first: int, end: int) -> None:
        raise RuntimeError("abort this batch")

    net.store.add_commit_hook(abort)
    with pytest.raises(RuntimeError):
        net.store.ingest([net.draft("issuer", Op.ISSUE, to=account("bob"), amount=5)])
    assert (net.tlog.size(), net.tlog.root(), net.store.log_size()) == (size, root, size)
    assert net.tlog.verify_tree() == size


def test_a_tree_ahead_of_the_log_is_refused(tmp_path: Path) -> None:
    genesis, entries = presigned_workload(3, 5)
    env = open_env(tmp_path / "x")
    store = LedgerStore(env, genesis)
    TransparencyLog(env, store, ledger_origin(genesis.cid, NODE))
    with env.begin(write=True) as txn:
        txn.put(b"size", (50).to_bytes(8, "big"), db=env.open_db(META_DB, txn=txn))
    with pytest.raises(LedgerCorruptError, match="50 leaves"):
        TransparencyLog(env, store, ledger_origin(genesis.cid, NODE))
    env.close()


def test_verify_tree_finds_a_damaged_node(net: LedgerNet) -> None:
    build_history(net)
    with net.env.begin(write=True) as txn:
        txn.put(bytes([1]) + (2).to_bytes(8, "big"), bytes(32), db=net.env.open_db(TREE_DB, txn=txn))
    with pytest.raises(LedgerCorruptError, match=r"node \(1, 2\)"):
        net.tlog.verify_tree()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=8), st.data())
def test_any_batching_gives_the_same_tree_and_proofs(batches: list[int], data: st.DataObject) -> None:
    genesis, entries = presigned_workload(4, sum(batches))
    with tempfile.TemporaryDirectory() as tmp:
        env = open_env(Path(tmp))
        store = LedgerStore(env, genesis)
        tlog = TransparencyLog(env, store, ledger_origin(genesis.cid, NODE))
        start = 0
        for size in [4, *batches]:  # the first 4 issue the funds
            store.ingest(entries[start:start + size])
            start += size
        total = store.log_size()
        assert tlog.size() == total and tlog.root() == expected_root(store)
        index = data.draw(st.integers(0, total - 1))
        tree_size = data.draw(st.integers(index + 1, total))
        merkle.verify_inclusion(merkle.BLAKE3, index, tree_size,
                                merkle.BLAKE3.leaf_hash(store.log_entry(index)),
                                tlog.inclusion_proof(index, tree_size), tlog.root(tree_size))
        env.close()


CRASH_CHILD = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from ledger_support import presigned_workload
from tlog_support import NODE, open_env
from n3xus.ledger.store import LedgerStore
from n3xus.ledger.transparency import TransparencyLog, ledger_origin
from pathlib import Path
genesis, entries = presigned_workload(10, 1500)
env = open_env(Path(sys.argv[1]))
store = LedgerStore(env, genesis)
TransparencyLog(env, store, ledger_origin(genesis.cid, NODE))
for start in range(0, len(entries), 25):
    store.ingest(entries[start:start + 25])
    print("ACK", store.log_size(), flush=True)
"""


@pytest.mark.slow
def test_kill_9_never_leaves_the_tree_and_the_log_apart(tmp_path: Path) -> None:
    path = tmp_path / "crash"
    child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acked = 0
    for line in child.stdout:
        acked = int(line.split()[1])
        if acked > 400:
            time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    genesis, _ = presigned_workload(10, 1500)
    env = open_env(path)
    store = LedgerStore(env, genesis)
    tlog = TransparencyLog(env, store, ledger_origin(genesis.cid, NODE))
    assert store.log_size() >= acked
    assert tlog.verify_tree() == store.log_size()
    assert tlog.root() == expected_root(store)
    env.close()


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_commits_size_root_and_state(net: LedgerNet) -> None:
    build_history(net)
    note = net.tlog.checkpoint(LOG_KEY)
    checked = open_checkpoint(note, net.vkey)
    assert checked.checkpoint.origin == ledger_origin(net.genesis.cid, NODE)
    assert checked.size == net.store.log_size()
    assert checked.root == net.tlog.root()
    assert checked.state.root == net.store.state_root()
    assert checked.state.leaves == len(net.store.state_items())
    assert checked.network == net.genesis.cid
    assert net.tlog.checkpoint(LOG_KEY) == note  # nothing new: the same checkpoint
    assert net.tlog.last_checkpoint() == note


def test_later_checkpoints_are_consistent_with_earlier_ones(net: LedgerNet) -> None:
    net.fund("alice", 100)
    first = net.tlog.checkpoint(LOG_KEY)
    old_size = open_checkpoint(first, net.vkey).size
    build_history(net)
    net.tlog.checkpoint(LOG_KEY)
    result = verify_consistency(first, net.tlog.consistency_bundle(old_size), net.vkey)
    assert (result.old.size, result.new.size) == (old_size, net.store.log_size())


def test_checkpoint_survives_reopen_and_stays_consistent(tmp_path: Path) -> None:
    path = tmp_path / "reopen"
    env = open_env(path)
    net = LedgerNet(env)
    build_history(net)
    first = net.tlog.checkpoint(LOG_KEY)
    env.close()

    env = open_env(path)
    again = LedgerNet(env, net.genesis)
    assert again.tlog.last_checkpoint() == first
    assert again.tlog.checkpoint(LOG_KEY) == first
    again.chains = net.chains
    again.clock = net.clock
    again.fund("zed", 7)
    second = again.tlog.checkpoint(LOG_KEY)
    old_size = open_checkpoint(first, again.vkey).size
    verify_consistency(first, again.tlog.consistency_bundle(old_size), again.vkey)
    assert open_checkpoint(second, again.vkey).size == old_size + 1
    env.close()


def _damage_top_node(env: lmdb.Environment, size: int) -> None:
    """Overwrite the largest full subtree of the first ``size`` leaves (read by every root)."""
    level, index = merkle.perfect_subtrees(0, size)[0]
    with env.begin(write=True) as txn:
        txn.put(bytes([level]) + index.to_bytes(8, "big"), b"\x55" * 32,
                db=env.open_db(TREE_DB, txn=txn))


def test_refuses_to_sign_when_the_signed_root_is_gone_even_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "refuse"
    env = open_env(path)
    net = LedgerNet(env)
    build_history(net)
    note = net.tlog.checkpoint(LOG_KEY)
    net.fund("zed", 1)
    env.close()

    env = open_env(path)
    reopened = LedgerNet(env, net.genesis)
    # The tree at the signed size no longer has the signed root.
    _damage_top_node(env, open_checkpoint(note, reopened.vkey).size)
    with pytest.raises(CheckpointRefusedError, match="no longer has the root"):
        reopened.tlog.checkpoint(LOG_KEY)
    assert reopened.tlog.last_checkpoint() == note  # nothing new was recorded
    env.close()


def test_refuses_to_sign_when_the_log_went_below_the_signed_size(tmp_path: Path) -> None:
    genesis = make_genesis()
    big_env = open_env(tmp_path / "big")
    big = LedgerNet(big_env, genesis)
    build_history(big)
    big.tlog.checkpoint(LOG_KEY)
    with big_env.begin() as txn:
        record = txn.get(b"checkpoint", db=big_env.open_db(META_DB, txn=txn))
    big_env.close()

    # Another store of the same network holding fewer entries, with the big log's last
    # checkpoint record (as after restoring an old backup of the log): never sign again.
    small_env = open_env(tmp_path / "small")
    small = LedgerNet(small_env, genesis)
    small.fund("alice", 3)
    with small_env.begin(write=True) as txn:
        txn.put(b"checkpoint", record, db=small_env.open_db(META_DB, txn=txn))
    with pytest.raises(CheckpointRefusedError, match="fewer than its last signed checkpoint"):
        small.tlog.checkpoint(LOG_KEY)
    small_env.close()
    small_env = open_env(tmp_path / "small")  # across reopen too
    with pytest.raises(CheckpointRefusedError):
        LedgerNet(small_env, genesis).tlog.checkpoint(LOG_KEY)
    small_env.close()


def test_a_state_that_no_longer_matches_its_checkpoint_is_not_proved(tmp_path: Path) -> None:
    path = tmp_path / "state"
    env = open_env(path)
    net = LedgerNet(env)
    build_history(net)
    net.tlog.checkpoint(LOG_KEY)
    env.close()
    env = open_env(path)
    reopened = LedgerNet(env, net.genesis)
    with env.begin(write=True) as txn:  # corrupt the derived state behind the ledger's back
        txn.put(balance_key(account("mallory")), (10**6).to_bytes(8, "big"),
                db=env.open_db(b"ledger/state", txn=txn))
    with pytest.raises(LedgerCorruptError, match="no longer has the root"):
        reopened.tlog.state_proof_bundle(account("alice"))
    env.close()


# --- proofs ------------------------------------------------------------------------------------


def test_inclusion_bundles_for_every_kind_of_entry(net: LedgerNet) -> None:
    history = build_history(net)
    note = net.tlog.checkpoint(LOG_KEY)
    size = open_checkpoint(note, net.vkey).size
    for index in range(size):
        bundle = net.tlog.inclusion_bundle(index)
        assert ProofBundle.parse(bundle).extra == net.store.log_entry(index)
        proved = verify_inclusion_bundle(bundle, net.vkey)
        assert (proved.index, proved.entry) == (index, net.store.log_entry(index))
    assert verify_inclusion_bundle(net.tlog.inclusion_bundle(0), net.vkey).decoded.kind == "genesis"
    by_network = verify_inclusion_bundle(net.tlog.inclusion_bundle(net.genesis.cid), net.vkey)
    assert by_network.index == 0
    fraud = verify_inclusion_bundle(net.tlog.inclusion_bundle(history.fraud_index), net.vkey)
    assert fraud.decoded.kind == "fraud-proof"
    assert fraud.decoded.fraud is not None and fraud.decoded.fraud.account == account("eve")
    by_id = verify_inclusion_bundle(net.tlog.inclusion_bundle(history.transfer_id), net.vkey)
    assert by_id.decoded.tx is not None and by_id.decoded.tx.cid == history.transfer_id
    assert by_id.decoded.tx.args == {"to": account("bob"), "amount": 250}


def test_bundles_need_a_covering_checkpoint(net: LedgerNet) -> None:
    with pytest.raises(ProofUnavailableError, match="no checkpoint"):
        net.tlog.inclusion_bundle(0)
    net.tlog.checkpoint(LOG_KEY)
    net.fund("alice", 5)
    with pytest.raises(ProofUnavailableError, match="not covered"):
        net.tlog.inclusion_bundle(1)
    with pytest.raises(ProofUnavailableError, match="no entry"):
        net.tlog.inclusion_bundle(CID("bafyr4ia3acefoulrqexzjsft4qx2ftq2z7hkrx3ifmche74m3iv63np2ii"))
    with pytest.raises(ProofUnavailableError, match="old size"):
        net.tlog.consistency_bundle(5)
    # State proofs are walks of the stored state tree at the head: once the log has moved
    # on they need a new checkpoint (any instance, as after a restart).
    fresh = TransparencyLog(net.env, net.store, net.tlog.origin)
    for tlog in (net.tlog, fresh):
        with pytest.raises(ProofUnavailableError, match="state has changed"):
            tlog.state_proof_bundle(account("alice"))
    net.fund("bob", 1)  # two instances over one store keep one tree
    assert fresh.size() == net.tlog.size() == net.store.log_size()
    assert fresh.verify_tree() == net.store.log_size()


def test_state_proofs_of_balances_owners_and_absences(net: LedgerNet) -> None:
    history = build_history(net)
    net.tlog.checkpoint(LOG_KEY)
    for name in ("alice", "bob", "carol", "platform", "nobody"):
        fact = verify_state_bundle(net.tlog.state_proof_bundle(account(name)), net.vkey)
        described = fact.to_json()["fact"]
        assert described == {"kind": "balance", "account": account(name).hex(),
                             "balance": net.store.balance(account(name))}
        assert (fact.value is None) == (name == "nobody")
    for edition, owner in ((1, "bob"), (2, "dave"), (3, "carol")):
        fact = verify_state_bundle(net.tlog.state_proof_bundle((history.asset, edition)), net.vkey)
        assert fact.value == account(owner) == net.store.owner(history.asset, edition)
        assert fact.to_json()["fact"]["owner"] == account(owner).hex()
    missing = verify_state_bundle(net.tlog.state_proof_bundle((history.asset, 4)), net.vkey)
    assert missing.value is None and missing.key == edition_key(OWNER, bytes(history.asset), 4)
    # Keys below the first and above the last state key are absent by one edge leaf.
    for key in (b"\x00", b"\xff" * 3):
        fact = verify_state_bundle(net.tlog.state_proof_bundle(key), net.vkey)
        assert fact.value is None and fact.key == key
    supply = verify_bundle(net.tlog.state_proof_bundle(b"S"), net.vkey)
    assert supply.to_json()["fact"] == {"kind": "supply", "supply": net.store.supply()}


def test_state_proof_of_an_empty_state(net: LedgerNet) -> None:
    net.tlog.checkpoint(LOG_KEY)
    fact = verify_state_bundle(net.tlog.state_proof_bundle(account("alice")), net.vkey)
    assert fact.value is None and fact.checkpoint.state.leaves == 0


def test_state_proofs_sign_a_checkpoint_when_asked(net: LedgerNet) -> None:
    net.fund("alice", 40)
    bundle = net.tlog.state_proof_bundle(account("alice"), signing_key=LOG_KEY)
    assert verify_state_bundle(bundle, net.vkey).value == (40).to_bytes(8, "big")
    # Proved again at the same size: the same checkpoint, no new signature.
    assert net.tlog.state_proof_bundle(account("alice")) == bundle
    net.fund("alice", 2)  # the log moves on: the bundle issued before still verifies
    assert verify_state_bundle(bundle, net.vkey).value == (40).to_bytes(8, "big")
    later = net.tlog.state_proof_bundle(account("alice"), signing_key=LOG_KEY)
    assert verify_state_bundle(later, net.vkey).value == (42).to_bytes(8, "big")


def test_checkpoint_state_root_equals_a_replay_of_the_log(net: LedgerNet) -> None:
    build_history(net)
    note = net.tlog.checkpoint(LOG_KEY)
    checkpoint = Checkpoint.parse(parse_note(note).text)
    view = replay(net.store.iter_log(), genesis=net.genesis)
    assert open_checkpoint(note, net.vkey).state.root == view.state_root()
    assert checkpoint.extensions == (f"n3xus-state {len(view.state)} "
                                     f"{base64.b64encode(view.state_root()).decode()}",)
