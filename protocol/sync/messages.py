"""Messages of ledger sync (``specs/ledger.md`` §14): plain dataclasses with a strict
DAG-CBOR form (``canon.codec``), so the node can frame them and the simulation can pass
them as objects.

Each message is a map ``{"t": <type text>, ...fields}``; decoding is strict (exact keys,
types, lengths and limits) and fails with :class:`MessageError` (a ValueError).

| type | fields | meaning |
|---|---|---|
| ``gossip`` | ``e``: list of entry bytes | new entries (transactions, fraud proofs) |
| ``digest`` | ``b``: list of ``BUCKETS`` 32-byte hashes | anti-entropy: my set, per bucket |
| ``summary`` | ``b``: bucket numbers, ``a``: rows ``[account, digest, next, freeze]`` | my accounts in the buckets that differ |
| ``pull`` | ``a``: account, ``s``: first seq | send me this account's chain from seq ``s`` |
| ``chain`` | ``a``: account, ``e``: list of entry bytes | an account's entries, by seq |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError
from n3xus.protocol.errors import MessageError

# Anti-entropy buckets (by the account's first four bits): a digest is 16 hashes, small
# enough to send every round, fine enough that one differing account costs one bucket.
BUCKETS: Final = 16
ACCOUNT_BYTES: Final = 32
DIGEST_BYTES: Final = 32
# Entries per gossip or chain message: with 16 KiB envelopes and 32 KiB proofs this keeps a
# message under the framing's limits; a longer chain comes over several pulls.
MAX_ENTRIES: Final = 64
MAX_ENTRY_BYTES: Final = 32_832  # the largest fraud proof (ledger MAX_FRAUD_PROOF_BYTES)
# Summary rows per message: one bucket of a network with a million accounts holds ~62k;
# a summary lists at most this many, the rest comes in later rounds.
MAX_SUMMARY_ROWS: Final = 4096
MAX_SEQ: Final = 2**63 - 1


@dataclass(frozen=True)
class Gossip:
    entries: tuple[bytes, ...]


@dataclass(frozen=True)
class Digest:
    buckets: tuple[bytes, ...]


@dataclass(frozen=True)
class SummaryRow:
    account: bytes
    digest: bytes
    next_seq: int  # first seq this node has no transaction at (its contiguous chain length)
    freeze: int | None  # the account's freeze seq at this node


@dataclass(frozen=True)
class Summary:
    buckets: tuple[int, ...]  # the buckets that differed, ascending
    rows: tuple[SummaryRow, ...]  # this node's accounts in them, ascending


@dataclass(frozen=True)
class Pull:
    account: bytes
    from_seq: int


@dataclass(frozen=True)
class Chain:
    account: bytes
    entries: tuple[bytes, ...]


Message = Gossip | Digest | Summary | Pull | Chain


def _fail(message: str) -> MessageError:
    return MessageError(f"ledger sync: {message}")


def _entries(value: Any) -> tuple[bytes, ...]:
    if type(value) is not list or len(value) > MAX_ENTRIES:
        raise _fail(f"entries are a list of at most {MAX_ENTRIES}")
    if not all(type(item) is bytes and 0 < len(item) <= MAX_ENTRY_BYTES for item in value):
        raise _fail(f"each entry is 1..{MAX_ENTRY_BYTES} bytes")
    return tuple(value)


def _account(value: Any) -> bytes:
    if type(value) is not bytes or len(value) != ACCOUNT_BYTES:
        raise _fail("an account is 32 bytes")
    return value


def _seq(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise _fail("a seq is an integer 0..2**63-1")
    return value


def to_value(message: Message) -> dict[str, Any]:
    if isinstance(message, Gossip):
        return {"t": "gossip", "e": list(message.entries)}
    if isinstance(message, Digest):
        return {"t": "digest", "b": list(message.buckets)}
    if isinstance(message, Summary):
        return {"t": "summary", "b": list(message.buckets),
                "a": [[row.account, row.digest, row.next_seq, row.freeze] for row in message.rows]}
    if isinstance(message, Pull):
        return {"t": "pull", "a": message.account, "s": message.from_seq}
    return {"t": "chain", "a": message.account, "e": list(message.entries)}


def encode_message(message: Message) -> bytes:
    return encode(to_value(message))


def _keys(value: dict[str, Any], keys: set[str]) -> None:
    if set(value) != keys:
        raise _fail(f"a {value.get('t')} message has exactly the keys {sorted(keys)}")


def from_value(value: Any) -> Message:
    if type(value) is not dict or type(value.get("t")) is not str:
        raise _fail("a message is a map with a text 't'")
    kind = value["t"]
    if kind == "gossip":
        _keys(value, {"t", "e"})
        return Gossip(_entries(value["e"]))
    if kind == "digest":
        _keys(value, {"t", "b"})
        buckets = value["b"]
        if (type(buckets) is not list or len(buckets) != BUCKETS
                or not all(type(b) is bytes and len(b) == DIGEST_BYTES for b in buckets)):
            raise _fail(f"a digest is {BUCKETS} hashes of {DIGEST_BYTES} bytes")
        return Digest(tuple(buckets))
    if kind == "summary":
        _keys(value, {"t", "b", "a"})
        buckets = value["b"]
        if (type(buckets) is not list or not 1 <= len(buckets) <= BUCKETS
                or not all(type(b) is int and 0 <= b < BUCKETS for b in buckets)
                or buckets != sorted(set(buckets))):
            raise _fail(f"summary buckets are 1..{BUCKETS} ascending numbers below {BUCKETS}")
        rows = value["a"]
        if type(rows) is not list or len(rows) > MAX_SUMMARY_ROWS:
            raise _fail(f"a summary has at most {MAX_SUMMARY_ROWS} rows")
        parsed = []
        for row in rows:
            if type(row) is not list or len(row) != 4:
                raise _fail("a summary row is [account, digest, next, freeze]")
            account, digest, next_seq, freeze = row
            if type(digest) is not bytes or len(digest) != DIGEST_BYTES:
                raise _fail("a summary digest is 32 bytes")
            parsed.append(SummaryRow(_account(account), digest, _seq(next_seq),
                                     None if freeze is None else _seq(freeze)))
        return Summary(tuple(buckets), tuple(parsed))
    if kind == "pull":
        _keys(value, {"t", "a", "s"})
        return Pull(_account(value["a"]), _seq(value["s"]))
    if kind == "chain":
        _keys(value, {"t", "a", "e"})
        return Chain(_account(value["a"]), _entries(value["e"]))
    raise _fail(f"unknown message type {kind[:32]!r}")


def decode_message(data: bytes) -> Message:
    """Strictly decode one message; MessageError (a ValueError) on anything else."""
    try:
        value = decode(bytes(data))
    except (CanonError, ValueError) as exc:
        raise _fail(f"not canonical DAG-CBOR: {exc}") from None
    return from_value(value)
