"""Large artifacts: fixed-size raw chunks under a tree of DAG-CBOR nodes.

Schema (all integers non-negative; every field required, no others)::

    root  {"type": "n3xus/file/v1", "size": int, "chunk_size": int, "fanout": int,
           "height": int, "children": [CID, ...]}
    node  {"type": "n3xus/file-node/v1", "height": int, "children": [CID, ...]}
    leaf  a raw block (codec 0x55) of chunk_size bytes; only the last may be shorter

A root or node of height 0 lists raw chunks; of height h > 0, nodes of height h - 1.
The tree is the canonical left-full one: with n = ceil(size / chunk_size) chunks, the
root's height is the smallest h with n <= fanout ** (h + 1), a node covering chunks
[start, end) at height h has ceil((end - start) / fanout ** h) children, and the child
j covers the next fanout ** h chunks. So one file and one chunk size always give one
root CID, a reader finds the chunks of any byte range by arithmetic (reading one node
per level and only the chunks it needs), and a reader checks every one of these rules:
a DAG that breaks any of them raises CanonDecodeError instead of returning wrong bytes.

Chunk size 256 KiB by default: the default of kubo's chunker, so the unit other IPFS
tools exchange; per-chunk overhead (a CID, an LMDB key, a hash setup) is a few hundredths
of a percent, and a range read fetches at most 256 KiB it does not need at each end.
Fixed-size (not content-defined) chunks make range reads pure arithmetic; the price is
no deduplication across insertions, which artifacts written once do not need.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .blockstore import CODEC_DAG_CBOR, CODEC_RAW, MAX_BLOCK_SIZE, BlockWriter
from .cid import CID
from .codec import decode, encode
from .errors import CanonDecodeError, LimitExceededError

FILE_TYPE = "n3xus/file/v1"
NODE_TYPE = "n3xus/file-node/v1"

DEFAULT_CHUNK_SIZE = 256 * 1024

# A DAG-CBOR link to a BLAKE3 CIDv1 takes 41 bytes, so 1,024 children make a node of
# about 42 KiB: one node read per level for a range read, and a height-0 root already
# covers 256 MiB of 256 KiB chunks (a height-1 root 256 GiB).
DEFAULT_FANOUT = 1024

# 4,096 links (~170 KiB with BLAKE3 CIDs, ~4 KiB more with longer ones) keep every node
# far below MAX_BLOCK_SIZE; at least 2 so that the tree has a finite height.
MAX_FANOUT = 4096
MIN_FANOUT = 2

# Raw chunks gathered before one put_many (one write transaction): amortises the commit
# while bounding what adding a file holds in memory.
ADD_BATCH_BYTES = 4 * 1024 * 1024

_ROOT_FIELDS = frozenset({"type", "size", "chunk_size", "fanout", "height", "children"})
_NODE_FIELDS = frozenset({"type", "height", "children"})


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class BlockSource(Protocol):
    def get(self, cid: CID) -> bytes: ...


@dataclass(frozen=True)
class FileInfo:
    root: CID
    size: int
    chunk_size: int
    fanout: int
    height: int

    @property
    def chunk_count(self) -> int:
        return -(-self.size // self.chunk_size)


def _minimal_height(chunks: int, fanout: int) -> int:
    height = 0
    while chunks > fanout ** (height + 1):
        height += 1
    return height


# --- adding ------------------------------------------------------------------------------


class _TreeBuilder:
    """Builds the canonical tree bottom-up while chunks stream in: one pending list of at
    most ``fanout`` CIDs per level, closed into a node only when one more entry arrives,
    so the last (partial) nodes are closed once, at the end."""

    def __init__(self, target: BlockWriter, fanout: int, hash: str) -> None:
        self._target = target
        self._fanout = fanout
        self._hash = hash  # every block of one file uses the caller's hash, nodes included
        self._levels: list[list[CID]] = [[]]

    def push(self, level: int, cid: CID) -> None:
        if level == len(self._levels):
            self._levels.append([])
        pending = self._levels[level]
        if len(pending) == self._fanout:
            self._levels[level] = []
            self.push(level + 1, self._close(level, pending))
        self._levels[level].append(cid)

    def _close(self, height: int, children: list[CID]) -> CID:
        node = encode({"type": NODE_TYPE, "height": height, "children": children})
        return self._target.put(node, hash=self._hash)

    def finish(self) -> tuple[int, list[CID]]:
        """(height, children) of the root."""
        level = 0
        while level < len(self._levels) - 1:
            self.push(level + 1, self._close(level, self._levels[level]))
            self._levels[level] = []
            level += 1
        return len(self._levels) - 1, self._levels[-1]


def add_stream(
    target: BlockWriter,
    readable: Readable,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    fanout: int = DEFAULT_FANOUT,
    hash: str = "blake3",
) -> CID:
    """Chunk a binary stream into the store; returns the root CID. Holds at most
    ``ADD_BATCH_BYTES`` plus one chunk of the file in memory. Use a session as the
    target (and pin the root in it) to keep the blocks from GC."""
    if not 1 <= chunk_size <= MAX_BLOCK_SIZE:
        raise LimitExceededError(f"chunk_size must be 1..{MAX_BLOCK_SIZE}")
    if not MIN_FANOUT <= fanout <= MAX_FANOUT:
        raise LimitExceededError(f"fanout must be {MIN_FANOUT}..{MAX_FANOUT}")
    builder = _TreeBuilder(target, fanout, hash)
    size = 0
    batch: list[bytes] = []
    batch_bytes = 0
    while True:
        chunk = _read_chunk(readable, chunk_size)
        if chunk:
            batch.append(chunk)
            batch_bytes += len(chunk)
            size += len(chunk)
        at_end = len(chunk) < chunk_size
        if batch and (at_end or batch_bytes >= ADD_BATCH_BYTES):
            for cid in target.put_many(batch, codec="raw", hash=hash):
                builder.push(0, cid)
            batch = []
            batch_bytes = 0
        if at_end:
            break
    height, children = builder.finish()
    root = {
        "type": FILE_TYPE,
        "size": size,
        "chunk_size": chunk_size,
        "fanout": fanout,
        "height": height,
        "children": children,
    }
    return target.put(encode(root), hash=hash)


def add_bytes(target: BlockWriter, data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE,
              fanout: int = DEFAULT_FANOUT) -> CID:
    return add_stream(target, io.BytesIO(data), chunk_size, fanout)


def _read_chunk(readable: Readable, chunk_size: int) -> bytes:
    """Exactly ``chunk_size`` bytes unless the stream ends: chunk boundaries (and so
    the root CID) must not depend on how the stream happens to split its reads."""
    first = readable.read(chunk_size)
    if len(first) == chunk_size or not first:
        return first
    parts = [first]
    have = len(first)
    while have < chunk_size:
        piece = readable.read(chunk_size - have)
        if not piece:
            break
        parts.append(piece)
        have += len(piece)
    return b"".join(parts)


# --- reading -----------------------------------------------------------------------------


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _children(value: dict[str, Any], where: CID) -> list[CID]:
    children = value["children"]
    if not isinstance(children, list) or not all(isinstance(c, CID) for c in children):
        raise CanonDecodeError(f"file node {where}: children is not a list of CIDs")
    return children


def _load_root(source: BlockSource, root: CID) -> tuple[FileInfo, list[CID]]:
    if root.codec != CODEC_DAG_CBOR:
        raise CanonDecodeError(f"file root {root} is not a DAG-CBOR block")
    value = decode(source.get(root))
    if not isinstance(value, dict) or set(value) != _ROOT_FIELDS or value["type"] != FILE_TYPE:
        raise CanonDecodeError(f"{root} is not a {FILE_TYPE} root")
    size, chunk_size, fanout, height = (
        value["size"], value["chunk_size"], value["fanout"], value["height"]
    )
    if not all(_is_count(v) for v in (size, chunk_size, fanout, height)):
        raise CanonDecodeError(f"file root {root}: sizes must be non-negative integers")
    if not 1 <= chunk_size <= MAX_BLOCK_SIZE or not MIN_FANOUT <= fanout <= MAX_FANOUT:
        raise CanonDecodeError(f"file root {root}: chunk_size or fanout out of range")
    info = FileInfo(root, size, chunk_size, fanout, height)
    if height != _minimal_height(info.chunk_count, fanout):
        raise CanonDecodeError(f"file root {root}: height {height} is not the canonical one")
    return info, _children(value, root)


def file_info(source: BlockSource, root: CID) -> FileInfo:
    return _load_root(source, root)[0]


def _iter_chunks(
    source: BlockSource,
    info: FileInfo,
    children: list[CID],
    height: int,
    start: int,
    end: int,
    first: int,
    last: int,
) -> Iterator[tuple[int, bytes]]:
    """(chunk index, bytes) for chunks first..last of a node covering chunks [start, end)."""
    span = info.fanout**height
    if len(children) != -(-(end - start) // span):
        raise CanonDecodeError(f"file {info.root}: a height-{height} node has the wrong fan-out")
    for index in range((first - start) // span, (last - start) // span + 1):
        child = children[index]
        child_start = start + index * span
        child_end = min(end, child_start + span)
        if height == 0:
            if child.codec != CODEC_RAW:
                raise CanonDecodeError(f"file {info.root}: chunk {child} is not a raw block")
            data = source.get(child)
            expected = min(info.chunk_size, info.size - child_start * info.chunk_size)
            if len(data) != expected:
                raise CanonDecodeError(f"file {info.root}: chunk {child_start} has the wrong size")
            yield child_start, data
            continue
        if child.codec != CODEC_DAG_CBOR:
            raise CanonDecodeError(f"file {info.root}: node {child} is not DAG-CBOR")
        node = decode(source.get(child))
        if (
            not isinstance(node, dict)
            or set(node) != _NODE_FIELDS
            or node["type"] != NODE_TYPE
            or node["height"] != height - 1
            or type(node["height"]) is not int
        ):
            raise CanonDecodeError(f"file {info.root}: {child} is not a height-{height - 1} node")
        yield from _iter_chunks(
            source, info, _children(node, child), height - 1, child_start, child_end,
            max(first, child_start), min(last, child_end - 1),
        )


def iter_range(source: BlockSource, root: CID, offset: int, length: int) -> Iterator[bytes]:
    """The bytes [offset, offset + length) of a file, clipped at its end, as pieces;
    reads only the nodes and chunks that overlap the range. Each block is verified."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must be non-negative")
    info, children = _load_root(source, root)
    stop = min(info.size, offset + length)
    if offset >= stop:
        return
    size = info.chunk_size
    chunks = _iter_chunks(
        source, info, children, info.height, 0, info.chunk_count,
        offset // size, (stop - 1) // size,
    )
    for index, data in chunks:
        base = index * size
        low = max(offset - base, 0)
        high = min(stop - base, len(data))
        yield data if low == 0 and high == len(data) else data[low:high]


def iter_file(source: BlockSource, root: CID) -> Iterator[bytes]:
    """The whole file, chunk by chunk."""
    return iter_range(source, root, 0, file_info(source, root).size)


def read_range(source: BlockSource, root: CID, offset: int, length: int) -> bytes:
    """``iter_range`` joined: the caller asked for ``length`` bytes in memory."""
    return b"".join(iter_range(source, root, offset, length))
