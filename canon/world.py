"""World state: a map from string keys to DAG-CBOR values, stored as a Merkle Search Tree.

The tree follows the AT Protocol repository MST (atproto.com/specs/repository, v3) with two
documented changes: keys are hashed with BLAKE3 instead of SHA-256, and a layer is 4 leading
zero bits (fanout ~16) instead of 2. Another implementation needs exactly this:

Keys
    Non-empty ASCII strings of at most ``MAX_KEY_BYTES`` bytes drawn from ``KEY_ALPHABET``
    (letters, digits and ``/ . _ ~ : @ -``). Being ASCII, a key's UTF-8 bytes equal its
    characters, so string order is byte order. Keys sort bytewise, ascending.

Layer of a key
    ``layer(key) = clz(BLAKE3-256(key bytes)) // BITS_PER_LAYER`` where ``clz`` counts the
    leading zero *bits* of the 32-byte digest read big-endian. Layer 0 is the bottom.

Node block (DAG-CBOR, CIDv1 dag-cbor + BLAKE3-256)::

    {"e": [{"k": bytes, "p": int, "t": CID | null, "v": CID}, ...], "l": CID | null}

    l  subtree (one layer down) of keys sorting before the node's first entry
    e  the node's entries, keys strictly ascending, all of the node's layer
    p  bytes the key shares with the previous entry's key in this node (0 for the first);
       it must be exactly the common prefix length (compression is mandatory and canonical)
    k  the rest of the key after those ``p`` bytes
    v  CID of the value's own block: the value encoded as DAG-CBOR, CIDv1 dag-cbor BLAKE3
    t  subtree (one layer down) of keys between this entry and the next (or the node's end)

Shape
    The root is the node at the highest layer present, holding every key of that layer.
    Between two neighbouring entries of a layer-L node (and before the first / after the
    last) hangs the layer-(L-1) node for that key range, or null when the range has no keys.
    A range with keys but none of layer L-1 gets an *empty intermediate* node (``e: []``, only
    ``l``), so links never skip a layer. Nodes with neither entries nor links do not exist,
    except the empty world, which is the single node ``{"e": [], "l": null}``; the root is
    never an empty intermediate node. Hence equal contents give equal root CIDs whatever the
    history of writes (tested with random operation orders).

Readers verify every node they load (exact fields, layer of each key, order, canonical
prefix compression, limits) and fail closed with :class:`CanonDecodeError`; traversals check
that keys come out strictly ascending, which is what the parent/child key ranges promise.
A root received from another node should pass :func:`verify_tree` before it is adopted.

Signed world commits (world name, author, root, previous commit) are in ``entries.py``,
beside the other payloads of the canon log, and re-exported here.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeAlias

from blake3 import blake3

from .cid import CID, cid_of
from .codec import decode, encode
from .errors import BlockNotFoundError, CanonDecodeError, LimitExceededError

# A layer is this many leading zero bits of the key hash: fanout 2**4 = 16. atproto uses 2
# (fanout 4); 16 halves the path length, and in Python the cost per block (decode, hash,
# LMDB lookup) dominates the cost per byte, so fewer, larger nodes are faster.
BITS_PER_LAYER = 4
# Keys are path-like names; 256 bytes is ample and keeps a full node of long keys well
# under the block size limit.
MAX_KEY_BYTES = 256
# Printable ASCII without spaces, quotes, escapes or separators that mean something in URLs
# and shells: keys appear in HTTP paths and logs, and ASCII makes string order byte order.
KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._~:@-"
_KEY_PATTERN = re.compile(r"[A-Za-z0-9/._~:@\-]+")
# Entries one node may hold. With fanout 16, an honest node over 1024 entries has
# probability ~(15/16)**1024 < 1e-28; a larger one means keys ground to share a layer, which
# would make every write to that range rewrite a huge block. Refused on read and on write.
MAX_NODE_ENTRIES = 1024
# Decoded nodes a World keeps between operations; bounds memory for long-lived handles.
MAX_CACHED_NODES = 65_536
Value: TypeAlias = Any  # a DAG-CBOR data model value (codec.decode's result)


class BlockSource(Protocol):
    """What the world needs of a block store (``blockstore.BlockStore`` satisfies it)."""

    def get(self, cid: CID) -> bytes: ...

    def put(self, data: bytes) -> CID: ...

    def has(self, cid: CID) -> bool: ...


class MemoryBlockStore:
    """A dict-backed :class:`BlockSource` for tests and scratch work. ``put`` names each
    block by its own hash, so what ``get`` returns always matches its CID."""

    def __init__(self) -> None:
        self.blocks: dict[CID, bytes] = {}

    def get(self, cid: CID) -> bytes:
        try:
            data = self.blocks[cid]
        except KeyError:
            raise BlockNotFoundError(str(cid)) from None
        return data

    def put(self, data: bytes) -> CID:
        cid = cid_of(data)
        self.blocks[cid] = data
        return cid

    def has(self, cid: CID) -> bool:
        return cid in self.blocks


def validate_key(key: str) -> bytes:
    """Return the key's bytes, or raise ValueError / LimitExceededError naming the fault."""
    if not isinstance(key, str):
        raise TypeError(f"world keys are str, not {type(key).__name__}")
    if not key:
        raise ValueError("world keys must not be empty")
    if len(key) > MAX_KEY_BYTES:
        raise LimitExceededError(f"world key of {len(key)} bytes exceeds {MAX_KEY_BYTES}")
    if _KEY_PATTERN.fullmatch(key) is None:
        raise ValueError(f"world key {key!r} has characters outside {KEY_ALPHABET!r}")
    return key.encode("ascii")


def key_layer(key: str) -> int:
    """The MST layer of ``key``: leading zero bits of BLAKE3(key) // BITS_PER_LAYER."""
    digest = int.from_bytes(blake3(key.encode("ascii")).digest(), "big")
    return (256 - digest.bit_length()) // BITS_PER_LAYER


class _Node:
    """A node in memory. ``children[0]`` is ``l``, ``children[i + 1]`` is entry i's ``t``;
    a child is a stored CID, a new unsaved node, or None."""

    __slots__ = ("keys", "values", "children")

    def __init__(self, keys: list[str], values: list[CID], children: list[Ref]) -> None:
        self.keys = keys
        self.values = values
        self.children = children


Ref: TypeAlias = "CID | _Node | None"


class _Op(NamedTuple):
    key: str
    layer: int
    value: CID | None  # None deletes


class Change(NamedTuple):
    """One difference between two worlds: value CIDs before and after (None = absent)."""

    key: str
    old: CID | None
    new: CID | None


@dataclass(frozen=True)
class WorldDiff:
    changes: list[Change]
    blocks_read: int  # distinct blocks fetched from the store to compute ``changes``


def _common_prefix(a: bytes, b: bytes) -> int:
    limit = min(len(a), len(b))
    i = 0
    while i < limit and a[i] == b[i]:
        i += 1
    return i


def _encode_node(node: _Node) -> bytes:
    entries = []
    previous = b""
    for key, value, subtree in zip(node.keys, node.values, node.children[1:], strict=True):
        key_bytes = key.encode("ascii")
        shared = _common_prefix(previous, key_bytes)
        entries.append({"k": key_bytes[shared:], "p": shared, "t": subtree, "v": value})
        previous = key_bytes
    return encode({"e": entries, "l": node.children[0]})


def _optional_link(value: object, what: str) -> CID | None:
    if value is None or isinstance(value, CID):
        return value
    raise CanonDecodeError(f"MST node field {what} must be a CID or null")


def _decode_node(data: bytes, layer: int | None) -> tuple[int, _Node]:
    """Parse and check one node block expected at ``layer`` (all invariants local to it).
    With ``layer`` None (a root) the layer is the first key's, or -1 for no entries."""
    raw = decode(data)
    if not isinstance(raw, dict) or set(raw) != {"e", "l"} or not isinstance(raw["e"], list):
        raise CanonDecodeError("MST node must be a map of exactly {e: list, l}")
    entries = raw["e"]
    if len(entries) > MAX_NODE_ENTRIES:
        raise LimitExceededError(f"MST node has {len(entries)} entries (max {MAX_NODE_ENTRIES})")
    keys: list[str] = []
    values: list[CID] = []
    children: list[Ref] = [_optional_link(raw["l"], "l")]
    previous = b""
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"k", "p", "t", "v"}:
            raise CanonDecodeError("MST entry must be a map of exactly {k, p, t, v}")
        shared, suffix, value = entry["p"], entry["k"], entry["v"]
        if type(shared) is not int or not isinstance(suffix, bytes):
            raise CanonDecodeError("MST entry p must be an int and k bytes")
        if not isinstance(value, CID):
            raise CanonDecodeError("MST entry v must be a CID")
        if not 0 <= shared <= len(previous):
            raise CanonDecodeError("MST entry prefix length out of range")
        key_bytes = previous[:shared] + suffix
        if keys and (key_bytes <= previous or (shared < len(previous) and suffix[:1] == previous[shared:shared + 1])):
            raise CanonDecodeError("MST entries out of order or prefix not maximal")
        try:
            key = key_bytes.decode("ascii")
            validate_key(key)
        except (UnicodeDecodeError, ValueError) as exc:
            raise CanonDecodeError(f"MST entry has an invalid key: {exc}") from exc
        if layer is None:
            layer = key_layer(key)
        elif key_layer(key) != layer:
            raise CanonDecodeError(f"MST key {key!r} is not of layer {layer}")
        keys.append(key)
        values.append(value)
        children.append(_optional_link(entry["t"], "t"))
        previous = key_bytes
    if layer is None:
        layer = -1
        if children[0] is not None:
            raise CanonDecodeError("MST root is an empty intermediate node")
    if layer == 0 and any(child is not None for child in children):
        raise CanonDecodeError("MST node of layer 0 links a subtree")
    return layer, _Node(keys, values, children)


def _same_node(a: _Node, b: _Node) -> bool:
    return a.keys == b.keys and a.values == b.values and all(
        x is y or (isinstance(x, CID) and x == y) for x, y in zip(a.children, b.children, strict=True)
    )


class _Tree:
    """The MST algorithms over one block source for one operation. Loaded nodes are cached
    by CID (blocks are immutable); new nodes and values are kept in ``new_blocks`` until
    :meth:`flush`, so a batch writes only its final nodes."""

    def __init__(self, store: BlockSource, cache: dict[CID, tuple[int, _Node]] | None = None) -> None:
        self.store = store
        self.cache: dict[CID, tuple[int, _Node]] = {} if cache is None else cache
        self.blocks_read = 0
        self.new_blocks: dict[CID, bytes] = {}
        self._split_memo: dict[tuple[int, str], tuple[Ref, Ref, Ref]] = {}

    # -- reading ---------------------------------------------------------------------

    def load(self, ref: CID | _Node, layer: int) -> _Node:
        if isinstance(ref, _Node):
            return ref
        cached = self.cache.get(ref)
        if cached is not None:
            if cached[0] != layer:
                raise CanonDecodeError(f"MST node {ref} linked at layer {layer}, holds {cached[0]}")
            return cached[1]
        if layer < 0:
            raise CanonDecodeError("MST links below layer 0")
        self.blocks_read += 1
        node = _decode_node(self.store.get(ref), layer)[1]
        if not node.keys and node.children[0] is None:
            raise CanonDecodeError(f"MST node {ref} is empty but linked as a subtree")
        if len(self.cache) >= MAX_CACHED_NODES:
            self.cache.clear()
        self.cache[ref] = (layer, node)
        return node

    def root_layer(self, root: CID) -> int:
        """Layer of a root node, or -1 for the empty world; also checks the root's shape."""
        cached = self.cache.get(root)
        if cached is not None:
            return cached[0]
        self.blocks_read += 1
        layer, node = _decode_node(self.store.get(root), None)
        if layer >= 0:
            self.cache[root] = (layer, node)
        return layer

    # -- writing ---------------------------------------------------------------------

    @staticmethod
    def make(keys: list[str], values: list[CID], children: list[Ref]) -> _Node | None:
        if not keys and children[0] is None:
            return None
        if len(keys) > MAX_NODE_ENTRIES:
            raise LimitExceededError(f"a world node would hold {len(keys)} entries (max {MAX_NODE_ENTRIES})")
        return _Node(keys, values, children)

    def split(self, ref: Ref, layer: int, key: str) -> tuple[Ref, Ref]:
        """Cut a subtree (which does not contain ``key``) into the parts below/above it."""
        if ref is None:
            return None, None
        memo = self._split_memo.get((id(ref), key))
        if memo is not None and memo[0] is ref:
            return memo[1], memo[2]
        node = self.load(ref, layer)
        i = bisect_left(node.keys, key)
        low, high = self.split(node.children[i], layer - 1, key) if layer > 0 else (None, None)
        if i == len(node.keys) and high is None and low is node.children[i]:
            result: tuple[Ref, Ref] = (ref, None)
        elif i == 0 and low is None and high is node.children[0]:
            result = (None, ref)
        else:
            result = (
                self.make(node.keys[:i], node.values[:i], node.children[:i] + [low]),
                self.make(node.keys[i:], node.values[i:], [high] + node.children[i + 1:]),
            )
        self._split_memo[(id(ref), key)] = (ref, *result)
        return result

    def merge(self, left: Ref, right: Ref, layer: int) -> Ref:
        """Join two neighbouring subtrees of one layer (all keys of ``left`` < ``right``)."""
        if left is None:
            return right
        if right is None:
            return left
        a, b = self.load(left, layer), self.load(right, layer)
        middle = self.merge(a.children[-1], b.children[0], layer - 1) if layer > 0 else None
        return self.make(a.keys + b.keys, a.values + b.values, a.children[:-1] + [middle] + b.children[1:])

    def _entries_changed(self, node: _Node, layer: int, ops: list[_Op]) -> tuple[list[str], list[CID], list[Ref]]:
        """Apply the ops of this node's own layer; rebuild the gaps their inserts split and
        their deletes join."""
        old_keys = node.keys
        keys: list[str] = []
        values: list[CID] = []
        inserted: set[str] = set()
        reshaped = False
        i = 0
        for op in ops:
            j = bisect_left(old_keys, op.key, i)
            keys.extend(old_keys[i:j])
            values.extend(node.values[i:j])
            i = j
            if i < len(old_keys) and old_keys[i] == op.key:
                i += 1
                if op.value is None:
                    reshaped = True
                    continue
                keys.append(op.key)
                values.append(op.value)
            elif op.value is not None:
                keys.append(op.key)
                values.append(op.value)
                inserted.add(op.key)
                reshaped = True
        keys.extend(old_keys[i:])
        values.extend(node.values[i:])
        if not reshaped:
            return keys, values, list(node.children)
        if layer == 0:
            return keys, values, [None] * (len(keys) + 1)
        children: list[Ref] = []
        bounds: list[str | None] = [None, *keys, None]
        for gap in range(len(keys) + 1):
            low, high = bounds[gap], bounds[gap + 1]
            first = 0 if low is None else bisect_right(old_keys, low)
            last = len(old_keys) if high is None else bisect_left(old_keys, high)
            pieces = node.children[first:last + 1]
            if low is not None and low in inserted:
                pieces[0] = self.split(pieces[0], layer - 1, low)[1]
            if high is not None and high in inserted:
                pieces[-1] = self.split(pieces[-1], layer - 1, high)[0]
            joined = pieces[0]
            for piece in pieces[1:]:
                joined = self.merge(joined, piece, layer - 1)
            children.append(joined)
        return keys, values, children

    def update(self, ref: Ref, layer: int, ops: list[_Op]) -> Ref:
        """Apply sorted ``ops`` (keys of layer <= ``layer`` inside this subtree's range)."""
        if not ops:
            return ref
        node = self.load(ref, layer) if ref is not None else _Node([], [], [None])
        here = [op for op in ops if op.layer == layer]
        if here:
            keys, values, children = self._entries_changed(node, layer, here)
        else:
            keys, values, children = node.keys, node.values, list(node.children)
        if len(here) < len(ops):
            lower = [op for op in ops if op.layer < layer]
            lower_keys = [op.key for op in lower]
            start = 0
            while start < len(lower):
                gap = bisect_left(keys, lower_keys[start])
                end = len(lower) if gap == len(keys) else bisect_left(lower_keys, keys[gap], start + 1)
                children[gap] = self.update(children[gap], layer - 1, lower[start:end])
                start = end
        result = self.make(keys, values, children)
        if isinstance(ref, CID) and result is not None and _same_node(result, node):
            return ref
        return result

    def save(self, ref: CID | _Node) -> CID:
        """Encode a new node (and its new descendants), remembering blocks to flush."""
        if isinstance(ref, CID):
            return ref
        ref.children = [None if child is None else self.save(child) for child in ref.children]
        data = _encode_node(ref)
        cid = cid_of(data)
        self.new_blocks[cid] = data
        return cid

    def put_value(self, value: Value) -> CID:
        data = encode(value)
        cid = cid_of(data)
        self.new_blocks[cid] = data
        return cid

    def flush(self) -> None:
        put_many = getattr(self.store, "put_many", None)
        blocks = list(self.new_blocks.values())
        if put_many is not None:
            put_many(blocks)
        else:
            for data in blocks:
                self.store.put(data)
        self.new_blocks.clear()

    # -- whole-tree operations -----------------------------------------------------------

    def apply(self, root: CID, ops: list[_Op]) -> CID:
        """New root after ``ops`` (sorted, one per key); nothing is written until flush."""
        old_layer = self.root_layer(root)
        ops = [op for op in ops if op.value is not None or op.layer <= old_layer]
        if not ops:
            return root
        top = max(old_layer, max(op.layer for op in ops))
        ref: Ref = root if old_layer >= 0 else None
        for _ in range(old_layer, top):
            ref = None if ref is None else _Node([], [], [ref])
        ref = self.update(ref, top, ops)
        layer = top
        while ref is not None:
            node = self.load(ref, layer)
            if node.keys:
                break
            ref, layer = node.children[0], layer - 1
        if ref is None:
            ref = _Node([], [], [None])
        return self.save(ref)

    def walk(self, ref: Ref, layer: int, start: str | None, end: str | None) -> Iterator[tuple[str, CID]]:
        """Entries of a subtree with ``start <= key < end``, ascending."""
        if ref is None:
            return
        node = self.load(ref, layer)
        keys = node.keys
        first = 0 if start is None else bisect_left(keys, start)
        for i in range(first, len(keys) + 1):
            if layer > 0:
                yield from self.walk(node.children[i], layer - 1, start, end)
            if i == len(keys):
                return
            if end is not None and keys[i] >= end:
                return
            yield keys[i], node.values[i]

    def count(self, ref: Ref, layer: int) -> int:
        if ref is None:
            return 0
        node = self.load(ref, layer)
        total = len(node.keys)
        if layer > 0:
            total += sum(self.count(child, layer - 1) for child in node.children)
        return total


_EMPTY_NODE = encode({"e": [], "l": None})
_LEAF = 1
_SUBTREE = 0


class _Cursor:
    """In-order walk of one tree as a stack of pending items: (_SUBTREE, cid, layer) or
    (_LEAF, key, value cid); subtrees are opened only on demand."""

    def __init__(self, tree: _Tree, root: CID) -> None:
        self.tree = tree
        self.stack: list[tuple[int, Any, Any]] = []
        self.last_key = ""
        layer = tree.root_layer(root)
        if layer >= 0:
            self.stack.append((_SUBTREE, root, layer))

    def open(self) -> None:
        _, ref, layer = self.stack.pop()
        node = self.tree.load(ref, layer)
        items: list[tuple[int, Any, Any]] = []
        for i, child in enumerate(node.children):
            if child is not None:
                items.append((_SUBTREE, child, layer - 1))
            if i < len(node.keys):
                items.append((_LEAF, node.keys[i], node.values[i]))
        self.stack.extend(reversed(items))

    def take_leaf(self) -> tuple[str, CID]:
        _, key, value = self.stack.pop()
        if key <= self.last_key:
            raise CanonDecodeError(f"MST keys out of order at {key!r}")
        self.last_key = key
        return key, value

    def drain(self) -> Iterator[tuple[str, CID]]:
        while self.stack:
            if self.stack[-1][0] == _SUBTREE:
                self.open()
            else:
                yield self.take_leaf()


def diff(store: BlockSource, root_a: CID, root_b: CID) -> WorldDiff:
    """Changes from world ``root_a`` to ``root_b``, in key order. Subtrees with equal CIDs
    on both sides are skipped unread, so the blocks read grow with changes x depth."""
    tree = _Tree(store)
    changes: list[Change] = []
    if root_a == root_b:
        return WorldDiff(changes, 0)
    a, b = _Cursor(tree, root_a), _Cursor(tree, root_b)
    while a.stack and b.stack:
        x, y = a.stack[-1], b.stack[-1]
        if x[0] == _LEAF and y[0] == _LEAF:
            if x[1] == y[1]:
                (key, old), (_, new) = a.take_leaf(), b.take_leaf()
                if old != new:
                    changes.append(Change(key, old, new))
            elif x[1] < y[1]:
                key, old = a.take_leaf()
                changes.append(Change(key, old, None))
            else:
                key, new = b.take_leaf()
                changes.append(Change(key, None, new))
        elif x[0] == _SUBTREE and y[0] == _SUBTREE:
            if x[1] == y[1]:
                a.stack.pop()
                b.stack.pop()
            elif x[2] >= y[2]:
                a.open()
                if x[2] == y[2]:
                    b.open()
            else:
                b.open()
        elif x[0] == _SUBTREE:
            a.open()
        else:
            b.open()
    changes.extend(Change(key, old, None) for key, old in a.drain())
    changes.extend(Change(key, None, new) for key, new in b.drain())
    return WorldDiff(changes, tree.blocks_read)


def verify_tree(store: BlockSource, root: CID, *, check_values: bool = True) -> int:
    """Load and check every node of a world (and that its value blocks are present);
    return the number of keys. Raises CanonDecodeError / BlockNotFoundError."""
    cursor = _Cursor(_Tree(store), root)
    count = 0
    for key, value in cursor.drain():
        if check_values and not store.has(value):
            raise BlockNotFoundError(f"value of {key!r}: {value}")
        count += 1
    return count


def _range(prefix: str | None, start: str | None, end: str | None) -> tuple[str | None, str | None]:
    if prefix:
        validate_key(prefix)
        start = prefix if start is None or start < prefix else start
        # The first string after every key with this prefix: bump its last character
        # (the alphabet is ASCII below 0x7f, so the successor is a valid bound).
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        end = after if end is None or end > after else end
    return start, end


class World:
    """An immutable handle on one world root in a block store. Writes return new worlds
    that share every unchanged node with this one."""

    __slots__ = ("store", "root", "_cache", "_layer", "_length")

    def __init__(self, store: BlockSource, root: CID | None = None) -> None:
        self.store = store
        self.root = store.put(_EMPTY_NODE) if root is None else root
        self._cache: dict[CID, tuple[int, _Node]] = {}
        self._layer: int | None = None
        self._length: int | None = None

    def __repr__(self) -> str:
        return f"World({self.root})"

    def _tree(self) -> _Tree:
        return _Tree(self.store, self._cache)

    def _derive(self, root: CID) -> World:
        world = World(self.store, root)
        world._cache = self._cache
        return world

    def get_link(self, key: str) -> CID | None:
        """CID of the value block at ``key``, or None."""
        validate_key(key)
        tree = self._tree()
        if self._layer is None:
            self._layer = tree.root_layer(self.root)
        wanted = key_layer(key)
        ref: Ref = self.root
        layer = self._layer
        while ref is not None and layer >= wanted:
            node = tree.load(ref, layer)
            i = bisect_left(node.keys, key)
            if i < len(node.keys) and node.keys[i] == key:
                return node.values[i]
            ref, layer = node.children[i], layer - 1
        return None

    def get(self, key: str, default: Value = None) -> Value:
        link = self.get_link(key)
        return default if link is None else decode(self.store.get(link))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get_link(key) is not None

    def update(
        self,
        set: Mapping[str, Value] | None = None,  # shadows the builtin: reads best at call sites
        delete: Iterable[str] = (),
        links: Mapping[str, CID] | None = None,
    ) -> World:
        """Apply many changes at once and write only the final nodes. ``set`` stores values
        as blocks; ``links`` points keys at blocks already stored; ``delete`` removes keys
        (absent keys are ignored). A key may appear in only one of the three."""
        tree = self._tree()
        targets: dict[str, CID | None] = {}
        for key in delete:
            validate_key(key)
            targets[key] = None
        for key, link in (links or {}).items():
            validate_key(key)
            if key in targets or not isinstance(link, CID):
                raise ValueError(f"key {key!r} given twice, or its link is not a CID")
            targets[key] = link
        for key, value in (set or {}).items():
            validate_key(key)
            if key in targets:
                raise ValueError(f"key {key!r} is both set and deleted or linked")
            targets[key] = tree.put_value(value)
        ops = [_Op(key, key_layer(key), targets[key]) for key in sorted(targets)]
        root = tree.apply(self.root, ops)
        tree.flush()
        return self._derive(root)

    def set(self, key: str, value: Value) -> World:
        return self.update(set={key: value})

    def delete(self, key: str) -> World:
        return self.update(delete=[key])

    def links(self, prefix: str | None = None, start: str | None = None, end: str | None = None) -> Iterator[tuple[str, CID]]:
        """(key, value CID) for keys with ``prefix`` and ``start <= key < end``, ascending."""
        start, end = _range(prefix, start, end)
        tree = self._tree()
        layer = tree.root_layer(self.root)
        last = ""
        for key, link in tree.walk(self.root if layer >= 0 else None, layer, start, end):
            if key <= last:
                raise CanonDecodeError(f"MST keys out of order at {key!r}")
            last = key
            yield key, link

    def items(self, prefix: str | None = None, start: str | None = None, end: str | None = None) -> Iterator[tuple[str, Value]]:
        for key, link in self.links(prefix, start, end):
            yield key, decode(self.store.get(link))

    def keys(self, prefix: str | None = None, start: str | None = None, end: str | None = None) -> Iterator[str]:
        return (key for key, _ in self.links(prefix, start, end))

    def __len__(self) -> int:
        if self._length is None:
            tree = self._tree()
            layer = tree.root_layer(self.root)
            self._length = tree.count(self.root if layer >= 0 else None, layer)
        return self._length

    def diff(self, other: World) -> WorldDiff:
        """Changes from this world to ``other`` (same store)."""
        return diff(self.store, self.root, other.root)
