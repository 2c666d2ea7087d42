"""HTTP routes of the ledger: genesis, accounts, transaction submission and lookup,
assets, the log, and fraud proofs. (Transparency routes — checkpoints, proofs,
exports — are added by :func:`transparency_routes` when the log is wired.)"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Awaitable, Callable, Iterator

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
from .canon import stream_from_threads
from .server import ApiProblem, ApiRoute

Handler = Callable[[Request], Awaitable[Response]]
# Log listings return at most this many entries per call.
MAX_LOG_LIMIT = 10_000
# A ledger export is written to a spool first (export_ledger writes to a file-like
# object); small exports stay in memory, larger ones go to a temporary file.
EXPORT_SPOOL_MEMORY_BYTES = 8 * 1024 * 1024
EXPORT_PIECE_BYTES = 256 * 1024


def _ledger_problems(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except TxRejected as exc:
            raise ApiProblem(422, str(exc.reason), str(exc)) from exc
        except ProofUnavailableError as exc:
            raise ApiProblem(404, "proof_unavailable", str(exc)) from exc
        except CheckpointRefusedError as exc:
            raise ApiProblem(409, "checkpoint_refused", str(exc)) from exc
        except (LedgerError, ValueError) as exc:
            raise ApiProblem(400, "bad_request", str(exc)) from exc

    return wrapped


def _account(text: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiProblem(400, "bad_account", f"{text!r} is not a 64-hex-digit account key")
    return raw


def _cid(text: str) -> CID:
    try:
        return CID(text)
    except ValueError as exc:
        raise ApiProblem(400, "bad_cid", f"malformed id {text!r}: {exc}") from exc


def ledger_routes(service: LedgerService) -> list[ApiRoute]:
    run = trio.to_thread.run_sync

    async def genesis(request: Request) -> Response:
        if request.query_params.get("format") == "cbor":
            return Response(bytes(service.genesis), media_type="application/cbor")
        return JSONResponse(genesis_view(service.genesis))

    @_ledger_problems
    async def status(_request: Request) -> Response:
        return JSONResponse(await run(service.status))

    @_ledger_problems
    async def account(request: Request) -> Response:
        return JSONResponse(await run(service.account, _account(request.path_params["account"])))

    @_ledger_problems
    async def submit(request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_TX_BYTES:
                raise ApiProblem(413, "too_large", f"a transaction is at most {MAX_TX_BYTES} bytes")
        accepted = await run(service.submit, bytes(body))
        return JSONResponse({"id": str(accepted.cid), "log_index": accepted.log_index})

    @_ledger_problems
    async def get_tx(request: Request) -> Response:
        view = await run(service.tx, _cid(request.path_params["id"]))
        if view is None:
            raise ApiProblem(404, "not_found", f"no transaction {request.path_params['id']}")
        return JSONResponse(view)

    @_ledger_problems
    async def get_asset(request: Request) -> Response:
        view = await run(service.asset, _cid(request.path_params["id"]))
        if view is None:
            raise ApiProblem(404, "not_found", f"no asset {request.path_params['id']}")
        return JSONResponse(view)

    @_ledger_problems
    async def log(request: Request) -> Response:
        start = int(request.query_params.get("start", "0") or 0)
        limit = min(int(request.query_params.get("limit", "100") or 100), MAX_LOG_LIMIT)
        if start < 0 or limit < 0:
            raise ApiProblem(400, "bad_request", "start and limit must be >= 0")
        return JSONResponse({"entries": await run(service.log, start, limit),
                             "size": await run(service.store.log_size)})

    @_ledger_problems
    async def fraud_proof(request: Request) -> Response:
        proof = await run(service.store.fraud_proof, _account(request.path_params["account"]))
        if proof is None:
            raise ApiProblem(404, "not_found", "no fraud proof for that account")
        return Response(proof, media_type="application/cbor")

    text = {"type": "string"}

    def _text(body: str) -> Response:
        return Response(body, media_type="text/plain; charset=utf-8")

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
        q = request.query_params
        if "account" in q:
            target: bytes | tuple[CID, int] = _account(q["account"])
        elif "asset" in q and q.get("edition", "").isdigit():
            target = (_cid(q["asset"]), int(q["edition"]))
        else:
            raise ApiProblem(400, "bad_request", "give account=HEX, or asset=CID and edition=N")
        return _text(await run(service.state_proof, target))

    @_ledger_problems
    async def consistency(request: Request) -> Response:
        old = request.query_params.get("old", "")
        if not old.isdigit():
            raise ApiProblem(400, "bad_request", "old=SIZE (a checkpoint's tree size) is required")
        return _text(await run(service.consistency_bundle, int(old)))

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

        return StreamingResponse(stream_from_threads(pieces()), media_type="application/vnd.ipld.car; version=1")

    return [
        ApiRoute("GET", "/ledger/vkey", vkey, "Verifier key (C2SP vkey) of this node's ledger checkpoints", auth=False,
                 tag="ledger", response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/ledger/checkpoint", checkpoint, "The last signed checkpoint (signs one if none yet)", tag="ledger",
                 response_schema=text, response_media_type="text/plain"),
        ApiRoute("POST", "/ledger/checkpoint", checkpoint, "Sign a checkpoint of the log as it is now", tag="ledger",
                 response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/ledger/proofs/tx/{id}", tx_proof, "Offline inclusion bundle (C2SP tlog-proof) for a transaction",
                 tag="ledger", response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/ledger/proofs/state", state_proof, "State proof: account=HEX balance, or asset=&edition= owner",
                 tag="ledger", response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/ledger/proofs/consistency", consistency, "Consistency bundle from tree size old=N to now",
                 tag="ledger", response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/ledger/export", export, "The ledger up to a fresh checkpoint, as an export CAR for `audit replay`",
                 tag="ledger", response_schema={"type": "string", "format": "binary"},
                 response_media_type="application/vnd.ipld.car"),
        ApiRoute("GET", "/ledger/genesis", genesis, "The network's genesis (format=cbor for the block)", tag="ledger"),
        ApiRoute("GET", "/ledger/status", status, "Network, log size, supply, state root, frozen accounts", tag="ledger"),
        ApiRoute("GET", "/ledger/accounts/{account}", account, "Balance, next seq, prev, frozen", tag="ledger"),
        ApiRoute("POST", "/ledger/txs", submit, "Submit a signed transaction envelope (DAG-CBOR body)", tag="ledger",
                 request_schema={"type": "string", "format": "binary"}),
        ApiRoute("GET", "/ledger/txs/{id}", get_tx, "A transaction by id", tag="ledger"),
        ApiRoute("GET", "/ledger/assets/{id}", get_asset, "An asset, its editions, owners, listings", tag="ledger"),
        ApiRoute("GET", "/ledger/log", log, "Ledger log entries (start, limit)", tag="ledger"),
        ApiRoute("GET", "/ledger/fraud-proofs/{account}", fraud_proof, "The fraud proof that froze an account", tag="ledger",
                 response_schema={"type": "string", "format": "binary"}, response_media_type="application/cbor"),
    ]
