"""The canon log: an append-only, signed, Merkle-audited record of what this node holds canonical.

Entry block (DAG-CBOR map; its CID is CIDv1 dag-cbor BLAKE3-256 of these bytes)::

    {"type": str, "version": int, "author": bytes(32), "time": int, "payload": CID,
     "prev": CID | null, "seq": int, "sig": bytes(64)}

    type, version  which payload schema applies (entries.PAYLOAD_SCHEMAS); others are refused
    author         ed25519 public key of the signer
    time           milliseconds since the Unix epoch, given by the caller (the core reads no
                   clock); never less than the previous entry's time
    payload        CID of the payload block (CIDv1 dag-cbor BLAKE3 of its bytes)
    prev           CID of the previous entry block; null exactly for seq 0
    seq            the entry's index in the log, from 0
    sig            ed25519 over ENTRY_SIGNATURE_TAG || DAG-CBOR(the map without "sig")

Merkle tree. Entry ``i`` is leaf ``i`` of an RFC 9162 tree hashed with BLAKE3-256 (merkle.py):
the leaf hash is ``BLAKE3(0x00 || entry block bytes)``, where the bytes are the complete
signed block above, exactly as stored and as hashed for the entry's CID. Checkpoints
(checkpoint.py, C2SP tlog-checkpoint in a signed note) commit to (origin, size, root).

The pure part (:class:`LogEntry`, :func:`sign_entry`, :func:`check_next_entry`) takes bytes
and returns values. :class:`CanonLog` persists it in the node's LMDB environment::

    canon/log/entries  u64 BE index -> entry block bytes
    canon/log/by-cid   binary entry CID -> u64 BE index
    canon/log/tree     u8 level || u64 BE index -> 32-byte hash of that full subtree
    canon/log/meta     b"size", b"time" -> u64 BE; b"head" -> binary CID of the last entry;
                       b"checkpoint" -> the last signed checkpoint note (UTF-8)

Payload blocks go to the block store (content-addressed, so putting one is idempotent),
with a direct pin ``canon/log/payload/<index>`` where the store has pins. Every change to
the log itself (entry, index, tree nodes, head) is one LMDB write transaction, and every
check runs before anything is written, so a refused append changes nothing.
:meth:`CanonLog.append_in` writes an entry, its payload and the payload's pin in the
caller's write transaction instead, so they commit with the caller's other writes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import lmdb
from nacl.signing import SigningKey, VerifyKey

from . import merkle
from .checkpoint import Checkpoint, ProofBundle
from .cid import CID, cid_of
from .codec import decode, encode
from .entries import (
    ED25519_PUBLIC_KEY_BYTES,
    ED25519_SIGNATURE_BYTES,
    MAX_TIME_MS,
    PAYLOAD_SCHEMAS,
    WorldCommit,
    _verify_ed25519,
    check_payload,
)
from .errors import CanonDecodeError, CanonError, LimitExceededError, VerificationError
from .note import make_vkey, parse_note
from .stored_tree import StoredTree, check_size
from .world import BlockSource

# Domain separation for entry signatures, versioned with the entry format.
ENTRY_SIGNATURE_TAG = b"n3xus/canon-log-entry/v1\x00"
# An honest entry is under 300 bytes (names, a 32-byte key, two CIDs, a signature); the cap
# bounds what a peer's entry can make us decode and hash.
MAX_ENTRY_BYTES = 1024
# Longest entry type name; the registered ones are far shorter.
MAX_TYPE_CHARS = 64
# Payloads are single blocks; the block store's own limit (1 MiB, what IPFS peers exchange).
MAX_PAYLOAD_BYTES = 1 << 20
# Appends by this node's own key re-sign on a head that another appender moved; each
# concurrent appender can win at most once per round, so a few rounds always suffice.
APPEND_RACE_RETRIES = 8
# Block-store pin names protecting payloads from GC: one direct pin per entry index.
PAYLOAD_PIN_PREFIX = "canon/log/payload/"
# The log's tree hash: BLAKE3-256 with RFC 9162 framing.
HASHER = merkle.BLAKE3

_DB_ENTRIES = b"canon/log/entries"
_DB_BY_CID = b"canon/log/by-cid"
_DB_TREE = b"canon/log/tree"
_DB_META = b"canon/log/meta"
_META_SIZE = b"size"
_META_TIME = b"time"
_META_HEAD = b"head"
_META_CHECKPOINT = b"checkpoint"
_U64 = struct.Struct(">Q")
_ENTRY_FIELDS = {"type", "version", "author", "time", "payload", "prev", "seq", "sig"}


@dataclass(frozen=True)
class LogEntry:
    type: str
    version: int
    author: bytes
    time: int
    payload: CID
    prev: CID | None
    seq: int
    signature: bytes = field(repr=False)

    def unsigned_map(self) -> dict[str, Any]:
        return {
            "type": self.type, "version": self.version, "author": self.author,
            "time": self.time, "payload": self.payload, "prev": self.prev, "seq": self.seq,
        }

    def signing_bytes(self) -> bytes:
        return ENTRY_SIGNATURE_TAG + encode(self.unsigned_map())

    def to_block(self) -> bytes:
        return encode({**self.unsigned_map(), "sig": self.signature})

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    def verify_signature(self) -> None:
        _verify_ed25519(self.author, self.signing_bytes(), self.signature, f"log entry {self.seq}")

    @classmethod
    def from_block(cls, data: bytes) -> LogEntry:
        """Parse an entry block strictly: exact fields and types, canonical bytes."""
        if len(data) > MAX_ENTRY_BYTES:
            raise LimitExceededError(f"log entry of {len(data)} bytes (max {MAX_ENTRY_BYTES})")
        raw = decode(data)
        if not isinstance(raw, dict) or set(raw) != _ENTRY_FIELDS:
            raise CanonDecodeError(f"log entry must be a map of exactly {sorted(_ENTRY_FIELDS)}")

        def check(ok: bool, message: str) -> None:
            if not ok:
                raise CanonDecodeError(f"log entry: {message}")

        check(isinstance(raw["type"], str) and 0 < len(raw["type"]) <= MAX_TYPE_CHARS, "bad type")
        for name in ("version", "time", "seq"):
            check(type(raw[name]) is int and 0 <= raw[name] <= MAX_TIME_MS, f"bad {name}")
        check(isinstance(raw["author"], bytes) and len(raw["author"]) == ED25519_PUBLIC_KEY_BYTES, "bad author key")
        check(isinstance(raw["sig"], bytes) and len(raw["sig"]) == ED25519_SIGNATURE_BYTES, "bad signature length")
        check(isinstance(raw["payload"], CID), "payload must be a CID")
        check(raw["prev"] is None or isinstance(raw["prev"], CID), "prev must be a CID or null")
        check((raw["seq"] == 0) == (raw["prev"] is None), "prev must be null exactly when seq is 0")
        entry = cls(raw["type"], raw["version"], raw["author"], raw["time"], raw["payload"],
                    raw["prev"], raw["seq"], raw["sig"])
        check(entry.to_block() == data, "block is not canonical")
        return entry


class LogHead(NamedTuple):
    """What the next entry must follow: the log's size, last entry CID and time."""

    size: int
    head: CID | None
    time: int


EMPTY_HEAD = LogHead(0, None, 0)


def sign_entry(key: SigningKey, head: LogHead, *, entry_type: str, version: int, payload: CID, time: int) -> LogEntry:
    """Sign the entry that follows ``head``."""
    unsigned = LogEntry(entry_type, version, bytes(key.verify_key), time, payload, head.head, head.size, b"")
    return LogEntry(**{**unsigned.__dict__, "signature": key.sign(unsigned.signing_bytes()).signature})


def check_next_entry(head: LogHead, entry_block: bytes, payload_block: bytes) -> tuple[LogEntry, Any]:
    """Everything an append checks, without IO: the entry parses, is signed by its author,
    follows ``head`` (seq, prev, time), names ``payload_block`` by its CID, and the payload
    matches the schema of the entry's (type, version). Returns the entry and the parsed
    payload; raises CanonDecodeError / VerificationError / LimitExceededError."""
    entry = LogEntry.from_block(entry_block)
    if (entry.type, entry.version) not in PAYLOAD_SCHEMAS:
        raise CanonDecodeError(f"unknown log entry type {entry.type!r} version {entry.version}")
    entry.verify_signature()
    if entry.seq != head.size or entry.prev != head.head:
        raise VerificationError(
            f"log entry seq {entry.seq} / prev {entry.prev} does not follow the head "
            f"(size {head.size}, head {head.head})"
        )
    if entry.time < head.time:
        raise VerificationError(f"log entry time {entry.time} is before the head's {head.time}")
    if len(payload_block) > MAX_PAYLOAD_BYTES:
        raise LimitExceededError(f"payload of {len(payload_block)} bytes (max {MAX_PAYLOAD_BYTES})")
    if cid_of(payload_block) != entry.payload:
        raise VerificationError(f"payload block does not hash to the entry's payload {entry.payload}")
    return entry, check_payload(entry.type, entry.version, payload_block)


class CanonLog:
    """The canon log in the node's LMDB environment (see the module doc for the layout).

    ``store`` receives and serves payload blocks; ``origin`` names the log in checkpoints,
    e.g. ``"n3xus.net/canon/<peer-id>"``."""

    def __init__(self, env: lmdb.Environment, store: BlockSource, origin: str) -> None:
        make_vkey(origin, bytes(ED25519_PUBLIC_KEY_BYTES))  # fail now, not at the first checkpoint, on a name notes refuse
        self.env = env
        self.store = store
        self.origin = origin
        self._entries = env.open_db(_DB_ENTRIES)
        self._by_cid = env.open_db(_DB_BY_CID)
        self._tree = StoredTree(env.open_db(_DB_TREE), HASHER, "canon log", CanonError)
        self._meta = env.open_db(_DB_META)

    # -- reading ---------------------------------------------------------------------------

    def head(self) -> LogHead:
        with self.env.begin() as txn:
            return self._head(txn)

    def _head(self, txn: lmdb.Transaction) -> LogHead:
        size = txn.get(_META_SIZE, db=self._meta)
        if size is None:
            return EMPTY_HEAD
        head = txn.get(_META_HEAD, db=self._meta)
        time = txn.get(_META_TIME, db=self._meta)
        if head is None or time is None:
            raise VerificationError("canon log meta has a size but no head or time")
        return LogHead(_U64.unpack(size)[0], CID(bytes(head)), _U64.unpack(time)[0])

    def __len__(self) -> int:
        return self.head().size

    def entry_block(self, index: int) -> bytes:
        if index < 0:
            raise IndexError(f"no log entry {index}")
        with self.env.begin(db=self._entries) as txn:
            data = txn.get(_U64.pack(index))
        if data is None:
            raise IndexError(f"no log entry {index}")
        return bytes(data)

    def entry(self, index: int) -> LogEntry:
        return LogEntry.from_block(self.entry_block(index))

    def index_of(self, cid: CID) -> int | None:
        with self.env.begin(db=self._by_cid) as txn:
            raw = txn.get(bytes(cid))
        return None if raw is None else int(_U64.unpack(raw)[0])

    def payload(self, index: int) -> Any:
        """The parsed payload of entry ``index`` (a WorldCommit for world commits)."""
        entry = self.entry(index)
        return check_payload(entry.type, entry.version, self.store.get(entry.payload))

    def entries(self, start: int = 0) -> Iterator[tuple[int, LogEntry]]:
        size = self.head().size
        for index in range(start, size):
            yield index, self.entry(index)

    # -- appending ---------------------------------------------------------------------------

    def append(self, key: SigningKey, entry_type: str, payload: bytes | Any, *, version: int = 1, time: int) -> LogEntry:
        """Sign and append an entry by ``key``. ``payload`` is a WorldCommit, the payload
        block's bytes, or a value to encode. ``time`` must not be before the head's time
        (pass ``max(now, log.head().time)`` if the clock may step back)."""
        if isinstance(payload, WorldCommit):
            payload_block = payload.to_block()
        else:
            payload_block = payload if isinstance(payload, bytes) else encode(payload)
        for attempt in range(APPEND_RACE_RETRIES):
            head = self.head()
            # Never before the head: another appender may have moved it (and its time).
            entry = sign_entry(key, head, entry_type=entry_type, version=version,
                               payload=cid_of(payload_block), time=max(time, head.time))
            try:
                return self.append_entry(entry.to_block(), payload_block)
            except VerificationError:
                # We hold the key, so losing the race to another appender (a handshake,
                # a merge, an agent turn) is answered by signing again on the new head;
                # any other failure, or a head that did not move, is the caller's.
                if self.head() == head or attempt == APPEND_RACE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable: the loop returns or raises")

    def append_entry(self, entry_block: bytes, payload_block: bytes) -> LogEntry:
        """Verify a signed entry (from us or a peer) against the head and append it."""
        entry, _ = check_next_entry(self.head(), entry_block, payload_block)
        self._keep_payload(entry.seq, payload_block)
        with self.env.begin(write=True) as txn:
            head = self._head(txn)
            # Checked again under the write lock: another appender may have won the race.
            if entry.seq != head.size or entry.prev != head.head:
                raise VerificationError("the log head moved during the append; sign again")
            self._write(txn, entry, entry_block)
        return entry

    def head_in(self, txn: lmdb.Transaction) -> LogHead:
        """The head as the caller's transaction sees it (see :meth:`append_in`)."""
        return self._head(txn)

    def append_in(self, txn: lmdb.Transaction, key: SigningKey, entry_type: str, payload_block: bytes,
                  *, version: int = 1, time: int) -> LogEntry:
        """As :meth:`append`, inside the caller's write transaction of this log's
        environment: the payload block, its pin and the entry commit together with whatever
        else the caller writes there, in one durable commit (an agent turn writes its
        blocks, this entry and its state pointer so). The head is read in ``txn``, which
        holds LMDB's writer lock, so no other append can move it before the commit. Needs
        a store with in-transaction writes (BlockStore.put_many_in, pin_in); the same checks
        as ``append_entry`` run before anything is written. If the caller's transaction
        aborts, nothing of the entry stays."""
        put_many_in = getattr(self.store, "put_many_in", None)
        pin_in = getattr(self.store, "pin_in", None)
        if put_many_in is None or pin_in is None:
            raise TypeError("append_in needs a block store with in-transaction writes (BlockStore)")
        head = self._head(txn)
        entry = sign_entry(key, head, entry_type=entry_type, version=version,
                           payload=cid_of(payload_block), time=time)
        entry_block = entry.to_block()
        entry, _ = check_next_entry(head, entry_block, payload_block)
        (cid,) = put_many_in(txn, [payload_block])
        pin_in(txn, cid, f"{PAYLOAD_PIN_PREFIX}{entry.seq}", recursive=False)
        self._write(txn, entry, entry_block)
        return entry

    def _keep_payload(self, index: int, payload_block: bytes) -> None:
        """Store the payload block, and where the store has pins (BlockStore) pin it
        directly, so garbage collection never takes a block verify_log needs. Pinning inside
        a session closes the window between put and pin (blockstore.py, rule 2)."""
        session = getattr(self.store, "session", None)
        if session is None:
            self.store.put(payload_block)
            return
        with session() as lease:
            cid = lease.put(payload_block)
            lease.pin(cid, f"{PAYLOAD_PIN_PREFIX}{index}", recursive=False)

    def _write(self, txn: lmdb.Transaction, entry: LogEntry, entry_block: bytes) -> None:
        index = entry.seq
        self._tree.append(txn, index, [HASHER.leaf_hash(entry_block)])
        cid = cid_of(entry_block)
        txn.put(_U64.pack(index), entry_block, db=self._entries)
        txn.put(bytes(cid), _U64.pack(index), db=self._by_cid)
        txn.put(_META_SIZE, _U64.pack(index + 1), db=self._meta)
        txn.put(_META_TIME, _U64.pack(entry.time), db=self._meta)
        txn.put(_META_HEAD, bytes(cid), db=self._meta)

    # -- Merkle tree -------------------------------------------------------------------------

    def root(self, size: int | None = None) -> bytes:
        """The Merkle root of the first ``size`` entries (default all)."""
        with self.env.begin() as txn:
            return self._tree.root(txn, check_size(size, self._head(txn).size))

    def leaf_hash(self, index: int) -> bytes:
        with self.env.begin() as txn:
            return self._tree.node(txn, 0, index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` entries."""
        with self.env.begin() as txn:
            size = check_size(size, self._head(txn).size)
            return self._tree.inclusion_proof(txn, index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from ``old_size`` to ``new_size`` entries."""
        with self.env.begin() as txn:
            new_size = check_size(new_size, self._head(txn).size)
            return self._tree.consistency_proof(txn, old_size, new_size)

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, key: SigningKey) -> str:
        """Sign a C2SP checkpoint of the whole log as a signed note (key name = origin).

        The log never signs two inconsistent checkpoints: in the same write transaction it
        checks that the tree has not shrunk below the last signed size, and that its root at
        that size is still the one signed (so a consistency proof between them exists)."""
        with self.env.begin(write=True) as txn:
            size = self._head(txn).size
            last = txn.get(_META_CHECKPOINT, db=self._meta)
            if last is not None:
                signed = Checkpoint.parse(parse_note(bytes(last).decode("utf-8")).text)
                if size < signed.size:
                    raise CanonError(f"the log has {size} entries, fewer than its checkpoint of {signed.size}")
                if self._tree.root(txn, signed.size) != signed.root_hash:
                    raise CanonError(f"the log no longer has the root it signed at size {signed.size}")
            note = Checkpoint(self.origin, size, self._tree.root(txn, size)).sign(self.origin, key)
            txn.put(_META_CHECKPOINT, note.encode("utf-8"), db=self._meta)
        return note

    def last_checkpoint(self) -> str | None:
        with self.env.begin(db=self._meta) as txn:
            note = txn.get(_META_CHECKPOINT)
        return None if note is None else bytes(note).decode("utf-8")

    def verify_checkpoint(self, note: str, key: VerifyKey) -> Checkpoint:
        """Check a signed checkpoint of this log (ours or a mirror's): ``key`` signed it for
        this origin, and our tree at its size has its root."""
        checkpoint, _ = Checkpoint.open(note, make_vkey(self.origin, key))
        if checkpoint.size > len(self) or self.root(checkpoint.size) != checkpoint.root_hash:
            raise VerificationError(f"checkpoint of size {checkpoint.size} is not a state of this log")
        return checkpoint

    def prove(self, index: int) -> ProofBundle:
        """An offline proof (c2sp.org/tlog-proof) that entry ``index`` is in the log, against
        the last signed checkpoint; verify it with ``ProofBundle.verify(vkey, HASHER,
        entry=entry_block)``."""
        note = self.last_checkpoint()
        if note is None:
            raise CanonError("the log has no signed checkpoint yet")
        size = Checkpoint.parse(parse_note(note).text).size
        return ProofBundle(index, tuple(self.inclusion_proof(index, size)), note)

    def _check_checkpoint_note(self, note: str, key: VerifyKey | None) -> None:
        try:
            if key is not None:
                self.verify_checkpoint(note, key)
                return
            checkpoint = Checkpoint.parse(parse_note(note).text)
        except (CanonError, ValueError) as exc:
            raise VerificationError(f"the last signed checkpoint: {exc}") from exc
        if checkpoint.origin != self.origin or checkpoint.size > len(self) or self.root(checkpoint.size) != checkpoint.root_hash:
            raise VerificationError("the last signed checkpoint is not a state of this log")

    # -- auditing ----------------------------------------------------------------------------

    def verify_log(self, checkpoint_key: VerifyKey | None = None) -> LogHead:
        """Re-check the whole log in one read snapshot: every entry's signature, schema,
        payload, seq/prev/time chain and CID index; every stored tree node against a
        recomputation from the entry bytes; the head; and the last signed checkpoint (its
        signature too when ``checkpoint_key`` is given). Returns the verified head; raises
        VerificationError naming the first fault."""
        with self.env.begin() as txn:
            stored = self._head(txn)
            running = EMPTY_HEAD
            frontier = merkle.Frontier(HASHER)
            for index in range(stored.size):
                block = txn.get(_U64.pack(index), db=self._entries)
                if block is None:
                    raise VerificationError(f"canon log entry {index} is missing")
                block = bytes(block)
                try:
                    entry, _ = check_next_entry(running, block, self.store.get(LogEntry.from_block(block).payload))
                except (CanonError, ValueError) as exc:
                    raise VerificationError(f"canon log entry {index}: {exc}") from exc
                for level, position, digest in frontier.append(HASHER.leaf_hash(block)):
                    if self._tree.stored(txn, level, position) != digest:
                        raise VerificationError(f"canon log tree node ({level}, {position}) is wrong")
                cid = cid_of(block)
                if txn.get(bytes(cid), db=self._by_cid) != _U64.pack(index):
                    raise VerificationError(f"canon log CID index is wrong for entry {index}")
                running = LogHead(index + 1, cid, entry.time)
            if running != stored:
                raise VerificationError(f"canon log head {stored} does not match its entries {running}")
            note = txn.get(_META_CHECKPOINT, db=self._meta)
        if note is not None:
            self._check_checkpoint_note(bytes(note).decode("utf-8"), checkpoint_key)
        return stored
