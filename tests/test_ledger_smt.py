"""The state tree (ledger/smt.py, specs/ledger.md §11): the memory tree's twins (compiled
``_smt_c``, pure ``_smt_py``) against the definition written out (``smt.root_of``) and
against each other, under random batches of inserts, updates and removals; their walks as
proofs that ``verify_proof`` accepts; and the store's tree kept in memory but checked
against the root committed in LMDB: across reopening, another store on the same
environment, an aborted write transaction, and a store of the earlier per-position layout.

"compiled" is skipped only when the extension is not built (never under
``N3XUS_REQUIRE_COMPILED=1``, where a missing extension fails the test).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from n3xus.ledger import _smt_py, smt
from n3xus.ledger.errors import LedgerCorruptError

IMPLEMENTATIONS = ["compiled", "pure"]


def load_impl(name: str) -> ModuleType:
    if name == "pure":
        return _smt_py
    try:
        return importlib.import_module("n3xus.ledger._smt_c")
    except ImportError as exc:
        if os.environ.get("N3XUS_REQUIRE_COMPILED") == "1":
            pytest.fail(f"N3XUS_REQUIRE_COMPILED=1 but the compiled state tree is missing: {exc}")
        pytest.skip(f"compiled state tree not built ({exc}); "
                    "run `python setup.py build_ext --inplace` to test it")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return load_impl(request.param)


# Keys from a small set half of the time, so batches hit existing keys (updates, removals)
# as often as new ones; lengths 0..40 (the longest state keys are a prefix and two ids).
KEYS = st.sampled_from([b"k%d" % n for n in range(30)]) | st.binary(max_size=40)
VALUES = st.binary(min_size=0, max_size=70)
BATCH = st.dictionaries(KEYS, st.none() | VALUES, max_size=40)
# LMDB keys are 1..511 bytes (state keys are never empty).
STORE_BATCH = st.dictionaries(KEYS.filter(bool), st.none() | VALUES, max_size=40)


def apply(state: dict[bytes, bytes], batch: dict[bytes, bytes | None]) -> None:
    for key, value in batch.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


def check_walks(tree: Any, root: bytes, state: dict[bytes, bytes], probes: list[bytes]) -> None:
    """Every probe's walk is a proof of its value (or absence) under ``root``."""
    for key in probes:
        siblings, leaf = tree.walk(key)
        shown = None if leaf is None else (leaf[1], state[leaf[1]])
        if leaf is not None:
            assert leaf[0] == smt.leaf_hash(leaf[1], state[leaf[1]])
        assert smt.verify_proof(root, smt.Proof(key, tuple(siblings), shown)) == state.get(key)


@settings(max_examples=150, deadline=None)
@given(initial=st.dictionaries(KEYS, VALUES, max_size=60), batches=st.lists(BATCH, max_size=8))
def test_twins_equal_the_definition_under_random_batches(
        initial: dict[bytes, bytes], batches: list[dict[bytes, bytes | None]]) -> None:
    modules = [_smt_py] + ([] if (compiled := _compiled_or_none()) is None else [compiled])
    trees = [module.MemoryTree() for module in modules]
    state = dict(initial)
    roots = {tree.build(initial.items()) for tree in trees}
    assert roots == {smt.root_of(state.items())}
    for batch in batches:
        apply(state, batch)
        expected = smt.root_of(state.items())
        assert [tree.update(list(batch.items())) for tree in trees] == [expected] * len(trees)
        assert {len(tree) for tree in trees} == {len(state)}
        probes = sorted(state)[:6] + sorted(batch)[:6] + [b"never-written"]
        for tree in trees:
            assert [tree.walk(key) for key in probes] == [trees[0].walk(key) for key in probes]
            check_walks(tree, expected, state, probes)
    # A tree built from the final state equals the one updated step by step.
    for module in modules:
        assert module.MemoryTree().build(state.items()) == trees[0].root()


def _compiled_or_none() -> ModuleType | None:
    try:
        return importlib.import_module("n3xus.ledger._smt_c")
    except ImportError:
        if os.environ.get("N3XUS_REQUIRE_COMPILED") == "1":
            raise
        return None


def test_larger_random_tree_proofs_stay_logarithmic(impl: ModuleType) -> None:
    import random
    rng = random.Random(11)
    state = {b"acct/%d" % n: n.to_bytes(8, "big") for n in range(5_000)}
    tree = impl.MemoryTree()
    tree.build(state.items())
    for _ in range(5):
        batch: dict[bytes, bytes | None] = {}
        for key in rng.sample(sorted(state), 300):
            batch[key] = None if rng.random() < 0.3 else rng.randbytes(8)
        for n in range(200):
            batch[b"new/%d" % rng.randrange(10**9)] = b"v%d" % n
        apply(state, batch)
        root = tree.update(batch.items())
        assert root == smt.root_of(state.items())
        check_walks(tree, root, state, rng.sample(sorted(state), 50) + [b"absent"])
    # log2(5,000) is about 12: a walk is a few levels longer at most, never linear.
    assert max(len(tree.walk(key)[0]) for key in sorted(state)[:500]) < 40


def test_churn_of_keys_keeps_every_key_readable(impl: ModuleType) -> None:
    """Most keys removed and as many new ones added, round after round: the compiled twin
    reclaims removed keys' bytes (its key arena is compacted) and every walk still shows
    the right keys."""
    import random
    rng = random.Random(5)
    state = {b"first/%d/" % n + rng.randbytes(rng.randrange(0, 40)): b"v" for n in range(2_000)}
    tree = impl.MemoryTree()
    tree.build(state.items())
    for round_number in range(12):
        batch: dict[bytes, bytes | None] = {key: None for key in rng.sample(sorted(state), 1_500)}
        for n in range(1_500):
            batch[b"r%d/%d/" % (round_number, n) + rng.randbytes(rng.randrange(0, 60))] = b"w"
        apply(state, batch)
        root = tree.update(batch.items())
        assert root == smt.root_of(state.items()) and len(tree) == len(state)
        probes = rng.sample(sorted(state), 40)
        assert [tree.walk(key)[1][1] for key in probes] == probes  # type: ignore[index]
        check_walks(tree, root, state, probes[:10] + [b"gone"])


def test_empty_single_and_emptied_trees(impl: ModuleType) -> None:
    tree = impl.MemoryTree()
    assert tree.root() == smt.EMPTY == tree.build([]) == tree.update([])
    assert tree.walk(b"a") == ([], None) and len(tree) == 0
    root = tree.update([(b"a", b"1")])
    assert root == smt.leaf_hash(b"a", b"1") == smt.root_of([(b"a", b"1")])
    assert tree.walk(b"b") == ([], (root, b"a"))
    assert tree.update([(b"b", b"2"), (b"c", b"3")]) == smt.root_of(
        [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
    # Removing all but one moves the last leaf up to the root.
    assert tree.update([(b"a", None), (b"c", None)]) == smt.leaf_hash(b"b", b"2")
    assert tree.update([(b"b", None), (b"zz", None)]) == smt.EMPTY and len(tree) == 0


def test_bad_input_is_refused_alike(impl: ModuleType) -> None:
    tree = impl.MemoryTree()
    root = tree.build([(b"a", b"1"), (b"b", b"2")])
    with pytest.raises(ValueError, match="changed twice"):
        tree.update([(b"c", b"1"), (b"c", None)])
    with pytest.raises(ValueError, match="at most 255 bytes"):
        tree.update([(b"x" * 256, b"1")])
    with pytest.raises(ValueError, match="changed twice"):
        impl.MemoryTree().build([(b"a", b"1"), (b"a", b"2")])
    assert tree.root() == root  # refused before anything changed
    assert tree.update([(bytearray(b"c"), memoryview(b"3"))]) == smt.root_of(
        [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])


def test_twins_share_their_public_names(impl: ModuleType) -> None:
    """The same module names and values, and the same tree methods, in both twins (the
    compiled one is three files included into one module; see _smt_c.pyx)."""
    assert set(impl.__all__) == set(_smt_py.__all__)
    for name in _smt_py.__all__:
        if name != "MemoryTree":
            assert getattr(impl, name) == getattr(_smt_py, name)
    methods = {name for name in dir(_smt_py.MemoryTree) if not name.startswith("_")}
    assert methods == {"build", "update", "root", "walk", "memory_bytes"}
    assert {name for name in dir(impl.MemoryTree) if not name.startswith("_")} == methods
    tree = impl.MemoryTree()
    empty = tree.memory_bytes()
    tree.build((b"k%d" % n, b"v") for n in range(5_000))
    assert tree.memory_bytes() > empty + 5_000 * 32  # at least the leaves' hashes
    if impl is not _smt_py:
        assert impl._c_vector_lanes() in (1, 4, 8, 16)


# ------------------------------------------------------------------ the store's tree


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    environment = lmdb.open(str(tmp_path / "db"), max_dbs=4, map_size=1 << 26)
    yield environment
    environment.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def memory_twin(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Run the store's tree on one twin, whatever the switch chose."""
    module = load_impl(request.param)
    monkeypatch.setattr(smt, "MemoryTree", module.MemoryTree)
    return module


class Store:
    """A state database, its dirty keys and its tree database, as ledger/store.py has them."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self.state_db = env.open_db(b"state")
        self.tree_db = env.open_db(b"tree")
        self.tree = smt.StateTree()

    def write(self, batch: dict[bytes, bytes | None], *, abort_after_update: bool = False) -> bytes:
        """Apply ``batch`` to the state and bring the tree up to date, in one transaction."""
        txn = self.env.begin(write=True)
        try:
            for key, value in batch.items():
                if value is None:
                    txn.delete(key, db=self.state_db)
                else:
                    txn.put(key, value, db=self.state_db)
            root = self.tree.view(txn, self.state_db, self.tree_db).update(
                [(key, txn.get(key, db=self.state_db)) for key in batch])
        except BaseException:
            txn.abort()
            raise
        if abort_after_update:
            txn.abort()
        else:
            txn.commit()
        return root

    def root(self) -> bytes:
        with self.env.begin() as txn:
            return self.tree.view(txn, self.state_db, self.tree_db).root()

    def walk(self, key: bytes) -> tuple[list[bytes], tuple[bytes, bytes] | None]:
        with self.env.begin() as txn:
            return self.tree.view(txn, self.state_db, self.tree_db).walk(key)


# The twin fixture is the same for every example (it only selects the memory tree).
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.tuples(STORE_BATCH, st.sampled_from(["keep", "reopen", "other", "abort"])),
                        min_size=1, max_size=8))
def test_store_tree_is_checked_against_the_committed_root(
        tmp_path_factory: pytest.TempPathFactory, memory_twin: ModuleType,
        batches: list[tuple[dict[bytes, bytes | None], str]]) -> None:
    environment = lmdb.open(str(tmp_path_factory.mktemp("smt") / "db"), max_dbs=4,
                            map_size=1 << 26)
    try:
        stores = [Store(environment), Store(environment)]  # two stores: two "processes"
        state: dict[bytes, bytes] = {}
        for batch, then in batches:
            writer = stores[0]
            if then == "abort":
                # The memory tree moves ahead of a transaction that never commits: it must
                # not be trusted afterwards.
                writer.write(batch, abort_after_update=True)
            else:
                apply(state, batch)
                assert writer.write(batch) == smt.root_of(state.items())
            if then == "reopen":
                stores[0] = Store(environment)
            elif then == "other":
                stores.reverse()  # the next batch is written by the other store
            expected = smt.root_of(state.items())
            for store in stores:
                assert store.root() == expected
                check_walks(store, expected, state, sorted(state)[:4] + [b"none"])
    finally:
        environment.close()


def test_bulk_load_and_records(env: lmdb.Environment, memory_twin: ModuleType) -> None:
    store = Store(env)
    items = sorted((b"acct/%d" % n, b"%d" % n) for n in range(300))
    root, records = smt.tree_records(items)
    assert root == smt.root_of(items) and records == [(smt.ROOT_RECORD, root)]
    with env.begin(write=True) as txn:
        txn.cursor(db=store.state_db).putmulti(items)
        loaded, written = store.tree.view(txn, store.state_db, store.tree_db).bulk_load(items)
        txn.cursor(db=store.tree_db).putmulti(written)
    assert loaded == root == store.root() == Store(env).root()
    assert store.write({b"acct/7": None, b"new": b"1"}) == smt.root_of(
        [item for item in items if item[0] != b"acct/7"] + [(b"new", b"1")])


def test_an_earlier_layout_is_replaced(env: lmdb.Environment, memory_twin: ModuleType) -> None:
    store = Store(env)
    with env.begin(write=True) as txn:
        txn.put(b"a", b"1", db=store.state_db)
        txn.put(bytes(33), b"\x00" + bytes(32) + b"a", db=store.tree_db)  # an old position
    # No root record: the tree comes from the state, and the first update replaces the
    # old positions by the record.
    assert store.root() == smt.root_of([(b"a", b"1")])
    assert store.write({}) == smt.root_of([(b"a", b"1")])
    with env.begin() as txn:
        assert list(txn.cursor(db=store.tree_db).iternext()) == [
            (smt.ROOT_RECORD, smt.root_of([(b"a", b"1")]))]


def test_a_damaged_root_record_is_an_error(env: lmdb.Environment, memory_twin: ModuleType) -> None:
    store = Store(env)
    store.write({b"a": b"1"})
    with env.begin(write=True) as txn:
        txn.put(smt.ROOT_RECORD, b"short", db=store.tree_db)
    with pytest.raises(LedgerCorruptError, match="root record"):
        store.root()


def test_a_failed_update_drops_the_memory_tree(env: lmdb.Environment,
                                               memory_twin: ModuleType) -> None:
    store = Store(env)
    store.write({b"a": b"1", b"b": b"2"})
    with pytest.raises(ValueError, match="at most 255 bytes"):
        store.write({b"x" * 256: b"1"})
    assert store.tree._memory is None  # rebuilt from the state on next use
    assert store.write({b"c": b"3"}) == smt.root_of([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
