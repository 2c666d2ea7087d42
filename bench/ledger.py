"""Ledger: ingest against raw libsodium verification, and the Merkle twins.

Ingest (issue target: >= 0.70 of the ceiling; the headline ``ratio=`` line is this pair):
  ours     ``LedgerStore.ingest`` of N pre-signed transfers in batches of INGEST_BATCH: each
           transfer decoded, chain-checked, its signature verified, applied, appended to the
           log and indexed; each batch one LMDB write transaction, committed with the node's
           own settings (``node.storage.open_environment``: sync=True, so every commit
           fsyncs, as a batch acknowledged to a client must survive a power loss)
  ceiling  ``crypto_sign_verify_detached`` of PyNaCl's bundled libsodium, called through
           ctypes, over the same (signature, tagged message, key) triples: the signature
           check alone, with nothing of ours around it
  variants (printed, not in the headline, on part of the workload): the same without fsync
           (sync=False); larger batches (fewer fsyncs); and the compiled ingest loop against
           the pure twin on an in-memory view without signature checks (ratio = the speed-up
           of everything around the signature check).

Checkpoint after a batch (issue 9 target: the state root costs < 10 % of the ingest):
  ours     ``LedgerStore.ingest`` of a batch of CHECKPOINT_BATCH pre-signed transfers, then
           ``TransparencyLog.checkpoint`` (brings the state tree up to date for the keys the
           batch changed, log root, signature, one fsynced commit), on a ledger whose state
           holds ACCOUNTS_LARGE funded accounts (bulk-loaded state and tree: signing a
           million issuances would take minutes and measure nothing of this row)
  ceiling  the same batch's ingest alone. ratio = ingest / (ingest + checkpoint): the goal
           (checkpoint < 10 % of ingest) is ratio >= 1/1.1 = 0.909

Merkle (issue target: the compiled twin >= 5x the pure one), BLAKE3 trees:
  root     ``root_from_leaf_hashes`` over MERKLE_LEAVES leaf hashes
  proofs   PROOFS inclusion proofs out of an in-memory ``MerkleTree`` of MERKLE_LEAVES leaves
  verify   ``verify_inclusion`` of those proofs (the rate printed is proofs verified per s)
  each with ``n3xus.canon._merkle_c`` as ours and ``_merkle_py`` as the ceiling, so a ratio
  is the compiled twin's speed-up (both twins imported directly, whatever the switch says).

    python bench/ledger.py [--json] [--large] [--repeats N] [--dir PATH]
                           [--only ingest|checkpoint|merkle]
"""

from __future__ import annotations

import ctypes
import importlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import lmdb
import nacl._sodium
from blake3 import blake3
from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Pair, main, parser  # noqa: E402
from n3xus.canon import _merkle_py  # noqa: E402
from n3xus.ledger import _ingest_py, engine  # noqa: E402
from n3xus.ledger import ingest as ingest_selector  # noqa: E402
from n3xus.ledger.genesis import Genesis  # noqa: E402
from n3xus.ledger.memory import MemoryLedger  # noqa: E402
from n3xus.ledger.rules import BALANCE, SUPPLY  # noqa: E402
from n3xus.ledger.smt import IMPLEMENTATION as smt_implementation  # noqa: E402
from n3xus.ledger.smt import tree_records  # noqa: E402
from n3xus.ledger.store import LedgerStore  # noqa: E402
from n3xus.ledger.transparency import TransparencyLog, ledger_origin  # noqa: E402
from n3xus.ledger.tx import TX_SIGNATURE_TAG, AccountChain, Op, decode_tx  # noqa: E402
from n3xus.node.storage import open_environment  # noqa: E402

# The issue's workload: 20k pre-signed transfers (--large: 100k, minutes).
TRANSFERS = 20_000
TRANSFERS_LARGE = 100_000
# Senders and receivers of the workload: enough that balances and heads are spread over
# many LMDB pages, few enough that signing the workload stays quick.
ACCOUNTS = 100
# Each account's opening balance: no transfer of the workload can overdraw it.
STARTING_BALANCE = 10**12
# Transactions per write transaction (one commit, so one fsync each) in the headline pair;
# the variant shows how the fsync cost spreads over a bigger batch.
INGEST_BATCH = 1_000
INGEST_BATCH_VARIANT = 5_000
# The variant pairs ingest this fraction of the workload (the headline pair all of it), so
# the whole run stays under a minute.
VARIANT_FRACTION = 4
# The issue's acceptance ratios.
INGEST_TARGET = 0.70
MERKLE_TARGET = 5.0
# The issue's Merkle workload: a root over 1M leaves and 10k inclusion proofs.
MERKLE_LEAVES = 1_000_000
PROOFS = 10_000
PROOFS_LARGE = 100_000
# LMDB map size of each benchmark store: 100k transfers need well under 200 MiB; the
# checkpoint row's million accounts (state, tree positions, indexes) under 1 GiB.
MAP_SIZE_MIB = 4_096
# The checkpoint row: accounts in the state, and transfers per batch (the issue's figures).
ACCOUNTS_LARGE = 1_000_000
CHECKPOINT_BATCH = 1_000
CHECKPOINT_TARGET = 1 / 1.1


def _compiled(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# ---------------------------------------------------------------------------- workload


class Workload:
    """A genesis, the issuance funding ACCOUNTS accounts, and ``transfers`` signed transfers
    between them (round robin, so every account's chain advances)."""

    def __init__(self, transfers: int) -> None:
        issuer = SigningKey(blake3(b"bench/issuer").digest())
        self.genesis = Genesis.create("bench", [bytes(issuer.verify_key)], 10**18,
                                      bytes(SigningKey(blake3(b"bench/p").digest()).verify_key))
        chains = [AccountChain(SigningKey(blake3(b"bench/%d" % i).digest()), self.genesis.cid)
                  for i in range(ACCOUNTS)]
        funding = AccountChain(issuer, self.genesis.cid)
        self.issuance = [funding.sign(Op.ISSUE, {"to": c.account, "amount": STARTING_BALANCE},
                                      time_ms=0) for c in chains]
        self.transfers = [
            chains[n % ACCOUNTS].sign(
                Op.TRANSFER, {"to": chains[(n * 7 + 3) % ACCOUNTS].account, "amount": 1 + n % 997},
                time_ms=n)
            for n in range(transfers)
        ]
        decoded = [decode_tx(raw) for raw in self.transfers]
        self.triples = [(tx.sig, TX_SIGNATURE_TAG + tx.signed, tx.account) for tx in decoded]


def _raw_verifier() -> Callable[[bytes, bytes, int, bytes], int]:
    lib = ctypes.CDLL(nacl._sodium.__file__)
    verify = lib.crypto_sign_verify_detached
    verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p]
    verify.restype = ctypes.c_int
    return verify


class Stores:
    """Fresh ledger stores, each in its own directory (the previous one is removed)."""

    def __init__(self, base: Path | None, workload: Workload) -> None:
        self.workload = workload
        self.root = Path(tempfile.mkdtemp(prefix="n3xus-bench-ledger-", dir=base))
        self._env: lmdb.Environment | None = None
        self._count = 0

    def fresh(self, sync: bool) -> LedgerStore:
        self.close()
        self._count += 1
        path = self.root / f"store{self._count}"
        if sync:
            env = open_environment(path, MAP_SIZE_MIB)  # the node's settings exactly
        else:
            path.mkdir(mode=0o700)
            env = lmdb.open(str(path), map_size=MAP_SIZE_MIB << 20, max_dbs=64, sync=False)
        self._env = env
        store = LedgerStore(env, self.workload.genesis)
        outcomes = store.ingest(self.workload.issuance)
        if not all(isinstance(o, _ingest_py.Accepted) for o in outcomes):
            raise AssertionError(f"issuance rejected: {outcomes}")
        return store

    def close(self) -> None:
        if self._env is not None:
            path = Path(self._env.path())
            self._env.close()
            shutil.rmtree(path, ignore_errors=True)
            self._env = None

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _ingest_pairs(args: Namespace, extra: dict[str, Any]) -> tuple[list[Pair], Stores]:
    workload = Workload(TRANSFERS_LARGE if args.large else TRANSFERS)
    stores = Stores(args.dir, workload)
    verify = _raw_verifier()

    def ingest_in(batch: int, transfers: list[bytes]) -> Callable[[LedgerStore], None]:
        def ours(store: LedgerStore) -> None:
            for start in range(0, len(transfers), batch):
                outcomes = store.ingest(transfers[start:start + batch])
                if not isinstance(outcomes[-1], _ingest_py.Accepted) or not outcomes[-1].applied:
                    raise AssertionError(f"a transfer was rejected: {outcomes[-1]}")
        return ours

    def verify_all(count: int) -> Callable[[object], None]:
        triples = workload.triples[:count]

        def ceiling(_: object) -> None:
            for sig, message, key in triples:
                if verify(sig, message, len(message), key) != 0:
                    raise AssertionError("a workload signature does not verify")
        return ceiling

    def ingest_pair(name: str, count: int, batch: int, sync: bool, headline: bool) -> Pair:
        return Pair(name, count, "tx", ingest_in(batch, workload.transfers[:count]),
                    verify_all(count), lambda: stores.fresh(sync=sync), headline=headline,
                    target=INGEST_TARGET)

    full = len(workload.transfers)
    # The variants run on part of the workload, to keep the whole run under a minute.
    variant = full // VARIANT_FRACTION
    pairs = [
        ingest_pair(f"ingest, batch {INGEST_BATCH}, fsync (node settings)", full,
                    INGEST_BATCH, True, True),
        ingest_pair(f"ingest, batch {INGEST_BATCH}, no fsync", variant, INGEST_BATCH, False,
                    False),
        ingest_pair(f"ingest, batch {INGEST_BATCH_VARIANT}, fsync (node settings)",
                    2 * variant, INGEST_BATCH_VARIANT, True, False),
    ]
    pairs[0].notes["ingest implementation"] = ingest_selector.IMPLEMENTATION
    compiled = _compiled("n3xus.ledger._ingest_c")
    if compiled is None:
        extra["ingest loop, compiled vs pure"] = "skipped: n3xus.ledger._ingest_c is not built"
    else:
        entries = workload.issuance + workload.transfers

        def twin(module: ModuleType) -> Callable[[object], None]:
            def run(_: object) -> None:
                # The engine on this twin's steps (admit, apply_in_order), in memory.
                saved = engine.admit, engine.apply_in_order, engine.verify_signature
                engine.admit, engine.apply_in_order, engine.verify_signature = (  # type: ignore[attr-defined]
                    module.admit, module.apply_in_order, module.verify_signature)
                try:
                    outcomes = MemoryLedger(workload.genesis).ingest(entries, verify=False)
                finally:
                    engine.admit, engine.apply_in_order, engine.verify_signature = saved  # type: ignore[attr-defined]
                if not isinstance(outcomes[-1], _ingest_py.Accepted) or not outcomes[-1].applied:
                    raise AssertionError(f"a transfer was rejected: {outcomes[-1]}")
            return run

        pairs.append(Pair("ingest loop without signature checks, in memory: compiled vs pure",
                          len(entries), "tx", twin(compiled), twin(_ingest_py),
                          headline=False))
    extra["ingest workload"] = (f"{full} transfers among {ACCOUNTS} accounts, "
                                f"LMDB under {stores.root}")
    return pairs, stores


# ------------------------------------------------------------------------------ Merkle


def _merkle_pairs(args: Namespace, extra: dict[str, Any]) -> list[Pair]:
    compiled = _compiled("n3xus.canon._merkle_c")
    if compiled is None:
        extra["merkle"] = "skipped: n3xus.canon._merkle_c is not built"
        return []
    pure = _merkle_py
    hasher = pure.BLAKE3  # shared by both twins (compared by identity)
    leaves = [hasher.leaf_hash(n.to_bytes(8, "big")) for n in range(MERKLE_LEAVES)]
    proofs = PROOFS_LARGE if args.large else PROOFS
    step = MERKLE_LEAVES // proofs
    indexes = [n * step + n % step for n in range(proofs)]
    trees: dict[str, Any] = {}

    def tree(module: ModuleType) -> Any:
        if module.__name__ not in trees:
            trees[module.__name__] = module.MerkleTree(hasher, leaves)
        return trees[module.__name__]

    def root_of(module: ModuleType) -> Callable[[object], None]:
        return lambda _: module.root_from_leaf_hashes(hasher, leaves)

    def proofs_of(module: ModuleType) -> Callable[[object], None]:
        def run(_: object) -> None:
            made = tree(module)
            for index in indexes:
                made.inclusion_proof(index)
        return run

    root = compiled.root_from_leaf_hashes(hasher, leaves)
    if root != pure.root_from_leaf_hashes(hasher, leaves) or tree(compiled).root() != root:
        raise AssertionError("the Merkle twins disagree on the root")
    made = [tree(compiled).inclusion_proof(index) for index in indexes]
    if made[:100] != [tree(pure).inclusion_proof(index) for index in indexes[:100]]:
        raise AssertionError("the Merkle twins disagree on inclusion proofs")

    def verify_with(module: ModuleType) -> Callable[[object], None]:
        def run(_: object) -> None:
            for index, proof in zip(indexes, made, strict=True):
                module.verify_inclusion(hasher, index, MERKLE_LEAVES, leaves[index], proof, root)
        return run

    return [
        Pair(f"merkle root, {MERKLE_LEAVES:,} leaves: compiled vs pure", MERKLE_LEAVES, "leaf",
             root_of(compiled), root_of(pure), headline=False, target=MERKLE_TARGET),
        Pair(f"merkle inclusion proofs ({MERKLE_LEAVES:,}-leaf tree)", proofs, "proof",
             proofs_of(compiled), proofs_of(pure), headline=False, target=MERKLE_TARGET),
        Pair("merkle verify_inclusion (proofs verified/s)", proofs, "proof",
             verify_with(compiled), verify_with(pure), headline=False, target=MERKLE_TARGET),
    ]


# --------------------------------------------------------------- checkpoint after a batch


def _bulk_state(store: LedgerStore, senders: list[bytes], count: int) -> list[bytes]:
    """Write ``count`` funded accounts (``senders`` first) straight into the state and its
    tree, as a replay of their issuance would leave them; returns the other accounts."""
    others = [blake3(b"bench/account/%d" % n).digest() for n in range(count - len(senders))]
    balance = STARTING_BALANCE.to_bytes(8, "big")
    items = sorted([(BALANCE + account, balance) for account in senders + others])
    _, nodes = tree_records(items)
    with store.env.begin(write=True) as txn:
        txn.cursor(db=store.dbs.state).putmulti(items, append=True)
        txn.cursor(db=store.dbs.smt).putmulti(nodes, append=True)
        txn.put(SUPPLY, (STARTING_BALANCE * count).to_bytes(8, "big"), db=store.dbs.state)
        txn.put(SUPPLY, b"", db=store.dbs.dirty)
    return others


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _checkpoint_pair(args: Namespace, extra: dict[str, Any]) -> tuple[Pair, Callable[[], None]]:
    genesis = Genesis.create("bench-1m", [bytes(SigningKey(blake3(b"bench/i").digest()).verify_key)],
                             10**18, bytes(SigningKey(blake3(b"bench/p").digest()).verify_key))
    chains = [AccountChain(SigningKey(blake3(b"bench/s%d" % i).digest()), genesis.cid)
              for i in range(CHECKPOINT_BATCH)]
    root = Path(tempfile.mkdtemp(prefix="n3xus-bench-checkpoint-", dir=args.dir))
    env = open_environment(root / "store", MAP_SIZE_MIB)
    store = LedgerStore(env, genesis)
    tlog = TransparencyLog(env, store, ledger_origin(genesis.cid, "bench"))
    log_key = SigningKey(blake3(b"bench/log").digest())
    started = time.perf_counter()
    others = _bulk_state(store, [chain.account for chain in chains], ACCOUNTS_LARGE)
    loaded, rss_before = time.perf_counter(), _rss_mib()
    tlog.checkpoint(log_key)  # the store's first look at its tree: built from the state
    extra["checkpoint row setup"] = (
        f"{ACCOUNTS_LARGE:,} accounts bulk-loaded (state + tree root) in {loaded - started:.1f} s; "
        f"first checkpoint (the state tree built in memory from LMDB, as after a node's "
        f"start) {time.perf_counter() - loaded:.1f} s, RSS +{_rss_mib() - rss_before:.0f} MiB "
        f"(the tree, and the state database's pages its build read; state tree: "
        f"{smt_implementation})")
    batches: list[list[bytes]] = []
    rng = random.Random(9)

    def next_batch() -> list[bytes]:
        number = len(batches)
        batch = [chain.sign(Op.TRANSFER, {"to": rng.choice(others), "amount": 1 + n},
                            time_ms=10**12 + number) for n, chain in enumerate(chains)]
        batches.append(batch)
        return batch

    def setup() -> list[bytes]:
        tlog.checkpoint(log_key)  # start each timed call from an up-to-date tree
        return next_batch()

    def ingest(batch: list[bytes]) -> None:
        outcomes = store.ingest(batch)
        if not all(isinstance(o, _ingest_py.Accepted) and o.applied for o in outcomes):
            raise AssertionError("a transfer of the checkpoint batch did not apply")

    # Each timed call of ours also times its own two halves, so the checkpoint is weighed
    # against the ingest of the very same batch (the interleaved medians above compare two
    # different batches' ingests, whose spread on this shared machine exceeds a checkpoint).
    paired: list[float] = []

    def ingest_and_checkpoint(batch: list[bytes]) -> None:
        started = time.perf_counter()
        ingest(batch)
        ingested = time.perf_counter()
        tlog.checkpoint(log_key)
        paired.append((time.perf_counter() - ingested) / (ingested - started))
        pair.notes["checkpoint / same batch's ingest (median, range)"] = (
            f"{statistics.median(paired):.1%} ({min(paired):.1%}-{max(paired):.1%}, "
            f"{len(paired)} batches; goal < 10%)")

    def cleanup() -> None:
        env.close()
        shutil.rmtree(root, ignore_errors=True)

    pair = Pair(f"ingest {CHECKPOINT_BATCH:,} tx + checkpoint, {ACCOUNTS_LARGE:,} accounts",
                CHECKPOINT_BATCH, "tx", ingest_and_checkpoint, ingest, setup, headline=False,
                target=CHECKPOINT_TARGET)
    pair.notes["reading"] = ("ratio = ingest / (ingest + checkpoint); >= 0.909 means the "
                             "checkpoint costs < 10 % of the batch's ingest")
    return pair, cleanup


def build(args: Namespace) -> tuple[list[Pair], dict[str, Any]]:
    extra: dict[str, Any] = {}
    pairs: list[Pair] = []
    if args.only in (None, "ingest"):
        pairs, stores = _ingest_pairs(args, extra)
        _cleanups.append(stores.remove)
    if args.only in (None, "checkpoint"):
        checkpoint, cleanup = _checkpoint_pair(args, extra)
        _cleanups.append(cleanup)
        pairs.append(checkpoint)
    if args.only in (None, "merkle"):
        pairs += _merkle_pairs(args, extra)
    extra["note"] = ("ingest ratio = our ingest rate / raw verify rate (1.0 = no overhead); "
                     "twin ratios = compiled rate / pure rate")
    return pairs, extra


# Removes the benchmark's LMDB directories however the run ends.
_cleanups: list[Callable[[], None]] = []


if __name__ == "__main__":
    arg_parser = parser("ledger ingest and Merkle twins")
    arg_parser.add_argument("--only", choices=("ingest", "checkpoint", "merkle"), default=None,
                            help="run one group of rows (default: all)")
    arg_parser.add_argument("--dir", type=Path, default=None,
                            help="where to create the LMDB stores (default: the temp dir)")
    try:
        main("ledger ingest and Merkle twins", build, arg_parser=arg_parser)
    finally:
        for cleanup in _cleanups:
            cleanup()
