"""CARv1 (ipld/ipld ``specs/transport/car/carv1``): export DAGs from the block store and
import archives made by anyone, verifying every block.

Format::

    varint(len(header)) header            header = DAG-CBOR {"roots": [CID, ...], "version": 1}
    varint(len(cid) + len(block)) cid block     (repeated to the end of the stream)

The framing is pure functions over bytes (:func:`encode_header`, :func:`decode_header`,
:func:`encode_section`, :func:`split_section`); :class:`CarReader` adds only bounded reads
from a binary stream. Nothing is read that a named limit does not cover.

Choices where the spec leaves room:

* Export writes each root's DAG depth-first in link order (a block's links in encoded
  order), each block once: the "first-seen depth-first" order Filecoin relies on, so the
  same roots over the same store always give the same bytes. dag-pb blocks are leaves.
  Export needs at least one root (the spec's constraint); import accepts zero roots as
  some JavaScript writers emit them.
* Import verifies every block (hash against its CID, strict DAG-CBOR, size, a codec the
  store keeps) and skips a bad one with its reason in the report; a broken *frame*
  (truncation, a lying length, a bad header, CARv2) raises :class:`CarImportError`, a
  :class:`CanonDecodeError` carrying the report so far. Blocks committed before the
  error stay: they were verified, and nothing stored is ever overwritten or deleted.
  Import through a :class:`~n3xus.canon.blockstore.Session` and pin the roots in it to
  keep them from GC.
* CIDv0 (sha2-256 dag-pb) sections are accepted and stored under their CIDv0 bytes.
* A block repeated in one CAR is stored once (puts are idempotent); links with an
  identity multihash carry their data inline and are not written as sections.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

from .blockstore import HASH_IDENTITY, MAX_BLOCK_SIZE, BlockStore, BlockWriter, block_links
from .cid import CID
from .codec import decode, encode
from .errors import CanonDecodeError, CanonEncodeError, CanonError, LimitExceededError
from .multiformats import (
    MAX_DIGEST_SIZE,
    MAX_VARINT_BYTES,
    decode_varint,
    encode_varint,
)

# The spec recommends a single root; 64 KiB of header still holds over 1,500 CIDv1
# roots, and bounds what a hostile header can make us allocate before any block.
MAX_CAR_HEADER_SIZE = 64 * 1024

# A CID is four varints and a digest; the digest limit comes from the CID module.
MAX_CID_SIZE = 4 * MAX_VARINT_BYTES + MAX_DIGEST_SIZE

# A section is a CID and one block; anything longer cannot hold a block we would keep,
# so its length is refused before a single byte of it is read.
MAX_CAR_SECTION_SIZE = MAX_CID_SIZE + MAX_BLOCK_SIZE

# Verified blocks written per write transaction on import: large enough to amortise the
# commit, small enough that a broken CAR leaves little half-done work (8 MiB at most).
IMPORT_BATCH_BLOCKS = 256
IMPORT_BATCH_BYTES = 8 * 1024 * 1024

# The 11 bytes every CARv2 starts with (carv2 spec "Pragma"): a CARv1 header of version 2.
CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")

_CID_V0_PREFIX = b"\x12\x20"
_CID_V0_LENGTH = 34


class CarImportError(CanonDecodeError):
    """A CAR whose framing is broken; ``report`` says what was imported before it."""

    def __init__(self, message: str, report: ImportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class BadBlock:
    cid: CID
    offset: int  # byte offset of the section's length varint in the stream
    reason: str


@dataclass
class ImportReport:
    roots: tuple[CID, ...] = ()
    imported: int = 0  # verified blocks written (already present ones and repeats included)
    bad_blocks: list[BadBlock] = field(default_factory=list)
    bytes_read: int = 0


@dataclass(frozen=True)
class ExportReport:
    roots: tuple[CID, ...]
    blocks: int
    bytes_written: int


# --- framing (pure) ------------------------------------------------------------------


def encode_header(roots: Sequence[CID]) -> bytes:
    """The header with its length prefix."""
    if not roots:
        raise CanonEncodeError("a CARv1 header needs at least one root")
    block = encode({"roots": list(roots), "version": 1})
    if len(block) > MAX_CAR_HEADER_SIZE:
        raise LimitExceededError(f"CAR header of {len(block)} bytes exceeds {MAX_CAR_HEADER_SIZE}")
    return encode_varint(len(block)) + block


def decode_header(block: bytes) -> tuple[CID, ...]:
    """Roots of a header block (without its length prefix); strict DAG-CBOR, version 1."""
    value = decode(block)
    if not isinstance(value, dict):
        raise CanonDecodeError("CAR header is not a map")
    version = value.get("version")
    if version == 2 and set(value) == {"version"}:
        raise CanonDecodeError("this is a CARv2; only CARv1 is supported (extract its payload)")
    if type(version) is not int or version != 1:
        raise CanonDecodeError(f"CAR header version is {version!r}, not 1")
    if set(value) != {"roots", "version"}:
        raise CanonDecodeError(f"CAR header has fields {sorted(value)}, not roots and version")
    roots = value["roots"]
    if not isinstance(roots, list) or not all(isinstance(root, CID) for root in roots):
        raise CanonDecodeError("CAR header roots is not a list of CIDs")
    return tuple(roots)


def encode_section(cid: CID, data: bytes) -> bytes:
    binary = bytes(cid)
    return encode_varint(len(binary) + len(data)) + binary + data


def cid_length(section: bytes) -> int:
    """Length of the binary CID at the start of a section body."""
    if section[:2] == _CID_V0_PREFIX:
        return _CID_V0_LENGTH
    version, position = decode_varint(section, 0, "CID version")
    if version != 1:
        raise CanonDecodeError(f"section CID has version {version}")
    _, position = decode_varint(section, position, "CID codec")
    _, position = decode_varint(section, position, "multihash code")
    digest_length, position = decode_varint(section, position, "multihash length")
    if digest_length > MAX_DIGEST_SIZE:
        raise CanonDecodeError(f"section CID digest of {digest_length} bytes is too long")
    end = position + digest_length
    if end > len(section):
        raise CanonDecodeError("section ends inside its CID")
    return end


def split_section(section: bytes) -> tuple[CID, bytes]:
    """(CID, block bytes) of a section body (the bytes after its length varint)."""
    end = cid_length(section)
    return CID(section[:end]), section[end:]


# --- reading a stream ------------------------------------------------------------------


@dataclass(frozen=True)
class CarSection:
    offset: int
    cid: CID
    data: bytes  # unverified: whoever stores it checks it


class CarReader:
    """CARv1 sections from a binary stream, with bounded reads. The header is read on
    construction. Raises CanonDecodeError (or LimitExceededError) on a broken frame."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.position = 0
        self._pushback = b""
        start = self._read_exact(len(CARV2_PRAGMA), allow_eof=True)
        if start == CARV2_PRAGMA:
            raise CanonDecodeError("this is a CARv2; only CARv1 is supported (extract its payload)")
        self._pushback = start
        self.position = 0  # the peeked bytes are consumed again below
        length = self._read_length(MAX_CAR_HEADER_SIZE, "CAR header")
        if length is None:
            raise CanonDecodeError("empty stream: no CAR header")
        self.roots = decode_header(self._read_exact(length))

    def _read_exact(self, count: int, allow_eof: bool = False) -> bytes:
        parts = [self._pushback[:count]]
        self._pushback = self._pushback[count:]
        have = len(parts[0])
        while have < count:
            piece = self._stream.read(count - have)
            if not piece:
                if allow_eof:
                    break
                raise CanonDecodeError(
                    f"truncated CAR: needed {count} bytes at offset {self.position}, got {have}"
                )
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        self.position += len(data)
        return data

    def _read_length(self, limit: int, what: str) -> int | None:
        """A varint length, or None at a clean end of stream."""
        start = self.position
        raw = bytearray()
        while True:
            byte = self._read_exact(1, allow_eof=True)
            if not byte:
                if raw:
                    raise CanonDecodeError(f"truncated CAR: {what} length at offset {start}")
                return None
            raw += byte
            if byte[0] < 0x80 or len(raw) >= MAX_VARINT_BYTES:
                break
        length, _ = decode_varint(bytes(raw), 0, f"{what} length")
        if length > limit:
            raise LimitExceededError(f"{what} of {length} bytes at offset {start} exceeds {limit}")
        return length

    def __iter__(self) -> Iterator[CarSection]:
        while True:
            offset = self.position
            length = self._read_length(MAX_CAR_SECTION_SIZE, "CAR section")
            if length is None:
                return
            if length == 0:
                raise CanonDecodeError(f"empty CAR section at offset {offset}")
            cid, data = split_section(self._read_exact(length))
            yield CarSection(offset, cid, data)


# --- import / export --------------------------------------------------------------------


def import_car(
    target: BlockWriter,
    stream: BinaryIO,
    on_bad_block: Literal["report", "raise"] = "report",
) -> ImportReport:
    """Store every valid block of a CARv1 stream into a store or session."""
    report = ImportReport()
    batch: list[tuple[CID, bytes]] = []
    offsets: dict[CID, int] = {}
    batch_bytes = 0

    def reject(cid: CID, error: CanonError) -> None:
        report.bad_blocks.append(BadBlock(cid, offsets.get(cid, -1), str(error)))

    def flush() -> None:
        nonlocal batch_bytes
        report.imported += len(target.put_blocks(batch, reject=reject))
        if on_bad_block == "raise" and report.bad_blocks:
            bad = report.bad_blocks[0]
            raise CarImportError(f"bad block {bad.cid} at offset {bad.offset}: {bad.reason}", report)
        batch.clear()
        offsets.clear()
        batch_bytes = 0

    reader: CarReader | None = None
    try:
        reader = CarReader(stream)
        report.roots = reader.roots
        for section in reader:
            batch.append((section.cid, section.data))
            offsets[section.cid] = section.offset
            batch_bytes += len(section.data)
            if len(batch) >= IMPORT_BATCH_BLOCKS or batch_bytes >= IMPORT_BATCH_BYTES:
                flush()
        flush()
    except CarImportError:
        raise
    except (CanonDecodeError, LimitExceededError) as error:
        flush()  # the sections read before the break are whole and get verified
        report.bytes_read = reader.position if reader is not None else 0
        raise CarImportError(f"broken CAR: {error}", report) from error
    report.bytes_read = reader.position
    return report


def iter_dag(store: BlockStore, roots: Sequence[CID]) -> Iterator[tuple[CID, bytes]]:
    """Blocks under ``roots``, depth-first in link order, each once, each verified."""
    seen: set[CID] = set()
    stack = list(reversed(roots))
    while stack:
        cid = stack.pop()
        if cid in seen or cid.hash_code == HASH_IDENTITY:  # identity: data is in the CID
            continue
        seen.add(cid)
        data = store.get(cid)
        yield cid, data
        stack.extend(reversed(block_links(cid, data)))


def export_car(store: BlockStore, roots: Sequence[CID], out: BinaryIO) -> ExportReport:
    """Write the DAGs under ``roots`` as a CARv1, streaming one block at a time. A
    missing block raises BlockNotFoundError; the output is then incomplete."""
    header = encode_header(roots)
    out.write(header)
    written = len(header)
    blocks = 0
    for cid, data in iter_dag(store, roots):
        section = encode_section(cid, data)
        out.write(section)
        written += len(section)
        blocks += 1
    return ExportReport(tuple(roots), blocks, written)
