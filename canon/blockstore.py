"""The LMDB block store of the canon: verified reads, named pins, leases and a
garbage collector that cannot race a put followed by a pin.

Layout (named databases of the node's single LMDB environment)::

    canon/blocks        binary CID -> block bytes
    canon/block-epochs  binary CID -> u64 big-endian: GC epoch of the block's last put
    canon/pins          pin name (UTF-8) -> 1 flag byte (1 = recursive) + binary CID
    canon/corrupt       binary CID -> UTF-8 reason (blocks whose bytes failed their hash)
    canon/meta          b"gc-epoch" -> u64 big-endian: the current GC epoch

Blocks are keyed by the *full* binary CID, not by multihash: the same digest under
two codecs (raw vs dag-cbor) or a CIDv0 and its CIDv1 form are distinct blocks. That
costs a duplicate copy in those rare cases and buys a store whose keys are exactly
the names callers use, with no codec index to keep consistent.

Every ``get`` re-hashes the bytes and compares them with the CID's digest; a block
that fails is recorded in ``canon/corrupt`` and raises :class:`CorruptBlockError`,
never returned. Putting the correct bytes again repairs it.

Pins. ``pin(cid, name, recursive=True)`` requires the root block, and for a recursive
pin every block reachable from it, to be present: a missing block raises
:class:`BlockNotFoundError` and records nothing, unless ``allow_missing=True``, which
records the pin and reports the missing CIDs ("pin what is there"). Only DAG-CBOR
blocks have links here; raw and dag-pb blocks are leaves.

Garbage collection, the rule. A block survives a GC run if any of these holds:

1. it is reachable from a pin (a direct pin protects only its root);
2. it is reachable from a block held by an open *session* (``with store.session()``):
   every block a session puts or ``hold``\\ s is leased until the session ends;
3. it was put (or put again) after the *previous* GC run started
   (``GC_GRACE_CYCLES``): a bare ``store.put`` therefore survives the first GC that
   starts after it, and only a second one may collect it.

Rule 2 is the guarantee: ``with store.session() as s: cid = s.put(b); ...; s.pin(cid,
"name")`` can never lose ``b``, however many GC runs start in between. Rule 3 is a
safety net for code that puts outside a session.

How it is enforced. A GC run (one at a time per environment) starts with a write
transaction that bumps the epoch and, under the coordinator lock, copies the open
leases and switches on the *write barrier*. It marks from pins and leases in a read
snapshot, which does not block writers. While the run is active, every session put,
``hold`` and every pin appends its CID to a "late roots" list from inside its own write
transaction. The sweep then runs in write transactions of at most ``GC_SWEEP_BATCH``
keys; each one first marks whatever the late roots reach (LMDB serialises writers, so
every pin or lease committed before the batch is visible to it), then deletes only
unmarked blocks whose epoch is old enough. A writer waits at most one batch (and the
marking of whatever was pinned or leased since the previous one).

The coordination state lives in this process (LMDB itself forbids opening the same
environment twice in one process); all stores built on one environment share it.
"""

from __future__ import annotations

import struct
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import lmdb

from .blocks import CODEC_DAG_CBOR as CODEC_DAG_CBOR
from .blocks import CODEC_DAG_PB as CODEC_DAG_PB
from .blocks import CODEC_RAW as CODEC_RAW
from .blocks import HASH_BLAKE3 as HASH_BLAKE3
from .blocks import HASH_IDENTITY as HASH_IDENTITY
from .blocks import HASH_SHA2_256 as HASH_SHA2_256
from .blocks import MAX_BLOCK_SIZE as MAX_BLOCK_SIZE
from .blocks import STORABLE_CODECS as STORABLE_CODECS
from .blocks import STORED_DIGEST_BYTES as STORED_DIGEST_BYTES
from .blocks import block_links as block_links
from .blocks import check_block as check_block
from .blocks import digest_matches as digest_matches
from .blocks import iter_links as iter_links
from .cid import CID, cid_of
from .codec import decode
from .errors import (
    BlockNotFoundError,
    CanonDecodeError,
    CanonError,
    CorruptBlockError,
    LimitExceededError,
)

# Keys examined per sweep write transaction. LMDB has one writer at a time; at about
# a microsecond per key examined this keeps a writer's wait for a running GC in the
# low milliseconds while still amortising the commit (an fsync) over many deletions.
GC_SWEEP_BATCH = 1000

# A block put in GC epoch e is collectable only by a GC starting in epoch
# e + GC_GRACE_CYCLES or later: one full cycle of grace for puts made outside a session.
GC_GRACE_CYCLES = 1

# LMDB's default maximum key size is 511 bytes; 255 leaves room and is plenty for a name.
MAX_PIN_NAME_BYTES = 255

# Blocks read per read transaction when iterating, so that a slow consumer of
# ``iter_cids`` does not keep an old snapshot (and its pages) alive indefinitely.
ITERATION_BATCH = 1024

_DB_BLOCKS = b"canon/blocks"
_DB_EPOCHS = b"canon/block-epochs"
_DB_PINS = b"canon/pins"
_DB_CORRUPT = b"canon/corrupt"
_DB_META = b"canon/meta"
_KEY_EPOCH = b"gc-epoch"
_EPOCH = struct.Struct(">Q")
_PIN_RECURSIVE = 1
_PUT_CODECS = {"dag-cbor": CODEC_DAG_CBOR, "raw": CODEC_RAW}
_PIN_DIRECT = 0


class BlockStat(NamedTuple):
    cid: CID
    size: int
    codec: str
    hash: str
    pin_names: tuple[str, ...]  # pins whose root is this block
    links: int  # CID occurrences in the decoded block (0 for raw / dag-pb)

    @property
    def pinned(self) -> bool:
        return bool(self.pin_names)


class Pin(NamedTuple):
    name: str
    cid: CID
    recursive: bool


class PinReport(NamedTuple):
    name: str
    cid: CID
    blocks: int  # blocks the pin covers that are present
    missing: tuple[CID, ...]  # empty unless allow_missing=True let a partial pin through


class StoreStats(NamedTuple):
    blocks: int
    bytes: int
    pins: int
    corrupt: tuple[CID, ...]


class GcResult(NamedTuple):
    blocks_removed: int
    bytes_freed: int


class BlockWriter(Protocol):
    """What the file chunker and the CAR importer write to: a store or a session."""

    def put(self, data: bytes, codec: str = ..., hash: str = ...) -> CID: ...

    def put_many(self, blocks: Iterable[bytes], codec: str = ..., hash: str = ...) -> list[CID]: ...

    def put_blocks(
        self,
        blocks: Iterable[tuple[CID, bytes]],
        reject: Callable[[CID, CanonError], None] | None = ...,
    ) -> list[CID]: ...

    def get(self, cid: CID) -> bytes: ...


class _Coordinator:
    """GC coordination shared by every store on one environment (see module doc)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # taken inside LMDB write txns, never around one
        self.gc_lock = threading.Lock()  # one GC run at a time
        self.leases: dict[int, set[bytes]] = {}
        self.next_lease = 0
        self.gc_active = False
        self.late_roots: list[tuple[bytes, bool]] = []


_COORDINATORS: weakref.WeakKeyDictionary[lmdb.Environment, _Coordinator] = (
    weakref.WeakKeyDictionary()
)
_COORDINATORS_LOCK = threading.Lock()


def _coordinator_for(env: lmdb.Environment) -> _Coordinator:
    with _COORDINATORS_LOCK:
        coordinator = _COORDINATORS.get(env)
        if coordinator is None:
            coordinator = _COORDINATORS[env] = _Coordinator()
        return coordinator


def _check_pin_name(name: str) -> bytes:
    encoded = name.encode("utf-8")
    if not encoded or len(encoded) > MAX_PIN_NAME_BYTES:
        raise LimitExceededError(f"pin name must be 1..{MAX_PIN_NAME_BYTES} UTF-8 bytes")
    return encoded


class BlockStore:
    """Content-addressed blocks in LMDB. Thread-safe; each call is its own transaction."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._blocks = env.open_db(_DB_BLOCKS)
        self._epochs = env.open_db(_DB_EPOCHS)
        self._pins = env.open_db(_DB_PINS)
        self._corrupt = env.open_db(_DB_CORRUPT)
        self._meta = env.open_db(_DB_META)
        self._coordinator = _coordinator_for(env)

    # -- writing ------------------------------------------------------------------

    def put(self, data: bytes, codec: str = "dag-cbor", hash: str = "blake3") -> CID:
        """Store one block; returns its CID. DAG-CBOR bytes must decode strictly."""
        return self._put_new([data], codec, hash, None)[0]

    def put_many(
        self, blocks: Iterable[bytes], codec: str = "dag-cbor", hash: str = "blake3"
    ) -> list[CID]:
        """Store several blocks of one codec in a single write transaction."""
        return self._put_new(blocks, codec, hash, None)

    def put_blocks(
        self,
        blocks: Iterable[tuple[CID, bytes]],
        reject: Callable[[CID, CanonError], None] | None = None,
    ) -> list[CID]:
        """Store blocks under CIDs made elsewhere, each checked by :func:`check_block`,
        in one write transaction. Without ``reject`` the first bad block raises and
        nothing is written; with it, bad blocks are handed to it and skipped."""
        return self._put_checked(blocks, reject, None)

    def put_many_in(self, txn: lmdb.Transaction[Any], blocks: Iterable[bytes]) -> list[CID]:
        """As :meth:`put_many` (DAG-CBOR, BLAKE3), inside the caller's write transaction
        of this store's environment: the blocks commit, or not, with whatever else the
        caller writes in it (one durable commit instead of several)."""
        return self._put_new(blocks, "dag-cbor", "blake3", None, txn)

    def pin_in(self, txn: lmdb.Transaction[Any], cid: CID, name: str, recursive: bool = True,
               allow_missing: bool = False) -> PinReport:
        """As :meth:`pin`, inside the caller's write transaction (see :meth:`put_many_in`)."""
        return self._pin_in(txn, cid, name, recursive, allow_missing, None)

    def _put_new(
        self, blocks: Iterable[bytes], codec: str, hash: str, lease: int | None,
        txn: lmdb.Transaction[Any] | None = None,
    ) -> list[CID]:
        codec_code = _PUT_CODECS.get(codec)
        if codec_code is None:
            raise CanonDecodeError(f"put accepts codec 'dag-cbor' or 'raw', not {codec!r}")
        pending: list[tuple[bytes, bytes]] = []
        cids: list[CID] = []
        for data in blocks:
            if len(data) > MAX_BLOCK_SIZE:
                raise LimitExceededError(f"block is {len(data)} bytes; limit {MAX_BLOCK_SIZE}")
            if codec_code == CODEC_DAG_CBOR:
                decode(data)  # strict: rejects non-canonical bytes with the codec's error
            cid = cid_of(data, codec=codec_code, hash=hash)
            cids.append(cid)
            pending.append((bytes(cid), data if type(data) is bytes else bytes(data)))
        if txn is None:
            self._write(pending, lease)
        elif pending:
            self._write_in(txn, pending, lease)
        return cids

    def _put_checked(
        self,
        blocks: Iterable[tuple[CID, bytes]],
        reject: Callable[[CID, CanonError], None] | None,
        lease: int | None,
    ) -> list[CID]:
        pending: list[tuple[bytes, bytes]] = []
        cids: list[CID] = []
        for cid, data in blocks:
            try:
                check_block(cid, data)
            except CanonError as error:
                if reject is None:
                    raise
                reject(cid, error)
                continue
            cids.append(cid)
            pending.append((bytes(cid), data if type(data) is bytes else bytes(data)))
        self._write(pending, lease)
        return cids

    def _write(self, pending: list[tuple[bytes, bytes]], lease: int | None) -> None:
        if not pending:
            return
        with self._env.begin(write=True) as txn:
            self._write_in(txn, pending, lease)

    def _write_in(self, txn: lmdb.Transaction[Any], pending: list[tuple[bytes, bytes]],
                  lease: int | None) -> None:
        coordinator = self._coordinator
        stamp = _EPOCH.pack(self._epoch(txn))
        if lease is not None:
            # Inside the write txn: a GC batch either ran before it (and the
            # blocks did not exist yet) or runs after it and sees these entries.
            with coordinator.lock:
                held = coordinator.leases.get(lease)
                if held is None:
                    raise CanonError("the session has ended")
                held.update(key for key, _ in pending)
                if coordinator.gc_active:
                    coordinator.late_roots.extend((key, True) for key, _ in pending)
        if len(pending) == 1:  # the common single put: skip the cursors
            key, data = pending[0]
            added = int(txn.put(key, data, overwrite=False, db=self._blocks))
            txn.put(key, stamp, db=self._epochs)
        else:
            added = txn.cursor(self._blocks).putmulti(pending, overwrite=False)[1]
            txn.cursor(self._epochs).putmulti([(key, stamp) for key, _ in pending])
        if added < len(pending) and txn.stat(self._corrupt)["entries"]:
            for key, data in pending:  # repair recorded corruption with verified bytes
                if txn.pop(key, db=self._corrupt) is not None:
                    txn.put(key, data, db=self._blocks)

    def _epoch(self, txn: lmdb.Transaction[Any]) -> int:
        raw = txn.get(_KEY_EPOCH, db=self._meta)
        return 0 if raw is None else int(_EPOCH.unpack(bytes(raw))[0])

    # -- reading ------------------------------------------------------------------

    def get(self, cid: CID) -> bytes:
        """The block's bytes, verified against the CID on every read."""
        key = bytes(cid)
        with self._env.begin(db=self._blocks) as txn:
            data = txn.get(key)
        if data is None:
            raise BlockNotFoundError(str(cid))
        if not digest_matches(cid, data):
            self._record_corrupt(key, "bytes do not hash to the CID")
            raise CorruptBlockError(f"block {cid} is corrupt: bytes do not hash to the CID")
        return data

    def _record_corrupt(self, key: bytes, reason: str) -> None:
        with self._env.begin(write=True) as txn:
            txn.put(key, reason.encode("utf-8"), db=self._corrupt)

    def has(self, cid: CID) -> bool:
        with self._env.begin(db=self._epochs) as txn:
            return txn.get(bytes(cid)) is not None

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, CID) and self.has(cid)

    def stat(self, cid: CID) -> BlockStat:
        data = self.get(cid)
        links = len(block_links(cid, data))
        names = tuple(pin.name for pin in self.pins() if pin.cid == cid)
        return BlockStat(cid, len(data), cid.codec_name, cid.hash_name, names, links)

    def iter_cids(self) -> Iterator[CID]:
        """Every stored CID in key order, read in batches of ``ITERATION_BATCH``."""
        resume = b""
        while True:
            with self._env.begin(db=self._epochs) as txn:
                cursor = txn.cursor()
                keys: list[bytes] = []
                if cursor.set_range(resume):
                    for key in cursor.iternext(values=False):
                        keys.append(bytes(key))
                        if len(keys) == ITERATION_BATCH:
                            break
            yield from (CID(key) for key in keys)
            if len(keys) < ITERATION_BATCH:
                return
            resume = keys[-1] + b"\x00"  # the smallest key after the last one

    def __iter__(self) -> Iterator[CID]:
        return self.iter_cids()

    def stats(self) -> StoreStats:
        with self._env.begin(buffers=True) as txn:
            count = size = 0
            for value in txn.cursor(self._blocks).iternext(keys=False):
                count += 1
                size += len(value)
            pins = txn.stat(self._pins)["entries"]
            corrupt = tuple(
                CID(bytes(key)) for key in txn.cursor(self._corrupt).iternext(values=False)
            )
        return StoreStats(count, size, pins, corrupt)

    def verify_all(self) -> tuple[CID, ...]:
        """Re-hash every block; record and return the corrupt ones."""
        bad: list[bytes] = []
        with self._env.begin(buffers=True) as txn:
            for raw_key, value in txn.cursor(self._blocks):
                if not digest_matches(CID(bytes(raw_key)), value):
                    bad.append(bytes(raw_key))
        for key in bad:
            self._record_corrupt(key, "bytes do not hash to the CID")
        return tuple(CID(key) for key in bad)

    # -- pins ---------------------------------------------------------------------

    def pin(
        self, cid: CID, name: str, recursive: bool = True, allow_missing: bool = False
    ) -> PinReport:
        return self._pin(cid, name, recursive, allow_missing, None)

    def _pin(
        self, cid: CID, name: str, recursive: bool, allow_missing: bool, lease: int | None
    ) -> PinReport:
        with self._env.begin(write=True) as txn:
            return self._pin_in(txn, cid, name, recursive, allow_missing, lease)

    def _pin_in(
        self, txn: lmdb.Transaction[Any], cid: CID, name: str, recursive: bool,
        allow_missing: bool, lease: int | None,
    ) -> PinReport:
        key_name = _check_pin_name(name)
        key = bytes(cid)
        coordinator = self._coordinator
        # The walk runs inside the write txn: no GC batch can delete a block
        # between our check that it is present and the commit of the pin.
        present, missing = _walk(txn, self._blocks, [(key, recursive)], set(), set())
        if missing and not allow_missing:
            raise BlockNotFoundError(f"cannot pin {cid}: block {CID(missing[0])} is missing")
        with coordinator.lock:
            if lease is not None and lease not in coordinator.leases:
                raise CanonError("the session has ended")
            if coordinator.gc_active:
                coordinator.late_roots.append((key, recursive))
        flag = _PIN_RECURSIVE if recursive else _PIN_DIRECT
        txn.put(key_name, bytes([flag]) + key, db=self._pins)
        return PinReport(name, cid, present, tuple(CID(k) for k in missing))

    def unpin(self, name: str) -> bool:
        """Remove a pin; False if there was none. Blocks go at the next GC."""
        with self._env.begin(write=True, db=self._pins) as txn:
            return bool(txn.delete(_check_pin_name(name)))

    def pins(self) -> list[Pin]:
        with self._env.begin(db=self._pins) as txn:
            return [
                Pin(bytes(name).decode("utf-8"), CID(bytes(value[1:])), value[0] == _PIN_RECURSIVE)
                for name, value in txn.cursor()
            ]

    # -- sessions and GC ------------------------------------------------------------

    def session(self) -> Session:
        """A lease: blocks put or held through it survive every GC until it ends."""
        coordinator = self._coordinator
        with coordinator.lock:
            lease = coordinator.next_lease
            coordinator.next_lease += 1
            coordinator.leases[lease] = set()
        return Session(self, lease)

    def _hold(self, cid: CID, lease: int) -> None:
        key = bytes(cid)
        coordinator = self._coordinator
        with self._env.begin(write=True) as txn:  # same barrier discipline as a put
            if txn.get(key, db=self._epochs) is None:
                raise BlockNotFoundError(str(cid))
            with coordinator.lock:
                held = coordinator.leases.get(lease)
                if held is None:
                    raise CanonError("the session has ended")
                held.add(key)
                if coordinator.gc_active:
                    coordinator.late_roots.append((key, True))

    def _end_session(self, lease: int) -> None:
        with self._coordinator.lock:
            self._coordinator.leases.pop(lease, None)

    def collect_garbage(self) -> GcResult:
        """Delete blocks no pin, session or grace period protects (see module doc)."""
        coordinator = self._coordinator
        with coordinator.gc_lock:
            with self._env.begin(write=True) as txn:
                gc_epoch = self._epoch(txn)
                txn.put(_KEY_EPOCH, _EPOCH.pack(gc_epoch + 1), db=self._meta)
                roots = [
                    (bytes(value[1:]), value[0] == _PIN_RECURSIVE)
                    for value in txn.cursor(self._pins).iternext(keys=False)
                ]
                with coordinator.lock:
                    coordinator.gc_active = True
                    coordinator.late_roots = []
                    for held in coordinator.leases.values():
                        roots.extend((key, True) for key in held)
            try:
                marked: set[bytes] = set()
                shallow: set[bytes] = set()
                with self._env.begin(buffers=True) as snapshot:
                    _walk(snapshot, self._blocks, roots, marked, shallow)
                return self._sweep(gc_epoch, marked, shallow)
            finally:
                with coordinator.lock:
                    coordinator.gc_active = False
                    coordinator.late_roots = []

    def _sweep(self, gc_epoch: int, marked: set[bytes], shallow: set[bytes]) -> GcResult:
        coordinator = self._coordinator
        removed = freed = 0
        resume = b""
        while True:
            with self._env.begin(write=True, buffers=True) as txn:
                with coordinator.lock:
                    late, coordinator.late_roots = coordinator.late_roots, []
                _walk(txn, self._blocks, late, marked, shallow)
                doomed: list[bytes] = []
                examined = 0
                cursor = txn.cursor(self._epochs)
                if cursor.set_range(resume):
                    for raw_key, stamp in cursor:
                        examined += 1
                        key = bytes(raw_key)
                        resume = key + b"\x00"
                        epoch = _EPOCH.unpack(stamp)[0]
                        live = key in marked or key in shallow
                        if epoch + GC_GRACE_CYCLES <= gc_epoch and not live:
                            doomed.append(key)
                        if examined == GC_SWEEP_BATCH:
                            break
                for key in doomed:
                    value = txn.get(key, db=self._blocks)
                    freed += 0 if value is None else len(value)
                    txn.delete(key, db=self._blocks)
                    txn.delete(key, db=self._epochs)
                    txn.delete(key, db=self._corrupt)
                removed += len(doomed)
            if examined < GC_SWEEP_BATCH:
                return GcResult(removed, freed)


def _walk(
    txn: lmdb.Transaction[Any],
    blocks_db: Any,
    roots: list[tuple[bytes, bool]],
    marked: set[bytes],
    shallow: set[bytes],
) -> tuple[int, list[bytes]]:
    """Mark every present block reachable from ``roots`` into ``marked`` (closed under
    links: a key there has all its present descendants there too). A non-recursive
    root goes into ``shallow`` instead, so a later recursive visit still follows its
    links. Returns (blocks newly marked, missing keys).

    Raw leaves are marked from their key alone. A DAG-CBOR block that no longer
    decodes is kept but not followed: GC must never delete more because of damage."""
    missing: list[bytes] = []
    newly = 0
    cursor = txn.cursor(blocks_db)
    stack: list[bytes] = []
    for key, recursive in roots:
        if recursive:
            stack.append(key)
        elif key in marked or key in shallow:
            continue
        elif cursor.set_key(key):
            shallow.add(key)
            newly += 1
        else:
            missing.append(key)
    while stack:
        key = stack.pop()
        if key in marked:
            continue
        cid = CID(key)
        if cid.hash_code == HASH_IDENTITY:
            continue
        if not cursor.set_key(key):
            missing.append(key)
            continue
        marked.add(key)
        newly += 1
        if cid.codec != CODEC_DAG_CBOR:
            continue
        try:
            links = block_links(cid, cursor.value())
        except CanonError:  # damaged: keep it, do not follow it
            continue
        stack.extend(bytes(link) for link in reversed(links))
    return newly, missing


@dataclass
class Session:
    """A lease on a :class:`BlockStore` (see the module doc, rule 2). Use as a
    context manager; blocks stay protected until ``close``."""

    store: BlockStore
    lease: int

    def put(self, data: bytes, codec: str = "dag-cbor", hash: str = "blake3") -> CID:
        return self.store._put_new([data], codec, hash, self.lease)[0]

    def put_many(
        self, blocks: Iterable[bytes], codec: str = "dag-cbor", hash: str = "blake3"
    ) -> list[CID]:
        return self.store._put_new(blocks, codec, hash, self.lease)

    def put_blocks(
        self,
        blocks: Iterable[tuple[CID, bytes]],
        reject: Callable[[CID, CanonError], None] | None = None,
    ) -> list[CID]:
        return self.store._put_checked(blocks, reject, self.lease)

    def put_many_in(self, txn: lmdb.Transaction[Any], blocks: Iterable[bytes]) -> list[CID]:
        """As :meth:`put_many` (DAG-CBOR, BLAKE3), in the caller's write transaction
        (:meth:`BlockStore.put_many_in`); the blocks are leased from the commit on."""
        return self.store._put_new(blocks, "dag-cbor", "blake3", self.lease, txn)

    def pin_in(self, txn: lmdb.Transaction[Any], cid: CID, name: str, recursive: bool = True,
               allow_missing: bool = False) -> PinReport:
        """As :meth:`pin`, in the caller's write transaction."""
        return self.store._pin_in(txn, cid, name, recursive, allow_missing, self.lease)

    def get(self, cid: CID) -> bytes:
        return self.store.get(cid)

    def hold(self, cid: CID) -> None:
        """Protect an existing block and its DAG for the rest of the session."""
        self.store._hold(cid, self.lease)

    def pin(
        self, cid: CID, name: str, recursive: bool = True, allow_missing: bool = False
    ) -> PinReport:
        return self.store._pin(cid, name, recursive, allow_missing, self.lease)

    def close(self) -> None:
        self.store._end_session(self.lease)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
