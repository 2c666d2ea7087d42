"""World state (Merkle search tree) and signed world commits."""

from __future__ import annotations

import random
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from n3xus.canon import entries, world
from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonDecodeError, LimitExceededError, VerificationError
from n3xus.canon.world import MemoryBlockStore, World, diff, key_layer, verify_tree


def reachable(store: MemoryBlockStore, root: CID) -> set[CID]:
    """Every node and value block reachable from a world root, read independently of
    world.py's own traversal (by decoding the blocks generically)."""
    seen: set[CID] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        node = decode(store.blocks[cid])
        if isinstance(node, dict) and set(node) == {"e", "l"}:
            links = [node["l"]] + [x for e in node["e"] for x in (e["v"], e["t"])]
            stack.extend(link for link in links if link is not None)
    return seen


def contents(w: World) -> dict[str, object]:
    return dict(w.items())


# -- format -----------------------------------------------------------------------------


def test_empty_world_is_the_single_empty_node() -> None:
    store = MemoryBlockStore()
    w = World(store)
    assert store.blocks[w.root] == encode({"e": [], "l": None})
    assert len(w) == 0 and list(w.items()) == [] and w.get("a") is None
    assert World(MemoryBlockStore()).root == w.root


def test_node_bytes_follow_the_documented_schema() -> None:
    # Two layer-0 keys sharing a prefix: one node, the second key prefix-compressed.
    keys = [k for k in (f"room/{i}" for i in range(100)) if key_layer(k) == 0][:2]
    store = MemoryBlockStore()
    w = World(store).update(set={keys[0]: 1, keys[1]: {"x": [True]}})
    shared = len("room/")
    expected = encode({"e": [
        {"k": keys[0].encode(), "p": 0, "t": None, "v": cid_of(encode(1))},
        {"k": keys[1].encode()[shared:], "p": shared, "t": None, "v": cid_of(encode({"x": [True]}))},
    ], "l": None})
    assert store.blocks[w.root] == expected
    assert w.root == cid_of(expected)
    assert w.get(keys[1]) == {"x": [True]}


def test_key_layer_counts_leading_zero_bits_of_blake3_in_fours() -> None:
    from blake3 import blake3
    for key in ("a", "b", "room/1", "x" * 200):
        digest = blake3(key.encode()).digest()
        bits = "".join(f"{byte:08b}" for byte in digest)
        assert key_layer(key) == (len(bits) - len(bits.lstrip("0"))) // 4
    # Roughly 1/16 of keys reach layer 1 or more.
    high = sum(key_layer(f"k{i}") >= 1 for i in range(16000))
    assert 700 < high < 1300


def test_key_rules() -> None:
    w = World(MemoryBlockStore())
    for bad in ("", "has space", "ü", "a\nb", "quote'"):
        with pytest.raises(ValueError):
            w.set(bad, 1)
    with pytest.raises(LimitExceededError):
        w.set("a" * (world.MAX_KEY_BYTES + 1), 1)
    assert w.set("a" * world.MAX_KEY_BYTES, 1).get("a" * world.MAX_KEY_BYTES) == 1
    assert w.set("A-z0.9_~:@/x", None).get_link("A-z0.9_~:@/x") is not None


# -- operations --------------------------------------------------------------------------


def test_writes_return_new_worlds_and_leave_old_ones_intact() -> None:
    store = MemoryBlockStore()
    w0 = World(store)
    w1 = w0.set("a", 1)
    w2 = w1.set("b", 2).set("a", 10)
    w3 = w2.delete("a")
    assert contents(w0) == {} and contents(w1) == {"a": 1}
    assert contents(w2) == {"a": 10, "b": 2} and contents(w3) == {"b": 2}
    assert w3.delete("nope").root == w3.root
    assert w3.set("b", 2).root == w3.root
    assert "b" in w3 and "a" not in w3 and len(w3) == 1
    assert w0.set("b", 2).root == w3.root


def test_update_rejects_a_key_given_twice() -> None:
    w = World(MemoryBlockStore())
    with pytest.raises(ValueError):
        w.update(set={"a": 1}, delete=["a"])


def test_list_by_prefix_and_range() -> None:
    keys = [f"{p}/{i:03d}" for p in ("alpha", "beta", "betb", "gamma") for i in range(60)]
    w = World(MemoryBlockStore()).update(set={k: k for k in keys})
    assert list(w.keys()) == sorted(keys)
    assert list(w.keys(prefix="beta")) == [k for k in sorted(keys) if k.startswith("beta")]
    assert list(w.keys(prefix="beta/0")) == [f"beta/{i:03d}" for i in range(60) if i < 100]
    assert list(w.keys(start="beta/050", end="betb/002")) == [k for k in sorted(keys) if "beta/050" <= k < "betb/002"]
    assert list(w.keys(prefix="alpha", start="alpha/058")) == ["alpha/058", "alpha/059"]
    assert dict(w.items(prefix="gamma/01")) == {f"gamma/01{i}": f"gamma/01{i}" for i in range(10)}
    assert len(w) == len(keys)


def test_a_batch_writes_only_the_final_nodes() -> None:
    store = MemoryBlockStore()
    w = World(store).update(set={f"k/{i}": i for i in range(3000)})
    before = set(store.blocks)
    changes = {f"k/{i}": -i for i in range(0, 3000, 7)} | {f"new/{i}": i for i in range(500)}
    w2 = w.update(set=changes, delete=[f"k/{i}" for i in range(1, 3000, 11) if i % 7])
    written = set(store.blocks) - before
    assert written <= reachable(store, w2.root), "a batch left intermediate nodes behind"
    assert reachable(store, w.root) <= set(store.blocks)
    assert verify_tree(store, w2.root) == len(w2)


ops_strategy = st.lists(
    st.tuples(st.sampled_from(["set", "delete"]), st.integers(0, 400), st.integers(0, 3)),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(ops=ops_strategy, seed=st.integers(0, 2**32))
def test_same_contents_give_the_same_root_whatever_the_order(ops: list[tuple[str, int, int]], seed: int) -> None:
    store = MemoryBlockStore()
    w = World(store)
    model: dict[str, int] = {}
    for op, n, value in ops:
        key = f"obj/{n}"
        if op == "set":
            w = w.set(key, value)
            model[key] = value
        else:
            w = w.delete(key)
            model.pop(key, None)
    assert contents(w) == dict(sorted(model.items()))
    assert len(w) == len(model)
    assert verify_tree(store, w.root) == len(model)
    # The same contents written in one batch, and one by one in a shuffled order.
    assert World(store).update(set=model).root == w.root
    shuffled = list(model.items())
    random.Random(seed).shuffle(shuffled)
    other = World(MemoryBlockStore())
    for key, value in shuffled:
        other = other.set(key, value)
    assert other.root == w.root
    # Deleting everything returns to the empty world.
    assert w.update(delete=list(model)).root == World(store).root


@settings(max_examples=40, deadline=None)
@given(
    base=st.dictionaries(st.integers(0, 300).map(lambda n: f"d/{n}"), st.integers(0, 5), max_size=150),
    sets=st.dictionaries(st.integers(0, 300).map(lambda n: f"d/{n}"), st.integers(0, 5), max_size=40),
    deletes=st.sets(st.integers(0, 300).map(lambda n: f"d/{n}"), max_size=40),
)
def test_diff_reports_exactly_the_changes(base: dict[str, int], sets: dict[str, int], deletes: set[str]) -> None:
    deletes -= set(sets)
    store = MemoryBlockStore()
    a = World(store).update(set=base)
    b = a.update(set=sets, delete=deletes)
    new = {**{k: v for k, v in base.items() if k not in deletes}, **sets}
    links = {k: cid_of(encode(v)) for k, v in new.items()}
    old_links = {k: cid_of(encode(v)) for k, v in base.items()}
    expected = [
        (k, old_links.get(k), links.get(k))
        for k in sorted(set(base) | set(new))
        if old_links.get(k) != links.get(k)
    ]
    assert [tuple(c) for c in diff(store, a.root, b.root).changes] == expected
    assert [(k, n, o) for k, o, n in diff(store, b.root, a.root).changes] == expected
    assert diff(store, a.root, a.root).blocks_read == 0


def test_corrupt_nodes_are_refused() -> None:
    store = MemoryBlockStore()
    low = [k for k in (f"z{i}" for i in range(50)) if key_layer(k) == 0]
    high = next(k for k in (f"h{i}" for i in range(500)) if key_layer(k) == 1)
    value = store.put(encode(1))

    def root_of(node: object) -> World:
        return World(store, store.put(encode(node)))

    def entry(key: str, prefix: int = 0, t: CID | None = None) -> dict[str, object]:
        return {"k": key.encode()[prefix:], "p": prefix, "t": t, "v": value}

    unsorted = root_of({"e": [entry(low[1]), entry(low[0])], "l": None})
    not_maximal = root_of({"e": [entry("z0"), entry("z1")], "l": None}) if key_layer("z0") == key_layer("z1") == 0 else None
    wrong_layer = root_of({"e": [entry(high)], "l": store.put(encode({"e": [entry(high)], "l": None}))})
    empty_top = root_of({"e": [], "l": value})
    misplaced = root_of({"e": [entry(high)], "l": store.put(encode({"e": [entry("zz")], "l": None}))})
    empty_child = root_of({"e": [entry(high)], "l": store.put(encode({"e": [], "l": None}))})
    extra_field = root_of({"e": [entry(low[0]) | {"x": 1}], "l": None})
    bad_key = root_of({"e": [{"k": b"a b", "p": 0, "t": None, "v": value}], "l": None})
    assert key_layer("zz") == 0 and "zz" > high
    for broken in (unsorted, wrong_layer, empty_top, extra_field, bad_key, not_maximal, misplaced, empty_child):
        if broken is None:
            continue
        with pytest.raises(CanonDecodeError):
            list(broken.items())
        with pytest.raises(CanonDecodeError):
            verify_tree(store, broken.root)


# -- scale -------------------------------------------------------------------------------


@pytest.mark.slow
def test_100k_keys_build_fast_and_diffs_read_few_blocks(tmp_path: Path) -> None:
    import time

    env = lmdb.open(str(tmp_path / "db"), max_dbs=64, map_size=2 << 30)
    store = BlockStore(env)
    keys = [f"obj/{i:06d}" for i in range(100_000)]
    started = time.perf_counter()
    big = World(store).update(set={k: {"n": i} for i, k in enumerate(keys)})
    build = time.perf_counter() - started
    assert len(big) == 100_000
    assert build < 60, f"building 100k keys took {build:.1f}s"
    rng = random.Random(7)
    report = [f"build 100k: {build:.2f}s"]
    for changes in (10, 100, 1000):
        picked = rng.sample(keys, changes)
        started = time.perf_counter()
        other = big.update(set={k: {"n": -1} for k in picked})
        write = time.perf_counter() - started
        result = diff(store, big.root, other.root)
        assert sorted(c.key for c in result.changes) == sorted(picked)
        # Depth is about log16(100k) ~ 4-5 nodes; two trees; shared paths make it less.
        assert result.blocks_read <= 2 * 6 * changes + 2
        report.append(f"{changes} changes: batch {write * 1000:.0f} ms, diff read {result.blocks_read} blocks")
    print("; ".join(report))
    env.close()


# -- commits ------------------------------------------------------------------------------


def test_commits_sign_verify_and_chain() -> None:
    store = MemoryBlockStore()
    key = SigningKey(b"\x01" * 32)
    w = World(store)
    first = entries.sign_commit(key, world="lobby", root=w.root, time=1000)
    w = w.set("a", 1)
    second = entries.sign_commit(key, world="lobby", root=w.root, time=2000, previous=first)
    assert (first.seq, first.prev, second.seq, second.prev) == (0, None, 1, first.cid)
    for commit in (first, second):
        commit.verify()
        parsed = entries.WorldCommit.from_block(commit.to_block())
        assert parsed == commit
        store.put(commit.to_block())
    history = list(entries.commit_history(store, second.cid))
    assert history == [second, first]
    assert entries.load_commit(store, second.cid).root == w.root

    forged = entries.WorldCommit(**{**second.__dict__, "root": first.root})
    with pytest.raises(VerificationError):
        forged.verify()
    other_key = entries.sign_commit(SigningKey(b"\x02" * 32), world="lobby", root=w.root, time=1)
    with pytest.raises(VerificationError):
        entries.WorldCommit(**{**first.__dict__, "signature": other_key.signature}).verify()
    with pytest.raises(ValueError):
        entries.sign_commit(key, world="other", root=w.root, time=3000, previous=second)


def test_history_refuses_broken_links() -> None:
    store = MemoryBlockStore()
    key = SigningKey(b"\x03" * 32)
    root = World(store).root
    first = entries.sign_commit(key, world="w", root=root, time=10)
    store.put(first.to_block())
    # A commit that claims seq 5 right after seq 0.
    skip = entries.WorldCommit("w", bytes(key.verify_key), root, first.cid, 20, 5, b"")
    skip = entries.WorldCommit(**{**skip.__dict__, "signature": key.sign(skip.signing_bytes()).signature})
    store.put(skip.to_block())
    with pytest.raises(VerificationError):
        list(entries.commit_history(store, skip.cid))
    with pytest.raises(CanonDecodeError):
        entries.WorldCommit.from_block(encode({**first.unsigned_map(), "sig": first.signature, "x": 1}))
    with pytest.raises(CanonDecodeError):
        entries.WorldCommit.from_block(encode({**first.unsigned_map(), "prev": first.cid, "sig": first.signature}))
