"""``n3xus wallet``, ``n3xus asset`` and ``n3xus ledger``.

Transactions are signed here, with wallet keys from the data dir, and submitted to
the running node as signed envelopes; the node validates them like any other
node's. The account's next ``seq`` and ``prev`` come from the node.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click
from nacl.signing import SigningKey

from n3xus.canon.cid import CID
from n3xus.ledger.tx import AccountChain, Op

from ..errors import ApiError
from ..services.wallets import create_wallet, list_wallets, parse_account, wallet_key
from .app import _data_dir, cli, data_dir_option, emit, json_option, print_lines, stdout
from .client import ApiClient


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _submit(client: ApiClient, key: SigningKey, op: Op, args: dict[str, Any]) -> dict[str, Any]:
    """Sign ``op`` as the next transaction of ``key``'s chain and submit it."""
    account = bytes(key.verify_key)
    state = client.get(f"/ledger/accounts/{account.hex()}")
    network = CID(client.get("/ledger/genesis")["cid"])
    prev = CID(state["prev"]) if state["prev"] else None
    chain = AccountChain(key, network, seq=state["next_seq"], prev=prev)
    envelope = chain.sign(op, args, time_ms=_now_ms())
    try:
        result: dict[str, Any] = client.post("/ledger/txs", content=envelope)
    except ApiError as exc:
        raise click.ClickException(f"rejected: {exc.message}") from None
    result["op"] = str(op)
    return result


def _amount(value: str) -> int:
    if not value.isdigit():
        raise click.BadParameter(f"{value!r}: amounts are whole numbers of the smallest unit")
    return int(value)


def _print_tx(result: dict[str, Any]) -> None:
    stdout.print(f"{result['op']} accepted: {result['id']} (log index {result['log_index']})")


# -- wallet -----------------------------------------------------------------------
@cli.group()
def wallet() -> None:
    """Accounts: create, balance, send, issue, tip."""


@wallet.command("new")
@click.argument("name")
@data_dir_option
@json_option
def wallet_new(name: str, data_dir: str | None, as_json: bool) -> None:
    """Create wallet NAME (an ed25519 account key, mode 0600)."""
    account = create_wallet(_data_dir(data_dir), name)
    emit(as_json, {"wallet": name, "account": account.hex()},
         lambda: stdout.print(f"{name} {account.hex()}"))


@wallet.command("list")
@data_dir_option
@json_option
def wallet_list(data_dir: str | None, as_json: bool) -> None:
    """Local wallets and their accounts ("node" is the node's own key)."""
    wallets = {name: acct.hex() for name, acct in list_wallets(_data_dir(data_dir)).items()}
    emit(as_json, {"wallets": wallets},
         print_lines(f"{n:<16} {a}" for n, a in wallets.items()))


@wallet.command("balance")
@click.argument("who", metavar="WALLET|ACCOUNT", default="node")
@data_dir_option
@json_option
def wallet_balance(who: str, data_dir: str | None, as_json: bool) -> None:
    """Balance, next sequence number and frozen flag of an account."""
    dd = _data_dir(data_dir)
    state = ApiClient(dd).get(f"/ledger/accounts/{parse_account(dd, who).hex()}")
    emit(as_json, state, lambda: stdout.print(
        f"{state['balance']}" + ("  (FROZEN: equivocation proven)" if state["frozen"] else "")))


def _transfer_like(op: Op, wallet_name: str, to: str, amount: str, data_dir: str | None,
                   as_json: bool, extra: dict[str, Any] | None = None) -> None:
    dd = _data_dir(data_dir)
    args: dict[str, Any] = {"to": parse_account(dd, to), "amount": _amount(amount), **(extra or {})}
    result = _submit(ApiClient(dd), wallet_key(dd, wallet_name), op, args)
    emit(as_json, result, lambda: _print_tx(result))


@wallet.command("send")
@click.argument("wallet_name", metavar="WALLET")
@click.argument("to", metavar="TO")
@click.argument("amount")
@data_dir_option
@json_option
def wallet_send(wallet_name: str, to: str, amount: str, data_dir: str | None, as_json: bool) -> None:
    """Pay AMOUNT from WALLET to TO (a wallet name or a hex account)."""
    _transfer_like(Op.TRANSFER, wallet_name, to, amount, data_dir, as_json)


@wallet.command("issue")
@click.argument("wallet_name", metavar="ISSUER_WALLET")
@click.argument("to", metavar="TO")
@click.argument("amount")
@data_dir_option
@json_option
def wallet_issue(wallet_name: str, to: str, amount: str, data_dir: str | None, as_json: bool) -> None:
    """Create AMOUNT of currency for TO (issuers named in the genesis only)."""
    _transfer_like(Op.ISSUE, wallet_name, to, amount, data_dir, as_json)


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
    _transfer_like(Op.TIP, wallet_name, to, amount, data_dir, as_json,
                   {"ref": CID(ref) if ref else None})


# -- asset ------------------------------------------------------------------------
@cli.group()
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
    dd = _data_dir(data_dir)
    client = ApiClient(dd)
    genesis = client.get("/ledger/genesis")
    try:
        meta = json.loads(metadata)
    except ValueError as exc:
        raise click.BadParameter(f"--metadata is not JSON: {exc}") from None
    creator = genesis["creator_bps"] if creator_bps is None else creator_bps
    args = {"artifact": CID(artifact), "editions": editions, "metadata": meta,
            "royalty_bps": genesis["royalty_bps"] if royalty_bps is None else royalty_bps,
            "creator_bps": creator, "platform_bps": 10_000 - creator}
    result = _submit(client, wallet_key(dd, wallet_name), Op.MINT, args)
    result["asset"] = result["id"]
    emit(as_json, result, lambda: stdout.print(f"minted asset {result['id']}"))


def _asset_op(op: Op, wallet_name: str, asset_id: str, edition: int, extra: dict[str, Any],
              data_dir: str | None, as_json: bool) -> None:
    dd = _data_dir(data_dir)
    args = {"asset": CID(asset_id), "edition": edition, **extra}
    result = _submit(ApiClient(dd), wallet_key(dd, wallet_name), op, args)
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
    _asset_op(Op.TRANSFER_ASSET, wallet_name, asset_id, edition,
              {"to": parse_account(_data_dir(data_dir), to)}, data_dir, as_json)


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
    _asset_op(Op.LIST, wallet_name, asset_id, edition, {"price": _amount(price)}, data_dir, as_json)


@asset.command("delist")
@click.argument("wallet_name", metavar="OWNER_WALLET")
@click.argument("asset_id", metavar="ASSET")
@click.argument("edition", type=click.IntRange(1))
@data_dir_option
@json_option
def asset_delist(wallet_name: str, asset_id: str, edition: int, data_dir: str | None,
                 as_json: bool) -> None:
    """Withdraw the listing of EDITION."""
    _asset_op(Op.DELIST, wallet_name, asset_id, edition, {}, data_dir, as_json)


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
    dd = _data_dir(data_dir)
    view = ApiClient(dd).get(f"/ledger/assets/{asset_id}")
    listed = next((e for e in view["editions"] if e["edition"] == edition), None)
    if listed is None or listed["listing"] is None:
        raise click.ClickException(f"edition {edition} of {asset_id} is not listed for sale")
    pay = _amount(price) if price is not None else listed["listing"]["price"]
    _asset_op(Op.BUY, wallet_name, asset_id, edition,
              {"price": pay, "listing": CID(listed["listing"]["listing"])}, data_dir, as_json)


@asset.command("show")
@click.argument("asset_id", metavar="ASSET")
@data_dir_option
@json_option
def asset_show(asset_id: str, data_dir: str | None, as_json: bool) -> None:
    """Creator, royalty, and each edition's owner and listing."""
    view = ApiClient(_data_dir(data_dir)).get(f"/ledger/assets/{asset_id}")

    def human() -> None:
        stdout.print(f"asset    {view['asset']}\ncreator  {view['creator']}\n"
                     f"artifact {view['artifact']}\nroyalty  {view['royalty_bps']} bps "
                     f"({view['creator_bps']}/{view['platform_bps']} creator/platform)")
        for e in view["editions"]:
            sale = f"  for sale at {e['listing']['price']}" if e["listing"] else ""
            stdout.print(f"  #{e['edition']} owner {e['owner']}{sale}")

    emit(as_json, view, human)


# -- ledger -----------------------------------------------------------------------
@cli.group()
def ledger() -> None:
    """The ledger log, transactions, status."""


@ledger.command("status")
@data_dir_option
@json_option
def ledger_status(data_dir: str | None, as_json: bool) -> None:
    """Network, log size, supply, state root, frozen accounts."""
    st = ApiClient(_data_dir(data_dir)).get("/ledger/status")
    emit(as_json, st, print_lines(f"{k:<16} {v}" for k, v in st.items()))


@ledger.command("log")
@click.option("--start", default=0, type=click.IntRange(0))
@click.option("--limit", default=50, type=click.IntRange(0))
@data_dir_option
@json_option
def ledger_log(start: int, limit: int, data_dir: str | None, as_json: bool) -> None:
    """Entries of the ledger log (genesis, transactions, fraud proofs)."""
    res = ApiClient(_data_dir(data_dir)).get("/ledger/log", params={"start": start, "limit": limit})

    def human() -> None:
        for e in res["entries"]:
            detail = f"{e['op']:<15} {e['account'][:16]} seq {e['seq']}" if e["kind"] == "tx" else ""
            stdout.print(f"{e['index']:>6}  {e['kind']:<11} {detail}")

    emit(as_json, res, human)


@ledger.command("tx")
@click.argument("tx_id", metavar="TX_ID")
@data_dir_option
@json_option
def ledger_tx(tx_id: str, data_dir: str | None, as_json: bool) -> None:
    """One transaction by id."""
    view = ApiClient(_data_dir(data_dir)).get(f"/ledger/txs/{tx_id}")
    emit(as_json, view, lambda: stdout.print(json.dumps(view, indent=2)))


def _write_or_print(text: str, output: str | None) -> None:
    if output is None:
        stdout.file.write(text if text.endswith("\n") else text + "\n")
        return
    tmp = output + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, output)


@ledger.command("vkey")
@data_dir_option
def ledger_vkey(data_dir: str | None) -> None:
    """The verifier key auditors pass to `n3xus audit … --key`."""
    _write_or_print(ApiClient(_data_dir(data_dir)).request("GET", "/api/v1/ledger/vkey", raw=True).decode(), None)


@ledger.command("checkpoint")
@click.option("--sign", is_flag=True, help="Sign a new checkpoint of the log as it is now.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@data_dir_option
def ledger_checkpoint(sign: bool, output: str | None, data_dir: str | None) -> None:
    """The ledger's signed checkpoint (C2SP tlog-checkpoint, with the state root)."""
    note = ApiClient(_data_dir(data_dir)).request(
        "POST" if sign else "GET", "/api/v1/ledger/checkpoint", raw=True).decode()
    _write_or_print(note, output)


@ledger.command("proof")
@click.argument("tx_id", metavar="TX_ID")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@data_dir_option
def ledger_proof(tx_id: str, output: str | None, data_dir: str | None) -> None:
    """Offline inclusion bundle for TX_ID (verify with `n3xus audit verify`)."""
    bundle = ApiClient(_data_dir(data_dir)).request(
        "GET", f"/api/v1/ledger/proofs/tx/{tx_id}", raw=True).decode()
    _write_or_print(bundle, output)


@ledger.command("state-proof")
@click.argument("who", metavar="[WALLET|ACCOUNT]", required=False)
@click.option("--asset", default=None, help="Prove the owner of this asset's --edition instead.")
@click.option("--edition", default=None, type=click.IntRange(1))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@data_dir_option
def ledger_state_proof(who: str | None, asset: str | None, edition: int | None,
                       output: str | None, data_dir: str | None) -> None:
    """Prove an account's balance, or an edition's owner, at a signed checkpoint."""
    dd = _data_dir(data_dir)
    if asset is not None:
        if edition is None or who is not None:
            raise click.UsageError("--asset needs --edition and no account")
        params: dict[str, Any] = {"asset": asset, "edition": edition}
    else:
        params = {"account": parse_account(dd, who or "node").hex()}
    bundle = ApiClient(dd).request("GET", "/api/v1/ledger/proofs/state", params=params,
                                   raw=True).decode()
    _write_or_print(bundle, output)


@ledger.command("consistency")
@click.argument("old_size", type=click.IntRange(1))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
@data_dir_option
def ledger_consistency(old_size: int, output: str | None, data_dir: str | None) -> None:
    """Consistency bundle from the checkpoint of tree size OLD_SIZE to now."""
    bundle = ApiClient(_data_dir(data_dir)).request(
        "GET", "/api/v1/ledger/proofs/consistency", params={"old": old_size}, raw=True).decode()
    _write_or_print(bundle, output)


@ledger.command("export")
@click.option("--car", "car_path", required=True, type=click.Path(dir_okay=False))
@data_dir_option
@json_option
def ledger_export(car_path: str, data_dir: str | None, as_json: bool) -> None:
    """The whole ledger up to a fresh signed checkpoint, for `n3xus audit replay`."""
    data = ApiClient(_data_dir(data_dir), timeout=3600).request("GET", "/api/v1/ledger/export", raw=True)
    tmp = car_path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, car_path)
    emit(as_json, {"car": car_path, "bytes": len(data)},
         lambda: stdout.print(f"wrote {len(data)} bytes to {car_path}"))
