"""Ledger exports: the whole log up to the last signed checkpoint, as one CARv1, and its
offline replay by auditors (:func:`replay_export`, ``n3xus audit replay``).

Layout (``specs/ledger.md`` §13.7). The CAR has one root, the *manifest*; every block is
DAG-CBOR with a CIDv1 dag-cbor BLAKE3-256 CID::

    manifest {"v": 1, "page": P, "size": N, "type": "n3xus-ledger-export",
              "pages": [page CID, ...], "network": genesis CID, "checkpoints": [note, ...]}
    page     {"entries": [entry CID, ...]}     P entries per page, the last one 1..P
    entry    the exact bytes of log entry i    (entry 0 is the genesis block)

Sections come in the depth-first order of that DAG: the manifest, then each page followed
by its entries, so entries arrive in log order and a reader streams them with O(P) memory.
Because every link is a CID, the file is an ordinary CAR that any IPLD tool can import,
and a change to any byte breaks a hash or the framing.

Note: the CID of a transaction *entry* block is ``cid_of(envelope bytes)``, not the
transaction id (which hashes the unsigned transaction map only).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from n3xus.canon import merkle
from n3xus.canon.car import CarReader, CarSection, encode_header, encode_section
from n3xus.canon.checkpoint import Checkpoint
from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError
from n3xus.canon.note import NoteVerifier, parse_note

from .audit import HASHER, StateCommitment, VerifiedCheckpoint, open_checkpoint
from .errors import AuditError, AuditPart, GenesisError, ProofUnavailableError, Reason, TxRejected
from .genesis import Genesis
from .ingest import Accepted, Rejected
from .memory import MemoryLedger
from .rules import HEAD

if TYPE_CHECKING:
    from .store import LedgerStore
    from .transparency import TransparencyLog

EXPORT_TYPE: Final = "n3xus-ledger-export"
EXPORT_VERSION: Final = 1
# Entries per page block: 1024 links of ~39 bytes make a 40 KB block, small next to the
# 1 MiB block limit, and bound what a reader holds besides the replayed state.
EXPORT_PAGE_ENTRIES: Final = 1024
# Largest page a reader accepts: 16384 links (~640 KB) still fit in one block.
MAX_EXPORT_PAGE_ENTRIES: Final = 16_384
# Checkpoints one export may carry (the latest plus older ones kept by the operator).
MAX_EXPORT_CHECKPOINTS: Final = 64

_DAG_CBOR: Final = 0x71
_BLAKE3: Final = 0x1E
_MANIFEST_KEYS: Final = frozenset({"v", "page", "size", "type", "pages", "network", "checkpoints"})
_CHAIN_REASONS: Final = frozenset({Reason.BAD_SEQ, Reason.BAD_PREV, Reason.REPLAY,
                                   Reason.EQUIVOCATION, Reason.FROZEN})
_ENTRY_REASONS: Final = frozenset({Reason.MALFORMED, Reason.UNSUPPORTED_VERSION, Reason.UNKNOWN_OP,
                                   Reason.BAD_AMOUNT, Reason.OVERFLOW, Reason.BAD_PROOF})


@dataclass(frozen=True)
class ExportReport:
    manifest: CID
    size: int
    blocks: int
    bytes_written: int
    checkpoints: int


def _pages(entries: Iterator[bytes], page_entries: int) -> Iterator[tuple[bytes, list[tuple[CID, bytes]]]]:
    """(page block, [(entry CID, entry bytes)]) for consecutive pages of entries."""
    batch: list[tuple[CID, bytes]] = []
    for entry in entries:
        batch.append((cid_of(entry), entry))
        if len(batch) == page_entries:
            yield encode({"entries": [cid for cid, _ in batch]}), batch
            batch = []
    if batch:
        yield encode({"entries": [cid for cid, _ in batch]}), batch


def export_ledger(store: LedgerStore, tlog: TransparencyLog, out: BinaryIO, *,
                  extra_checkpoints: Sequence[str] = (),
                  page_entries: int = EXPORT_PAGE_ENTRIES) -> ExportReport:
    """Write the log entries covered by the last signed checkpoint, with that checkpoint and
    ``extra_checkpoints`` (older notes of this log the operator kept), as an export CAR.
    Streams: the log is read twice (page CIDs first, then the blocks)."""
    if not 1 <= page_entries <= MAX_EXPORT_PAGE_ENTRIES:
        raise ValueError(f"page_entries must be in 1..{MAX_EXPORT_PAGE_ENTRIES}")
    last = tlog.last_checkpoint()
    if last is None:
        raise ProofUnavailableError("no checkpoint has been signed yet: nothing to export")
    size = Checkpoint.parse(parse_note(last).text).size
    notes = [*extra_checkpoints, last]
    if len(notes) > MAX_EXPORT_CHECKPOINTS:
        raise ValueError(f"at most {MAX_EXPORT_CHECKPOINTS} checkpoints per export")
    for note in extra_checkpoints:
        checkpoint = Checkpoint.parse(parse_note(note).text)
        if (checkpoint.origin != tlog.origin or checkpoint.size > size
                or tlog.root(checkpoint.size) != checkpoint.root_hash):
            raise ValueError(f"checkpoint of size {checkpoint.size} is not a state of this log")
    page_cids = [cid_of(page) for page, _ in _pages(store.iter_log(0, size), page_entries)]
    manifest = encode({"v": EXPORT_VERSION, "page": page_entries, "size": size,
                       "type": EXPORT_TYPE, "pages": page_cids,
                       "network": store.genesis.cid, "checkpoints": notes})
    manifest_cid = cid_of(manifest)
    written = out.write(encode_header([manifest_cid])) + out.write(encode_section(manifest_cid, manifest))
    blocks = 1
    count = 0
    for number, (page, batch) in enumerate(_pages(store.iter_log(0, size), page_entries)):
        cid = cid_of(page)
        if cid != page_cids[number]:
            raise ValueError("the log changed under the export")  # pragma: no cover - append-only
        written += out.write(encode_section(cid, page))
        for entry_cid, entry in batch:
            written += out.write(encode_section(entry_cid, entry))
        blocks += 1 + len(batch)
        count += len(batch)
    if count != size:
        raise ValueError(f"the log has {count} entries below the checkpoint size {size}")
    return ExportReport(manifest_cid, size, blocks, written, len(notes))


# --- reading -----------------------------------------------------------------------------------


@dataclass
class ExportContents:
    """A parsed manifest and a lazy iterator over ``(index, entry bytes)`` that checks every
    block's hash and place as it goes (AuditError on the first fault)."""

    size: int
    page_entries: int
    network: CID
    checkpoints: list[str]
    entries: Iterator[tuple[int, bytes]]


def _next(sections: Iterator[CarSection], what: str) -> CarSection:
    try:
        return next(sections)
    except StopIteration:
        raise AuditError(AuditPart.MANIFEST, f"the export ends before {what}") from None
    except (CanonError, ValueError) as exc:
        raise AuditError(AuditPart.CAR_FRAME, f"broken CAR framing before {what}: {exc}") from None


def _check_block(section: CarSection, expected: CID, what: str, index: int | None = None) -> None:
    if section.cid != expected:
        raise AuditError(AuditPart.BLOCK_HASH, f"{what} is block {section.cid}, the export links "
                         f"{expected}", index)
    if expected.codec != _DAG_CBOR or expected.hash_code != _BLAKE3 or cid_of(section.data) != expected:
        raise AuditError(AuditPart.BLOCK_HASH, f"{what} does not hash to its CID {expected}", index)


def _decode(data: bytes, what: str) -> Any:
    try:
        return decode(data)
    except (CanonError, ValueError) as exc:
        raise AuditError(AuditPart.MANIFEST, f"{what} is not canonical DAG-CBOR: {exc}") from None


def _manifest(value: Any) -> tuple[int, int, list[CID], CID, list[str]]:
    def bad(message: str) -> AuditError:
        return AuditError(AuditPart.MANIFEST, message)

    if type(value) is not dict or value.keys() != _MANIFEST_KEYS:
        raise bad(f"the manifest is a map with exactly the keys {sorted(_MANIFEST_KEYS)}")
    if type(value["v"]) is not int or value["v"] != EXPORT_VERSION or value["type"] != EXPORT_TYPE:
        raise bad(f"not a {EXPORT_TYPE} version {EXPORT_VERSION} manifest")
    size, page = value["size"], value["page"]
    if type(size) is not int or size < 1:
        raise bad("the manifest size is a positive integer")
    if type(page) is not int or not 1 <= page <= MAX_EXPORT_PAGE_ENTRIES:
        raise bad(f"the manifest page size is an integer in 1..{MAX_EXPORT_PAGE_ENTRIES}")
    pages, network, notes = value["pages"], value["network"], value["checkpoints"]
    if type(pages) is not list or not all(isinstance(p, CID) for p in pages):
        raise bad("the manifest pages are a list of links")
    if len(pages) != -(-size // page):
        raise bad(f"{size} entries in pages of {page} need {-(-size // page)} pages, not {len(pages)}")
    if not isinstance(network, CID):
        raise bad("the manifest network is a link")
    if (type(notes) is not list or not 1 <= len(notes) <= MAX_EXPORT_CHECKPOINTS
            or not all(type(n) is str for n in notes)):
        raise bad(f"the manifest checkpoints are a list of 1..{MAX_EXPORT_CHECKPOINTS} notes")
    return size, page, pages, network, notes


def read_export(stream: BinaryIO) -> ExportContents:
    """Open an export CAR: its header and manifest now, the entries lazily."""
    try:
        reader = CarReader(stream)
    except (CanonError, ValueError) as exc:
        raise AuditError(AuditPart.CAR_FRAME, f"not a CARv1: {exc}") from None
    if len(reader.roots) != 1:
        raise AuditError(AuditPart.MANIFEST, f"an export has one root, not {len(reader.roots)}")
    sections = iter(reader)
    section = _next(sections, "the manifest")
    _check_block(section, reader.roots[0], "the manifest")
    size, page, pages, network, notes = _manifest(_decode(section.data, "the manifest"))

    def entries() -> Iterator[tuple[int, bytes]]:
        index = 0
        for number, page_cid in enumerate(pages):
            block = _next(sections, f"page {number}")
            _check_block(block, page_cid, f"page {number}")
            links = _decode(block.data, f"page {number}")
            want = min(page, size - number * page)
            if (type(links) is not dict or links.keys() != {"entries"}
                    or type(links["entries"]) is not list or len(links["entries"]) != want
                    or not all(isinstance(link, CID) for link in links["entries"])):
                raise AuditError(AuditPart.MANIFEST, f"page {number} is not a map with a list of "
                                 f"exactly {want} entry links")
            for link in links["entries"]:
                entry = _next(sections, f"entry {index}")
                _check_block(entry, link, f"entry {index}", index)
                if index == 0 and link != network:
                    raise AuditError(AuditPart.MANIFEST, f"entry 0 is {link}, the manifest's "
                                     f"network is {network}", 0)
                yield index, entry.data
                index += 1
        try:
            extra = next(sections, None)
        except (CanonError, ValueError) as exc:
            raise AuditError(AuditPart.CAR_FRAME, f"broken CAR framing after the last entry: "
                             f"{exc}") from None
        if extra is not None:
            raise AuditError(AuditPart.MANIFEST, f"a block follows the last entry (offset "
                             f"{extra.offset})")

    return ExportContents(size, page, network, notes, entries())


# --- replaying -------------------------------------------------------------------------------


@dataclass
class ReplayReport:
    network: CID
    size: int
    log_root: bytes
    state: StateCommitment
    checkpoints: list[VerifiedCheckpoint] = field(default_factory=list)
    transactions: int = 0
    fraud_proofs: int = 0
    accounts: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"network": str(self.network), "size": self.size, "log_root": self.log_root.hex(),
                "state_root": self.state.root.hex(), "state_leaves": self.state.leaves,
                "transactions": self.transactions, "fraud_proofs": self.fraud_proofs,
                "accounts": self.accounts, "seconds": round(self.seconds, 3),
                "checkpoints": [c.to_json() for c in self.checkpoints]}


def _rejection_part(error: TxRejected) -> AuditPart:
    if error.reason == Reason.BAD_SIGNATURE:
        return AuditPart.ENTRY_SIGNATURE
    if error.reason in _CHAIN_REASONS:
        return AuditPart.CHAIN_LINK
    if error.reason in _ENTRY_REASONS:
        return AuditPart.ENTRY
    if error.reason == Reason.WRONG_NETWORK:
        return AuditPart.NETWORK
    return AuditPart.ENTRY_RULES


def replay_export(stream: BinaryIO, key: str | NoteVerifier | None = None) -> ReplayReport:
    """Replay an export CAR from genesis: every block's hash, the manifest's structure,
    every entry's signature, chain and rules (``ingest`` with ``verify=True``), the log
    root and the state root at the size of every checkpoint in it, and (with ``key``)
    every checkpoint's signature. Raises AuditError naming the first fault."""
    started = time.perf_counter()
    export = read_export(stream)
    checkpoints = sorted((open_checkpoint(note, key) for note in export.checkpoints),
                         key=lambda c: c.size)
    _check_export_checkpoints(checkpoints, export.size)
    pending = list(checkpoints)
    frontier = merkle.Frontier(HASHER)
    view: MemoryLedger | None = None
    genesis: Genesis | None = None
    report: ReplayReport | None = None
    for index, entry in export.entries:
        if index == 0:
            try:
                genesis = Genesis.from_bytes(entry)
            except GenesisError as exc:
                raise AuditError(AuditPart.ENTRY, f"entry 0 is not a genesis block: {exc}", 0) from None
            view = MemoryLedger(genesis)
            report = ReplayReport(genesis.cid, 0, b"", StateCommitment(0, b""))
            for checkpoint in checkpoints:
                if checkpoint.network is not None and checkpoint.network != genesis.cid:
                    raise AuditError(AuditPart.NETWORK, f"checkpoint of size {checkpoint.size} is of "
                                f"network {checkpoint.network}, the export's genesis is {genesis.cid}")
        else:
            assert view is not None and genesis is not None and report is not None
            # Each logged entry must be admitted again at its own index (the set grows in
            # log order, so every node's export replays to the roots it signed).
            accepted = view.ingest([entry])[0]
            if isinstance(accepted, Rejected):
                error = accepted.error
                raise AuditError(_rejection_part(error), str(error), index) from None
            if not isinstance(accepted, Accepted):
                raise AuditError(AuditPart.CHAIN_LINK, f"the entry is not admitted at its index "
                                 f"({type(accepted).__name__}: its predecessor is not before it)",
                                 index)
            if accepted.log_index != index:  # pragma: no cover - ingest appends in order
                raise AuditError(AuditPart.CHAIN_LINK, f"replayed at index {accepted.log_index}", index)
            if accepted.tx is None or accepted.proof is not None:
                report.fraud_proofs += 1
            else:
                report.transactions += 1
        frontier.append(HASHER.leaf_hash(entry))
        while pending and pending[0].size == frontier.size:
            assert view is not None
            _check_roots(pending.pop(0), frontier.root(), view)
    if report is None or view is None:
        raise AuditError(AuditPart.MANIFEST, "the export holds no genesis entry")
    report.size = frontier.size
    report.log_root = frontier.root()
    report.state = StateCommitment(len(view.state), view.state_root())
    report.checkpoints = checkpoints
    report.accounts = sum(1 for k in view.state if k[:1] == HEAD)
    report.seconds = time.perf_counter() - started
    return report


def _check_export_checkpoints(checkpoints: Iterable[VerifiedCheckpoint], size: int) -> None:
    listed = list(checkpoints)
    if not listed:
        raise AuditError(AuditPart.MANIFEST, "the export carries no signed checkpoint")
    if listed[0].size == 0:
        raise AuditError(AuditPart.MANIFEST, "a ledger checkpoint covers at least the genesis entry")
    origins = {c.checkpoint.origin for c in listed}
    if len(origins) != 1:
        raise AuditError(AuditPart.ORIGIN, f"the export's checkpoints are of several logs: {sorted(origins)}")
    if listed[-1].size != size:
        raise AuditError(AuditPart.MANIFEST, f"the export has {size} entries, its latest checkpoint "
                    f"covers {listed[-1].size}")
    for older, newer in zip(listed, listed[1:], strict=False):
        if older.size == newer.size and (older.root, older.state) != (newer.root, newer.state):
            raise AuditError(AuditPart.CONSISTENCY, f"two checkpoints of size {older.size} differ")


def _check_roots(checkpoint: VerifiedCheckpoint, log_root: bytes, view: MemoryLedger) -> None:
    size = checkpoint.size
    if log_root != checkpoint.root:
        raise AuditError(AuditPart.LOG_ROOT, f"the log root of the first {size} entries is "
                    f"{log_root.hex()}, the checkpoint signs {checkpoint.root.hex()}")
    state = StateCommitment(len(view.state), view.state_root())
    if state != checkpoint.state:
        raise AuditError(AuditPart.STATE_ROOT, f"after {size} entries the state is {state.leaves} leaves "
                    f"with root {state.root.hex()}, the checkpoint signs {checkpoint.state.leaves} "
                    f"leaves with root {checkpoint.state.root.hex()}")
