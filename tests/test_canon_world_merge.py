"""Shared worlds (canon/world_merge.py, specs/canon-world.md §8): concurrent edits by
several writers merge to one root whatever the order of edits and merges; per-key winner by
(Lamport clock, author); deletes are tombstones; the owner alone changes the writer set;
forged records are refused."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from n3xus.canon.codec import encode
from n3xus.canon.errors import CanonDecodeError, VerificationError
from n3xus.canon.world import MemoryBlockStore
from n3xus.canon.world_merge import (
    MAX_RECORDS_PER_KEY,
    WRITERS_PREFIX,
    Record,
    SharedWorld,
    signing_bytes,
)

OWNER = SigningKey(b"\x11" * 32)
ANN = SigningKey(b"\x22" * 32)
BEN = SigningKey(b"\x33" * 32)
MALLORY = SigningKey(b"\x44" * 32)
KEYS = ["room/a", "room/b", "room/c", "sky"]


def fresh(store: MemoryBlockStore | None = None) -> SharedWorld:
    return SharedWorld(store or MemoryBlockStore(), bytes(OWNER.verify_key), "studio")


def shared_with_writers(store: MemoryBlockStore | None = None) -> SharedWorld:
    world = fresh(store)
    for key in (ANN, BEN):
        world = world.set_writer(OWNER, bytes(key.verify_key), True)
    return world


def test_concurrent_writes_to_one_key_resolve_by_clock_then_author() -> None:
    base = shared_with_writers()
    by_ann = base.put(ANN, "room/a", "red")
    by_ben = base.put(BEN, "room/a", "blue")  # same clock (1): the greater author key wins
    winner = max((ANN, BEN), key=lambda k: bytes(k.verify_key))
    expected = "red" if winner is ANN else "blue"
    one, two = by_ann.merge(by_ben), by_ben.merge(by_ann)
    assert one.root == two.root and one.get("room/a") == two.get("room/a") == expected
    # A write made after seeing both has a higher clock and wins for everyone.
    later = one.put(BEN if winner is ANN else ANN, "room/a", "green")
    assert later.merge(two).get("room/a") == two.merge(later).get("room/a") == "green"


def test_a_delete_is_a_tombstone_that_merges_like_a_write() -> None:
    base = shared_with_writers().put(ANN, "sky", 1)
    deleted = base.write(BEN, "sky", None)
    rewritten_concurrently = base.put(ANN, "sky", 2)
    assert deleted.get("sky") is None and "sky" not in dict(deleted.items())
    merged = deleted.merge(rewritten_concurrently)
    assert merged.root == rewritten_concurrently.merge(deleted).root
    assert merged.get("sky") == (None if bytes(BEN.verify_key) > bytes(ANN.verify_key) else 2)


def test_only_the_owner_changes_the_writer_set() -> None:
    world = fresh()
    assert world.writers() == [bytes(OWNER.verify_key)]
    with pytest.raises(PermissionError):
        world.set_writer(ANN, bytes(ANN.verify_key), True)
    # A record by someone else under ~writers/ is signed, stored, and ignored.
    sneaky = world.write(MALLORY, WRITERS_PREFIX + bytes(MALLORY.verify_key).hex(),
                         world.tree.store.put(encode({"writer": True})))
    assert sneaky.writers() == [bytes(OWNER.verify_key)]
    by_mallory = sneaky.put(MALLORY, "room/a", "graffiti")
    assert by_mallory.get("room/a") is None
    # Adding a writer makes their records count; removing discards them all, for good.
    added = by_mallory.set_writer(OWNER, bytes(MALLORY.verify_key), True)
    assert added.get("room/a") == "graffiti"
    removed = added.set_writer(OWNER, bytes(MALLORY.verify_key), False)
    assert removed.get("room/a") is None and bytes(MALLORY.verify_key) not in removed.writers()
    assert removed.history("room/a") == [] and bytes(MALLORY.verify_key) in removed.removed()
    with pytest.raises(ValueError, match="final"):
        removed.set_writer(OWNER, bytes(MALLORY.verify_key), True)
    with pytest.raises(PermissionError):
        removed.put(MALLORY, "room/a", "more")
    # A replica that still holds Mallory's records drops them when it merges the removal,
    # and ends with the very root of the owner's replica.
    assert added.put(MALLORY, "room/z", "late").merge(removed).root == removed.root


def test_forged_and_malformed_records_are_refused() -> None:
    base = shared_with_writers()
    honest = base.put(ANN, "room/b", "x")
    record = honest.history("room/b")[0]
    forged = Record(record.author, record.clock, record.key, None, record.signature)
    store = honest.tree.store
    tampered = SharedWorld(store, base.owner, base.name, base.tree.update(
        set={"room/b": {"r": [forged.to_map()]}}).root)
    with pytest.raises(VerificationError):
        base.merge(tampered)
    # Signed for another world: refused too.
    other = Record(record.author, 1, "room/b", record.value, ANN.sign(signing_bytes(
        base.owner, "elsewhere", "room/b", 1, record.value)).signature)
    replayed = SharedWorld(store, base.owner, base.name, base.tree.update(
        set={"room/b": {"r": [other.to_map()]}}).root)
    with pytest.raises(VerificationError):
        base.merge(replayed)
    for bad in ({"r": []}, {"r": [{**record.to_map(), "c": 0}]}, {"x": 1},
                {"r": [{**record.to_map(), "k": "room/c"}]}):
        broken = SharedWorld(store, base.owner, base.name, base.tree.update(set={"room/b": bad}).root)
        with pytest.raises(CanonDecodeError):
            base.merge(broken)


def test_histories_keep_the_greatest_records() -> None:
    world = shared_with_writers()
    for n in range(MAX_RECORDS_PER_KEY + 5):
        world = world.put(ANN if n % 2 else BEN, "room/c", n)
    history = world.history("room/c")
    assert len(history) == MAX_RECORDS_PER_KEY and history[-1].clock == MAX_RECORDS_PER_KEY + 5
    assert world.get("room/c") == MAX_RECORDS_PER_KEY + 4


# --- convergence: random edits, random merge orders ---------------------------------------

op = st.tuples(st.sampled_from(["put", "put", "put", "delete", "merge", "writer"]),
               st.integers(0, 2), st.sampled_from(KEYS), st.integers(0, 9))


@settings(max_examples=40, deadline=None)
@given(st.lists(op, min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_replicas_converge_whatever_the_order(ops: list[tuple[str, int, str, int]], seed: int) -> None:
    store = MemoryBlockStore()
    writers = [OWNER, ANN, BEN]
    replicas = [shared_with_writers(store)] * len(writers)
    for kind, who, key, value in ops:
        replica = replicas[who]
        removed = replica.removed()
        if kind in ("put", "delete") and bytes(writers[who].verify_key) in removed:
            with pytest.raises(PermissionError):
                replica.put(writers[who], key, value)
        elif kind == "put":
            replicas[who] = replica.put(writers[who], key, value)
        elif kind == "delete":
            replicas[who] = replica.write(writers[who], key, None)
        elif kind == "merge":
            replicas[who] = replica.merge(replicas[value % 3])
        else:  # the owner adds or removes ann or ben; a removal is final
            target = bytes(writers[1 + value % 2].verify_key)
            if value % 3 != 0 and target in replicas[0].removed():
                with pytest.raises(ValueError):
                    replicas[0].set_writer(OWNER, target, True)
            else:
                replicas[0] = replicas[0].set_writer(OWNER, target, value % 3 != 0)
    rng = random.Random(seed)
    finals = []
    for _ in range(3):
        order = replicas[:]
        rng.shuffle(order)
        merged = order[0]
        for other in order[1:]:
            merged = merged.merge(other) if rng.random() < 0.5 else other.merge(merged)
        finals.append(merged)
    assert len({final.root for final in finals}) == 1
    views: list[Any] = [list(final.items()) for final in finals]
    assert all(view == views[0] for view in views)
    assert len({final.view().root for final in finals}) == 1
    # Merging is idempotent.
    assert finals[0].merge(finals[1]).root == finals[0].root
