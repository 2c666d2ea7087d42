"""Canon memory: block store put/get against raw BLAKE3 + raw LMDB, and world state.

Block store (issue targets: put >= 0.60 of the ceiling, get >= 0.70):
  ours     BlockStore.put / put_many / get (CID, hash check on read, epochs, GC
           bookkeeping, the node's LMDB settings)
  ceiling  blake3(data).digest() + a plain LMDB put / get (+ blake3 of what was read,
           since ours verifies every read) on an identically opened environment
  for 1 KiB and 64 KiB raw blocks, single (one write transaction per put, fsync
  included, as a lone put costs) and batched (one transaction per batch).

World state (printed, not part of the ratio): build a 100k-key world in one batch;
diff two 100k-key worlds that differ in 10/100/1000 keys and a 10k-key pair with
100 changes, printing the blocks each diff read. The count must follow
changes x log n, not n.

    python bench/canon.py [--json] [--large] [--repeats N]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

import blake3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Pair, main  # noqa: E402
from n3xus.canon.blockstore import BlockStore  # noqa: E402
from n3xus.canon.codec import encode  # noqa: E402
from n3xus.canon.world import World  # noqa: E402
from n3xus.node.storage import open_environment  # noqa: E402

MAP_SIZE_MIB = 4096


class Fixture:
    """Two fresh environments (ours and the ceiling's), opened the node's way."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="n3xus-bench-"))
        self.ours_env = open_environment(self.dir / "ours", MAP_SIZE_MIB)
        self.store = BlockStore(self.ours_env)
        self.raw_env = open_environment(self.dir / "raw", MAP_SIZE_MIB)
        self.raw_db = self.raw_env.open_db(b"raw")

    def close(self) -> None:
        self.ours_env.close()
        self.raw_env.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _blocks(count: int, size: int) -> list[bytes]:
    return [os.urandom(size) for _ in range(count)]


def _pairs(args: Namespace) -> tuple[list[Pair], dict[str, Any]]:
    scale = 5 if args.large else 1
    fixtures: list[Fixture] = []

    def fresh() -> Fixture:
        f = Fixture()
        fixtures.append(f)
        return f

    pairs: list[Pair] = []
    for size, single_n, batch_n in ((1024, 200 * scale, 20_000 * scale),
                                    (64 * 1024, 100 * scale, 2_000 * scale)):
        label = f"{size // 1024} KiB"
        single = _blocks(single_n, size)
        batch = _blocks(batch_n, size)

        def ours_put_single(f: Fixture, blocks: list[bytes] = single) -> None:
            for b in blocks:
                f.store.put(b, codec="raw")

        def raw_put_single(f: Fixture, blocks: list[bytes] = single) -> None:
            for b in blocks:
                digest = blake3.blake3(b).digest()
                with f.raw_env.begin(write=True, db=f.raw_db) as txn:
                    txn.put(digest, b)

        def ours_put_batch(f: Fixture, blocks: list[bytes] = batch) -> None:
            f.store.put_many(blocks, codec="raw")

        def raw_put_batch(f: Fixture, blocks: list[bytes] = batch) -> None:
            with f.raw_env.begin(write=True, db=f.raw_db) as txn:
                for b in blocks:
                    txn.put(blake3.blake3(b).digest(), b)

        def loaded(blocks: list[bytes] = batch) -> tuple[Fixture, list[Any], list[bytes]]:
            f = fresh()
            cids = f.store.put_many(blocks, codec="raw")
            keys = []
            with f.raw_env.begin(write=True, db=f.raw_db) as txn:
                for b in blocks:
                    key = blake3.blake3(b).digest()
                    txn.put(key, b)
                    keys.append(key)
            return f, cids, keys

        def ours_get(state: tuple[Fixture, list[Any], list[bytes]]) -> None:
            f, cids, _ = state
            for cid in cids:
                f.store.get(cid)

        def raw_get(state: tuple[Fixture, list[Any], list[bytes]]) -> None:
            f, _, keys = state
            for key in keys:
                with f.raw_env.begin(db=f.raw_db) as txn:
                    blake3.blake3(txn.get(key)).digest()

        pairs += [
            Pair(f"put {label} single (txn+fsync each)", single_n, "blocks", ours_put_single,
                 raw_put_single, setup=fresh, target=0.60),
            Pair(f"put {label} batched ({batch_n}/txn)", batch_n, "blocks", ours_put_batch,
                 raw_put_batch, setup=fresh, target=0.60),
            Pair(f"get {label} (verified)", batch_n, "blocks", ours_get, raw_get,
                 setup=loaded, target=0.70),
        ]
    # Informational (not in the headline): DAG-CBOR puts verify that untrusted bytes are
    # canonical DAG-CBOR (a strict decode), which the raw ceiling does not do.
    cbor_blocks = [encode({"data": os.urandom(1000), "n": i}) for i in range(5000 * scale)]

    def ours_put_cbor(f: Fixture, blocks: list[bytes] = cbor_blocks) -> None:
        f.store.put_many(blocks, codec="dag-cbor")

    def raw_put_cbor(f: Fixture, blocks: list[bytes] = cbor_blocks) -> None:
        with f.raw_env.begin(write=True, db=f.raw_db) as txn:
            for b in blocks:
                txn.put(blake3.blake3(b).digest(), b)

    pairs.append(Pair("put 1 KiB dag-cbor batched (strict decode)", len(cbor_blocks), "blocks",
                      ours_put_cbor, raw_put_cbor, setup=fresh, headline=False))
    extra = {"world": world_figures(args), "_fixtures": fixtures}
    return pairs, extra


def world_figures(args: Namespace) -> dict[str, Any]:
    n = 200_000 if args.large else 100_000
    f = Fixture()
    try:
        keys = [f"k/{i:08d}" for i in range(n)]
        start = time.perf_counter()
        base = World(f.store).update(set={k: i for i, k in enumerate(keys)})
        build_s = time.perf_counter() - start
        figures: dict[str, Any] = {"keys": n, "build_s": round(build_s, 2),
                                   "build_keys_per_s": round(n / build_s)}
        diffs = {}
        for changes in (10, 100, 1000):
            step = n // changes
            changed = base.update(set={keys[i * step]: -1 for i in range(changes)})
            start = time.perf_counter()
            d = base.diff(changed)
            assert len(d.changes) == changes
            diffs[f"{changes} changes of {n}"] = {"blocks_read": d.blocks_read,
                                                  "ms": round((time.perf_counter() - start) * 1e3, 1)}
        small_n = n // 10
        small = World(f.store).update(set={k: i for i, k in enumerate(keys[:small_n])})
        changed = small.update(set={keys[i * (small_n // 100)]: -1 for i in range(100)})
        diffs[f"100 changes of {small_n}"] = {"blocks_read": small.diff(changed).blocks_read}
        figures["diffs"] = diffs
        return figures
    finally:
        f.close()


def run() -> None:
    holder: dict[str, Any] = {}

    def build(a: Namespace) -> tuple[list[Pair], dict[str, Any]]:
        pairs, extra = _pairs(a)
        holder["fixtures"] = extra.pop("_fixtures")
        return pairs, extra

    try:
        main("canon block store and world state", build, argv=sys.argv[1:])
    finally:
        for f in holder.get("fixtures", []):
            f.close()


if __name__ == "__main__":
    run()
