"""Routes of the node itself: identity, status and peers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import AddressError, NodeError
from .server import ApiProblem, ApiRoute, read_json, require_str

if TYPE_CHECKING:
    from ..runtime import Node


def node_routes(node: Node) -> Sequence[ApiRoute]:
    async def get_id(_r: Request) -> Response:
        return JSONResponse(node.identity())

    async def get_status(_r: Request) -> Response:
        return JSONResponse(node.status())

    async def get_peers(_r: Request) -> Response:
        return JSONResponse({"peers": node.peers()})

    async def post_connect(request: Request) -> Response:
        addr = require_str(await read_json(request), "multiaddr")
        try:
            peer = await node.connect(addr)
        except AddressError as exc:
            raise ApiProblem(400, "bad_multiaddr", str(exc)) from exc
        except (NodeError, OSError) as exc:
            raise ApiProblem(502, "dial_failed", str(exc)) from exc
        return JSONResponse({"peer_id": peer})

    async def post_ping(request: Request) -> Response:
        peer = require_str(await read_json(request), "peer_id")
        try:
            rtt = await node.ping(peer)
        except (NodeError, OSError) as exc:
            raise ApiProblem(502, "ping_failed", str(exc)) from exc
        return JSONResponse({"peer_id": peer, "rtt_ms": round(rtt * 1000, 3)})

    peer_schema = {
        "type": "object",
        "properties": {"peer_id": {"type": "string"},
                       "addrs": {"type": "array", "items": {"type": "string"}}},
    }
    return [
        ApiRoute("GET", "/id", get_id, "The node's peer ID, public key and addresses", auth=False),
        ApiRoute("GET", "/status", get_status, "Peer ID, addresses, uptime, peers, counters"),
        ApiRoute("GET", "/peers", get_peers, "Connected peers",
                 response_schema={"type": "object", "properties": {
                     "peers": {"type": "array", "items": peer_schema}}}),
        ApiRoute("POST", "/peers/connect", post_connect, "Dial a peer by multiaddr",
                 request_schema={"type": "object", "required": ["multiaddr"],
                                 "properties": {"multiaddr": {"type": "string"}}}),
        ApiRoute("POST", "/peers/ping", post_ping, "Ping a connected peer",
                 request_schema={"type": "object", "required": ["peer_id"],
                                 "properties": {"peer_id": {"type": "string"}}}),
    ]
