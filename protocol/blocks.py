"""``/n3xus/blocks/1.0.0``: blocks by CID, in batches (specs/protocol-blocks.md).

The requester opens a stream and sends ``want-block`` / ``want-have`` / ``cancel``
messages; the responder answers each wanted CID exactly once, in any order, with a block
(inside a ``blocks`` batch), a ``have`` or a ``dont-have``. A ``blocks`` message lists CIDs
and sizes and is followed by one *payload frame*: the blocks' bytes, concatenated. Block
bytes travel raw because they are content-addressed already (the CID is their checksum):
wrapping them in DAG-CBOR would cost a copy and a re-encode per block and would cap a block
below the store's 1 MiB limit.

:class:`BlocksRequester` and :class:`BlocksResponder` are the two ends of one stream,
sans-IO. The requester verifies every block against its CID before it reports it; a
mismatch is a :class:`BlockMismatchError` (code ``block-mismatch``) that the node counts
against the peer.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from n3xus.canon.blockstore import (
    HASH_BLAKE3,
    HASH_SHA2_256,
    MAX_BLOCK_SIZE,
    STORABLE_CODECS,
    digest_matches,
)
from n3xus.canon.cid import CID

from . import schema
from .codes import ErrorCode
from .errors import (
    BlockMismatchError,
    DeadlineExceeded,
    LocalProtocolError,
    MessageError,
    RemoteProtocolError,
)
from .framing import FrameDecoder, decode_message, encode_frame, encode_message

BLOCKS_PROTOCOL_ID: Final = "/n3xus/blocks/1.0.0"
MAX_PAYLOAD_BYTES: Final = MAX_BLOCK_SIZE
"""Largest payload frame (the bytes of one ``blocks`` batch): the store's largest block
(1 MiB, what IPFS peers exchange), so a block never needs splitting, and a batch of small
blocks fills one frame."""
MAX_CID_BYTES: Final = 128
"""Largest binary CID in a message: storable ones are 36 bytes (32-byte digests); 128
admits others' CIDs and bounds a want list."""
MAX_CIDS_PER_MESSAGE: Final = 1024
"""CIDs in one want/cancel/have/dont-have/blocks message: a file node's worth of children."""
MAX_CONTROL_FRAME_BYTES: Final = 256 * 1024
"""Largest message frame: 1,024 CIDs of 128 bytes with their sizes is about 140 KiB."""
MAX_OUTSTANDING_WANTS: Final = 4096
"""Wants one peer may have open on one stream; the responder refuses more
(``too-many-wants``). Bounds what a peer makes us remember; 4,096 x 256 KiB chunks is
1 GiB in flight, far over any window a requester keeps."""
MAX_BYTES_IN_FLIGHT: Final = 16 * 1024 * 1024
"""Requester window: estimated bytes of wanted, unanswered blocks per peer. 16 MiB keeps a
100 ms round trip busy at 160 MB/s while bounding what one stalled peer holds back."""
INITIAL_BLOCK_SIZE_ESTIMATE: Final = 256 * 1024
"""Size assumed for a block before any arrived from a peer: the default file chunk."""
PROGRESS_TIMEOUT_S: Final = 30.0
"""Seconds a requester waits with wants outstanding and nothing arriving before it gives
up on the peer (then the planner asks another): a responder may be reading a slow disk."""
IDLE_TIMEOUT_S: Final = 60.0
"""Seconds a responder keeps a stream open with nothing wanted and nothing arriving."""
MAX_BLOCKS_SERVED_PER_SECOND: Final = 20_000
"""Blocks a node serves one peer per second (a :class:`~n3xus.protocol.limits.TokenBucket`
the node keeps per peer, burst one full window of MAX_OUTSTANDING_WANTS): 20,000 1 KiB blocks
is more than py-libp2p carries per stream, so honest peers never meet it, while a peer that
asks for the same small blocks in a loop is held to it."""

BLOCKS_LIMITS: Final[list[tuple[str, int | float, str]]] = [
    ("MAX_CONTROL_FRAME_BYTES", MAX_CONTROL_FRAME_BYTES, "largest message frame (1,024 CIDs of 128 bytes and their sizes fit)"),
    ("MAX_PAYLOAD_BYTES", MAX_PAYLOAD_BYTES, "largest payload frame: the block store's largest block, so no block is split"),
    ("MAX_CID_BYTES", MAX_CID_BYTES, "largest binary CID in a message"),
    ("MAX_CIDS_PER_MESSAGE", MAX_CIDS_PER_MESSAGE, "CIDs in one message"),
    ("MAX_OUTSTANDING_WANTS", MAX_OUTSTANDING_WANTS, "wants a peer may have open on one stream (responder-enforced)"),
    ("MAX_BYTES_IN_FLIGHT", MAX_BYTES_IN_FLIGHT, "requester's window of estimated unanswered bytes per peer"),
    ("PROGRESS_TIMEOUT_S", PROGRESS_TIMEOUT_S, "seconds with wants outstanding and nothing arriving before the requester gives up"),
    ("IDLE_TIMEOUT_S", IDLE_TIMEOUT_S, "seconds a responder keeps an idle stream"),
    ("MAX_BLOCKS_SERVED_PER_SECOND", MAX_BLOCKS_SERVED_PER_SECOND, "blocks served to one peer per second (token bucket, burst MAX_OUTSTANDING_WANTS)"),
]

_LIST_TYPES: Final = ("want-block", "want-have", "cancel", "have", "dont-have")


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockReceived:
    cid: CID
    data: bytes


@dataclass(frozen=True)
class Have:
    cid: CID


@dataclass(frozen=True)
class DontHave:
    cid: CID


@dataclass(frozen=True)
class WantBlocks:
    cids: tuple[CID, ...]


@dataclass(frozen=True)
class WantHaves:
    cids: tuple[CID, ...]


@dataclass(frozen=True)
class Cancel:
    cids: tuple[CID, ...]


RequesterEvent = BlockReceived | Have | DontHave
ResponderEvent = WantBlocks | WantHaves | Cancel


# --- messages ----------------------------------------------------------------------------


def _cid_list(value: Any, what: str) -> tuple[CID, ...]:
    items = schema.array(value, what, MAX_CIDS_PER_MESSAGE)
    schema.need(len(items) > 0, f"{what} is empty")
    return tuple(schema.link(item, f"a CID of {what}", MAX_CID_BYTES) for item in items)


def _chunks(cids: Sequence[CID]) -> Iterable[Sequence[CID]]:
    for start in range(0, len(cids), MAX_CIDS_PER_MESSAGE):
        yield cids[start:start + MAX_CIDS_PER_MESSAGE]


def encode_cid_list(kind: str, cids: Sequence[CID]) -> bytes:
    """``{"type": kind, "cids": [...]}`` frames, 1,024 CIDs at most per message."""
    if kind not in _LIST_TYPES:
        raise LocalProtocolError(f"{kind!r} is not a CID-list message")
    return b"".join(encode_message({"type": kind, "cids": list(chunk)}, MAX_CONTROL_FRAME_BYTES)
                    for chunk in _chunks(list(cids)))


def encode_blocks(blocks: Sequence[tuple[CID, bytes]]) -> bytes:
    """``blocks`` messages with their payload frames: as many blocks per batch as fit in
    MAX_PAYLOAD_BYTES and MAX_CIDS_PER_MESSAGE, in the given order."""
    out = bytearray()
    batch: list[tuple[CID, bytes]] = []
    size = 0
    for cid, data in blocks:
        if len(data) > MAX_PAYLOAD_BYTES:
            raise LocalProtocolError(f"block {cid} of {len(data)} bytes is over {MAX_PAYLOAD_BYTES}")
        if batch and (size + len(data) > MAX_PAYLOAD_BYTES or len(batch) == MAX_CIDS_PER_MESSAGE):
            out += _encode_batch(batch)
            batch, size = [], 0
        batch.append((cid, data))
        size += len(data)
    if batch:
        out += _encode_batch(batch)
    return bytes(out)


def _encode_batch(batch: Sequence[tuple[CID, bytes]]) -> bytes:
    header = encode_message({"type": "blocks", "cids": [cid for cid, _ in batch],
                             "sizes": [len(data) for _, data in batch]}, MAX_CONTROL_FRAME_BYTES)
    return header + encode_frame(b"".join(data for _, data in batch), MAX_PAYLOAD_BYTES)


def check_block(cid: CID, data: bytes) -> None:
    """Raise BlockMismatchError unless ``data`` is what ``cid`` names: a storable codec, a
    hash we can check (full 32-byte BLAKE3 or SHA2-256 digest) and a matching digest."""
    if cid.codec not in STORABLE_CODECS or cid.hash_code not in (HASH_BLAKE3, HASH_SHA2_256):
        raise BlockMismatchError(f"block {cid}: codec or hash cannot be verified here")
    if not digest_matches(cid, data):
        raise BlockMismatchError(f"block {cid}: {len(data)} bytes do not hash to the CID")


class _MessageReader:
    """Frames to messages on a blocks stream: a ``blocks`` message takes the next frame as
    its payload (whose length must be the sum of its sizes)."""

    def __init__(self) -> None:
        self.frames = FrameDecoder(MAX_CONTROL_FRAME_BYTES)
        self._batch: tuple[tuple[CID, ...], tuple[int, ...]] | None = None

    def next(self) -> tuple[str, Any] | None:
        if self._batch is not None:
            cids, sizes = self._batch
            payload = self.frames.next_frame(max_bytes=sum(sizes))
            if payload is None:
                return None
            if len(payload) != sum(sizes):
                raise MessageError(f"payload of {len(payload)} bytes, the sizes add up to {sum(sizes)}")
            self._batch = None
            blocks, offset = [], 0
            for cid, size in zip(cids, sizes, strict=True):
                blocks.append((cid, payload[offset:offset + size]))
                offset += size
            return "blocks", blocks
        body = self.frames.next_frame()
        if body is None:
            return None
        message = decode_message(body)
        kind = message["type"]
        if kind in _LIST_TYPES:
            schema.fields(message, {"cids"}, kind)
            return kind, _cid_list(message["cids"], kind)
        if kind == "blocks":
            schema.fields(message, {"cids", "sizes"}, "blocks")
            cids = _cid_list(message["cids"], "blocks")
            raw_sizes = schema.array(message["sizes"], "blocks sizes", MAX_CIDS_PER_MESSAGE)
            schema.need(len(raw_sizes) == len(cids), "blocks: as many sizes as CIDs")
            sizes = tuple(schema.integer(size, "a block size", MAX_PAYLOAD_BYTES) for size in raw_sizes)
            schema.need(sum(sizes) <= MAX_PAYLOAD_BYTES,
                        f"blocks: sizes add up to over {MAX_PAYLOAD_BYTES}", ErrorCode.FRAME_TOO_LARGE)
            self._batch = (cids, tuple(sizes))
            return self.next()
        raise MessageError(f"unknown blocks message type {kind!r}", ErrorCode.UNSUPPORTED)

    def messages(self) -> Iterator[tuple[str, Any]]:
        """Each message the bytes received so far complete, in order."""
        while (message := self.next()) is not None:
            yield message

    def receive_eof(self) -> None:
        self.frames.receive_eof()
        self.next()  # raises if the stream ended inside a frame


# --- the requester -----------------------------------------------------------------------


class BlocksRequester:
    """Our end of a blocks stream we opened to one peer: wants out, verified blocks in."""

    def __init__(self, now: float) -> None:
        self._reader = _MessageReader()
        self.outstanding: dict[CID, str] = {}  # CID -> "block" or "have"
        self._cancelled: set[CID] = set()
        self._events: deque[RequesterEvent] = deque()
        self._last_progress = now
        self.blocks_received = 0
        self.block_bytes_received = 0

    @property
    def window(self) -> int:
        """How many more block wants fit this peer's window: MAX_BYTES_IN_FLIGHT over the
        mean size of what it sent so far, within MAX_OUTSTANDING_WANTS."""
        mean = (self.block_bytes_received // self.blocks_received if self.blocks_received
                else INITIAL_BLOCK_SIZE_ESTIMATE)
        limit = min(MAX_OUTSTANDING_WANTS, max(1, MAX_BYTES_IN_FLIGHT // max(mean, 1)))
        return max(0, limit - len(self.outstanding))

    @property
    def deadline(self) -> float | None:
        frame = self._reader.frames.deadline
        if not self.outstanding:
            return frame
        progress = self._last_progress + PROGRESS_TIMEOUT_S
        return progress if frame is None else min(progress, frame)

    def check_deadline(self, now: float) -> None:
        self._reader.frames.check_deadline(now)
        if self.outstanding and now >= self._last_progress + PROGRESS_TIMEOUT_S:
            raise DeadlineExceeded(f"{len(self.outstanding)} wants unanswered for "
                                   f"{PROGRESS_TIMEOUT_S:.0f} s")

    def want(self, cids: Sequence[CID], *, have_only: bool = False, now: float | None = None) -> bytes:
        """Frames asking for ``cids`` (blocks, or only whether the peer has them)."""
        fresh = list(dict.fromkeys(cids))
        if any(cid in self.outstanding for cid in fresh):
            raise LocalProtocolError("a CID is already wanted on this stream")
        if len(self.outstanding) + len(fresh) > MAX_OUTSTANDING_WANTS:
            raise LocalProtocolError(f"over {MAX_OUTSTANDING_WANTS} outstanding wants",
                                     ErrorCode.TOO_MANY_WANTS)
        if not self.outstanding and now is not None:
            self._last_progress = now  # the progress clock starts with the first want
        mode = "have" if have_only else "block"
        for cid in fresh:
            self.outstanding[cid] = mode
            self._cancelled.discard(cid)
        return encode_cid_list("want-have" if have_only else "want-block", fresh) if fresh else b""

    def cancel(self, cids: Sequence[CID]) -> bytes:
        wanted = [cid for cid in dict.fromkeys(cids) if cid in self.outstanding]
        for cid in wanted:
            del self.outstanding[cid]
            self._cancelled.add(cid)  # an answer may already be on its way
        return encode_cid_list("cancel", wanted) if wanted else b""

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes; then take :meth:`next_event` until None. Raises RemoteProtocolError
        (BlockMismatchError for a block that is not what its CID names)."""
        self._reader.frames.receive_data(data, now)
        if data:
            self._last_progress = now
        for message in self._reader.messages():
            self._on_message(*message)

    def receive_eof(self) -> None:
        self._reader.receive_eof()

    def next_event(self) -> RequesterEvent | None:
        return self._events.popleft() if self._events else None

    def _answer(self, cid: CID, what: str) -> bool:
        """Account one answer for ``cid``: True to report it, False for a late answer to a
        cancelled want; an answer nobody asked for is the peer's error."""
        if cid in self.outstanding:
            del self.outstanding[cid]
            return True
        if cid in self._cancelled:
            self._cancelled.discard(cid)
            return False
        raise RemoteProtocolError(f"{what} for {cid}, which was not wanted", ErrorCode.UNEXPECTED_BLOCK)

    def _on_message(self, kind: str, value: Any) -> None:
        if kind == "blocks":
            for cid, data in value:
                check_block(cid, data)  # before anything else: a mismatch is never reported
                if self._answer(cid, "a block"):
                    self.blocks_received += 1
                    self.block_bytes_received += len(data)
                    self._events.append(BlockReceived(cid, data))
        elif kind in ("have", "dont-have"):
            for cid in value:
                if kind == "have" and self.outstanding.get(cid) == "block":
                    raise RemoteProtocolError(f"have for {cid}, whose block was wanted",
                                              ErrorCode.UNEXPECTED_BLOCK)
                if self._answer(cid, kind):
                    self._events.append(Have(cid) if kind == "have" else DontHave(cid))
        else:
            raise RemoteProtocolError(f"a responder does not send {kind!r}", ErrorCode.UNEXPECTED_MESSAGE)


# --- the responder -----------------------------------------------------------------------


class BlocksResponder:
    """The serving end of a blocks stream a peer opened: wants in, answers out. The node
    looks wanted CIDs up in its store and answers with :meth:`send_blocks`,
    :meth:`send_have` and :meth:`send_dont_have` (each CID exactly once)."""

    def __init__(self, now: float) -> None:
        self._reader = _MessageReader()
        self.pending: dict[CID, str] = {}
        self._events: deque[ResponderEvent] = deque()
        self._last_activity = now

    @property
    def deadline(self) -> float | None:
        frame = self._reader.frames.deadline
        idle = None if self.pending else self._last_activity + IDLE_TIMEOUT_S
        candidates = [t for t in (frame, idle) if t is not None]
        return min(candidates) if candidates else None

    def check_deadline(self, now: float) -> None:
        self._reader.frames.check_deadline(now)
        if not self.pending and now >= self._last_activity + IDLE_TIMEOUT_S:
            raise DeadlineExceeded(f"stream idle for {IDLE_TIMEOUT_S:.0f} s")

    def receive_data(self, data: bytes, now: float) -> None:
        self._reader.frames.receive_data(data, now)
        if data:
            self._last_activity = now
        for message in self._reader.messages():
            self._on_message(*message)

    def receive_eof(self) -> None:
        self._reader.receive_eof()

    def next_event(self) -> ResponderEvent | None:
        return self._events.popleft() if self._events else None

    def _on_message(self, kind: str, cids: Any) -> None:
        if kind in ("want-block", "want-have"):
            mode = "block" if kind == "want-block" else "have"
            fresh = tuple(cid for cid in dict.fromkeys(cids) if cid not in self.pending)
            if len(self.pending) + len(fresh) > MAX_OUTSTANDING_WANTS:
                raise RemoteProtocolError(f"over {MAX_OUTSTANDING_WANTS} outstanding wants",
                                          ErrorCode.TOO_MANY_WANTS)
            for cid in fresh:
                self.pending[cid] = mode
            if fresh:
                self._events.append(WantBlocks(fresh) if mode == "block" else WantHaves(fresh))
        elif kind == "cancel":
            gone = tuple(cid for cid in cids if self.pending.pop(cid, None) is not None)
            if gone:
                self._events.append(Cancel(gone))
        else:
            raise RemoteProtocolError(f"a requester does not send {kind!r}", ErrorCode.UNEXPECTED_MESSAGE)

    def _take(self, cids: Iterable[CID], mode: str | None) -> list[CID]:
        """The CIDs still pending (in the given mode), no longer pending after this."""
        taken = []
        for cid in cids:
            wanted = self.pending.get(cid)
            if wanted is not None and (mode is None or wanted == mode):
                del self.pending[cid]
                taken.append(cid)
        return taken

    def send_blocks(self, blocks: Sequence[tuple[CID, bytes]], now: float | None = None) -> bytes:
        """Frames answering block wants; blocks not (or no longer) wanted are skipped."""
        wanted = set(self._take([cid for cid, _ in blocks], "block"))
        if now is not None:
            self._last_activity = now
        return encode_blocks([(cid, data) for cid, data in blocks if cid in wanted])

    def send_have(self, cids: Sequence[CID]) -> bytes:
        taken = self._take(cids, "have")
        return encode_cid_list("have", taken) if taken else b""

    def send_dont_have(self, cids: Sequence[CID]) -> bytes:
        taken = self._take(cids, None)
        return encode_cid_list("dont-have", taken) if taken else b""
