"""``n3xus ledger …``: the ledger log, transactions, status and the transparency log
(signed checkpoints, offline proof bundles, exports for auditors)."""

from __future__ import annotations

import json
from typing import Any

import click

from .app import (
    client_for,
    data_dir_of,
    data_dir_option,
    echo,
    emit,
    json_option,
    output_option,
    print_lines,
)
from .canon import STREAM_TIMEOUT_S, _download, _note_fields, emit_text
from .client import path_of


@click.group()
def ledger() -> None:
    """The ledger log, transactions, status, transparency proofs."""


@ledger.command("status")
@data_dir_option
@json_option
def ledger_status(data_dir: str | None, as_json: bool) -> None:
    """Network, log size, supply, state root, frozen accounts."""
    st = client_for(data_dir).get("/ledger/status")
    emit(as_json, st, print_lines(f"{k:<16} {v}" for k, v in st.items()))


@ledger.command("log")
@click.option("--start", default=0, type=click.IntRange(0))
@click.option("--limit", default=50, type=click.IntRange(0, 10_000))
@data_dir_option
@json_option
def ledger_log(start: int, limit: int, data_dir: str | None, as_json: bool) -> None:
    """Entries of the ledger log (genesis, transactions, fraud proofs)."""
    res = client_for(data_dir).get("/ledger/log", params={"start": start, "limit": limit})

    def human() -> None:
        for e in res["entries"]:
            detail = f"{e['op']:<15} {e['account'][:16]} seq {e['seq']}" if e["kind"] == "tx" else ""
            echo(f"{e['index']:>6}  {e['kind']:<11} {detail}".rstrip())

    emit(as_json, res, human)


@ledger.command("tx")
@click.argument("tx_id", metavar="TX_ID")
@data_dir_option
@json_option
def ledger_tx(tx_id: str, data_dir: str | None, as_json: bool) -> None:
    """One transaction by id."""
    view = client_for(data_dir).get(path_of("/ledger/txs/{}", tx_id))
    emit(as_json, view, lambda: echo(json.dumps(view, indent=2)))


@ledger.command("vkey")
@output_option
@data_dir_option
@json_option
def ledger_vkey(output: str | None, data_dir: str | None, as_json: bool) -> None:
    """The verifier key auditors pass to `n3xus audit … --key`."""
    vkey = client_for(data_dir).text("GET", "/ledger/vkey")
    emit_text(vkey, output, as_json, "vkey")


@ledger.command("checkpoint")
@click.option("--sign", is_flag=True, help="Sign a new checkpoint of the log as it is now.")
@output_option
@data_dir_option
@json_option
def ledger_checkpoint(sign: bool, output: str | None, data_dir: str | None, as_json: bool) -> None:
    """The ledger's signed checkpoint (C2SP tlog-checkpoint, with the state root)."""
    note = client_for(data_dir).text("POST" if sign else "GET", "/ledger/checkpoint")
    emit_text(note, output, as_json, "checkpoint", _note_fields(note))


@ledger.command("proof")
@click.argument("tx_id", metavar="TX_ID")
@output_option
@data_dir_option
@json_option
def ledger_proof(tx_id: str, output: str | None, data_dir: str | None, as_json: bool) -> None:
    """Offline inclusion bundle for TX_ID (verify with `n3xus audit verify`)."""
    bundle = client_for(data_dir).text("GET", path_of("/ledger/proofs/tx/{}", tx_id))
    emit_text(bundle, output, as_json, "bundle", {"tx": tx_id})


@ledger.command("state-proof")
@click.argument("who", metavar="[WALLET|ACCOUNT]", required=False)
@click.option("--asset", default=None, help="Prove the owner of this asset's --edition instead.")
@click.option("--edition", default=None, type=click.IntRange(1, 2**32 - 1))
@output_option
@data_dir_option
@json_option
def ledger_state_proof(who: str | None, asset: str | None, edition: int | None,
                       output: str | None, data_dir: str | None, as_json: bool) -> None:
    """Prove an account's balance, or an edition's owner, at a signed checkpoint."""
    from ..services.wallets import parse_account

    if asset is not None:
        if edition is None or who is not None:
            raise click.UsageError("--asset needs --edition and no account")
        params: dict[str, Any] = {"asset": asset, "edition": edition}
    else:
        params = {"account": parse_account(data_dir_of(data_dir), who or "node").hex()}
    bundle = client_for(data_dir).text("GET", "/ledger/proofs/state", params=params)
    emit_text(bundle, output, as_json, "bundle", params)


@ledger.command("consistency")
@click.argument("old_size", type=click.IntRange(1))
@output_option
@data_dir_option
@json_option
def ledger_consistency(old_size: int, output: str | None, data_dir: str | None,
                       as_json: bool) -> None:
    """Consistency bundle from the checkpoint of tree size OLD_SIZE to now."""
    bundle = client_for(data_dir).text("GET", "/ledger/proofs/consistency",
                                       params={"old": old_size})
    emit_text(bundle, output, as_json, "bundle", {"old_size": old_size})


@ledger.command("export")
@click.option("--car", "car_path", required=True, metavar="PATH",
              help="Output CAR file (`-` for stdout).")
@data_dir_option
@json_option
def ledger_export(car_path: str, data_dir: str | None, as_json: bool) -> None:
    """The whole ledger up to a fresh signed checkpoint, for `n3xus audit replay`."""
    if as_json and car_path == "-":
        raise click.UsageError("--json needs --car FILE (with `-`, stdout carries the CAR)")
    client = client_for(data_dir, STREAM_TIMEOUT_S)
    written = _download(client, "/ledger/export", None, car_path, "exporting")
    if car_path != "-":
        emit(as_json, {"car": car_path, "bytes": written},
             lambda: echo(f"wrote {written} bytes to {car_path}"))
