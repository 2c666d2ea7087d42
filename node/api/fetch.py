"""HTTP routes of DAG fetches from peers (``n3xus canon fetch``) and provider search.

``POST /canon/fetch`` starts a fetch (``wait: true`` answers when it is over); its progress
is ``GET /canon/fetch/{id}`` (the CLI polls it for its progress bar); ``GET /canon/fetch``
lists the recent ones. ``GET /canon/providers/{cid}`` asks the connected peers and the DHT
who has a CID.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from n3xus.canon.cid import CID

from ..errors import NodeError
from .schemas import BOOLEAN, CID_TEXT, JSON, NUMBER, STRING, arr, enum, integer, nullable, obj
from .server import ApiProblem, ApiRoute, Body, read_json

if TYPE_CHECKING:
    from ..runtime import Node
    from ..services.fetch import FetchService

MAX_SOURCES_PER_REQUEST = 16
"""``from`` entries one request may name: more than a fetch draws from at once (8)."""

SOURCE_STATS = obj({
    "state": enum("connecting", "fetching", "finished", "failed"),
    "blocks": integer(), "bytes": integer(), "dont_haves": integer(), "mismatches": integer(),
    "error": nullable(STRING), "error_code": nullable(STRING),
})
FETCH_STATUS = obj({
    "id": STRING, "cid": CID_TEXT,
    "state": enum("searching", "fetching", "done", "failed"),
    "error": nullable(STRING), "sources": arr(STRING), "pin": BOOLEAN,
    "file_size": nullable(integer()),
    "blocks_fetched": integer(), "bytes_fetched": integer(),
    "blocks_stored_before": integer(), "blocks_known": integer(), "outstanding": integer(),
    "unavailable": integer(), "blocks_stored": integer(), "bytes_stored": integer(),
    "rejected": integer(),
    "peers": {"type": "object", "additionalProperties": SOURCE_STATS,
              "description": "per source peer: what it sent (blocks whose bytes did not "
                             "match their CID are counted in mismatches and never stored)"},
    "started_at": NUMBER, "elapsed_s": NUMBER, "bytes_per_s": NUMBER,
}, extra=True)
PROVIDERS = obj({"cid": CID_TEXT, "peers": arr(STRING),
                 "dht": arr(obj({"peer_id": STRING, "addrs": arr(STRING)}))})


def _parse_cid(text: str) -> CID:
    try:
        return CID(text)
    except ValueError as exc:
        raise ApiProblem(400, "bad_cid", f"{text[:100]} is not a CID") from exc


def fetch_routes(node: Node) -> Sequence[ApiRoute]:
    def service() -> FetchService:
        fetcher = getattr(node, "fetcher", None)
        if fetcher is None:
            raise ApiProblem(503, "not_ready", "the fetch service is not running yet")
        return fetcher

    async def post_fetch(request: Request) -> Response:
        body = await read_json(request)
        root = _parse_cid(body["cid"])
        try:
            job = service().start(root, body.get("from", []), pin=body.get("pin", True))
        except NodeError as exc:
            raise ApiProblem(503, "not_ready", str(exc)) from exc
        if body.get("wait", False):
            await job.finished.wait()
        return JSONResponse(job.status())

    async def get_fetch(request: Request) -> Response:
        job = service().jobs.get(request.path_params["id"])
        if job is None:
            raise ApiProblem(404, "not_found", f"no fetch {request.path_params['id'][:64]}")
        return JSONResponse(job.status())

    async def list_fetches(_r: Request) -> Response:
        return JSONResponse({"fetches": [job.status() for job in service().jobs.values()]})

    async def get_providers(request: Request) -> Response:
        root = _parse_cid(request.path_params["cid"])
        return JSONResponse(await service().providers(root))

    source = {"type": "string", "minLength": 1, "maxLength": 1024,
              "description": "a peer ID (connected, or found in the DHT) or a dial address "
                             "/ip4/…/tcp/…/p2p/<peer id>"}
    request_body = obj({"cid": {**CID_TEXT, "maxLength": 1024}},
                       {"from": arr(source, max_items=MAX_SOURCES_PER_REQUEST),
                        "wait": {**BOOLEAN, "description": "answer when the fetch is over"},
                        "pin": {**BOOLEAN, "description": "pin the root when complete "
                                                          "(default true)"}})
    return [
        ApiRoute("POST", "/canon/fetch", post_fetch,
                 "Fetch a DAG (a file, a world…) from peers: from the given sources, else "
                 "from providers (connected peers asked, then the DHT); resumable",
                 body=Body(JSON, request_body), response_schema=FETCH_STATUS,
                 errors=(503,), tag="federation"),
        ApiRoute("GET", "/canon/fetch", list_fetches, "Recent fetches and their progress",
                 response_schema=obj({"fetches": arr(FETCH_STATUS)}), errors=(503,),
                 tag="federation"),
        ApiRoute("GET", "/canon/fetch/{id}", get_fetch, "Progress and result of one fetch",
                 response_schema=FETCH_STATUS, errors=(404, 503), tag="federation"),
        ApiRoute("GET", "/canon/providers/{cid}", get_providers,
                 "Who has a CID: connected peers that answer have, and the DHT's providers",
                 response_schema=PROVIDERS, errors=(503,), tag="federation"),
    ]
