"""Ledger transactions: the signed envelope, strict decoding, signing and verification.

Wire form (``specs/ledger.md`` §Transactions). A transaction is the canonical DAG-CBOR map::

    {"v": 1, "op": str, "seq": int, "args": {...}, "prev": CID | null, "time": int,
     "account": bytes(32), "network": CID}

and travels inside the envelope ``{"tx": <that map>, "sig": bytes(64)}``. The signature is
ed25519 by ``account`` over ``TX_SIGNATURE_TAG || encode(tx map)``; the transaction id is the
CIDv1 (dag-cbor, BLAKE3-256) of ``encode(tx map)``, so it does not depend on the signature.

Decoding has two paths that accept exactly the same inputs and return equal results:

* a *fast path* for the common operations: one compiled regular expression per operation
  spells out the whole canonical byte layout (every header, key and length literally,
  integers only in minimal form), because the ledger decodes every transaction of the
  network and the general decoder costs more than the rest of the validation together;
* the *general path*: ``canon.codec.decode`` (strict DAG-CBOR) plus the schema checks. It
  handles everything the fast path declines (mints, other CID kinds, and every invalid
  input, so the rejection reason always comes from one place).

``tests/test_ledger_tx.py`` checks the two paths against each other on random and mutated
inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import IntEnum, StrEnum
from typing import Any, Final

from blake3 import blake3
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from n3xus.canon.cid import CID
from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError

from .errors import MalformedTxError, Reason
from .genesis import ACCOUNT_KEY_BYTES, BPS_WHOLE, MAX_AMOUNT

# Domain separation of ledger transaction signatures from every other ed25519 signature made
# with the same key (canon log entries, checkpoints, libp2p); the version is part of the tag.
TX_SIGNATURE_TAG: Final = b"n3xus/ledger-tx/v1\x00"
TX_VERSION: Final = 1
SIGNATURE_BYTES: Final = 64
# Largest envelope: a mint with its metadata fits comfortably; a transfer is ~300 bytes.
MAX_TX_BYTES: Final = 16 * 1024
# Largest encoded mint metadata map. Descriptions and a few attributes; the artifact itself
# is referenced by CID, never embedded.
MAX_METADATA_BYTES: Final = 8 * 1024
# Sequence numbers and times are signed-64-bit safe for other implementations.
MAX_SEQ: Final = 2**63 - 1
MAX_TIME_MS: Final = 2**63 - 1
# Edition numbers are stored as u32 in state keys.
MAX_EDITION: Final = 2**32 - 1
# Binary prefix of every transaction id: CIDv1, dag-cbor (0x71), BLAKE3-256 (0x1e, 32 bytes).
TXID_PREFIX: Final = b"\x01\x71\x1e\x20"
TXID_BYTES: Final = len(TXID_PREFIX) + 32

TX_FIELDS: Final = frozenset({"v", "op", "seq", "args", "prev", "time", "account", "network"})


class Op(StrEnum):
    """Operations of ledger version 1 (the registry of specs/ledger.md §Operations)."""

    ISSUE = "issue"
    TRANSFER = "transfer"
    TIP = "tip"
    MINT = "mint"
    TRANSFER_ASSET = "transfer-asset"
    LIST = "list"
    DELIST = "delist"
    BUY = "buy"


class Kind(IntEnum):
    """Type of an argument field (specs/ledger.md §Argument kinds)."""

    ACCOUNT = 1  # bytes, exactly 32 (an ed25519 public key)
    AMOUNT = 2  # int, 1..MAX_AMOUNT ("bad-amount" if <= 0, "overflow" if larger)
    EDITION = 3  # int, 1..MAX_EDITION
    LINK = 4  # a CID
    OPTIONAL_LINK = 5  # a CID or null
    BPS = 6  # int, 0..10000
    COUNT = 7  # int, 1..MAX_EDITION (an edition count)
    METADATA = 8  # a map, no floats anywhere inside, encoded size <= MAX_METADATA_BYTES


def _canonical_key_order(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda name: (len(name.encode()), name.encode())))


_ARG_KINDS: Final[dict[Op, dict[str, Kind]]] = {
    Op.ISSUE: {"to": Kind.ACCOUNT, "amount": Kind.AMOUNT},
    Op.TRANSFER: {"to": Kind.ACCOUNT, "amount": Kind.AMOUNT},
    Op.TIP: {"to": Kind.ACCOUNT, "ref": Kind.OPTIONAL_LINK, "amount": Kind.AMOUNT},
    Op.MINT: {"artifact": Kind.LINK, "metadata": Kind.METADATA, "editions": Kind.COUNT,
              "royalty_bps": Kind.BPS, "creator_bps": Kind.BPS, "platform_bps": Kind.BPS},
    Op.TRANSFER_ASSET: {"to": Kind.ACCOUNT, "asset": Kind.LINK, "edition": Kind.EDITION},
    Op.LIST: {"asset": Kind.LINK, "price": Kind.AMOUNT, "edition": Kind.EDITION},
    Op.DELIST: {"asset": Kind.LINK, "edition": Kind.EDITION},
    Op.BUY: {"asset": Kind.LINK, "price": Kind.AMOUNT, "edition": Kind.EDITION,
             "listing": Kind.LINK},
}
# Argument fields of each operation in canonical key order: the order they are encoded in,
# and the order in which the general path checks them (so the first fault is well defined).
ARG_FIELDS: Final[dict[Op, tuple[tuple[str, Kind], ...]]] = {
    op: tuple((name, kinds[name]) for name in _canonical_key_order(tuple(kinds)))
    for op, kinds in _ARG_KINDS.items()
}


class Tx:
    """A decoded, well-formed transaction (its signature not yet verified).

    ``id``, ``network`` and ``prev`` are binary CIDs (bytes; ``cid``/``network_cid``/
    ``prev_cid`` give CID objects); ``args`` holds DAG-CBOR data model values (links as
    :class:`CID`). ``signed`` is the canonical tx-map encoding the signature covers, ``raw``
    the whole envelope as received.
    """

    __slots__ = ("raw", "signed", "sig", "id", "network", "account", "seq", "prev", "time",
                 "op", "args")

    def __init__(self, raw: bytes, signed: bytes, sig: bytes, network: bytes, account: bytes,
                 seq: int, prev: bytes | None, time: int, op: Op, args: dict[str, Any]) -> None:
        self.raw = raw
        self.signed = signed
        self.sig = sig
        self.id = TXID_PREFIX + blake3(signed).digest()
        self.network = network
        self.account = account
        self.seq = seq
        self.prev = prev
        self.time = time
        self.op = op
        self.args = args

    @property
    def cid(self) -> CID:
        return CID(self.id)

    @property
    def network_cid(self) -> CID:
        return CID(self.network)

    @property
    def prev_cid(self) -> CID | None:
        return None if self.prev is None else CID(self.prev)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view (hex keys, CID text) for the CLI and the HTTP API."""
        return {
            "id": str(self.cid), "network": str(self.network_cid), "account": self.account.hex(),
            "seq": self.seq, "prev": None if self.prev is None else str(self.prev_cid),
            "time": self.time, "op": self.op.value, "args": _json_value(self.args),
        }

    def __repr__(self) -> str:
        return f"Tx({self.op.value} {self.account.hex()[:16]}… seq={self.seq} id={self.cid})"


def _json_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, CID):
        return str(value)
    return value


def _malformed(message: str) -> MalformedTxError:
    return MalformedTxError(Reason.MALFORMED, message)


# --- fast path ------------------------------------------------------------------------------
#
# For each operation whose arguments are all of simple kinds, one regular expression spells
# out the complete canonical encoding of an envelope: every header, key and length literally,
# integers only in their minimal form. A match is one C call; what remains in Python is
# turning the captured integers into values and checking their ranges.


class _NotFast(Exception):
    """Internal: the input is not in the fast path's layout; use the general path."""


# {"tx": {8 entries: "v": 1, "op": ...   (keys in canonical order: v, op, seq, args, prev,
# time, account, network)
_ENVELOPE_HEAD: Final = b"\xa2\x62tx\xa8\x61v\x01\x62op"
_ENVELOPE_HEAD_LEN: Final = len(_ENVELOPE_HEAD)
# The tx map starts after {"tx": (4 bytes) ...
_TX_MAP_START: Final = 4
# ... and is followed by "sig": bytes(64).
_SIG_TRAILER: Final = b"\x63sig\x58\x40"
_SIG_PART_LEN: Final = len(_SIG_TRAILER) + SIGNATURE_BYTES
# A link to a CIDv1 dag-cbor BLAKE3-256: tag 42, bytes(37) = 0x00 + 36-byte binary CID.
_LINK36_HEAD: Final = b"\xd8\x2a\x58\x25\x00"

# A CBOR unsigned integer in its shortest form: the value inline (< 24), or a 1/2/4/8-byte
# argument that would not fit the next smaller form (>= 24, >= 2**8, >= 2**16, >= 2**32).
_UINT: Final = (rb"([\x00-\x17]|\x18[\x18-\xff]|\x19[\x01-\xff].|"
                rb"\x1a(?:[\x01-\xff].|\x00[\x01-\xff])..|\x1b(?!\x00\x00\x00\x00)........)")
_LINK36: Final = re.escape(_LINK36_HEAD) + b"(" + re.escape(TXID_PREFIX) + b".{32})"
_KIND_PATTERNS: Final[dict[Kind, bytes]] = {
    Kind.ACCOUNT: rb"\x58\x20(.{32})",
    Kind.AMOUNT: _UINT,
    Kind.EDITION: _UINT,
    Kind.LINK: _LINK36,
    Kind.OPTIONAL_LINK: rb"(?:\xf6|" + _LINK36 + b")",
}


def _text_head(text: str) -> bytes:
    """The CBOR encoding of a short text (every key and op name here is under 24 bytes)."""
    encoded = text.encode()
    if len(encoded) >= 24:
        raise ValueError(f"{text!r} is too long for a one-byte text header")
    return bytes((0x60 + len(encoded),)) + encoded


def _fast_pattern(op: Op, fields: tuple[tuple[str, Kind], ...]) -> re.Pattern[bytes]:
    parts = [re.escape(_ENVELOPE_HEAD + _text_head(op.value) + _text_head("seq")), _UINT,
             re.escape(_text_head("args") + bytes((0xA0 + len(fields),)))]
    for name, kind in fields:
        parts += [re.escape(_text_head(name)), _KIND_PATTERNS[kind]]
    parts += [re.escape(_text_head("prev")), _KIND_PATTERNS[Kind.OPTIONAL_LINK],
              re.escape(_text_head("time")), _UINT,
              re.escape(_text_head("account")), _KIND_PATTERNS[Kind.ACCOUNT],
              re.escape(_text_head("network")), _LINK36,
              re.escape(_SIG_TRAILER), rb"(.{64})"]
    return re.compile(b"".join(parts), re.DOTALL)


# Keyed by the encoded op text (header included): (op, pattern, argument names and kinds).
_FAST_OPS: Final[dict[bytes, tuple[Op, re.Pattern[bytes], tuple[tuple[str, Kind], ...]]]] = {
    _text_head(op.value): (op, _fast_pattern(op, fields), fields)
    for op, fields in ARG_FIELDS.items()
    if all(kind in _KIND_PATTERNS for _, kind in fields)
}


# Plain-int copies of the kinds the fast loop tests (an enum attribute lookup per test would
# cost as much as the rest of the loop).
_ACCOUNT: Final = int(Kind.ACCOUNT)
_AMOUNT: Final = int(Kind.AMOUNT)
_EDITION: Final = int(Kind.EDITION)
# Per fast operation: (argument name, kind, largest value for integer kinds).
_FAST_FIELDS: Final[dict[Op, tuple[tuple[str, int, int], ...]]] = {
    op: tuple((name, int(kind), MAX_AMOUNT if kind is Kind.AMOUNT else MAX_EDITION)
              for name, kind in fields)
    for op, _, fields in _FAST_OPS.values()
}


def _decode_fast(data: bytes) -> Tx:
    """Match the fast layout or raise _NotFast (or IndexError on a short input)."""
    op_end = _ENVELOPE_HEAD_LEN + 1 + data[_ENVELOPE_HEAD_LEN] - 0x60
    layout = _FAST_OPS.get(data[_ENVELOPE_HEAD_LEN:op_end])
    if layout is None:
        raise _NotFast
    op, pattern, _ = layout
    match = pattern.fullmatch(data)
    if match is None:
        raise _NotFast
    groups = match.groups()
    args: dict[str, Any] = {}
    position = 1
    for name, kind, high in _FAST_FIELDS[op]:
        raw = groups[position]
        position += 1
        if kind == _ACCOUNT:
            args[name] = raw
        elif kind == _AMOUNT or kind == _EDITION:
            value = raw[0] if len(raw) == 1 else int.from_bytes(raw[1:], "big")
            if not 0 < value <= high:
                raise _NotFast
            args[name] = value
        else:  # a link, or an optional link that is null
            args[name] = None if raw is None else CID(raw)
    raw_seq, prev, raw_time, account, network, sig = groups[0], *groups[position:]
    seq = raw_seq[0] if len(raw_seq) == 1 else int.from_bytes(raw_seq[1:], "big")
    time = raw_time[0] if len(raw_time) == 1 else int.from_bytes(raw_time[1:], "big")
    if seq > MAX_SEQ or time > MAX_TIME_MS or (seq == 0) != (prev is None):
        raise _NotFast
    return Tx(data, data[_TX_MAP_START:len(data) - _SIG_PART_LEN], sig, network, account, seq,
              prev, time, op, args)


# --- general path ---------------------------------------------------------------------------


def _check_int(value: object, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _malformed(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


def _contains_float(value: object) -> bool:
    kind = type(value)
    if kind is float:
        return True
    if kind is dict:
        return any(_contains_float(item) for item in value.values())  # type: ignore[attr-defined]
    if kind is list:
        return any(_contains_float(item) for item in value)  # type: ignore[attr-defined]
    return False


def _check_arg(op: Op, name: str, kind: Kind, value: object) -> object:
    where = f"{op.value} argument {name!r}"
    if kind is Kind.AMOUNT:
        if type(value) is not int:
            raise _malformed(f"{where} must be an integer amount, got {type(value).__name__}")
        if value <= 0:
            raise MalformedTxError(Reason.BAD_AMOUNT, f"{where} must be positive, got {value}")
        if value > MAX_AMOUNT:
            raise MalformedTxError(Reason.OVERFLOW, f"{where} {value} is over {MAX_AMOUNT}")
    elif kind is Kind.ACCOUNT:
        if type(value) is not bytes or len(value) != ACCOUNT_KEY_BYTES:
            raise _malformed(f"{where} must be a {ACCOUNT_KEY_BYTES}-byte account key")
    elif kind is Kind.EDITION or kind is Kind.COUNT:
        _check_int(value, where, 1, MAX_EDITION)
    elif kind is Kind.BPS:
        _check_int(value, where, 0, BPS_WHOLE)
    elif kind is Kind.LINK or (kind is Kind.OPTIONAL_LINK and value is not None):
        if type(value) is not CID:
            raise _malformed(f"{where} must be a CID link")
    elif kind is Kind.METADATA:
        if type(value) is not dict:
            raise _malformed(f"{where} must be a map")
        if _contains_float(value):
            raise _malformed(f"{where} contains a float (the ledger has no floats)")
        size = len(encode(value))
        if size > MAX_METADATA_BYTES:
            raise _malformed(f"{where} is {size} bytes encoded, over {MAX_METADATA_BYTES}")
    return value


def _decode_general(data: bytes) -> Tx:
    try:
        envelope = decode(data)
    except CanonError as exc:
        raise _malformed(f"not canonical DAG-CBOR: {exc}") from None
    if type(envelope) is not dict or envelope.keys() != {"tx", "sig"}:
        raise _malformed('an envelope is a map with exactly the keys "tx" and "sig"')
    tx, sig = envelope["tx"], envelope["sig"]
    if type(tx) is not dict:
        raise _malformed('"tx" must be a map')
    version = tx.get("v")
    if type(version) is not int:
        raise _malformed('the tx map needs an integer "v"')
    if version != TX_VERSION:
        raise MalformedTxError(Reason.UNSUPPORTED_VERSION, f"transaction version {version}")
    if tx.keys() != TX_FIELDS:
        raise _malformed(f"tx fields must be exactly {sorted(TX_FIELDS)}, got {sorted(tx)}")
    if type(sig) is not bytes or len(sig) != SIGNATURE_BYTES:
        raise _malformed(f'"sig" must be {SIGNATURE_BYTES} bytes')
    op_text, seq, prev, args = tx["op"], tx["seq"], tx["prev"], tx["args"]
    if type(op_text) is not str:
        raise _malformed('"op" must be a text string')
    _check_int(seq, '"seq"', 0, MAX_SEQ)
    if prev is not None and type(prev) is not CID:
        raise _malformed('"prev" must be a CID link or null')
    if (seq == 0) != (prev is None):
        raise _malformed('"prev" must be null exactly when "seq" is 0')
    time = _check_int(tx["time"], '"time"', 0, MAX_TIME_MS)
    account = tx["account"]
    if type(account) is not bytes or len(account) != ACCOUNT_KEY_BYTES:
        raise _malformed(f'"account" must be a {ACCOUNT_KEY_BYTES}-byte ed25519 key')
    if type(tx["network"]) is not CID:
        raise _malformed('"network" must be a CID link')
    if type(args) is not dict:
        raise _malformed('"args" must be a map')
    try:
        op = Op(op_text)
    except ValueError:
        raise MalformedTxError(Reason.UNKNOWN_OP, f"unknown operation {op_text!r}") from None
    fields = ARG_FIELDS[op]
    if args.keys() != {name for name, _ in fields}:
        raise _malformed(f"{op.value} arguments must be exactly {[name for name, _ in fields]}, "
                         f"got {sorted(args)}")
    for name, kind in fields:
        _check_arg(op, name, kind, args[name])
    # Canonical DAG-CBOR of {"tx": m, "sig": s} is a2 62 "tx" <m> 63 "sig" 58 40 <s>: the
    # signed tx-map bytes are a slice of the input, no re-encoding needed.
    signed = data[_TX_MAP_START:len(data) - _SIG_PART_LEN]
    if data[len(data) - _SIG_PART_LEN:len(data) - SIGNATURE_BYTES] != _SIG_TRAILER:
        raise _malformed("envelope layout")  # pragma: no cover - implied by canonical decode
    return Tx(data, signed, sig, bytes(tx["network"]), account, seq,
              None if prev is None else bytes(prev), time, op, args)


def decode_tx(data: bytes) -> Tx:
    """Decode a transaction envelope strictly; raises :class:`MalformedTxError` (a
    ValueError) with reason malformed, unsupported-version, unknown-op, bad-amount or
    overflow. The signature is *not* checked here (see :func:`verify_tx_signature`)."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) > MAX_TX_BYTES:
        raise _malformed(f"envelope of {len(data)} bytes is over {MAX_TX_BYTES}")
    try:
        return _decode_fast(data)
    except (_NotFast, IndexError):
        return _decode_general(data)


def decode_tx_general(data: bytes) -> Tx:
    """:func:`decode_tx` without the fast path (for differential tests and tools)."""
    if len(data) > MAX_TX_BYTES:
        raise _malformed(f"envelope of {len(data)} bytes is over {MAX_TX_BYTES}")
    return _decode_general(bytes(data))


def verify_tx_signature(tx: Tx) -> bool:
    """True when ``tx.sig`` is the account's ed25519 signature over the tagged tx map.

    libsodium's verification (crypto_sign_open = crypto_sign_verify_detached on the split
    input): canonical S, no small-order public key or R, canonical key encoding."""
    try:
        crypto_sign_open(tx.sig + TX_SIGNATURE_TAG + tx.signed, tx.account)
    except BadSignatureError:
        return False
    return True


# --- building and signing -------------------------------------------------------------------


def encode_tx_map(*, network: CID, account: bytes, seq: int, prev: CID | None, time_ms: int,
                  op: Op | str, args: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a tx map (what is signed and hashed into the id)."""
    return encode({
        "v": TX_VERSION, "op": str(op), "seq": seq, "args": dict(args), "prev": prev,
        "time": time_ms, "account": account, "network": network,
    })


def _sign(signing_key: SigningKey, network: CID, seq: int, prev: CID | None, time_ms: int,
          op: Op | str, args: Mapping[str, Any]) -> Tx:
    account = bytes(signing_key.verify_key)
    signed = encode_tx_map(network=network, account=account, seq=seq, prev=prev,
                           time_ms=time_ms, op=op, args=args)
    sig = signing_key.sign(TX_SIGNATURE_TAG + signed).signature
    return decode_tx(b"\xa2\x62tx" + signed + _SIG_TRAILER + sig)


def sign_tx(signing_key: SigningKey, *, network: CID, seq: int, prev: CID | None, time_ms: int,
            op: Op | str, args: Mapping[str, Any]) -> bytes:
    """A signed envelope, checked with :func:`decode_tx` (so a builder never hands out a
    transaction every validator would refuse as malformed)."""
    return _sign(signing_key, network, seq, prev, time_ms, op, args).raw


class AccountChain:
    """Signs one account's consecutive transactions, tracking ``seq`` and ``prev``.

    >>> chain = AccountChain(key, genesis.cid)
    >>> envelope = chain.sign(Op.TRANSFER, {"to": bob, "amount": 5}, time_ms=now)
    """

    __slots__ = ("_key", "account", "network", "seq", "prev")

    def __init__(self, signing_key: SigningKey, network: CID, seq: int = 0,
                 prev: CID | None = None) -> None:
        self._key = signing_key
        self.account = bytes(signing_key.verify_key)
        self.network = network
        self.seq = seq
        self.prev = prev

    def sign(self, op: Op | str, args: Mapping[str, Any], *, time_ms: int) -> bytes:
        """Sign the next transaction of the chain and advance past it."""
        tx = _sign(self._key, self.network, self.seq, self.prev, time_ms, op, args)
        self.prev = tx.cid
        self.seq += 1
        return tx.raw

    def sign_at(self, seq: int, prev: CID | None, op: Op | str, args: Mapping[str, Any], *,
                time_ms: int) -> bytes:
        """Sign at an explicit position without advancing (tests of replays and forks)."""
        return sign_tx(self._key, network=self.network, seq=seq, prev=prev, time_ms=time_ms,
                       op=op, args=args)

    def __repr__(self) -> str:  # never shows the secret key
        return f"AccountChain(account={self.account.hex()}, seq={self.seq})"
