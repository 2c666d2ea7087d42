"""Shared worlds: several writers, each on their own node, edit one world; any two replicas
merge to the same root whatever the order edits and merges arrive in
(``specs/canon-world.md`` §8).

A shared world is an ordinary world (``world.py``, a Merkle search tree) whose value at
each key is that key's **history**: the signed *records* written for it, not just the
latest value. A record is

    {"a": author(32), "c": clock, "k": key, "v": value CID | null, "s": signature(64)}

signed by ``a`` over ``RECORD_TAG || DAG-CBOR {"c", "k", "o": owner, "v", "w": world name}``
(so a record cannot be replayed into another world). ``v`` null is a *delete*: a tombstone
that wins over older writes like any other record.

* **Merge** is the union of the two record sets, key by key (a key's history keeps the
  ``MAX_RECORDS_PER_KEY`` greatest records by (clock, author, record bytes)). Union and
  "keep the top N of a total order" are commutative, associative and idempotent, and the
  tree is canonical for its content, so equal record sets give equal roots: replicas that
  have received the same records agree, whatever the order.
* **The value** of a key is that of its greatest *valid* record by (clock, author bytes):
  a Lamport clock (a writer writes at 1 + the greatest clock in the key's history it has),
  ties broken by the author key. Deleted or never written: absent.
* **Writers.** The owner (who names the world with it) is always a writer. Others are
  writers while the owner's greatest record at ``~writers/<author hex>`` is not a delete.
  Only the owner's records count under ``~writers/``, so only the owner changes the writer
  set. A record counts iff its author is a writer *in the merged state*.
* **Removal is final and discards.** Once the owner has a delete at ``~writers/<author>``
  the author is *removed*: every record of theirs is dropped from the tree (on every
  replica, their own included, as soon as it holds the removal), they write nothing more and
  cannot be re-added (a new key can). Nodes refuse a removed writer's commits, so keeping
  their records would leave them on some replicas only; dropping them, and "removed" only
  ever growing with the record set, keeps the root a function of the records received.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .cid import CID, cid_of
from .codec import decode, encode
from .errors import CanonDecodeError, VerificationError
from .world import BlockSource, World, validate_key

RECORD_TAG: Final = b"n3xus/world-record/v1\x00"
WRITERS_PREFIX: Final = "~writers/"
# Records kept per key: enough history for every concurrent writer of a busy key, bounded
# so that a writer flooding one key costs bounded storage.
MAX_RECORDS_PER_KEY: Final = 64
MAX_CLOCK: Final = 2**63 - 1
_KEYS: Final = frozenset({"a", "c", "k", "v", "s"})


@dataclass(frozen=True)
class Record:
    author: bytes
    clock: int
    key: str
    value: CID | None
    signature: bytes

    def to_map(self) -> dict[str, Any]:
        return {"a": self.author, "c": self.clock, "k": self.key, "v": self.value,
                "s": self.signature}

    @property
    def order(self) -> tuple[int, bytes, bytes]:
        """The total order of records: clock, then author, then the record's bytes."""
        return self.clock, self.author, encode(self.to_map())

    @classmethod
    def from_map(cls, value: Any) -> Record:
        if type(value) is not dict or set(value) != _KEYS:
            raise CanonDecodeError(f"a world record is a map of exactly {sorted(_KEYS)}")
        author, clock, key, link, signature = (value[k] for k in ("a", "c", "k", "v", "s"))
        if type(author) is not bytes or len(author) != 32:
            raise CanonDecodeError("a record's author is 32 bytes")
        if type(clock) is not int or not 1 <= clock <= MAX_CLOCK:
            raise CanonDecodeError("a record's clock is an integer 1..2**63-1")
        if type(key) is not str:
            raise CanonDecodeError("a record's key is text")
        validate_key(key)
        if link is not None and not isinstance(link, CID):
            raise CanonDecodeError("a record's value is a CID or null")
        if type(signature) is not bytes or len(signature) != 64:
            raise CanonDecodeError("a record's signature is 64 bytes")
        return cls(author, clock, key, link, signature)


def signing_bytes(owner: bytes, name: str, key: str, clock: int, value: CID | None) -> bytes:
    return RECORD_TAG + encode({"c": clock, "k": key, "o": owner, "v": value, "w": name})


class SharedWorld:
    """One replica of the shared world ``name`` of ``owner``, at ``root`` (an MST of
    histories) in ``store``. Immutable: writes and merges return new replicas."""

    def __init__(self, store: BlockSource, owner: bytes, name: str, root: CID | None = None) -> None:
        validate_key(name)
        self.owner = owner
        self.name = name
        self.tree = World(store, root)

    @property
    def root(self) -> CID:
        return self.tree.root

    def _derive(self, tree: World) -> SharedWorld:
        world = SharedWorld(self.tree.store, self.owner, self.name, tree.root)
        world.tree = tree
        return world

    # --- records -----------------------------------------------------------------------

    def verify(self, record: Record) -> None:
        """The record's signature (by its author, for this world); VerificationError."""
        try:
            VerifyKey(record.author).verify(
                signing_bytes(self.owner, self.name, record.key, record.clock, record.value),
                record.signature)
        except (BadSignatureError, ValueError) as exc:
            raise VerificationError(f"world record of {record.key!r} does not verify: {exc}") from None

    def history(self, key: str) -> list[Record]:
        """The key's records, ascending by their order."""
        link = self.tree.get_link(key)
        if link is None:
            return []
        return _parse_history(self.tree.store.get(link), key)

    def _with(self, key: str, records: list[Record]) -> World:
        return self.tree.update(set={key: _history_block(records)})

    # --- writing -----------------------------------------------------------------------

    def write(self, signer: SigningKey, key: str, value: CID | None) -> SharedWorld:
        """Sign and add a record: ``value`` (a block's CID) at ``key``, or None to delete."""
        validate_key(key)
        author = bytes(signer.verify_key)
        if author in self.removed():
            raise PermissionError(f"{author.hex()} was removed from world {self.name!r}: "
                                  "its records are discarded")
        history = self.history(key)
        clock = 1 + max((record.clock for record in history), default=0)
        signature = signer.sign(signing_bytes(self.owner, self.name, key, clock, value)).signature
        return self._derive(self._with(key, [*history, Record(author, clock, key, value, signature)]))

    def put(self, signer: SigningKey, key: str, value: Any) -> SharedWorld:
        """Store ``value`` as a DAG-CBOR block and write its CID at ``key``."""
        return self.write(signer, key, self.tree.store.put(encode(value)))

    def set_writer(self, owner: SigningKey, writer: bytes, active: bool) -> SharedWorld:
        if bytes(owner.verify_key) != self.owner:
            raise PermissionError("only the world's owner changes its writer set")
        if writer == self.owner:
            raise ValueError("the owner is always a writer")
        if active:
            if writer in self.removed():
                raise ValueError(f"{writer.hex()} was removed from world {self.name!r}; removal "
                                 "is final (add a new key instead)")
            return self.write(owner, WRITERS_PREFIX + writer.hex(),
                              self.tree.store.put(encode({"writer": True})))
        world = self.write(owner, WRITERS_PREFIX + writer.hex(), None)
        return world._discard(world.removed(), list(world.tree.keys()))

    def merge(self, other: SharedWorld) -> SharedWorld:
        """The union of both replicas' records (verifying every record new to this one);
        the same root whichever replica merges which."""
        if (other.owner, other.name) != (self.owner, self.name):
            raise ValueError("replicas of different worlds do not merge")
        unions: dict[str, list[Record]] = {}
        for change in self.tree.diff(other.tree).changes:
            if change.new is None:
                continue  # only here: the union keeps ours
            theirs = _parse_history(other.tree.store.get(change.new), change.key)
            ours = [] if change.old is None else self.history(change.key)
            known = {record.order for record in ours}
            for record in theirs:
                if record.order not in known:
                    self.verify(record)
            unions[change.key] = list({r.order: r for r in [*ours, *theirs]}.values())
        # The writer set first: who is removed decides which records are kept. (Only the
        # owner's records there count, and the owner is never removed.)
        with_markers = self._derive(self.tree.update(set={
            key: _history_block(records) for key, records in unions.items()
            if key.startswith(WRITERS_PREFIX)}))
        removed = with_markers.removed()
        # Removed authors' records go before the cap: the kept 64 are the greatest valid ones.
        kept = {key: [r for r in records if r.author not in removed]
                for key, records in unions.items()}
        merged = self._derive(self.tree.update(
            set={key: _history_block(records) for key, records in kept.items() if records},
            delete=[key for key, records in kept.items() if not records]))
        if removed - self.removed():
            # Someone was removed by this merge: our own keys still hold their records.
            return merged._discard(removed, list(merged.tree.keys()))
        return merged

    def _discard(self, removed: frozenset[bytes], keys: list[str]) -> SharedWorld:
        """This replica without the records of ``removed`` authors at ``keys``."""
        if not removed:
            return self
        histories: dict[str, Any] = {}
        emptied = []
        for key in keys:
            history = self.history(key)
            kept = [record for record in history if record.author not in removed]
            if len(kept) == len(history):
                continue
            if kept:
                histories[key] = {"r": [record.to_map() for record in kept]}
            else:
                emptied.append(key)
        if not histories and not emptied:
            return self
        return self._derive(self.tree.update(set=histories, delete=emptied))

    # --- reading ------------------------------------------------------------------------

    def _owner_markers(self) -> Iterator[tuple[bytes, list[Record]]]:
        """(key, the owner's records at ``~writers/<key>``) for every key the owner named."""
        for key in self.tree.keys(prefix=WRITERS_PREFIX):
            owned = [r for r in self.history(key) if r.author == self.owner]
            if owned:
                yield bytes.fromhex(key[len(WRITERS_PREFIX):]), owned

    def writers(self) -> list[bytes]:
        """The writer set: the owner, then the added and never removed keys ascending."""
        active = [author for author, owned in self._owner_markers()
                  if all(record.value is not None for record in owned)]
        return [self.owner, *sorted(a for a in active if a != self.owner)]

    def removed(self) -> frozenset[bytes]:
        """The removed keys: a delete of the owner at ``~writers/<key>`` (final, §8.3)."""
        return frozenset(author for author, owned in self._owner_markers()
                         if author != self.owner and any(r.value is None for r in owned))

    def link(self, key: str, writers: frozenset[bytes] | None = None) -> CID | None:
        """The value CID of ``key`` (None: absent or deleted)."""
        allowed = frozenset(self.writers()) if writers is None else writers
        for record in reversed(self.history(key)):
            if record.author in allowed:
                return record.value
        return None

    def get(self, key: str, default: Any = None) -> Any:
        link = self.link(key)
        return default if link is None else decode(self.tree.store.get(link))

    def items(self) -> Iterator[tuple[str, CID]]:
        """(key, value CID) of every present key outside ``~writers/``, ascending."""
        allowed = frozenset(self.writers())
        for key in self.tree.keys():
            if key.startswith(WRITERS_PREFIX):
                continue
            link = self.link(key, allowed)
            if link is not None:
                yield key, link

    def view(self) -> World:
        """The plain world of the current values (keys to value CIDs), e.g. to publish."""
        return World(self.tree.store).update(links=dict(self.items()))


def _history_block(records: list[Record]) -> dict[str, Any]:
    """A key's history block: the greatest ``MAX_RECORDS_PER_KEY`` records, ascending."""
    kept = sorted(records, key=lambda record: record.order)[-MAX_RECORDS_PER_KEY:]
    return {"r": [record.to_map() for record in kept]}


def _parse_history(data: bytes, key: str) -> list[Record]:
    value = decode(data)
    if type(value) is not dict or set(value) != {"r"} or type(value["r"]) is not list:
        raise CanonDecodeError("a key's history is a map {r: [records]}")
    if not 1 <= len(value["r"]) <= MAX_RECORDS_PER_KEY:
        raise CanonDecodeError(f"a key's history holds 1..{MAX_RECORDS_PER_KEY} records")
    records = [Record.from_map(item) for item in value["r"]]
    orders = [record.order for record in records]
    if orders != sorted(set(orders)) or any(record.key != key for record in records):
        raise CanonDecodeError(f"the history of {key!r} is not ascending records of that key")
    return records


def record_cid(record: Record) -> CID:
    return cid_of(encode(record.to_map()))
