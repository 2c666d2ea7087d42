"""HTTP routes of the ledger: genesis, accounts, transaction submission and lookup,
assets, the log, and fraud proofs. (Transparency routes — checkpoints, proofs,
exports — are added by :func:`transparency_routes` when the log is wired.)"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from n3xus.canon.cid import CID
from n3xus.ledger.errors import (
    CheckpointRefusedError,
    LedgerError,
    ProofUnavailableError,
    TxRejected,
)
from n3xus.ledger.export import export_ledger
from n3xus.ledger.tx import MAX_TX_BYTES

from ..services.ledger import LedgerService, genesis_view
from .canon import parse_cid, stream_from_threads
from .schemas import (
    BINARY,
    BOOLEAN,
    CAR,
    CID_TEXT,
    DAG_CBOR,
    HEX32,
    MAX_I63,
    MAX_U32,
    STRING,
    TEXT,
    arr,
    enum,
    integer,
    nullable,
    obj,
)
from .server import ApiProblem, ApiRoute, Body, Param, Problem, problems, query, read_body

# Log listings return at most this many entries per call.
MAX_LOG_LIMIT = 10_000
# A ledger export is written to a spool first (export_ledger writes to a file-like
# object); small exports stay in memory, larger ones go to a temporary file.
EXPORT_SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
EXPORT_PIECE_BYTES = 256 * 1024


def _rejection_reason(exc: Exception) -> str:
    assert isinstance(exc, TxRejected)
    return str(exc.reason)


_ledger_problems = problems(
    Problem(TxRejected, 422, _rejection_reason),
    Problem(ProofUnavailableError, 404, "proof_unavailable"),
    Problem(CheckpointRefusedError, 409, "checkpoint_refused"),
    Problem((LedgerError, ValueError), 400, "bad_request"),
)


def _account(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiProblem(400, "bad_account", f"{text[:80]!r} is not a 64-hex-digit account key")
    return raw


_cid = parse_cid
ACCOUNT_HEX = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$",
               "description": "an account: its ed25519 public key as 64 hex digits"}
ACCOUNT = obj({"account": HEX32, "balance": integer(), "next_seq": integer(),
               "prev": nullable(CID_TEXT), "head_time": nullable(integer()),
               "frozen": BOOLEAN})
TX = {"id": CID_TEXT, "op": STRING, "account": HEX32, "seq": integer(),
      "prev": nullable(CID_TEXT), "time": integer(), "network": CID_TEXT,
      "args": {"type": "object", "description": "the operation's arguments (accounts and "
                                                "bytes as hex, CIDs as text)"}}
LOG_ROW = {"oneOf": [
    obj({"index": {"const": 0}, "kind": {"const": "genesis"}, "id": CID_TEXT}),
    obj({"index": integer(), "kind": {"const": "fraud-proof"}}),
    obj({"index": integer(), "kind": {"const": "tx"}, **TX}),
]}
GENESIS = obj({"cid": CID_TEXT, "v": integer(), "name": STRING, "issuers": arr(HEX32),
               "supply_cap": integer(), "platform": HEX32, "royalty_bps": integer(),
               "creator_bps": integer(), "platform_bps": integer(),
               "max_royalty_bps": integer(), "max_editions": integer()}, extra=True)
ASSET = obj({
    "asset": CID_TEXT, "creator": HEX32, "artifact": CID_TEXT, "royalty_bps": integer(),
    "creator_bps": integer(), "platform_bps": integer(),
    "editions": arr(obj({"edition": integer(1), "owner": nullable(HEX32),
                         "listing": nullable(obj({"seller": HEX32, "price": integer(),
                                                  "listing": CID_TEXT}))})),
})
STATUS = obj({"network": CID_TEXT, "name": STRING, "log_size": integer(), "supply": integer(),
              "supply_cap": integer(), "state_root": {"type": "string", "pattern": "^[0-9a-f]*$"},
              "frozen_accounts": arr(HEX32)})


def ledger_routes(service: LedgerService) -> list[ApiRoute]:
    run = trio.to_thread.run_sync

    async def genesis(request: Request) -> Response:
        if query(request).get("format") == "cbor":
            return Response(bytes(service.genesis), media_type=DAG_CBOR)
        return JSONResponse(genesis_view(service.genesis))

    @_ledger_problems
    async def status(_request: Request) -> Response:
        return JSONResponse(await run(service.status))

    @_ledger_problems
    async def account(request: Request) -> Response:
        return JSONResponse(await run(service.account, _account(request.path_params["account"])))

    @_ledger_problems
    async def submit(request: Request) -> Response:
        body = await read_body(request, MAX_TX_BYTES, ApiProblem(
            413, "too_large", f"a transaction is at most {MAX_TX_BYTES} bytes"))
        accepted = await run(service.submit, body)
        return JSONResponse({"id": str(accepted.cid), "log_index": accepted.log_index})

    async def view_by_cid(request: Request, lookup: Callable[[CID], dict[str, Any] | None],
                          what: str) -> Response:
        """The view of the ``{id}`` in the path, or 404 naming ``what`` it would have been."""
        cid = _cid(request.path_params["id"])
        view = await run(lookup, cid)
        if view is None:
            raise ApiProblem(404, "not_found", f"{what} {cid} is not in this node's ledger")
        return JSONResponse(view)

    @_ledger_problems
    async def get_tx(request: Request) -> Response:
        return await view_by_cid(request, service.tx, "transaction")

    @_ledger_problems
    async def get_asset(request: Request) -> Response:
        return await view_by_cid(request, service.asset, "asset")

    @_ledger_problems
    async def log(request: Request) -> Response:
        q = query(request)
        return JSONResponse({"entries": await run(service.log, q.get("start", 0), q.get("limit", 100)),
                             "size": await run(service.store.log_size)})

    @_ledger_problems
    async def fraud_proof(request: Request) -> Response:
        proof = await run(service.store.fraud_proof, _account(request.path_params["account"]))
        if proof is None:
            raise ApiProblem(404, "not_found", "no fraud proof froze that account")
        return Response(proof, media_type=DAG_CBOR)

    def _text(body: str) -> Response:
        return Response(body, media_type=TEXT)

    async def vkey(_request: Request) -> Response:
        return _text(await run(service.vkey) + "\n")

    @_ledger_problems
    async def checkpoint(request: Request) -> Response:
        return _text(await run(service.checkpoint, request.method == "POST"))

    @_ledger_problems
    async def tx_proof(request: Request) -> Response:
        return _text(await run(service.inclusion_bundle, _cid(request.path_params["id"])))

    @_ledger_problems
    async def state_proof(request: Request) -> Response:
        q = query(request)
        if "account" in q and "asset" not in q and "edition" not in q:
            target: bytes | tuple[CID, int] = _account(q["account"])
        elif "asset" in q and "edition" in q and "account" not in q:
            target = (_cid(q["asset"]), q["edition"])
        else:
            raise ApiProblem(400, "bad_request", "give account=HEX, or asset=CID and edition=N")
        return _text(await run(service.state_proof, target))

    @_ledger_problems
    async def consistency(request: Request) -> Response:
        return _text(await run(service.consistency_bundle, query(request)["old"]))

    @_ledger_problems
    async def export(_request: Request) -> Response:
        def write() -> tempfile.SpooledTemporaryFile[bytes]:
            service.checkpoint(fresh=True)
            spool = tempfile.SpooledTemporaryFile(max_size=EXPORT_SPOOL_MEMORY_BYTES)
            export_ledger(service.store, service.tlog, spool)  # type: ignore[arg-type]
            spool.seek(0)
            return spool

        spool = await run(write)

        def pieces() -> Iterator[bytes]:
            with spool:
                while piece := spool.read(EXPORT_PIECE_BYTES):
                    yield piece

        return StreamingResponse(stream_from_threads(pieces()), media_type=CAR)

    text = {"type": "string"}
    id_path = Param("id", CID_TEXT, where="path", required=True)
    account_path = Param("account", ACCOUNT_HEX, where="path", required=True)

    def text_route(method: str, path: str, handler: Any, summary: str, **kw: Any) -> ApiRoute:
        return ApiRoute(method, path, handler, summary, tag="ledger", response_schema=text,
                        response_media_type=TEXT, **kw)

    return [
        text_route("GET", "/ledger/vkey", vkey, "Verifier key (C2SP vkey) of this node's ledger "
                   "checkpoints", auth=False),
        text_route("GET", "/ledger/checkpoint", checkpoint, "The last signed checkpoint (signs one "
                   "if none yet)", errors=(409,)),
        text_route("POST", "/ledger/checkpoint", checkpoint, "Sign a checkpoint of the log as it is now",
                   errors=(409,)),
        text_route("GET", "/ledger/proofs/tx/{id}", tx_proof, "Offline inclusion bundle (C2SP "
                   "tlog-proof) for a transaction", params=(id_path,), errors=(404, 409)),
        text_route("GET", "/ledger/proofs/state", state_proof, "State proof: account=HEX balance, "
                   "or asset=&edition= owner",
                   params=(Param("account", ACCOUNT_HEX, "prove this account's balance"),
                           Param("asset", CID_TEXT, "prove the owner of this asset's edition"),
                           Param("edition", integer(1, MAX_U32), "the edition (with asset)")),
                   errors=(404, 409)),
        text_route("GET", "/ledger/proofs/consistency", consistency, "Consistency bundle from tree "
                   "size old=N to now",
                   params=(Param("old", integer(1, MAX_I63), "an earlier checkpoint's tree size",
                                 required=True),), errors=(404, 409)),
        ApiRoute("GET", "/ledger/export", export, "The ledger up to a fresh checkpoint, as an "
                 "export CAR for `audit replay`", tag="ledger", response_schema=BINARY,
                 response_media_type=CAR, errors=(409,)),
        ApiRoute("GET", "/ledger/genesis", genesis, "The network's genesis (format=cbor: the "
                 "DAG-CBOR block)", tag="ledger",
                 params=(Param("format", enum("json", "cbor"), "json (default) or cbor"),),
                 response_schema=GENESIS, alt_responses=((DAG_CBOR, BINARY),)),
        ApiRoute("GET", "/ledger/status", status, "Network, log size, supply, state root, frozen "
                 "accounts", tag="ledger", response_schema=STATUS),
        ApiRoute("GET", "/ledger/accounts/{account}", account, "Balance, next seq, prev, frozen",
                 tag="ledger", params=(account_path,), response_schema=ACCOUNT),
        ApiRoute("POST", "/ledger/txs", submit, "Submit a signed transaction envelope", tag="ledger",
                 body=Body(DAG_CBOR, BINARY, f"a signed envelope (DAG-CBOR, at most {MAX_TX_BYTES} "
                           "bytes, specs/ledger.md)"),
                 response_schema=obj({"id": CID_TEXT, "log_index": integer()}),
                 errors=(413, 422), description="A rejection is 422 with the reason code of "
                 "specs/ledger.md as the error code (e.g. `overdraft`, `bad-seq`)."),
        ApiRoute("GET", "/ledger/txs/{id}", get_tx, "A transaction by id", tag="ledger",
                 params=(id_path,), response_schema=obj({**TX, "log_index": nullable(integer())}),
                 errors=(404,)),
        ApiRoute("GET", "/ledger/assets/{id}", get_asset, "An asset, its editions, owners, listings",
                 tag="ledger", params=(id_path,), response_schema=ASSET, errors=(404,)),
        ApiRoute("GET", "/ledger/log", log, "Ledger log entries (start, limit)", tag="ledger",
                 params=(Param("start", integer(0, MAX_I63), "first entry index (default 0)"),
                         Param("limit", integer(0, MAX_LOG_LIMIT), "at most this many entries "
                               "(default 100)")),
                 response_schema=obj({"entries": arr(LOG_ROW), "size": integer()})),
        ApiRoute("GET", "/ledger/fraud-proofs/{account}", fraud_proof, "The fraud proof that froze "
                 "an account", tag="ledger", params=(account_path,), response_schema=BINARY,
                 response_media_type=DAG_CBOR, errors=(404,)),
    ]
