"""The state transition rules of ledger v1, over an abstract key-value state view.

Pure: no IO, no clock. :func:`apply_tx` either raises :class:`TxRejected` having written
nothing (every check comes before the first write), or performs the whole transition. The
caller (``ingest.py``) has already checked the envelope, the chain and the signature.

State layout (``specs/ledger.md`` §State). Keys start with one ASCII letter; integers are
big-endian; ``id`` is a 36-byte binary transaction CID; absent keys mean zero / none, and a
zero balance or supply is deleted, so equal states have equal key sets::

    b"B" account(32)              -> balance u64             (> 0)
    b"H" account(32)              -> seq u64 || head tx id   (the account's last tx)
    b"F" account(32)              -> freeze seq u64          (the account equivocated there)
    b"S"                          -> total supply u64        (> 0)
    b"A" asset id                 -> creator(32) || editions u32 || royalty_bps u16
                                     || creator_bps u16 || platform_bps u16 || artifact CID
    b"O" asset id || edition u32  -> owner(32)
    b"L" asset id || edition u32  -> seller(32) || price u64 || listing tx id

The state root is the root of the sparse Merkle tree of ``smt.py`` over the entries, each
leaf being ``len(key) u8 || key || value`` (:func:`state_leaf`); ``state_root`` computes it
from scratch, ``smt.SparseMerkleTree`` keeps it incrementally in LMDB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from n3xus.canon.cid import CID

from .errors import LedgerCorruptError, Reason, TxRejected
from .genesis import BPS_WHOLE, MAX_AMOUNT, Genesis
from .tx import Op, Tx

BALANCE: Final = b"B"
HEAD: Final = b"H"
FROZEN: Final = b"F"
SUPPLY: Final = b"S"
ASSET: Final = b"A"
OWNER: Final = b"O"
LISTING: Final = b"L"
# Fixed part of an asset record before the artifact CID: creator, editions, three bps fields.
_ASSET_FIXED: Final = 32 + 4 + 2 + 2 + 2


class StateView(Protocol):
    """Reads see earlier writes of the same view. Keys and values are bytes."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> object: ...

    def delete(self, key: bytes) -> object: ...


# --- value codecs ---------------------------------------------------------------------------


def u64(value: bytes | None) -> int:
    return 0 if value is None else int.from_bytes(value, "big")


def head_value(seq: int, tx_id: bytes) -> bytes:
    return seq.to_bytes(8, "big") + tx_id


def parse_head(value: bytes) -> tuple[int, bytes]:
    """(seq, tx id) of a head record."""
    return int.from_bytes(value[:8], "big"), value[8:]


class Asset(NamedTuple):
    creator: bytes
    editions: int
    royalty_bps: int
    creator_bps: int
    platform_bps: int
    artifact: CID

    def to_bytes(self) -> bytes:
        return (self.creator + self.editions.to_bytes(4, "big")
                + self.royalty_bps.to_bytes(2, "big") + self.creator_bps.to_bytes(2, "big")
                + self.platform_bps.to_bytes(2, "big") + bytes(self.artifact))

    @classmethod
    def from_bytes(cls, value: bytes) -> Asset:
        return cls(value[:32], int.from_bytes(value[32:36], "big"),
                   int.from_bytes(value[36:38], "big"), int.from_bytes(value[38:40], "big"),
                   int.from_bytes(value[40:42], "big"), CID(value[_ASSET_FIXED:]))


class Listing(NamedTuple):
    seller: bytes
    price: int
    listing_id: bytes  # binary CID of the "list" transaction

    def to_bytes(self) -> bytes:
        return self.seller + self.price.to_bytes(8, "big") + self.listing_id

    @classmethod
    def from_bytes(cls, value: bytes) -> Listing:
        return cls(value[:32], int.from_bytes(value[32:40], "big"), value[40:])


def edition_key(prefix: bytes, asset_id: bytes, edition: int) -> bytes:
    return prefix + asset_id + edition.to_bytes(4, "big")


# --- royalty and tip arithmetic -------------------------------------------------------------


class SalePayout(NamedTuple):
    """Where a sale's price goes; ``seller + creator + platform == price`` always."""

    seller: int
    creator: int
    platform: int


def sale_payout(price: int, royalty_bps: int, platform_bps: int) -> SalePayout:
    """Integer split of a sale (specs/ledger.md §Royalties). Rounding remainders go to the
    party nearer the work: the royalty rounds down (remainder to the seller), the platform's
    part of the royalty rounds down (remainder to the creator)."""
    royalty = price * royalty_bps // BPS_WHOLE
    platform = royalty * platform_bps // BPS_WHOLE
    return SalePayout(price - royalty, royalty - platform, platform)


def tip_split(amount: int, platform_bps: int) -> tuple[int, int]:
    """(creator, platform) parts of a tip; the platform fee rounds down."""
    platform = amount * platform_bps // BPS_WHOLE
    return amount - platform, platform


# --- balance helpers ------------------------------------------------------------------------


def _set_u64(view: StateView, key: bytes, value: int) -> None:
    if value:
        view.put(key, value.to_bytes(8, "big"))
    else:
        view.delete(key)


def _credit(view: StateView, account: bytes, amount: int) -> None:
    """Add to a balance. Cannot overflow while supply <= cap <= MAX_AMOUNT, so an overflow
    means corrupt state: it aborts the whole batch rather than rejecting one transaction."""
    key = BALANCE + account
    balance = u64(view.get(key)) + amount
    if balance > MAX_AMOUNT:
        raise LedgerCorruptError(f"balance of {account.hex()} would exceed {MAX_AMOUNT}")
    _set_u64(view, key, balance)


def _require_funds(view: StateView, account: bytes, amount: int) -> int:
    balance = u64(view.get(BALANCE + account))
    if balance < amount:
        raise TxRejected(Reason.OVERDRAFT, f"balance {balance} is less than {amount}")
    return balance


def _load_edition(view: StateView, asset: CID, edition: int) -> tuple[bytes, Asset]:
    asset_id = bytes(asset)
    record = view.get(ASSET + asset_id)
    if record is None:
        raise TxRejected(Reason.UNKNOWN_ASSET, f"no asset {asset}")
    info = Asset.from_bytes(record)
    if edition > info.editions:
        raise TxRejected(Reason.UNKNOWN_ASSET,
                         f"asset {asset} has {info.editions} editions, not {edition}")
    return asset_id, info


def _require_owner(view: StateView, asset_id: bytes, edition: int, account: bytes) -> None:
    owner = view.get(edition_key(OWNER, asset_id, edition))
    if owner != account:
        raise TxRejected(Reason.NOT_OWNER, f"edition {edition} is not owned by the signer")


# --- the operations -------------------------------------------------------------------------


def _issue(view: StateView, genesis: Genesis, tx: Tx) -> None:
    amount: int = tx.args["amount"]
    if tx.account not in genesis.issuer_set:
        raise TxRejected(Reason.NOT_ISSUER, "the signer is not an issuer of this network")
    supply = u64(view.get(SUPPLY))
    if supply + amount > genesis.supply_cap:
        raise TxRejected(Reason.OVER_CAP, f"supply {supply} + {amount} would exceed the cap "
                         f"{genesis.supply_cap}")
    _set_u64(view, SUPPLY, supply + amount)
    _credit(view, tx.args["to"], amount)


def _transfer(view: StateView, genesis: Genesis, tx: Tx) -> None:
    # The hot path of the benchmark: the balance helpers inlined.
    args = tx.args
    amount: int = args["amount"]
    source = BALANCE + tx.account
    raw = view.get(source)
    balance = 0 if raw is None else int.from_bytes(raw, "big")
    if balance < amount:
        raise TxRejected(Reason.OVERDRAFT, f"balance {balance} is less than {amount}")
    if balance == amount:
        view.delete(source)
    else:
        view.put(source, (balance - amount).to_bytes(8, "big"))
    target = BALANCE + args["to"]
    raw = view.get(target)
    credited = amount + (0 if raw is None else int.from_bytes(raw, "big"))
    if credited > MAX_AMOUNT:
        raise LedgerCorruptError(f"balance of {args['to'].hex()} would exceed {MAX_AMOUNT}")
    view.put(target, credited.to_bytes(8, "big"))


def _tip(view: StateView, genesis: Genesis, tx: Tx) -> None:
    amount: int = tx.args["amount"]
    balance = _require_funds(view, tx.account, amount)
    creator_part, platform_part = tip_split(amount, genesis.platform_bps)
    _set_u64(view, BALANCE + tx.account, balance - amount)
    _credit(view, tx.args["to"], creator_part)
    if platform_part:
        _credit(view, genesis.platform, platform_part)


def _mint(view: StateView, genesis: Genesis, tx: Tx) -> None:
    args = tx.args
    editions: int = args["editions"]
    if editions > genesis.max_editions:
        raise TxRejected(Reason.BAD_PARAMS, f"{editions} editions is over the network's "
                         f"maximum {genesis.max_editions}")
    if args["royalty_bps"] > genesis.max_royalty_bps:
        raise TxRejected(Reason.BAD_PARAMS, f"royalty {args['royalty_bps']} bps is over the "
                         f"network's maximum {genesis.max_royalty_bps}")
    if args["creator_bps"] + args["platform_bps"] != BPS_WHOLE:
        raise TxRejected(Reason.BAD_PARAMS, f"creator_bps + platform_bps must be {BPS_WHOLE}")
    asset_id = tx.id
    if view.get(ASSET + asset_id) is not None:  # pragma: no cover - tx ids are unique
        raise LedgerCorruptError(f"asset {tx.cid} exists before its mint")
    view.put(ASSET + asset_id, Asset(tx.account, editions, args["royalty_bps"],
                                     args["creator_bps"], args["platform_bps"],
                                     args["artifact"]).to_bytes())
    for edition in range(1, editions + 1):
        view.put(edition_key(OWNER, asset_id, edition), tx.account)


def _transfer_asset(view: StateView, genesis: Genesis, tx: Tx) -> None:
    args = tx.args
    edition: int = args["edition"]
    asset_id, _ = _load_edition(view, args["asset"], edition)
    _require_owner(view, asset_id, edition, tx.account)
    view.put(edition_key(OWNER, asset_id, edition), args["to"])
    # A listing is an offer by the owner; it cannot outlive the ownership.
    view.delete(edition_key(LISTING, asset_id, edition))


def _list(view: StateView, genesis: Genesis, tx: Tx) -> None:
    args = tx.args
    edition: int = args["edition"]
    asset_id, _ = _load_edition(view, args["asset"], edition)
    _require_owner(view, asset_id, edition, tx.account)
    view.put(edition_key(LISTING, asset_id, edition),
             Listing(tx.account, args["price"], tx.id).to_bytes())


def _delist(view: StateView, genesis: Genesis, tx: Tx) -> None:
    args = tx.args
    edition: int = args["edition"]
    asset_id, _ = _load_edition(view, args["asset"], edition)
    key = edition_key(LISTING, asset_id, edition)
    record = view.get(key)
    if record is None:
        raise TxRejected(Reason.UNKNOWN_LISTING, f"edition {edition} is not listed")
    if Listing.from_bytes(record).seller != tx.account:
        raise TxRejected(Reason.NOT_OWNER, "only the seller can withdraw a listing")
    view.delete(key)


def _buy(view: StateView, genesis: Genesis, tx: Tx) -> None:
    args = tx.args
    edition: int = args["edition"]
    price: int = args["price"]
    asset_id, info = _load_edition(view, args["asset"], edition)
    key = edition_key(LISTING, asset_id, edition)
    record = view.get(key)
    if record is None:
        raise TxRejected(Reason.UNKNOWN_LISTING, f"edition {edition} is not listed")
    listing = Listing.from_bytes(record)
    if listing.listing_id != bytes(args["listing"]):
        raise TxRejected(Reason.UNKNOWN_LISTING,
                         f"the current listing is {CID(listing.listing_id)}, not {args['listing']}")
    if price != listing.price:
        raise TxRejected(Reason.PRICE_MISMATCH,
                         f"offered {price}, the listing asks {listing.price}")
    if listing.seller == tx.account:
        raise TxRejected(Reason.OWN_LISTING, "an account cannot buy its own listing")
    balance = _require_funds(view, tx.account, price)
    payout = sale_payout(price, info.royalty_bps, info.platform_bps)
    # All checks passed: payment, royalty, fee and ownership move together.
    _set_u64(view, BALANCE + tx.account, balance - price)
    for account, amount in ((listing.seller, payout.seller), (info.creator, payout.creator),
                            (genesis.platform, payout.platform)):
        if amount:
            _credit(view, account, amount)
    view.put(edition_key(OWNER, asset_id, edition), tx.account)
    view.delete(key)


# The transition of each operation (apply_tx dispatches here; the ingest loop indexes it
# directly to save a call per transaction).
HANDLERS: Final[dict[Op, Callable[[StateView, Genesis, Tx], None]]] = {
    Op.ISSUE: _issue,
    Op.TRANSFER: _transfer,
    Op.TIP: _tip,
    Op.MINT: _mint,
    Op.TRANSFER_ASSET: _transfer_asset,
    Op.LIST: _list,
    Op.DELIST: _delist,
    Op.BUY: _buy,
}


def apply_tx(view: StateView, genesis: Genesis, tx: Tx) -> None:
    """Apply ``tx``'s state transition, or raise TxRejected having changed nothing."""
    HANDLERS[tx.op](view, genesis, tx)


# --- state root -----------------------------------------------------------------------------


def state_leaf(key: bytes, value: bytes) -> bytes:
    """The Merkle leaf of one state entry: ``len(key) u8 || key || value``."""
    return bytes((len(key),)) + key + value


def state_root(items: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The state root (``smt.root_of``) over entries given in strictly ascending key order."""
    from .smt import root_of  # smt.py imports state_leaf from here

    listed = list(items)
    for (a, _), (b, _) in zip(listed, listed[1:], strict=False):
        if b <= a:
            raise LedgerCorruptError("state entries are not in ascending key order")
    return root_of(listed)
