"""Large artifacts: chunked add, streaming and range reads, canonical trees, lying DAGs."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import blake3
import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n3xus.canon import encode
from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonDecodeError, LimitExceededError
from n3xus.canon.files import (
    DEFAULT_CHUNK_SIZE,
    FILE_TYPE,
    NODE_TYPE,
    add_bytes,
    add_stream,
    file_info,
    iter_file,
    iter_range,
    read_range,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BlockStore]:
    # sync=False: durability is not under test, and 50 MB of fsyncs would be slow.
    env = lmdb.open(str(tmp_path / "db"), max_dbs=64, map_size=1 << 30, sync=False)
    yield BlockStore(env)
    env.close()


class CountingSource:
    """A block source that counts reads, to show range reads touch only what they need."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.reads: list[CID] = []

    def get(self, cid: CID) -> bytes:
        self.reads.append(cid)
        return self.store.get(cid)


class DripReader:
    """A stream that returns at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data = data
        self.position = 0
        self.step = step

    def read(self, size: int, /) -> bytes:
        piece = self.data[self.position:self.position + min(size, self.step)]
        self.position += len(piece)
        return piece


class XofFile:
    """A deterministic pseudo-random file of ``size`` bytes that is never held in memory:
    the bytes at [o, o + n) are BLAKE3's extendable output at offset o."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.position = 0
        self.hasher = blake3.blake3(b"n3xus test file")

    def slice(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        return self.hasher.digest(length, seek=offset) if length else b""

    def read(self, size: int, /) -> bytes:
        piece = self.slice(self.position, size)
        self.position += len(piece)
        return piece


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 8, 9, 16, 17, 33, 64, 65, 100])
@pytest.mark.parametrize("fanout", [2, 3, 4])
def test_every_range_of_small_trees(store: BlockStore, size: int, fanout: int) -> None:
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    root = add_bytes(store, data, chunk_size=4, fanout=fanout)
    info = file_info(store, root)
    chunks = -(-size // 4)
    height = 0
    while chunks > fanout ** (height + 1):
        height += 1
    assert (info.size, info.chunk_size, info.fanout, info.height) == (size, 4, fanout, height)
    assert b"".join(iter_file(store, root)) == data
    step = 1 if size <= 40 else 3  # exhaustive for small sizes, sampled above
    for offset in range(0, size + 2, step):
        for length in range(0, size + 2 - offset, step):
            assert read_range(store, root, offset, length) == data[offset:offset + length]


def test_root_cid_does_not_depend_on_read_pattern(store: BlockStore) -> None:
    data = bytes(range(256)) * 40
    whole = add_bytes(store, data, chunk_size=100, fanout=3)
    assert add_stream(store, DripReader(data, 7), chunk_size=100, fanout=3) == whole
    assert add_stream(store, DripReader(data, 1), chunk_size=100, fanout=3) == whole
    assert add_bytes(store, data, chunk_size=101, fanout=3) != whole


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=300),
    chunk_size=st.integers(1, 16),
    fanout=st.integers(2, 5),
    offset=st.integers(0, 320),
    length=st.integers(0, 320),
)
def test_ranges_match_slices(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, chunk_size: int, fanout: int,
    offset: int, length: int,
) -> None:
    env = lmdb.open(str(tmp_path_factory.mktemp("h")), max_dbs=64, map_size=1 << 26, sync=False)
    try:
        store = BlockStore(env)
        root = add_bytes(store, data, chunk_size=chunk_size, fanout=fanout)
        assert read_range(store, root, offset, length) == data[offset:offset + length]
    finally:
        env.close()


def test_parameters_are_limited(store: BlockStore) -> None:
    with pytest.raises(LimitExceededError):
        add_bytes(store, b"x", chunk_size=0)
    with pytest.raises(LimitExceededError):
        add_bytes(store, b"x", chunk_size=(1 << 20) + 1)
    with pytest.raises(LimitExceededError):
        add_bytes(store, b"x", fanout=1)
    with pytest.raises(ValueError):
        read_range(store, add_bytes(store, b"x"), -1, 1)


def test_range_reads_touch_only_needed_blocks(store: BlockStore) -> None:
    data = bytes(range(256)) * 4  # 1024 bytes: 64 chunks of 16, fanout 4 -> height 2
    root = add_bytes(store, data, chunk_size=16, fanout=4)
    assert file_info(store, root).height == 2
    source = CountingSource(store)
    assert read_range(source, root, 100, 10) == data[100:110]
    assert len(source.reads) == 4  # root, one node per lower level, one chunk
    source.reads.clear()
    assert read_range(source, root, 15, 2) == data[15:17]  # straddles chunks 0 and 1
    assert len(source.reads) == 5


def _put_root(store: BlockStore, **fields: object) -> CID:
    root = {"type": FILE_TYPE, "size": 8, "chunk_size": 4, "fanout": 2, "height": 0,
            "children": []}
    root.update(fields)
    return store.put(encode(root))


def test_lying_dags_are_refused(store: BlockStore) -> None:
    a = store.put(b"aaaa", codec="raw")
    b = store.put(b"bbbb", codec="raw")
    short = store.put(b"bb", codec="raw")
    good = _put_root(store, children=[a, b])
    assert read_range(store, good, 0, 8) == b"aaaabbbb"
    node = store.put(encode({"type": NODE_TYPE, "height": 0, "children": [a, b]}))
    lies = [
        _put_root(store, children=[a]),  # fewer chunks than the size needs
        _put_root(store, children=[a, short]),  # a chunk of the wrong size
        _put_root(store, size=7, children=[a, b]),  # last chunk longer than the size says
        _put_root(store, height=1, children=[node]),  # not the canonical (minimal) height
        _put_root(store, children=[a, node]),  # a node where a raw chunk belongs
        _put_root(store, chunk_size=0),
        _put_root(store, fanout=1),
        _put_root(store, size=-1),
        _put_root(store, type="n3xus/file/v2"),
        _put_root(store, extra=1, children=[a, b]),
        store.put(encode({"type": NODE_TYPE, "height": 0, "children": [a, b]})),
        store.put(b"not a root", codec="raw"),
    ]
    for lie in lies:
        with pytest.raises(CanonDecodeError):
            read_range(store, lie, 0, 8)
    wrong_height_node = store.put(encode({"type": NODE_TYPE, "height": 1, "children": [a, b]}))
    five = store.put(b"cccc", codec="raw")
    tree = _put_root(store, size=12, height=1, children=[wrong_height_node, five])
    with pytest.raises(CanonDecodeError):
        read_range(store, tree, 0, 12)


@pytest.mark.slow
def test_fifty_megabytes_stream_in_bounded_memory(store: BlockStore) -> None:
    size = 50 * 1000 * 1000 + 12345  # not a multiple of the chunk size
    source = XofFile(size)
    tracemalloc.start()
    try:
        root = add_stream(store, source)
        _, add_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = blake3.blake3()
        total = 0
        for piece in iter_file(store, root):
            digest.update(piece)
            total += len(piece)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    expected = blake3.blake3()
    for offset in range(0, size, 1 << 22):
        expected.update(source.slice(offset, 1 << 22))
    assert digest.digest() == expected.digest()
    print(f"peak traced memory: add {add_peak >> 10} KiB, read {read_peak >> 10} KiB")
    assert add_peak < 8 * 1024 * 1024, add_peak  # ADD_BATCH_BYTES plus a chunk, not 50 MB
    assert read_peak < 2 * 1024 * 1024, read_peak  # about one chunk
    info = file_info(store, root)
    assert (info.size, info.height, info.chunk_count) == (size, 0, -(-size // DEFAULT_CHUNK_SIZE))
    chunk = DEFAULT_CHUNK_SIZE
    last = size - 1
    for offset, length in [
        (0, 1), (chunk - 1, 2), (chunk, chunk), (7 * chunk - 3, 3 * chunk + 6),
        (last, 1), (last, 100), (size, 10), (last - chunk, 2 * chunk),
        (size // 2, 1_000_000),
    ]:
        counting = CountingSource(store)
        got = read_range(counting, root, offset, length)
        assert got == source.slice(offset, length), (offset, length)
        needed = 0 if offset >= size else (
            (min(size, offset + length) - 1) // chunk - offset // chunk + 1)
        assert len(counting.reads) == 1 + needed  # the root plus the chunks in range


def test_reading_a_stream_with_io_bytesio(store: BlockStore) -> None:
    data = b"hello, artifact" * 1000
    root = add_stream(store, io.BytesIO(data), chunk_size=1000)
    assert b"".join(iter_range(store, root, 5, 20_000)) == data[5:20_005]


def test_add_through_a_session_and_pin(store: BlockStore) -> None:
    data = bytes(range(256)) * 64
    with store.session() as session:
        root = add_bytes(session, data, chunk_size=512, fanout=4)
        for _ in range(3):
            store.collect_garbage()
        session.pin(root, "artifact")
    unpinned = add_bytes(store, b"transient" * 100, chunk_size=64)
    for _ in range(3):
        store.collect_garbage()
    assert read_range(store, root, 0, len(data)) == data
    assert not store.has(unpinned)


def test_sha2_256_files_use_sha2_256_for_every_block(tmp_path: Path) -> None:
    # Regression: intermediate nodes were always BLAKE3 whatever the requested hash.
    import lmdb

    from n3xus.canon.blockstore import BlockStore, block_links
    from n3xus.canon.files import add_bytes, add_stream, read_range

    env = lmdb.open(str(tmp_path / "sha"), max_dbs=16, map_size=1 << 26)
    store = BlockStore(env)
    data = bytes(range(256)) * 40
    import io

    root = add_stream(store, io.BytesIO(data), chunk_size=64, fanout=4, hash="sha2-256")
    seen, stack = 0, [root]
    while stack:
        cid = stack.pop()
        assert cid.hash_name == "sha2-256", cid
        seen += 1
        stack.extend(block_links(cid, store.get(cid)))
    assert seen > 1 + len(data) // 64  # chunks plus intermediate nodes were all checked
    assert read_range(store, root, 100, 300) == data[100:400]
    assert add_bytes(store, data) != root  # the default (BLAKE3) file is a different DAG
    env.close()
