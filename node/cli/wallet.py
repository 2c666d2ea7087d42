"""``n3xus wallet`` and ``n3xus asset``.

Transactions are signed here, with wallet keys from the data dir, and submitted to
the running node as signed envelopes; the node validates them like any other
node's. The account's next ``seq`` and ``prev`` come from the node. The ledger
package (cbor2, the transaction codec) is imported only by commands that sign.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from ..errors import ApiError
from .app import client_for, data_dir_of, data_dir_option, echo, emit, json_option, print_lines
from .client import ApiClient, path_of

if TYPE_CHECKING:
    from nacl.signing import SigningKey

    from n3xus.ledger.tx import Op


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _submit(client: ApiClient, key: SigningKey, op: Op, args: dict[str, Any]) -> dict[str, Any]:
    """Sign ``op`` as the next transaction of ``key``'s chain and submit it."""
    from n3xus.canon.cid import CID
    from n3xus.ledger.tx import AccountChain

    account = bytes(key.verify_key)
    state = client.get(path_of("/ledger/accounts/{}", account.hex()))
    network = CID(client.get("/ledger/genesis")["cid"])
    prev = CID(state["prev"]) if state["prev"] else None
    chain = AccountChain(key, network, seq=state["next_seq"], prev=prev)
    # Never before the head's time: a transaction dated before its predecessor sorts
    # before it and is void (specs/ledger.md §8.0), e.g. when clocks differ between nodes.
    envelope = chain.sign(op, args, time_ms=max(_now_ms(), state.get("head_time") or 0))
    try:
        result: dict[str, Any] = client.post("/ledger/txs", content=envelope)
    except ApiError as exc:
        if exc.status != 422:
            raise
        raise click.ClickException(f"rejected: {exc.message}") from None
    result["op"] = str(op)
    return result


def _amount(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise click.BadParameter(f"{value!r}: amounts are whole numbers of the smallest unit")
    return int(value)


def _cid(text: str, what: str) -> Any:
    from n3xus.canon.cid import CID

    try:
        return CID(text)
    except ValueError:
        raise click.BadParameter(f"{text[:100]} is not a CID", param_hint=what) from None


def _print_tx(result: dict[str, Any]) -> None:
    echo(f"{result['op']} accepted: {result['id']} (log index {result['log_index']})")


# -- wallet -----------------------------------------------------------------------
@click.group()
def wallet() -> None:
    """Accounts: create, balance, send, issue, tip."""


@wallet.command("new")
@click.argument("name")
@data_dir_option
@json_option
def wallet_new(name: str, data_dir: str | None, as_json: bool) -> None:
    """Create wallet NAME (an ed25519 account key, mode 0600)."""
    from ..services.wallets import create_wallet

    account = create_wallet(data_dir_of(data_dir), name)
    emit(as_json, {"wallet": name, "account": account.hex()},
         lambda: echo(f"{name} {account.hex()}"))


@wallet.command("list")
@data_dir_option
@json_option
def wallet_list(data_dir: str | None, as_json: bool) -> None:
    """Local wallets and their accounts ("node" is the node's own key)."""
    from ..services.wallets import list_wallets

    wallets = {name: acct.hex() for name, acct in list_wallets(data_dir_of(data_dir)).items()}
    emit(as_json, {"wallets": wallets}, print_lines(f"{n:<16} {a}" for n, a in wallets.items()))


@wallet.command("balance")
@click.argument("who", metavar="WALLET|ACCOUNT", default="node")
@data_dir_option
@json_option
def wallet_balance(who: str, data_dir: str | None, as_json: bool) -> None:
    """Balance, next sequence number and frozen flag of an account."""
    from ..services.wallets import parse_account

    account = parse_account(data_dir_of(data_dir), who)
    state = client_for(data_dir).get(path_of("/ledger/accounts/{}", account.hex()))
    emit(as_json, state, lambda: echo(
        f"{state['balance']}" + ("  (FROZEN: equivocation proven)" if state["frozen"] else "")))


def _transfer_like(op_name: str, wallet_name: str, to: str, amount: str, data_dir: str | None,
                   as_json: bool, extra: dict[str, Any] | None = None) -> None:
    from n3xus.ledger.tx import Op

    from ..services.wallets import parse_account, wallet_key

    dd = data_dir_of(data_dir)
    args: dict[str, Any] = {"to": parse_account(dd, to), "amount": _amount(amount), **(extra or {})}
    result = _submit(client_for(data_dir), wallet_key(dd, wallet_name), Op[op_name], args)
    emit(as_json, result, lambda: _print_tx(result))


@wallet.command("send")
@click.argument("wallet_name", metavar="WALLET")
@click.argument("to", metavar="TO")
@click.argument("amount")
@data_dir_option
@json_option
def wallet_send(wallet_name: str, to: str, amount: str, data_dir: str | None, as_json: bool) -> None:
    """Pay AMOUNT from WALLET to TO (a wallet name or a hex account)."""
    _transfer_like("TRANSFER", wallet_name, to, amount, data_dir, as_json)


@wallet.command("issue")
@click.argument("wallet_name", metavar="ISSUER_WALLET")
@click.argument("to", metavar="TO")
@click.argument("amount")
@data_dir_option
@json_option
def wallet_issue(wallet_name: str, to: str, amount: str, data_dir: str | None, as_json: bool) -> None:
    """Create AMOUNT of currency for TO (issuers named in the genesis only)."""
    _transfer_like("ISSUE", wallet_name, to, amount, data_dir, as_json)


@wallet.command("tip")
@click.argument("wallet_name", metavar="WALLET")
@click.argument("to", metavar="CREATOR")
@click.argument("amount")
@click.option("--ref", default=None, help="CID of what the tip is for (e.g. a performance).")
@data_dir_option
@json_option
def wallet_tip(wallet_name: str, to: str, amount: str, ref: str | None, data_dir: str | None,
               as_json: bool) -> None:
    """Tip CREATOR; the genesis split gives the platform its share."""
    _transfer_like("TIP", wallet_name, to, amount, data_dir, as_json,
                   {"ref": _cid(ref, "--ref") if ref else None})


# -- asset ------------------------------------------------------------------------
@click.group()
def asset() -> None:
    """Creator assets: mint, transfer, list for sale, buy, show."""


@asset.command("mint")
@click.argument("wallet_name", metavar="CREATOR_WALLET")
@click.argument("artifact", metavar="ARTIFACT_CID")
@click.option("--editions", default=1, type=click.IntRange(1), show_default=True)
@click.option("--royalty-bps", default=None, type=click.IntRange(0, 10000),
              help="Royalty on every resale (default: the network's).")
@click.option("--creator-bps", default=None, type=click.IntRange(0, 10000),
              help="Creator's part of the royalty (default: the network's, 80/20).")
@click.option("--metadata", default="{}", help="JSON object (no floats).")
@data_dir_option
@json_option
def asset_mint(wallet_name: str, artifact: str, editions: int, royalty_bps: int | None,
               creator_bps: int | None, metadata: str, data_dir: str | None, as_json: bool) -> None:
    """Mint an asset for ARTIFACT_CID (e.g. a file put with `canon put`)."""
    from n3xus.ledger.tx import Op

    from ..services.wallets import wallet_key

    dd = data_dir_of(data_dir)
    client = client_for(data_dir)
    try:
        meta = json.loads(metadata)
    except ValueError as exc:
        raise click.BadParameter(f"--metadata is not JSON: {exc}") from None
    genesis = client.get("/ledger/genesis")
    creator = genesis["creator_bps"] if creator_bps is None else creator_bps
    args = {"artifact": _cid(artifact, "ARTIFACT_CID"), "editions": editions, "metadata": meta,
            "royalty_bps": genesis["royalty_bps"] if royalty_bps is None else royalty_bps,
            "creator_bps": creator, "platform_bps": 10_000 - creator}
    result = _submit(client, wallet_key(dd, wallet_name), Op.MINT, args)
    result["asset"] = result["id"]
    emit(as_json, result, lambda: echo(f"minted asset {result['id']}"))


def _asset_op(op_name: str, wallet_name: str, asset_id: str, edition: int, extra: dict[str, Any],
              data_dir: str | None, as_json: bool, client: ApiClient | None = None) -> None:
    from n3xus.ledger.tx import Op

    from ..services.wallets import wallet_key

    dd = data_dir_of(data_dir)
    args = {"asset": _cid(asset_id, "ASSET"), "edition": edition, **extra}
    result = _submit(client or client_for(data_dir), wallet_key(dd, wallet_name), Op[op_name], args)
    emit(as_json, result, lambda: _print_tx(result))


@asset.command("transfer")
@click.argument("wallet_name", metavar="OWNER_WALLET")
@click.argument("asset_id", metavar="ASSET")
@click.argument("edition", type=click.IntRange(1))
@click.argument("to", metavar="TO")
@data_dir_option
@json_option
def asset_transfer(wallet_name: str, asset_id: str, edition: int, to: str, data_dir: str | None,
                   as_json: bool) -> None:
    """Give EDITION of ASSET to TO."""
    from ..services.wallets import parse_account

    _asset_op("TRANSFER_ASSET", wallet_name, asset_id, edition,
              {"to": parse_account(data_dir_of(data_dir), to)}, data_dir, as_json)


@asset.command("list")
@click.argument("wallet_name", metavar="OWNER_WALLET")
@click.argument("asset_id", metavar="ASSET")
@click.argument("edition", type=click.IntRange(1))
@click.argument("price")
@data_dir_option
@json_option
def asset_list(wallet_name: str, asset_id: str, edition: int, price: str, data_dir: str | None,
               as_json: bool) -> None:
    """Offer EDITION of ASSET for sale at PRICE."""
    _asset_op("LIST", wallet_name, asset_id, edition, {"price": _amount(price)}, data_dir, as_json)


@asset.command("delist")
@click.argument("wallet_name", metavar="OWNER_WALLET")
@click.argument("asset_id", metavar="ASSET")
@click.argument("edition", type=click.IntRange(1))
@data_dir_option
@json_option
def asset_delist(wallet_name: str, asset_id: str, edition: int, data_dir: str | None,
                 as_json: bool) -> None:
    """Withdraw the listing of EDITION."""
    _asset_op("DELIST", wallet_name, asset_id, edition, {}, data_dir, as_json)


@asset.command("buy")
@click.argument("wallet_name", metavar="BUYER_WALLET")
@click.argument("asset_id", metavar="ASSET")
@click.argument("edition", type=click.IntRange(1))
@click.option("--price", default=None, help="Pay exactly this (default: the listing's price). "
              "A price other than the listing's is rejected.")
@data_dir_option
@json_option
def asset_buy(wallet_name: str, asset_id: str, edition: int, price: str | None,
              data_dir: str | None, as_json: bool) -> None:
    """Buy EDITION at its listing: payment, royalty and platform fee move atomically."""
    client = client_for(data_dir)
    view = client.get(path_of("/ledger/assets/{}", asset_id))
    listed = next((e for e in view["editions"] if e["edition"] == edition), None)
    if listed is None or listed["listing"] is None:
        raise click.ClickException(f"edition {edition} of {asset_id} is not listed for sale")
    pay = _amount(price) if price is not None else listed["listing"]["price"]
    _asset_op("BUY", wallet_name, asset_id, edition,
              {"price": pay, "listing": _cid(listed["listing"]["listing"], "listing")},
              data_dir, as_json, client)


@asset.command("show")
@click.argument("asset_id", metavar="ASSET")
@data_dir_option
@json_option
def asset_show(asset_id: str, data_dir: str | None, as_json: bool) -> None:
    """Creator, royalty, and each edition's owner and listing."""
    view = client_for(data_dir).get(path_of("/ledger/assets/{}", asset_id))

    def human() -> None:
        echo(f"asset    {view['asset']}\ncreator  {view['creator']}\n"
             f"artifact {view['artifact']}\nroyalty  {view['royalty_bps']} bps "
             f"({view['creator_bps']}/{view['platform_bps']} creator/platform)")
        for e in view["editions"]:
            sale = f"  for sale at {e['listing']['price']}" if e["listing"] else ""
            echo(f"  #{e['edition']} owner {e['owner']}{sale}")

    emit(as_json, view, human)
