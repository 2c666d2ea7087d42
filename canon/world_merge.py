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
  set. A record is valid iff its author is a writer *in the merged state*: removing a
  writer disregards all of their records (re-adding restores them), which is what keeps
  the rule a function of the record set alone.
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
        records.sort(key=lambda record: record.order)
        kept = records[-MAX_RECORDS_PER_KEY:]
        return self.tree.update(set={key: {"r": [record.to_map() for record in kept]}})

    # --- writing -----------------------------------------------------------------------

    def write(self, signer: SigningKey, key: str, value: CID | None) -> SharedWorld:
        """Sign and add a record: ``value`` (a block's CID) at ``key``, or None to delete."""
        validate_key(key)
        history = self.history(key)
        clock = 1 + max((record.clock for record in history), default=0)
        author = bytes(signer.verify_key)
        signature = signer.sign(signing_bytes(self.owner, self.name, key, clock, value)).signature
        return self._derive(self._with(key, [*history, Record(author, clock, key, value, signature)]))

    def put(self, signer: SigningKey, key: str, value: Any) -> SharedWorld:
        """Store ``value`` as a DAG-CBOR block and write its CID at ``key``."""
        return self.write(signer, key, self.tree.store.put(encode(value)))

    def set_writer(self, owner: SigningKey, writer: bytes, active: bool) -> SharedWorld:
        if bytes(owner.verify_key) != self.owner:
            raise PermissionError("only the world's owner changes its writer set")
        marker = self.tree.store.put(encode({"writer": True})) if active else None
        return self.write(owner, WRITERS_PREFIX + writer.hex(), marker)

    def merge(self, other: SharedWorld) -> SharedWorld:
        """The union of both replicas' records (verifying every record new to this one);
        the same root whichever replica merges which."""
        if (other.owner, other.name) != (self.owner, self.name):
            raise ValueError("replicas of different worlds do not merge")
        tree = self.tree
        for change in tree.diff(other.tree).changes:
            if change.new is None:
                continue  # only here: the union keeps ours
            theirs = _parse_history(other.tree.store.get(change.new), change.key)
            ours = [] if change.old is None else _parse_history(tree.store.get(change.old), change.key)
            known = {record.order for record in ours}
            for record in theirs:
                if record.order not in known:
                    self.verify(record)
            union = {record.order: record for record in [*ours, *theirs]}
            tree = self._derive(tree)._with(change.key, list(union.values()))
        return self._derive(tree)

    # --- reading ------------------------------------------------------------------------

    def writers(self) -> list[bytes]:
        """The writer set: the owner, then the active writers ascending."""
        active = []
        for key in self.tree.keys(prefix=WRITERS_PREFIX):
            owned = [r for r in self.history(key) if r.author == self.owner]
            if owned and owned[-1].value is not None:
                active.append(bytes.fromhex(key[len(WRITERS_PREFIX):]))
        return [self.owner, *sorted(a for a in active if a != self.owner)]

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
