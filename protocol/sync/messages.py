"""Messages of ledger sync (``specs/ledger.md`` §14, version 2): plain dataclasses with a
strict DAG-CBOR form (``canon.codec``), so the node can frame them and the simulation can
pass them as objects.

Each message is a map ``{"t": <type text>, ...fields}``; decoding is strict (exact keys,
types, lengths, orders and limits) and fails with :class:`MessageError` (a ValueError).

| type | fields | meaning |
|---|---|---|
| ``gossip`` | ``e``: list of entry bytes | new entries (transactions, fraud proofs) |
| ``query`` | ``r``: ranges ``[prefix, depth, fingerprint]`` | my fingerprints of these account ranges |
| ``summary`` | ``r``: per range that differs, its rows or its 16 sub-range fingerprints | the answer to one query |
| ``pull`` | ``a``: account, ``s``: first seq | send me this account's chain from seq ``s`` |
| ``chain`` | ``a``: account, ``e``: list of entry bytes | an account's entries, by seq |

An account *range* is the set of accounts whose first ``depth`` nibbles (4-bit halves of
bytes, high half first) are those of ``prefix`` (``ceil(depth / 2)`` bytes, the unused low
half of an odd depth's last byte zero). Range-based set reconciliation: a range whose
fingerprints differ is answered with its rows when it is small, else split into its 16
sub-ranges, one nibble deeper; see ``ranges.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError
from n3xus.protocol.errors import MessageError

ACCOUNT_BYTES: Final = 32
DIGEST_BYTES: Final = 32
# Entries per gossip or chain message: with 16 KiB envelopes and 32 KiB proofs this keeps a
# message under the framing's limits; a longer chain comes over several pulls.
MAX_ENTRIES: Final = 64
MAX_ENTRY_BYTES: Final = 32_832  # the largest fraud proof (ledger MAX_FRAUD_PROOF_BYTES)
MAX_GOSSIP_ENTRIES: Final = 256
"""Entries per gossip message. Gossipsub's cost is per message (measured on the 10-node
burst of bench/federation.py: ~1.3 ms of CPU per message per node against ~5 us per entry),
so a node publishes what it accepted in one message where it can; a receiver checks every
entry before forwarding the message, and 256 signature checks (~15 ms on one core) bound
what that adds to each hop."""
MAX_GOSSIP_BYTES: Final = 256 * 1024
"""Entry bytes per gossip message, all entries together: a message then fits gossipsub's
1 MiB RPC limit with room to spare, whatever its entries' sizes."""
MAX_SEQ: Final = 2**63 - 1
FANOUT: Final = 16
"""Sub-ranges of a split range: one nibble of the account. 16 fingerprints (272 bytes) per
split keep a split cheaper than listing even a handful of rows, and a million accounts need
only 4-5 levels (round trips) of splitting."""
MAX_DEPTH: Final = 2 * ACCOUNT_BYTES
"""Nibbles of an account: a range this deep holds one account and is always listed, so a
reconciliation ends after at most this many splits whatever the accounts (even ground ones
that share long prefixes)."""
MAX_RANGE_ROWS: Final = 16
"""Rows in a listed range: a range holding more is split instead. Measured
(bench/ledger_sync_ranges.py): 32 triples the bytes at a 1 % difference; 8 saves ~4 % of
them at 100,000 accounts but would split once more the ~15-account ranges of a million
(a round trip more)."""
MAX_QUERY_RANGES: Final = 256
"""Ranges per query (and so items per summary): a summary then holds at most 4,096 rows
(~330 KiB), well inside one frame, and answering one costs the responder a bounded amount."""
MAX_PUSHES_PER_SUMMARY: Final = 4096
"""Chains pushed for one summary: as many as a summary lists rows at most, so answering a
summary costs the initiator about what making it cost the responder, even when the peer
holds few accounts of a range where we hold many (the rest goes in later exchanges)."""
FINGERPRINT_BYTES: Final = 16
"""A range fingerprint: 128 bits make an accidental match of two different ranges
negligible (the sum inside is 256 bits, ranges.py)."""


@dataclass(frozen=True)
class Gossip:
    entries: tuple[bytes, ...]


@dataclass(frozen=True)
class SummaryRow:
    account: bytes
    digest: bytes
    next_seq: int  # first seq this node has no transaction at (its contiguous chain length)
    freeze: int | None  # the account's freeze seq at this node


@dataclass(frozen=True, order=True)
class Range:
    """The accounts whose first ``depth`` nibbles are those of ``prefix``."""

    prefix: bytes
    depth: int

    def contains(self, account: bytes) -> bool:
        whole = self.depth // 2
        if account[:whole] != self.prefix[:whole]:
            return False
        return self.depth % 2 == 0 or account[whole] >> 4 == self.prefix[whole] >> 4

    def child(self, nibble: int) -> Range:
        """The sub-range one nibble deeper whose next nibble is ``nibble``."""
        if self.depth % 2 == 0:
            return Range(self.prefix + bytes((nibble << 4,)), self.depth + 1)
        return Range(self.prefix[:-1] + bytes((self.prefix[-1] | nibble,)), self.depth + 1)


ROOT: Final = Range(b"", 0)


@dataclass(frozen=True)
class RangeFingerprint:
    range: Range
    fingerprint: bytes


@dataclass(frozen=True)
class RangeRows:
    """A range listed whole: every account the sender holds in it, ascending."""

    range: Range
    rows: tuple[SummaryRow, ...]


@dataclass(frozen=True)
class RangeSplit:
    """A range too large to list: the sender's fingerprints of its 16 sub-ranges."""

    range: Range
    children: tuple[bytes, ...]


@dataclass(frozen=True)
class Query:
    ranges: tuple[RangeFingerprint, ...]


@dataclass(frozen=True)
class Summary:
    items: tuple[RangeRows | RangeSplit, ...]


@dataclass(frozen=True)
class Pull:
    account: bytes
    from_seq: int


@dataclass(frozen=True)
class Chain:
    account: bytes
    entries: tuple[bytes, ...]


Message = Gossip | Query | Summary | Pull | Chain


def _fail(message: str) -> MessageError:
    return MessageError(f"ledger sync: {message}")


def _entries(value: Any, limit: int = MAX_ENTRIES) -> tuple[bytes, ...]:
    if type(value) is not list or len(value) > limit:
        raise _fail(f"entries are a list of at most {limit}")
    if not all(type(item) is bytes and 0 < len(item) <= MAX_ENTRY_BYTES for item in value):
        raise _fail(f"each entry is 1..{MAX_ENTRY_BYTES} bytes")
    return tuple(value)


def _gossip_entries(value: Any) -> tuple[bytes, ...]:
    entries = _entries(value, MAX_GOSSIP_ENTRIES)
    if not entries or sum(map(len, entries)) > MAX_GOSSIP_BYTES:
        raise _fail(f"a gossip message holds 1..{MAX_GOSSIP_ENTRIES} entries of at most "
                    f"{MAX_GOSSIP_BYTES} bytes in all")
    return entries


def _account(value: Any) -> bytes:
    if type(value) is not bytes or len(value) != ACCOUNT_BYTES:
        raise _fail("an account is 32 bytes")
    return value


def _seq(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise _fail("a seq is an integer 0..2**63-1")
    return value


def _range(prefix: Any, depth: Any) -> Range:
    if type(depth) is not int or not 0 <= depth <= MAX_DEPTH:
        raise _fail(f"a range depth is an integer 0..{MAX_DEPTH}")
    if type(prefix) is not bytes or len(prefix) != (depth + 1) // 2:
        raise _fail("a range prefix is ceil(depth / 2) bytes")
    if depth % 2 and prefix[-1] & 0x0F:
        raise _fail("the unused low nibble of a range prefix is zero")
    return Range(prefix, depth)


def _fingerprint(value: Any) -> bytes:
    if type(value) is not bytes or len(value) != FINGERPRINT_BYTES:
        raise _fail(f"a fingerprint is {FINGERPRINT_BYTES} bytes")
    return value


def _row(value: Any) -> SummaryRow:
    if type(value) is not list or len(value) != 4:
        raise _fail("a summary row is [account, digest, next, freeze]")
    account, digest, next_seq, freeze = value
    if type(digest) is not bytes or len(digest) != DIGEST_BYTES:
        raise _fail("a summary digest is 32 bytes")
    return SummaryRow(_account(account), digest, _seq(next_seq), None if freeze is None else _seq(freeze))


def _item(value: Any) -> RangeRows | RangeSplit:
    if type(value) is not dict or set(value) not in ({"p", "d", "a"}, {"p", "d", "c"}):
        raise _fail("a summary item is {p, d, a} (rows) or {p, d, c} (sub-ranges)")
    where = _range(value["p"], value["d"])
    if "c" in value:
        children = value["c"]
        if type(children) is not list or len(children) != FANOUT or where.depth == MAX_DEPTH:
            raise _fail(f"a split lists {FANOUT} fingerprints, above depth {MAX_DEPTH}")
        return RangeSplit(where, tuple(_fingerprint(child) for child in children))
    rows = value["a"]
    if type(rows) is not list or len(rows) > MAX_RANGE_ROWS:
        raise _fail(f"a listed range has at most {MAX_RANGE_ROWS} rows")
    parsed = tuple(_row(row) for row in rows)
    accounts = [row.account for row in parsed]
    if accounts != sorted(set(accounts)) or not all(where.contains(a) for a in accounts):
        raise _fail("listed rows are distinct accounts of the range, ascending")
    return RangeRows(where, parsed)


def to_value(message: Message) -> dict[str, Any]:
    if isinstance(message, Gossip):
        return {"t": "gossip", "e": list(message.entries)}
    if isinstance(message, Query):
        return {"t": "query", "r": [[r.range.prefix, r.range.depth, r.fingerprint]
                                    for r in message.ranges]}
    if isinstance(message, Summary):
        items: list[dict[str, Any]] = []
        for item in message.items:
            if isinstance(item, RangeRows):
                items.append({"p": item.range.prefix, "d": item.range.depth,
                              "a": [[r.account, r.digest, r.next_seq, r.freeze] for r in item.rows]})
            else:
                items.append({"p": item.range.prefix, "d": item.range.depth,
                              "c": list(item.children)})
        return {"t": "summary", "r": items}
    if isinstance(message, Pull):
        return {"t": "pull", "a": message.account, "s": message.from_seq}
    return {"t": "chain", "a": message.account, "e": list(message.entries)}


def gossip_messages(entries: Sequence[bytes]) -> list[Gossip]:
    """``entries`` as gossip messages, in order: each of at most :data:`MAX_GOSSIP_ENTRIES`
    entries and :data:`MAX_GOSSIP_BYTES` of entry bytes (an entry larger than that alone in
    its message: no entry of the ledger is)."""
    messages: list[Gossip] = []
    current: list[bytes] = []
    size = 0
    for entry in entries:
        if current and (len(current) >= MAX_GOSSIP_ENTRIES or size + len(entry) > MAX_GOSSIP_BYTES):
            messages.append(Gossip(tuple(current)))
            current, size = [], 0
        current.append(entry)
        size += len(entry)
    if current:
        messages.append(Gossip(tuple(current)))
    return messages


def encode_message(message: Message) -> bytes:
    return encode(to_value(message))


def _keys(value: dict[str, Any], keys: set[str]) -> None:
    if set(value) != keys:
        raise _fail(f"a {value.get('t')} message has exactly the keys {sorted(keys)}")


def _list(value: Any, least: int, what: str) -> list[Any]:
    if type(value) is not list or not least <= len(value) <= MAX_QUERY_RANGES:
        raise _fail(f"a {what} holds {least}..{MAX_QUERY_RANGES} ranges")
    return value


def from_value(value: Any) -> Message:
    if type(value) is not dict or type(value.get("t")) is not str:
        raise _fail("a message is a map with a text 't'")
    kind = value["t"]
    if kind == "gossip":
        _keys(value, {"t", "e"})
        return Gossip(_gossip_entries(value["e"]))
    if kind == "query":
        _keys(value, {"t", "r"})
        ranges = []
        for item in _list(value["r"], 1, "query"):
            if type(item) is not list or len(item) != 3:
                raise _fail("a queried range is [prefix, depth, fingerprint]")
            ranges.append(RangeFingerprint(_range(item[0], item[1]), _fingerprint(item[2])))
        return Query(tuple(ranges))
    if kind == "summary":
        _keys(value, {"t", "r"})
        return Summary(tuple(_item(item) for item in _list(value["r"], 0, "summary")))
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
