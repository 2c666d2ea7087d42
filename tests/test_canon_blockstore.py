"""The LMDB block store: verified reads, pins, sessions and a GC that never races a pin."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from n3xus.canon import blockstore, cid_of, encode
from n3xus.canon.blockstore import (
    GC_GRACE_CYCLES,
    MAX_BLOCK_SIZE,
    BlockStore,
    check_block,
)
from n3xus.canon.cid import CID
from n3xus.canon.errors import (
    BlockNotFoundError,
    CanonDecodeError,
    CanonError,
    CorruptBlockError,
    LimitExceededError,
)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    # sync=False: durability is not under test here, and an fsync per commit is slow.
    environment = lmdb.open(str(tmp_path / "db"), max_dbs=64, map_size=1 << 30, sync=False)
    yield environment
    environment.close()


@pytest.fixture
def store(env: lmdb.Environment) -> BlockStore:
    return BlockStore(env)


def run_gc_until_grace_passes(store: BlockStore) -> list[tuple[int, int]]:
    return [tuple(store.collect_garbage()) for _ in range(GC_GRACE_CYCLES + 1)]


def test_put_get_roundtrip_and_cid(store: BlockStore) -> None:
    node = encode({"hello": "world", "n": 1})
    cid = store.put(node)
    assert cid == cid_of(node)
    assert store.get(cid) == node
    raw = store.put(b"\x00\xffbytes", codec="raw", hash="sha2-256")
    assert raw == cid_of(b"\x00\xffbytes", codec="raw", hash="sha2-256")
    assert raw.hash_name == "sha2-256"
    assert store.get(raw) == b"\x00\xffbytes"
    assert store.has(cid) and raw in store
    assert sorted(store) == sorted([cid, raw])
    stats = store.stats()
    assert (stats.blocks, stats.bytes, stats.pins, stats.corrupt) == (2, len(node) + 7, 0, ())


def test_same_digest_under_two_codecs_are_two_blocks(store: BlockStore) -> None:
    data = encode([1, 2, 3])
    as_cbor = store.put(data)
    as_raw = store.put(data, codec="raw")
    assert as_cbor.digest == as_raw.digest and as_cbor != as_raw
    assert store.stats().blocks == 2


def test_missing_block(store: BlockStore) -> None:
    with pytest.raises(BlockNotFoundError):
        store.get(cid_of(b"absent", codec="raw"))
    assert not store.has(cid_of(b"absent", codec="raw"))


def test_put_rejects_non_canonical_dag_cbor(store: BlockStore) -> None:
    non_minimal_int = b"\x18\x01"  # 1 written in two bytes
    unsorted_map = b"\xa2\x62bb\x01\x61a\x02"  # {"bb": 1, "a": 2}: longer key first
    for data in (non_minimal_int, unsorted_map, b"\xff"):
        with pytest.raises(CanonDecodeError):
            store.put(data)
    assert store.stats().blocks == 0
    with pytest.raises(CanonDecodeError):
        store.put(b"x", codec="dag-json")


def test_block_size_limit(store: BlockStore) -> None:
    store.put(b"\x00" * MAX_BLOCK_SIZE, codec="raw")
    with pytest.raises(LimitExceededError):
        store.put(b"\x00" * (MAX_BLOCK_SIZE + 1), codec="raw")
    with pytest.raises(LimitExceededError):
        store.put_many([b"small", b"\x00" * (MAX_BLOCK_SIZE + 1)], codec="raw")
    assert store.stats().blocks == 1  # the batch was all or nothing


def test_put_many_is_one_batch(store: BlockStore) -> None:
    blocks = [bytes([i]) * (i + 1) for i in range(50)]
    cids = store.put_many(blocks, codec="raw")
    assert [store.get(cid) for cid in cids] == blocks


def test_put_blocks_checks_each_block(store: BlockStore) -> None:
    good = b"good"
    good_cid = cid_of(good, codec="raw")
    liar = cid_of(b"other", codec="raw")
    with pytest.raises(CorruptBlockError):
        store.put_blocks([(good_cid, good), (liar, b"not other")])
    assert not store.has(good_cid)
    rejected: list[tuple[CID, CanonError]] = []
    stored = store.put_blocks([(good_cid, good), (liar, b"not other")],
                              reject=lambda cid, error: rejected.append((cid, error)))
    assert stored == [good_cid] and store.has(good_cid) and not store.has(liar)
    assert [cid for cid, _ in rejected] == [liar]
    unsupported = CID.from_digest("dag-json", "sha2-256", cid_of(b"{}", hash="sha2-256").digest)
    with pytest.raises(CanonDecodeError):
        check_block(unsupported, b"{}")


def _overwrite_raw(env: lmdb.Environment, cid: CID, data: bytes) -> None:
    blocks = env.open_db(b"canon/blocks")  # outside the txn: open_db writes on its own
    with env.begin(write=True) as txn:
        txn.put(bytes(cid), data, db=blocks)


def test_corrupt_block_is_never_returned_and_is_reported(
    env: lmdb.Environment, store: BlockStore
) -> None:
    data = encode({"k": "v"})
    cid = store.put(data)
    _overwrite_raw(env, cid, encode({"k": "w"}))
    with pytest.raises(CorruptBlockError) as caught:
        store.get(cid)
    assert str(cid) in str(caught.value)
    assert store.stats().corrupt == (cid,)
    assert store.verify_all() == (cid,)
    store.put(data)  # the right bytes repair it
    assert store.get(cid) == data
    assert store.stats().corrupt == ()
    assert store.verify_all() == ()


def test_stat(store: BlockStore) -> None:
    leaf = store.put(b"leaf", codec="raw")
    root = store.put(encode({"a": leaf, "b": [leaf, {"c": leaf}]}))
    store.pin(root, "root")
    stat = store.stat(root)
    assert (stat.size, stat.codec, stat.hash, stat.links) == (len(store.get(root)), "dag-cbor",
                                                              "blake3", 3)
    assert stat.pinned and stat.pin_names == ("root",)
    assert store.stat(leaf).links == 0 and not store.stat(leaf).pinned


def _dag(store: BlockStore, tag: str) -> tuple[CID, list[CID]]:
    """root -> [a, b]; a -> [c]; all unpinned."""
    c = store.put(f"{tag}-c".encode(), codec="raw")
    a = store.put(encode({"tag": tag, "c": c}))
    b = store.put(f"{tag}-b".encode(), codec="raw")
    root = store.put(encode({"kids": [a, b]}))
    return root, [root, a, b, c]


def test_recursive_and_direct_pins_under_gc(store: BlockStore) -> None:
    root1, dag1 = _dag(store, "one")
    root2, dag2 = _dag(store, "two")
    root3, dag3 = _dag(store, "three")
    assert store.pin(root1, "deep").blocks == 4
    assert store.pin(root2, "shallow", recursive=False).blocks == 1
    run_gc_until_grace_passes(store)
    assert all(store.has(cid) for cid in dag1)
    assert store.has(root2) and not any(store.has(cid) for cid in dag2[1:])
    assert not any(store.has(cid) for cid in dag3)
    assert {pin.name: pin.recursive for pin in store.pins()} == {"deep": True, "shallow": False}
    assert store.unpin("deep") and not store.unpin("deep")
    run_gc_until_grace_passes(store)
    assert not any(store.has(cid) for cid in dag1)


def test_gc_reports_removed_blocks_and_bytes(store: BlockStore) -> None:
    sizes = [10, 200, 3000]
    for size in sizes:
        store.put(bytes(size), codec="raw")
    first, second = run_gc_until_grace_passes(store)
    assert first == (0, 0)  # one cycle of grace for bare puts
    assert second == (3, sum(sizes))
    assert store.stats().blocks == 0


def test_pin_of_missing_blocks(store: BlockStore) -> None:
    absent = cid_of(b"absent", codec="raw")
    with pytest.raises(BlockNotFoundError):
        store.pin(absent, "x")
    root = store.put(encode({"link": absent}))
    with pytest.raises(BlockNotFoundError):
        store.pin(root, "x")
    assert store.pins() == []
    report = store.pin(root, "x", allow_missing=True)
    assert report.missing == (absent,) and report.blocks == 1
    assert store.pin(root, "direct", recursive=False).missing == ()


def test_identity_links_are_never_missing(store: BlockStore) -> None:
    inline = CID.from_digest("raw", "identity", b"inline data")
    root = store.put(encode({"inline": inline}))
    report = store.pin(root, "with-identity")
    assert report.missing == () and report.blocks == 1


def test_pin_name_limits(store: BlockStore) -> None:
    cid = store.put(b"x", codec="raw")
    for bad in ("", "n" * 256):
        with pytest.raises(LimitExceededError):
            store.pin(cid, bad)
    store.pin(cid, "n" * 255)


def test_session_protects_its_blocks_and_their_dags_until_closed(store: BlockStore) -> None:
    old_root, old_dag = _dag(store, "old")
    run_gc_until_grace_passes(store)
    assert not store.has(old_root)
    old_root, old_dag = _dag(store, "old")
    with store.session() as session:
        session.hold(old_root)  # an existing DAG, held for the session
        fresh = session.put(b"fresh", codec="raw")
        for _ in range(4):
            store.collect_garbage()
        assert all(store.has(cid) for cid in [*old_dag, fresh])
    run_gc_until_grace_passes(store)
    assert not any(store.has(cid) for cid in [*old_dag, fresh])
    with pytest.raises(CanonError):
        session.put(b"after", codec="raw")


def test_hold_of_missing_block(store: BlockStore) -> None:
    with store.session() as session, pytest.raises(BlockNotFoundError):
        session.hold(cid_of(b"absent", codec="raw"))


def _pin_during_sweep(store: BlockStore, monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """Run ``act`` in another thread right after GC marked its snapshot, before it sweeps:
    the window in which IPFS lost freshly pinned blocks."""
    real_walk = blockstore._walk
    calls = 0

    def walk(*args: Any) -> Any:
        nonlocal calls
        result = real_walk(*args)
        calls += 1
        if calls == 1:  # the snapshot mark; the GC holds no write transaction now
            worker = threading.Thread(target=act)
            worker.start()
            worker.join()
        return result

    monkeypatch.setattr(blockstore, "_walk", walk)
    store.collect_garbage()
    monkeypatch.setattr(blockstore, "_walk", real_walk)


def test_pin_between_mark_and_sweep_is_honoured(
    store: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, dag = _dag(store, "late")
    store.collect_garbage()  # the grace cycle passes: the DAG is now collectable
    _pin_during_sweep(store, monkeypatch, lambda: store.pin(root, "late"))
    assert all(store.has(cid) for cid in dag)
    # Control: the same window without a pin does lose the DAG, so the check above bites.
    other, other_dag = _dag(store, "control")
    store.collect_garbage()
    _pin_during_sweep(store, monkeypatch, lambda: None)
    assert not any(store.has(cid) for cid in other_dag)


def test_session_put_linking_old_blocks_between_mark_and_sweep(
    store: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_root, old_dag = _dag(store, "old")
    store.collect_garbage()
    session = store.session()
    holder: list[CID] = []
    _pin_during_sweep(
        store, monkeypatch, lambda: holder.append(session.put(encode({"keep": old_root})))
    )
    assert all(store.has(cid) for cid in [holder[0], *old_dag])
    session.pin(holder[0], "kept")
    session.close()
    run_gc_until_grace_passes(store)
    assert all(store.has(cid) for cid in [holder[0], *old_dag])


def test_hold_between_mark_and_sweep_protects_the_dag(
    store: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_root, old_dag = _dag(store, "held")
    store.collect_garbage()
    with store.session() as session:
        _pin_during_sweep(store, monkeypatch, lambda: session.hold(old_root))
        assert all(store.has(cid) for cid in old_dag)
        session.pin(old_root, "held")
    run_gc_until_grace_passes(store)
    assert all(store.has(cid) for cid in old_dag)


def test_re_put_refreshes_grace(store: BlockStore) -> None:
    cid = store.put(b"again", codec="raw")
    store.collect_garbage()
    store.put(b"again", codec="raw")
    store.collect_garbage()
    assert store.has(cid)
    store.collect_garbage()
    assert not store.has(cid)


@pytest.mark.slow
def test_gc_hammered_by_concurrent_put_and_pin(
    store: BlockStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny sweep batches multiply the windows in which a writer runs mid-GC, and no
    # grace cycle: only the session may protect a block between its put and its pin.
    monkeypatch.setattr(blockstore, "GC_SWEEP_BATCH", 3)
    monkeypatch.setattr(blockstore, "GC_GRACE_CYCLES", 0)
    shared_pool = [f"shared-{i}".encode() for i in range(8)]  # re-put, so old blocks revive
    pinned: dict[str, list[CID]] = {}
    unpinned: list[list[CID]] = []  # DAGs just unpinned: garbage a writer may adopt
    lock = threading.Lock()
    failures: list[str] = []
    stop = threading.Event()
    gc_runs = removed = adopted = 0

    def writer(worker: int) -> None:
        nonlocal adopted
        rng = random.Random(worker)
        try:
            for round_ in range(60):
                with store.session() as session:
                    leaves = [session.put(rng.randbytes(rng.randrange(1, 300)), codec="raw")
                              for _ in range(3)]
                    leaves.append(session.put(rng.choice(shared_pool), codec="raw"))
                    mid = session.put(encode({"leaves": leaves, "w": worker}))
                    time.sleep(rng.random() * 0.002)  # let GC runs start in between
                    with lock:
                        orphan = unpinned.pop() if unpinned and rng.random() < 0.5 else None
                    links: list[CID] = [mid]
                    dag = [mid, *leaves]
                    if orphan is not None:
                        try:  # adopt garbage: hold it, link it, pin it later
                            session.hold(orphan[0])
                        except BlockNotFoundError:
                            pass  # already collected: fine, it was garbage
                        else:
                            # The hold protects what is there from now on; GC may have
                            # taken part of the DAG before it, which is no loss.
                            if all(store.has(cid) for cid in orphan):
                                links.append(orphan[0])
                                dag.extend(orphan)
                                adopted += 1
                    root = session.put(encode({"links": links, "round": round_}))
                    time.sleep(rng.random() * 0.002)
                    name = f"w{worker}-{round_}"
                    session.pin(root, name)
                dag.insert(0, root)
                lost = [str(cid) for cid in dag if not store.has(cid)]
                if lost:
                    failures.append(f"{name} lost {lost}")
                with lock:
                    pinned[name] = dag
                    if rng.random() < 0.5:  # make garbage for the collector
                        victim = rng.choice(sorted(pinned))
                        store.unpin(victim)
                        unpinned.append(pinned.pop(victim))
        except BaseException as error:  # report any failure to the main thread
            failures.append(f"writer {worker}: {error!r}")
            raise

    def collector() -> None:
        nonlocal gc_runs, removed
        while not stop.is_set():
            removed += store.collect_garbage().blocks_removed
            gc_runs += 1

    gc_thread = threading.Thread(target=collector)
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    gc_thread.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    gc_thread.join()
    assert failures == []
    assert gc_runs >= 5 and removed > 0 and adopted > 0, (gc_runs, removed, adopted)
    store.collect_garbage()
    names = {pin.name for pin in store.pins()}
    for name, dag in pinned.items():
        assert name in names
        for cid in dag:
            store.get(cid)  # present and verified


def test_truncated_digests_never_match(tmp_path: Path) -> None:
    # Regression: a BLAKE3 CID with an empty (or short) digest used to "match" any
    # bytes, so an import would store arbitrary data under it.
    import lmdb

    from n3xus.canon.blockstore import BlockStore, check_block, digest_matches
    from n3xus.canon.cid import CID
    from n3xus.canon.errors import CorruptBlockError

    env = lmdb.open(str(tmp_path / "trunc"), max_dbs=16, map_size=1 << 24)
    store = BlockStore(env)
    for digest_len in (0, 1, 16, 31):
        cid = CID.from_digest("raw", "blake3", blake3_digest(b"anything")[:digest_len])
        assert not digest_matches(cid, b"anything")
        with pytest.raises(CorruptBlockError):
            check_block(cid, b"anything")
        with pytest.raises(CorruptBlockError):
            store.put_blocks([(cid, b"anything")])
    assert not store.has(CID("bafkr4aa"))
    env.close()


def blake3_digest(data: bytes) -> bytes:
    from blake3 import blake3

    return blake3(data).digest()
