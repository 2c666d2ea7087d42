"""Block exchange cores: requester and responder over in-memory bytes, the fetch planner
over real block stores (MemoryBlockStore and files made by canon.files)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from n3xus.canon.blockstore import BlockStore
from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode
from n3xus.canon.files import add_bytes, read_range
from n3xus.protocol.blocks import (
    IDLE_TIMEOUT_S,
    MAX_CIDS_PER_MESSAGE,
    MAX_OUTSTANDING_WANTS,
    MAX_PAYLOAD_BYTES,
    PROGRESS_TIMEOUT_S,
    BlockReceived,
    BlocksRequester,
    BlocksResponder,
    Cancel,
    DontHave,
    Have,
    WantBlocks,
    WantHaves,
    encode_blocks,
    encode_cid_list,
)
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import (
    BlockMismatchError,
    DeadlineExceeded,
    LocalProtocolError,
    RemoteProtocolError,
)
from n3xus.protocol.fetch import DagFetch
from n3xus.protocol.framing import encode_message


def raw_cid(data: bytes) -> CID:
    return cid_of(data, "raw")


def drain(side: BlocksRequester | BlocksResponder) -> list[object]:
    events = []
    while (event := side.next_event()) is not None:
        events.append(event)
    return events


def test_wants_are_answered_with_verified_blocks_haves_and_dont_haves() -> None:
    blocks = {raw_cid(b"a" * n): b"a" * n for n in (0, 1, 1000, 300_000)}
    absent = raw_cid(b"absent")
    requester, responder = BlocksRequester(0.0), BlocksResponder(0.0)
    responder.receive_data(requester.want([*blocks, absent]) + requester.want([raw_cid(b"h")], have_only=True), 0.0)
    events = drain(responder)
    assert events == [WantBlocks((*blocks, absent)), WantHaves((raw_cid(b"h"),))]
    answer = (responder.send_blocks(list(blocks.items())) + responder.send_dont_have([absent])
              + responder.send_have([raw_cid(b"h")]))
    assert not responder.pending
    requester.receive_data(answer, 1.0)
    got = drain(requester)
    assert [e for e in got if isinstance(e, BlockReceived)] == [BlockReceived(c, d) for c, d in blocks.items()]
    assert DontHave(absent) in got and Have(raw_cid(b"h")) in got
    assert not requester.outstanding and requester.blocks_received == 4


def test_a_block_that_does_not_match_its_cid_is_a_typed_remote_error() -> None:
    cid = raw_cid(b"right")
    requester = BlocksRequester(0.0)
    requester.want([cid])
    with pytest.raises(BlockMismatchError) as caught:
        requester.receive_data(encode_blocks([(cid, b"wrong")]), 1.0)
    assert caught.value.code is ErrorCode.BLOCK_MISMATCH
    assert isinstance(caught.value, ValueError)
    assert requester.next_event() is None  # never reported


def test_unwanted_blocks_are_refused_and_late_ones_after_cancel_are_dropped() -> None:
    cid, other = raw_cid(b"x"), raw_cid(b"y")
    requester = BlocksRequester(0.0)
    requester.want([cid])
    assert requester.cancel([cid])
    requester.receive_data(encode_blocks([(cid, b"x")]), 1.0)  # crossed the cancel
    assert requester.next_event() is None
    with pytest.raises(RemoteProtocolError) as caught:
        requester.receive_data(encode_blocks([(other, b"y")]), 1.0)
    assert caught.value.code is ErrorCode.UNEXPECTED_BLOCK


def test_batches_respect_the_payload_and_count_limits() -> None:
    big = [(raw_cid(bytes([i]) * 700_000), bytes([i]) * 700_000) for i in range(3)]
    small = [(raw_cid(b"%d" % i), b"%d" % i) for i in range(MAX_CIDS_PER_MESSAGE + 5)]
    requester = BlocksRequester(0.0)
    requester.want([c for c, _ in big])
    requester.want([c for c, _ in small])
    requester.receive_data(encode_blocks(big) + encode_blocks(small), 1.0)
    assert len(drain(requester)) == len(big) + len(small)
    full = os.urandom(MAX_PAYLOAD_BYTES)
    requester.want([raw_cid(full)])
    requester.receive_data(encode_blocks([(raw_cid(full), full)]), 2.0)
    assert drain(requester) == [BlockReceived(raw_cid(full), full)]
    with pytest.raises(LocalProtocolError):
        encode_blocks([(raw_cid(b"x"), b"x" * (MAX_PAYLOAD_BYTES + 1))])


def test_a_payload_that_disagrees_with_its_sizes_is_refused() -> None:
    cid = raw_cid(b"abc")
    header = encode_message({"type": "blocks", "cids": [cid], "sizes": [3]}, 1000)
    requester = BlocksRequester(0.0)
    requester.want([cid])
    with pytest.raises(RemoteProtocolError) as caught:
        requester.receive_data(header + b"\x04abcd", 1.0)  # 4 bytes announced, 3 allowed
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE


def test_the_responder_enforces_the_outstanding_want_limit() -> None:
    cids = [raw_cid(b"%d" % i) for i in range(MAX_OUTSTANDING_WANTS + 1)]
    responder = BlocksResponder(0.0)
    with pytest.raises(RemoteProtocolError) as caught:
        responder.receive_data(encode_cid_list("want-block", cids), 0.0)
    assert caught.value.code is ErrorCode.TOO_MANY_WANTS
    requester = BlocksRequester(0.0)
    with pytest.raises(LocalProtocolError):
        requester.want(cids)


def test_cancel_reaches_the_responder_and_wrong_directions_are_refused() -> None:
    cid = raw_cid(b"c")
    requester, responder = BlocksRequester(0.0), BlocksResponder(0.0)
    responder.receive_data(requester.want([cid]) + requester.cancel([cid]), 0.0)
    assert drain(responder) == [WantBlocks((cid,)), Cancel((cid,))]
    assert responder.send_blocks([(cid, b"c")]) == b""  # no longer wanted
    with pytest.raises(RemoteProtocolError) as caught:
        responder.receive_data(encode_cid_list("have", [cid]), 0.0)
    assert caught.value.code is ErrorCode.UNEXPECTED_MESSAGE
    with pytest.raises(RemoteProtocolError):
        requester.receive_data(encode_cid_list("want-block", [cid]), 0.0)


def test_deadlines() -> None:
    requester = BlocksRequester(0.0)
    assert requester.deadline is None
    requester.want([raw_cid(b"x")], now=10.0)
    assert requester.deadline == 10.0 + PROGRESS_TIMEOUT_S
    with pytest.raises(DeadlineExceeded):
        requester.check_deadline(10.0 + PROGRESS_TIMEOUT_S)
    responder = BlocksResponder(0.0)
    assert responder.deadline == IDLE_TIMEOUT_S
    responder.check_deadline(IDLE_TIMEOUT_S - 1)
    with pytest.raises(DeadlineExceeded):
        responder.check_deadline(IDLE_TIMEOUT_S)


def test_the_window_follows_the_block_sizes_seen() -> None:
    requester = BlocksRequester(0.0)
    first = requester.window
    blocks = [(raw_cid(b"%d" % i), b"%d" % i) for i in range(100)]
    requester.want([c for c, _ in blocks])
    requester.receive_data(encode_blocks(blocks), 1.0)
    assert requester.window > first  # small blocks: more wants fit the byte window


# --- property tests -------------------------------------------------------------------------

STREAM = encode_blocks([(raw_cid(b"p%d" % i), b"p%d" % i) for i in range(5)]) + encode_cid_list(
    "dont-have", [raw_cid(b"q")])
WANTED = [raw_cid(b"p%d" % i) for i in range(5)] + [raw_cid(b"q")]
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _requester_outcome(data: bytes, eof: bool) -> None:
    requester = BlocksRequester(0.0)
    requester.want(WANTED)
    try:
        requester.receive_data(data, 1.0)
        if eof:
            requester.receive_eof()
    except RemoteProtocolError as exc:
        assert exc.code in set(ErrorCode)
    for event in drain(requester):
        if isinstance(event, BlockReceived):
            assert raw_cid(event.data) == event.cid  # nothing unverified ever comes out


@PROPERTY
@given(st.integers(min_value=0, max_value=len(STREAM)))
def test_truncated_streams_fail_cleanly(end: int) -> None:
    _requester_outcome(STREAM[:end], eof=True)


@PROPERTY
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), min_size=1, max_size=3))
def test_bit_flipped_streams_fail_cleanly(flips: list[tuple[int, int]]) -> None:
    data = bytearray(STREAM)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    _requester_outcome(bytes(data), eof=False)


@PROPERTY
@given(st.binary(max_size=300))
def test_random_bytes_fail_cleanly_on_the_responder(data: bytes) -> None:
    responder = BlocksResponder(0.0)
    try:
        responder.receive_data(data, 0.0)
        responder.receive_eof()
    except RemoteProtocolError as exc:
        assert exc.code in set(ErrorCode)


@PROPERTY
@given(st.lists(st.binary(max_size=2000), min_size=1, max_size=20, unique=True),
       st.lists(st.integers(min_value=1, max_value=3000), max_size=30))
def test_blocks_round_trip_in_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    blocks = [(raw_cid(p), p) for p in payloads]
    requester = BlocksRequester(0.0)
    requester.want([c for c, _ in blocks])
    stream, position = encode_blocks(blocks), 0
    for cut in [*cuts, len(stream)]:
        requester.receive_data(stream[position:position + cut], 1.0)
        position += cut
    assert drain(requester) == [BlockReceived(c, d) for c, d in blocks]


# --- the planner (real LMDB block stores) ---------------------------------------------------

@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[BlockStore, BlockStore]]:
    envs = [lmdb.open(str(tmp_path / name), max_dbs=64, map_size=1 << 30, sync=False)
            for name in ("source", "local")]
    try:
        yield BlockStore(envs[0]), BlockStore(envs[1])
    finally:
        for env in envs:
            env.close()


def _add_file(source: BlockStore, size: int) -> tuple[CID, bytes]:
    """A file of ``size`` bytes in 1 KiB chunks and fanout 4 (so it has inner nodes)."""
    data = os.urandom(size)
    return add_bytes(source, data, chunk_size=1024, fanout=4), data


def _serve(fetch: DagFetch, source: BlockStore, local: BlockStore, peers: dict[str, set[CID] | None],
           *, drop_after: tuple[str, int] | None = None) -> dict[str, int]:
    """Run the fetch to the end: each peer serves what it holds (None: everything)."""
    served = dict.fromkeys(peers, 0)
    rounds = 0
    while not fetch.done and not fetch.stuck:
        rounds += 1
        assert rounds < 10_000
        for peer, cids in fetch.plan().items():
            for cid in cids:
                holds = peers.get(peer, set())
                if holds is not None and cid not in holds:
                    fetch.dont_have(peer, cid)
                    continue
                data = source.get(cid)
                local.put_blocks([(cid, data)])
                fetch.block_received(peer, cid, data)
                served[peer] += 1
                if drop_after and drop_after[0] == peer and served[peer] == drop_after[1]:
                    fetch.remove_peer(peer)
                    del peers[peer]
                    break
    return served


def test_a_dag_is_fetched_from_two_peers_and_resumed_after_one_leaves(
    stores: tuple[BlockStore, BlockStore],
) -> None:
    source, local = stores
    root, data = _add_file(source, 200 * 1024)
    fetch = DagFetch(root, local)
    fetch.add_peer("A", window=8)
    fetch.add_peer("B", window=8)
    served = _serve(fetch, source, local, {"A": None, "B": None}, drop_after=("B", 40))
    assert fetch.done
    assert served["A"] > 0 and served["B"] == 40
    assert read_range(local, root, 0, len(data)) == data
    assert fetch.progress.blocks_fetched == sum(1 for _ in local.iter_cids())


def test_a_restarted_fetch_wants_only_what_is_missing(stores: tuple[BlockStore, BlockStore]) -> None:
    source, local = stores
    root, data = _add_file(source, 64 * 1024)
    first = DagFetch(root, local)
    first.add_peer("A", window=4)
    for _ in range(3):  # a few rounds, then the process "crashes"
        for peer, cids in first.plan().items():
            for cid in cids:
                local.put_blocks([(cid, source.get(cid))])
                first.block_received(peer, cid, source.get(cid))
    stored = set(local.iter_cids())
    again = DagFetch(root, local)
    again.add_peer("A", window=1000)
    wanted = [cid for cids in again.plan().values() for cid in cids]
    assert wanted and not set(wanted) & stored
    for cid in wanted:  # the wants just planned are answered first
        local.put_blocks([(cid, source.get(cid))])
        again.block_received("A", cid, source.get(cid))
    _serve(again, source, local, {"A": None})
    assert again.done and read_range(local, root, 0, len(data)) == data
    assert again.progress.blocks_stored_before == len(stored)


def test_blocks_no_peer_has_are_unavailable_until_a_new_peer_comes(
    stores: tuple[BlockStore, BlockStore],
) -> None:
    source, local = stores
    root, _ = _add_file(source, 16 * 1024)
    fetch = DagFetch(root, local)
    fetch.add_peer("A", window=100)
    holds = {root}
    _serve(fetch, source, local, {"A": holds})
    assert fetch.stuck and fetch.unavailable
    fetch.add_peer("B", window=100)
    _serve(fetch, source, local, {"A": holds, "B": None})
    assert fetch.done


def test_a_block_that_hashes_but_does_not_decode_fails_the_fetch(
    stores: tuple[BlockStore, BlockStore],
) -> None:
    _, local = stores
    bad = b"\xa1\x61a"  # truncated DAG-CBOR under its own (correct) CID
    root = cid_of(bad)
    fetch = DagFetch(root, local)
    fetch.add_peer("A", window=1)
    assert fetch.plan() == {"A": [root]}
    fetch.block_received("A", root, bad)
    assert root in fetch.failed and not fetch.done and fetch.stuck
    assert cid_of(encode({"ok": 1})) != root


def test_the_serving_rate_limit_is_a_token_bucket() -> None:
    from n3xus.protocol.blocks import MAX_BLOCKS_SERVED_PER_SECOND
    from n3xus.protocol.limits import TokenBucket

    bucket = TokenBucket(MAX_BLOCKS_SERVED_PER_SECOND, MAX_OUTSTANDING_WANTS, now=0.0)
    assert bucket.take(MAX_OUTSTANDING_WANTS, 0.0) == 0.0  # a full window at once
    wait = bucket.take(1000, 0.0)
    assert wait == pytest.approx(1000 / MAX_BLOCKS_SERVED_PER_SECOND)
    assert bucket.take(1000, wait) == 0.0
    with pytest.raises(ValueError):
        bucket.take(MAX_OUTSTANDING_WANTS + 1, 10.0)
