"""The genesis document: the content-addressed DAG-CBOR block that defines a ledger network.

Every node of a network is configured with the same genesis bytes; their CID (dag-cbor,
BLAKE3-256) is the network id that every transaction names, so a transaction signed for one
network is never valid on another. The document fixes who may issue currency, the supply
cap, the platform account that receives platform fees, and the royalty defaults and limits
(``specs/ledger.md`` §Genesis)::

    {"v": 1, "name": "n3xus-main", "issuers": [key, ...], "supply_cap": int,
     "platform": key, "royalty_bps": int, "creator_bps": int, "platform_bps": int,
     "max_royalty_bps": int, "max_editions": int}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import decode, encode
from n3xus.canon.errors import CanonError

from .errors import GenesisError

GENESIS_VERSION: Final = 1
# Bytes of an ed25519 public key, the account identifier.
ACCOUNT_KEY_BYTES: Final = 32
# Basis points in a whole: shares are expressed as parts of 10000.
BPS_WHOLE: Final = 10_000
# Largest amount anywhere (balances, supply, prices): the largest signed 64-bit integer, so
# every implementation can hold any amount in an int64 and a sum of two never wraps a uint64.
MAX_AMOUNT: Final = 2**63 - 1
# Issuer keys a genesis may name; a network has a handful, and the list is checked on every
# issuance, so a small bound keeps the document and the lookup small.
MAX_ISSUERS: Final = 64
# A network name is a short label (printed in logs and checkpoint origins): ASCII, no spaces.
MAX_NAME_BYTES: Final = 64
# Hard ceiling for ``max_editions``: minting writes one ownership entry per edition, so this
# bounds the state writes one transaction can cause (10 000 puts, tens of milliseconds).
MAX_EDITIONS_LIMIT: Final = 10_000
# Largest genesis document accepted: 64 keys of 32 bytes plus a few integers fit in 4 KiB.
MAX_GENESIS_BYTES: Final = 4096

DEFAULT_ROYALTY_BPS: Final = 1_000
DEFAULT_CREATOR_BPS: Final = 8_000
DEFAULT_PLATFORM_BPS: Final = 2_000
DEFAULT_MAX_ROYALTY_BPS: Final = 5_000
DEFAULT_MAX_EDITIONS: Final = 1_000

_FIELDS: Final = frozenset({
    "v", "name", "issuers", "supply_cap", "platform", "royalty_bps", "creator_bps",
    "platform_bps", "max_royalty_bps", "max_editions",
})


def _int_field(doc: dict[str, Any], name: str, low: int, high: int) -> int:
    value = doc[name]
    if type(value) is not int or not low <= value <= high:
        raise GenesisError(f"genesis {name!r} must be an integer in {low}..{high}, got {value!r}")
    return value


def _key_field(value: object, what: str) -> bytes:
    if type(value) is not bytes or len(value) != ACCOUNT_KEY_BYTES:
        raise GenesisError(f"genesis {what} must be a {ACCOUNT_KEY_BYTES}-byte ed25519 key")
    return value


@dataclass(frozen=True)
class Genesis:
    """A validated genesis document. Build one with :meth:`create` or :meth:`from_bytes`;
    ``bytes(genesis)`` is its canonical block and ``genesis.cid`` the network id."""

    name: str
    issuers: tuple[bytes, ...]
    supply_cap: int
    platform: bytes
    royalty_bps: int = DEFAULT_ROYALTY_BPS
    creator_bps: int = DEFAULT_CREATOR_BPS
    platform_bps: int = DEFAULT_PLATFORM_BPS
    max_royalty_bps: int = DEFAULT_MAX_ROYALTY_BPS
    max_editions: int = DEFAULT_MAX_EDITIONS
    # Derived once, used by the validation loop on every transaction.
    block: bytes = field(init=False, repr=False, compare=False)
    cid: CID = field(init=False, repr=False, compare=False)
    network_id: bytes = field(init=False, repr=False, compare=False)
    issuer_set: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        doc = self.to_document()
        _validate(doc)
        block = encode(doc)
        if len(block) > MAX_GENESIS_BYTES:
            raise GenesisError(f"genesis is {len(block)} bytes, over {MAX_GENESIS_BYTES}")
        cid = cid_of(block)
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "cid", cid)
        object.__setattr__(self, "network_id", bytes(cid))
        object.__setattr__(self, "issuer_set", frozenset(self.issuers))

    @classmethod
    def create(cls, name: str, issuers: Iterable[bytes], supply_cap: int, platform: bytes,
               **params: int) -> Genesis:
        """A genesis with ``issuers`` put in canonical (ascending) order."""
        return cls(name, tuple(sorted(issuers)), supply_cap, platform, **params)

    def to_document(self) -> dict[str, Any]:
        return {
            "v": GENESIS_VERSION,
            "name": self.name,
            "issuers": list(self.issuers),
            "supply_cap": self.supply_cap,
            "platform": self.platform,
            "royalty_bps": self.royalty_bps,
            "creator_bps": self.creator_bps,
            "platform_bps": self.platform_bps,
            "max_royalty_bps": self.max_royalty_bps,
            "max_editions": self.max_editions,
        }

    def __bytes__(self) -> bytes:
        return self.block

    @classmethod
    def from_bytes(cls, data: bytes) -> Genesis:
        """Parse and validate a genesis block (strict DAG-CBOR, exact fields)."""
        if len(data) > MAX_GENESIS_BYTES:
            raise GenesisError(f"genesis is {len(data)} bytes, over {MAX_GENESIS_BYTES}")
        try:
            doc = decode(data)
        except CanonError as exc:
            raise GenesisError(f"genesis is not canonical DAG-CBOR: {exc}") from exc
        _validate(doc)
        genesis = cls(
            doc["name"], tuple(doc["issuers"]), doc["supply_cap"], doc["platform"],
            royalty_bps=doc["royalty_bps"], creator_bps=doc["creator_bps"],
            platform_bps=doc["platform_bps"], max_royalty_bps=doc["max_royalty_bps"],
            max_editions=doc["max_editions"],
        )
        if genesis.block != bytes(data):  # pragma: no cover - decode is canonical
            raise GenesisError("genesis does not re-encode to the same bytes")
        return genesis


def _validate(doc: object) -> None:
    """Every rule of specs/ledger.md §Genesis; raises GenesisError naming the first fault."""
    if type(doc) is not dict:
        raise GenesisError("genesis must be a DAG-CBOR map")
    if doc.get("v") != GENESIS_VERSION or type(doc.get("v")) is not int:
        raise GenesisError(f"unsupported genesis version {doc.get('v')!r}")
    if set(doc) != _FIELDS:
        missing = sorted(_FIELDS - set(doc))
        extra = sorted(set(doc) - _FIELDS)
        raise GenesisError(f"genesis fields wrong: missing {missing}, unknown {extra}")
    name = doc["name"]
    if (type(name) is not str or not name or len(name) > MAX_NAME_BYTES
            or not name.isascii() or not name.isprintable() or " " in name):
        raise GenesisError(f"genesis name must be 1..{MAX_NAME_BYTES} printable ASCII "
                           "characters without spaces")
    issuers = doc["issuers"]
    if type(issuers) is not list or not 1 <= len(issuers) <= MAX_ISSUERS:
        raise GenesisError(f"genesis issuers must be a list of 1..{MAX_ISSUERS} keys")
    keys = [_key_field(key, "issuer") for key in issuers]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise GenesisError("genesis issuers must be strictly ascending (sorted, no duplicates)")
    _int_field(doc, "supply_cap", 1, MAX_AMOUNT)
    _key_field(doc["platform"], "platform")
    max_royalty = _int_field(doc, "max_royalty_bps", 0, BPS_WHOLE)
    _int_field(doc, "royalty_bps", 0, max_royalty)
    creator = _int_field(doc, "creator_bps", 0, BPS_WHOLE)
    platform = _int_field(doc, "platform_bps", 0, BPS_WHOLE)
    if creator + platform != BPS_WHOLE:
        raise GenesisError(f"creator_bps + platform_bps must be {BPS_WHOLE}, "
                           f"got {creator} + {platform}")
    _int_field(doc, "max_editions", 1, MAX_EDITIONS_LIMIT)
