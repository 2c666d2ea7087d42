"""Offline verification of the ledger's transparency artefacts (``specs/ledger.md`` §13).

Pure: bytes and text in, verified facts out; no node, no data dir, no clock. The node side
(``transparency.py``) builds the same formats with the same code, so there is one
definition of each:

* signed checkpoints: C2SP tlog-checkpoint notes whose one extension line
  ``n3xus-state <leaves> <base64 root>`` commits the ledger state (§13.2);
* inclusion bundles: C2SP ``c2sp.org/tlog-proof@v1`` whose ``extra`` is the log entry;
* state proof bundles (``n3xus.net/ledger-state-proof/v2``, sparse Merkle paths) and consistency bundles
  (``n3xus.net/ledger-consistency/v1``), line formats in the tlog-proof manner;
* the export CAR, whose format and replay from genesis live in ``export.py``
  (:func:`replay_export` here delegates to it).

Every failure raises :class:`AuditError` whose ``part`` names what failed. Checks run from
the outside in (syntax, the note's signature, the checkpoint, the proof path, the entry's
own signature), so a damaged file is blamed on the first part that does not hold.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal

from n3xus.canon import merkle
from n3xus.canon.checkpoint import (
    MAX_PROOF_BUNDLE_BYTES,
    TLOG_PROOF_HEADER,
    Checkpoint,
    ProofBundle,
)
from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonError, VerificationError
from n3xus.canon.note import (
    MAX_NOTE_BYTES,
    NoteVerifier,
    open_note_verified,
    parse_note,
    parse_vkey,
)

from . import smt
from .errors import AuditError, AuditPart, FraudProofError, GenesisError, TxRejected
from .fraud import FRAUD_PROOF_PREFIX, FraudProof, verify_fraud_proof
from .genesis import Genesis
from .rules import ASSET, BALANCE, FROZEN, HEAD, LISTING, OWNER, SUPPLY, Asset, Listing
from .tx import Tx, decode_tx, verify_tx_signature

if TYPE_CHECKING:
    from .export import ReplayReport

HASHER: Final = merkle.BLAKE3
# The checkpoint extension line committing the state: keyword, leaf count, base64 root.
STATE_LINE_KEYWORD: Final = "n3xus-state"
# Origins of ledger logs: n3xus.net/ledger/<network id>/<node>; the network part is checked.
ORIGIN_PREFIX: Final = "n3xus.net/ledger/"
STATE_PROOF_HEADER: Final = "n3xus.net/ledger-state-proof/v2"
CONSISTENCY_HEADER: Final = "n3xus.net/ledger-consistency/v1"
# Most hashes on one proof path: trees have at most 2**64 - 1 leaves.
MAX_PROOF_HASHES: Final = 64
# State keys are at most 255 bytes (a leaf's u8 length); the largest v1 values are ~120
# bytes (an asset record with a long artifact CID). The limit bounds parsing, with room.
MAX_STATE_KEY_BYTES: Final = 255
MAX_STATE_VALUE_BYTES: Final = 1024
# Largest state proof or consistency bundle: a full state path (255 hashes) or two
# consistency paths, two keys and values in base64, a few header lines, and the signed
# checkpoint at its own limit.
MAX_BUNDLE_BYTES: Final = (256 * 45 + 4 * (MAX_STATE_KEY_BYTES + MAX_STATE_VALUE_BYTES)
                           + 4096 + MAX_NOTE_BYTES)
# Largest file of any of these kinds (an inclusion bundle is a tlog-proof: canon's limit).
MAX_ANY_BUNDLE_BYTES: Final = max(MAX_BUNDLE_BYTES, MAX_PROOF_BUNDLE_BYTES)

# Every genesis block is a map of ten entries (DAG-CBOR head 0xaa); envelopes (0xa2) and fraud
# proofs (0xa3) never start with it.
_GENESIS_FIRST_BYTE: Final = b"\xaa"
_DECIMAL: Final = re.compile(r"0|[1-9][0-9]{0,19}")  # no sign, no leading zero, <= 20 digits


# --- small strict codecs ---------------------------------------------------------------------


def _fail(part: AuditPart, message: str, index: int | None = None) -> AuditError:
    return AuditError(part, message, index)


def _b64(value: str, what: str) -> bytes:
    """Standard padded base64, only its canonical spelling (so no two texts mean the same)."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise _fail(AuditPart.FORMAT, f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != value:
        raise _fail(AuditPart.FORMAT, f"{what} is not canonical base64")
    return raw


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decimal(value: str, what: str) -> int:
    if not _DECIMAL.fullmatch(value) or int(value) > merkle.MAX_TREE_SIZE:
        raise _fail(AuditPart.FORMAT, f"{what} {value[:24]!r} is not a decimal in 0..2**64-1")
    return int(value)


def _hash_line(line: str, what: str) -> bytes:
    digest = _b64(line, what)
    if len(digest) != merkle.HASH_SIZE:
        raise _fail(AuditPart.FORMAT, f"{what} has {len(digest)} bytes, want {merkle.HASH_SIZE}")
    return digest


def _text(data: str | bytes, what: str, limit: int) -> str:
    if isinstance(data, bytes | bytearray | memoryview):
        if len(data) > limit:
            raise _fail(AuditPart.FORMAT, f"{what} is over {limit} bytes")
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(AuditPart.FORMAT, f"{what} is not UTF-8") from None
    if len(data) > limit:
        raise _fail(AuditPart.FORMAT, f"{what} is over {limit} characters")
    return data


def _split_bundle(text: str, header: str, what: str) -> tuple[list[str], str]:
    """Lines before the first blank line (the first being ``header``) and the signed
    checkpoint after it."""
    head, blank, note = text.partition("\n\n")
    lines = head.split("\n")
    if lines[0] != header:
        raise _fail(AuditPart.FORMAT, f"{what} does not start with {header}")
    if not blank:
        raise _fail(AuditPart.FORMAT, f"{what} has no blank line before its checkpoint")
    return lines, note


# --- checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateCommitment:
    """The ledger state committed by a checkpoint: its leaf count and Merkle root."""

    leaves: int
    root: bytes

    def to_line(self) -> str:
        return f"{STATE_LINE_KEYWORD} {self.leaves} {_b64e(self.root)}"


def parse_state_line(checkpoint: Checkpoint) -> StateCommitment:
    """The state commitment of a ledger checkpoint: exactly one extension line."""
    if len(checkpoint.extensions) != 1:
        raise _fail(AuditPart.CHECKPOINT, f"a ledger checkpoint has one extension line "
                    f"({STATE_LINE_KEYWORD}), not {len(checkpoint.extensions)}")
    parts = checkpoint.extensions[0].split(" ")
    if len(parts) != 3 or parts[0] != STATE_LINE_KEYWORD:
        raise _fail(AuditPart.CHECKPOINT, f"the extension line is not "
                    f"'{STATE_LINE_KEYWORD} <leaves> <root>'")
    try:
        leaves = _decimal(parts[1], "state leaf count")
        root = _hash_line(parts[2], "state root")
    except AuditError as exc:
        raise _fail(AuditPart.CHECKPOINT, exc.message) from None
    return StateCommitment(leaves, root)


def origin_network(origin: str) -> CID | None:
    """The network id named by an ``n3xus.net/ledger/<network>/<node>`` origin, None for
    other origins."""
    if not origin.startswith(ORIGIN_PREFIX):
        return None
    network, slash, node = origin[len(ORIGIN_PREFIX):].partition("/")
    try:
        cid = CID(network)
    except (CanonError, ValueError):
        raise _fail(AuditPart.ORIGIN, f"origin {origin!r} does not name a network id") from None
    if not slash or not node or str(cid) != network:
        raise _fail(AuditPart.ORIGIN, f"origin {origin!r} is not {ORIGIN_PREFIX}<network>/<node>")
    return cid


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose signature verified under the log key, with its state line."""

    note: str
    checkpoint: Checkpoint
    state: StateCommitment
    network: CID | None
    signature_checked: bool = True

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root_hash

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.checkpoint.origin, "size": self.size, "root": self.root.hex(),
                "state_root": self.state.root.hex(), "state_leaves": self.state.leaves,
                "network": None if self.network is None else str(self.network),
                "signature_checked": self.signature_checked}


def load_verifier(key: str | NoteVerifier) -> NoteVerifier:
    """A vkey string (``<name>+<key id>+<base64>``) or a verifier as is."""
    if isinstance(key, NoteVerifier):
        return key
    try:
        return parse_vkey(key.strip())
    except (CanonError, ValueError) as exc:
        raise _fail(AuditPart.FORMAT, f"not a C2SP verifier key: {exc}") from None


def open_checkpoint(note: str | bytes, key: str | NoteVerifier | None) -> VerifiedCheckpoint:
    """Verify a signed ledger checkpoint, staged so each failure names its part: the note's
    syntax (format), the body's syntax (checkpoint), the log key's signature
    (note-signature), the origin (origin: the key's name, naming a well-formed network).
    ``key=None`` skips only the signature and says so in ``signature_checked``."""
    text = _text(note, "signed checkpoint", MAX_NOTE_BYTES)
    try:
        body = parse_note(text).text
    except (CanonError, ValueError) as exc:
        raise _fail(AuditPart.FORMAT, f"signed checkpoint: {exc}") from None
    try:
        checkpoint = Checkpoint.parse(body)
    except (CanonError, ValueError) as exc:
        raise _fail(AuditPart.CHECKPOINT, str(exc)) from None
    state = parse_state_line(checkpoint)
    verifier = None if key is None else load_verifier(key)
    if verifier is not None:
        try:
            _, verified = open_note_verified(text, [verifier])
        except (VerificationError, CanonError, ValueError) as exc:
            raise _fail(AuditPart.NOTE_SIGNATURE, f"the checkpoint note does not verify: "
                        f"{exc}") from None
        if (verifier.name, verifier.key_id) not in verified:  # pragma: no cover - one key
            raise _fail(AuditPart.NOTE_SIGNATURE, "the checkpoint is not signed by the log key")
        if checkpoint.origin != verifier.name:
            raise _fail(AuditPart.ORIGIN, f"checkpoint origin {checkpoint.origin!r} is not the "
                        f"key's name {verifier.name!r}")
    network = origin_network(checkpoint.origin)
    return VerifiedCheckpoint(text, checkpoint, state, network, verifier is not None)


# --- inclusion bundles (c2sp.org/tlog-proof with the entry as extra) --------------------------


def make_inclusion_bundle(index: int, proof: Sequence[bytes], signed_checkpoint: str,
                          entry: bytes) -> str:
    return ProofBundle(index, tuple(proof), signed_checkpoint, extra=entry).to_text()


EntryKind = Literal["transaction", "fraud-proof", "genesis"]


@dataclass(frozen=True)
class DecodedEntry:
    kind: EntryKind
    tx: Tx | None = None
    fraud: FraudProof | None = None
    genesis: Genesis | None = None

    def to_json(self) -> dict[str, Any]:
        if self.tx is not None:
            return {"kind": self.kind, "tx": self.tx.to_json()}
        if self.fraud is not None:
            return {"kind": self.kind, "id": str(self.fraud.cid), "account": self.fraud.account.hex(),
                    "seq": self.fraud.seq, "tx_ids": [str(CID(i)) for i in self.fraud.tx_ids]}
        assert self.genesis is not None
        return {"kind": self.kind, "network": str(self.genesis.cid), "name": self.genesis.name,
                "supply_cap": self.genesis.supply_cap}


def decode_entry(entry: bytes, index: int) -> DecodedEntry:
    """Check a log entry on its own, by its content: a fraud proof (both signatures), a
    genesis block, or a transaction (well-formed, its signature verifies). ``index`` only
    labels errors; :func:`check_entry_position` checks that the kind fits the index."""
    if entry.startswith(FRAUD_PROOF_PREFIX):
        try:
            return DecodedEntry("fraud-proof", fraud=verify_fraud_proof(entry))
        except FraudProofError as exc:
            raise _fail(AuditPart.ENTRY, f"the fraud proof does not verify: {exc}", index) from None
    if entry[:1] == _GENESIS_FIRST_BYTE:
        try:
            return DecodedEntry("genesis", genesis=Genesis.from_bytes(entry))
        except GenesisError as exc:
            raise _fail(AuditPart.ENTRY, f"not a genesis block: {exc}", index) from None
    try:
        tx = decode_tx(entry)
    except TxRejected as exc:
        raise _fail(AuditPart.ENTRY, f"not a well-formed transaction: {exc}", index) from None
    if not verify_tx_signature(tx):
        raise _fail(AuditPart.ENTRY_SIGNATURE, f"the signature of transaction {tx.cid} does "
                    "not verify", index)
    return DecodedEntry("transaction", tx=tx)


def check_entry_position(decoded: DecodedEntry, index: int) -> None:
    """The genesis block is entry 0, and only it."""
    if (decoded.kind == "genesis") != (index == 0):
        raise _fail(AuditPart.ENTRY, "entry 0 must be the genesis block, and only entry 0",
                    index)


def _entry_network(decoded: DecodedEntry) -> bytes | None:
    if decoded.tx is not None:
        return decoded.tx.network
    if decoded.fraud is not None:
        return decoded.fraud.network
    assert decoded.genesis is not None
    return decoded.genesis.network_id


@dataclass(frozen=True)
class EntryProof:
    """Proved: ``entry`` is log entry ``index`` of the tree in ``checkpoint``."""

    checkpoint: VerifiedCheckpoint
    index: int
    entry: bytes
    decoded: DecodedEntry

    def to_json(self) -> dict[str, Any]:
        return {"proof": "inclusion", "index": self.index, "entry": self.decoded.to_json(),
                "checkpoint": self.checkpoint.to_json()}


def verify_inclusion_bundle(text: str | bytes, key: str | NoteVerifier) -> EntryProof:
    """Verify an inclusion bundle offline (see the module doc for the order of checks)."""
    body = _text(text, "inclusion bundle", MAX_PROOF_BUNDLE_BYTES)
    try:
        bundle = ProofBundle.parse(body)
    except (CanonError, ValueError) as exc:
        raise _fail(AuditPart.FORMAT, f"not a tlog-proof: {exc}") from None
    if bundle.extra is None:
        raise _fail(AuditPart.FORMAT, "the tlog-proof carries no entry (extra line)")
    verified = open_checkpoint(bundle.signed_checkpoint, key)
    decoded = decode_entry(bundle.extra, bundle.index)
    try:
        merkle.verify_inclusion(HASHER, bundle.index, verified.size, HASHER.leaf_hash(bundle.extra),
                                list(bundle.proof), verified.root)
    except VerificationError as exc:
        raise _fail(AuditPart.PROOF_PATH, f"entry {bundle.index} is not in the tree of "
                    f"size {verified.size}: {exc}") from None
    check_entry_position(decoded, bundle.index)
    network = _entry_network(decoded)
    if verified.network is not None and network != bytes(verified.network):
        raise _fail(AuditPart.NETWORK, f"the entry is of network {CID(network or b'')}, the "
                    f"checkpoint's log of {verified.network}", bundle.index)
    return EntryProof(verified, bundle.index, bundle.extra, decoded)


# --- state proofs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateProofBundle:
    """A key's value (or absence) in the state a checkpoint commits: the walk of the key's
    path in the state tree (``smt.py``): sibling hashes from the root down, ending at the
    key's own leaf (``present``), at an empty subtree (``absent``) or at the leaf of another
    key on that path (``absent`` with that key and value)."""

    key: bytes
    value: bytes | None
    other: tuple[bytes, bytes] | None
    siblings: tuple[bytes, ...]
    signed_checkpoint: str

    @property
    def proof(self) -> smt.Proof:
        leaf = (self.key, self.value) if self.value is not None else self.other
        return smt.Proof(self.key, self.siblings, leaf)

    def to_text(self) -> str:
        if self.value is not None:
            claim = f"present {_b64e(self.value)}"
        elif self.other is not None:
            claim = f"absent {_b64e(self.other[0])} {_b64e(self.other[1])}"
        else:
            claim = "absent"
        lines = [STATE_PROOF_HEADER, f"key {_b64e(self.key)}", claim,
                 *(_b64e(h) for h in self.siblings)]
        return "\n".join(lines) + "\n\n" + self.signed_checkpoint

    @classmethod
    def parse(cls, text: str | bytes) -> StateProofBundle:
        lines, note = _split_bundle(_text(text, "state proof", MAX_BUNDLE_BYTES),
                                    STATE_PROOF_HEADER, "state proof")
        if len(lines) < 3 or not lines[1].startswith("key "):
            raise _fail(AuditPart.FORMAT, "a state proof has a 'key <base64>' line and a claim line")
        key = _b64(lines[1][len("key "):], "state key")
        if not 1 <= len(key) <= MAX_STATE_KEY_BYTES:
            raise _fail(AuditPart.FORMAT, f"a state key is 1..{MAX_STATE_KEY_BYTES} bytes")
        claim = lines[2].split(" ")
        value: bytes | None = None
        other: tuple[bytes, bytes] | None = None
        if claim[0] == "present" and len(claim) == 2:
            value = _b64(claim[1], "state value")
        elif claim[0] == "absent" and len(claim) == 3:
            other = (_b64(claim[1], "leaf key"), _b64(claim[2], "leaf value"))
            if not 1 <= len(other[0]) <= MAX_STATE_KEY_BYTES or other[0] == key:
                raise _fail(AuditPart.FORMAT, "the leaf of an absent proof is of another key")
        elif claim != ["absent"]:
            raise _fail(AuditPart.FORMAT, "the claim line is 'present <value>', 'absent' or "
                        "'absent <leaf key> <leaf value>'")
        for part in (value, None if other is None else other[1]):
            if part is not None and len(part) > MAX_STATE_VALUE_BYTES:
                raise _fail(AuditPart.FORMAT, f"a state value is over {MAX_STATE_VALUE_BYTES} bytes")
        if len(lines) - 3 > smt.MAX_DEPTH:
            raise _fail(AuditPart.FORMAT, f"more than {smt.MAX_DEPTH} hashes on a state path")
        siblings = tuple(_hash_line(line, "state proof hash") for line in lines[3:])
        return cls(key, value, other, siblings, note)


@dataclass(frozen=True)
class StateFact:
    """Proved: at ``checkpoint``, the state maps ``key`` to ``value`` (None: absent)."""

    checkpoint: VerifiedCheckpoint
    key: bytes
    value: bytes | None

    def to_json(self) -> dict[str, Any]:
        return {"proof": "state", "key": self.key.hex(),
                "value": None if self.value is None else self.value.hex(),
                "fact": describe_state(self.key, self.value), "checkpoint": self.checkpoint.to_json()}


def describe_state(key: bytes, value: bytes | None) -> dict[str, Any]:
    """What a state entry means (specs/ledger.md §7), absent ones included."""
    prefix, rest = key[:1], key[1:]
    if prefix == BALANCE and len(rest) == 32:
        return {"kind": "balance", "account": rest.hex(), "balance": u64_or_zero(value)}
    if prefix in (OWNER, LISTING) and len(rest) == 40:
        where = {"asset": str(CID(rest[:36])), "edition": int.from_bytes(rest[36:], "big")}
        if prefix == OWNER:
            return {"kind": "owner", **where, "owner": None if value is None else value.hex()}
        listing = None if value is None else Listing.from_bytes(value)
        return {"kind": "listing", **where, "listing": None if listing is None else {
            "seller": listing.seller.hex(), "price": listing.price,
            "listing_id": str(CID(listing.listing_id))}}
    if prefix == SUPPLY and not rest:
        return {"kind": "supply", "supply": u64_or_zero(value)}
    if prefix == ASSET and len(rest) == 36:
        asset = None if value is None else Asset.from_bytes(value)
        return {"kind": "asset", "asset": str(CID(rest)), "record": None if asset is None else {
            "creator": asset.creator.hex(), "editions": asset.editions,
            "royalty_bps": asset.royalty_bps, "artifact": str(asset.artifact)}}
    if prefix == HEAD and len(rest) == 32:
        return {"kind": "head", "account": rest.hex(), "seq": None if value is None else
                int.from_bytes(value[:8], "big"), "tx": None if value is None else str(CID(value[8:]))}
    if prefix == FROZEN and len(rest) == 32:
        return {"kind": "frozen", "account": rest.hex(),
                "from_seq": None if value is None else int.from_bytes(value, "big")}
    return {"kind": "unknown"}


def u64_or_zero(value: bytes | None) -> int:
    return 0 if value is None else int.from_bytes(value, "big")


def verify_state_bundle(text: str | bytes, key: str | NoteVerifier) -> StateFact:
    """Verify a state proof bundle offline: the checkpoint, then the walk of the key's path
    to the committed state root, which proves the claim (present, or absent)."""
    bundle = StateProofBundle.parse(text)
    verified = open_checkpoint(bundle.signed_checkpoint, key)
    try:
        value = smt.verify_proof(verified.state.root, bundle.proof)
    except ValueError as exc:
        raise _fail(AuditPart.STATE_PROOF, f"the proof of the key does not lead to the "
                    f"committed state root: {exc}") from None
    return StateFact(verified, bundle.key, value)


def verify_bundle(text: str | bytes, key: str | NoteVerifier) -> EntryProof | StateFact:
    """An inclusion bundle or a state proof bundle, told apart by their first line."""
    body = _text(text, "bundle", MAX_ANY_BUNDLE_BYTES)
    first = body.partition("\n")[0]
    if first == TLOG_PROOF_HEADER:
        return verify_inclusion_bundle(body, key)
    if first == STATE_PROOF_HEADER:
        return verify_state_bundle(body, key)
    raise _fail(AuditPart.FORMAT, f"not a ledger proof bundle: the first line is neither "
                f"{TLOG_PROOF_HEADER} nor {STATE_PROOF_HEADER}")


# --- consistency ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsistencyBundle:
    """The consistency proof from a tree of ``old_size`` to the tree of the checkpoint."""

    old_size: int
    proof: tuple[bytes, ...]
    signed_checkpoint: str

    def to_text(self) -> str:
        lines = [CONSISTENCY_HEADER, f"old {self.old_size}", *(_b64e(h) for h in self.proof)]
        return "\n".join(lines) + "\n\n" + self.signed_checkpoint

    @classmethod
    def parse(cls, text: str | bytes) -> ConsistencyBundle:
        lines, note = _split_bundle(_text(text, "consistency bundle", MAX_BUNDLE_BYTES),
                                    CONSISTENCY_HEADER, "consistency bundle")
        if len(lines) < 2 or not lines[1].startswith("old "):
            raise _fail(AuditPart.FORMAT, "consistency bundle has no 'old <size>' line")
        if len(lines) - 2 > MAX_PROOF_HASHES * 2:
            raise _fail(AuditPart.FORMAT, "too many consistency proof hashes")
        return cls(_decimal(lines[1][len("old "):], "old size"),
                   tuple(_hash_line(line, "consistency proof hash") for line in lines[2:]), note)


def parse_proof_lines(text: str | bytes) -> tuple[bytes, ...]:
    """A bare proof: one base64 hash per line (the form of ``--proof FILE``)."""
    body = _text(text, "proof file", MAX_BUNDLE_BYTES)
    lines = body.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_PROOF_HASHES * 2:
        raise _fail(AuditPart.FORMAT, "too many proof hashes")
    return tuple(_hash_line(line, f"proof hash {n}") for n, line in enumerate(lines))


def signed_checkpoint_of(text: str | bytes) -> str:
    """The signed checkpoint in a file: a bare note, or the one inside any ledger bundle."""
    body = _text(text, "checkpoint file", MAX_ANY_BUNDLE_BYTES)
    first = body.partition("\n")[0]
    if first in (TLOG_PROOF_HEADER, STATE_PROOF_HEADER, CONSISTENCY_HEADER):
        return body.partition("\n\n")[2]
    return body


@dataclass(frozen=True)
class ConsistencyResult:
    old: VerifiedCheckpoint
    new: VerifiedCheckpoint

    def to_json(self) -> dict[str, Any]:
        return {"proof": "consistency", "old": self.old.to_json(), "new": self.new.to_json()}


def verify_consistency(old: str | bytes, new: str | bytes, key: str | NoteVerifier,
                       proof: Sequence[bytes] | None = None) -> ConsistencyResult:
    """Check that the log of checkpoint ``new`` extends that of ``old``. ``old`` is a signed
    checkpoint (or any bundle holding one); ``new`` a consistency bundle from ``old``'s size,
    or a signed checkpoint with ``proof`` given separately (none needed for equal sizes)."""
    old_checked = open_checkpoint(signed_checkpoint_of(old), key)
    new_text = _text(new, "new checkpoint", MAX_ANY_BUNDLE_BYTES)
    if new_text.startswith(CONSISTENCY_HEADER + "\n"):
        if proof is not None:
            raise ValueError("give the proof either inside the consistency bundle or as --proof")
        bundle = ConsistencyBundle.parse(new_text)
        new_checked = open_checkpoint(bundle.signed_checkpoint, key)
        hashes: Sequence[bytes] = bundle.proof
        if bundle.old_size != old_checked.size:
            raise _fail(AuditPart.CONSISTENCY, f"the bundle proves consistency from size "
                        f"{bundle.old_size}, the old checkpoint has size {old_checked.size}")
    else:
        new_checked = open_checkpoint(signed_checkpoint_of(new_text), key)
        hashes = () if proof is None else proof
    check_consistent(old_checked, new_checked, hashes)
    return ConsistencyResult(old_checked, new_checked)


def check_consistent(old: VerifiedCheckpoint, new: VerifiedCheckpoint,
                     proof: Sequence[bytes]) -> None:
    if old.checkpoint.origin != new.checkpoint.origin:
        raise _fail(AuditPart.ORIGIN, f"the checkpoints are of two logs: "
                    f"{old.checkpoint.origin!r} and {new.checkpoint.origin!r}")
    if new.size < old.size:
        raise _fail(AuditPart.CONSISTENCY, f"the new checkpoint (size {new.size}) is smaller than "
                    f"the old one (size {old.size}): give them in order")
    if new.size == old.size:
        if (new.root, new.state) != (old.root, old.state):
            raise _fail(AuditPart.CONSISTENCY, f"the log forked: two signed checkpoints of size "
                        f"{new.size} with different roots")
        return
    if old.size == 0:
        return  # every tree extends the empty tree
    if not proof:
        raise _fail(AuditPart.CONSISTENCY, f"a consistency proof from size {old.size} to "
                    f"{new.size} is needed (a consistency bundle, or --proof)")
    try:
        merkle.verify_consistency(HASHER, old.size, new.size, list(proof), old.root, new.root)
    except VerificationError as exc:
        raise _fail(AuditPart.CONSISTENCY, f"size {old.size} -> {new.size}: {exc}") from None


# --- replay of an export (export.py holds the format and the replay) --------------------------


def replay_export(stream: BinaryIO, key: str | NoteVerifier | None = None) -> ReplayReport:
    """Replay an export CAR from genesis (:func:`n3xus.ledger.export.replay_export`)."""
    from .export import replay_export as replay  # export.py imports this module

    return replay(stream, key)
