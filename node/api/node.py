"""Routes of the node itself: identity, status and peers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import AddressError, NodeError
from ..p2p.host import parse_peer_addr, parse_peer_id
from .schemas import JSON, NUMBER, STRING, arr, integer, obj
from .server import ApiProblem, ApiRoute, Body, read_json

if TYPE_CHECKING:
    from ..runtime import Node

PEER_ID = {"type": "string", "description": "a libp2p peer ID (base58btc, 12D3Koo…)"}
MULTIADDR = {"type": "string", "description": "a multiaddr, e.g. /ip4/127.0.0.1/tcp/4141/p2p/12D3Koo…"}
ADDRS = arr(MULTIADDR)
# What the federation layer adds to each peer (node/services/peers.py PeerBook.describe).
FEDERATION_FIELDS: dict[str, dict[str, Any]] = {
    "hello": {"type": ["object", "null"], "description": "the peer's verified hello (version, "
              "agent, network, protocols, capabilities, canon/ledger checkpoint sizes, cid)"},
    "score": {"type": "number", "description": "peer score; banned at the threshold"},
    "banned": {"type": ["object", "null"], "description": "{peer_id, seconds_left, reason}"},
    "refusal": {"type": ["object", "null"], "description": "last hello refusal: {code, "
                "reason, message, by: us | peer}"},
    "traffic": {"type": ["object", "null"], "description": "bytes, streams per protocol, "
                "penalties per reason"},
}
# Peer and status views grow with the federation work (issue 8/9): declared fields
# are checked, further fields are allowed.
PEER = obj({"peer_id": PEER_ID, "addrs": ADDRS},
           {"direction": {"enum": ["inbound", "outbound", "unknown"]},
            "connected_since": {"type": "number", "description": "unix seconds"},
            "last_ping_rtt_ms": {"type": ["number", "null"]},
            "last_ping_at": {"type": ["number", "null"], "description": "unix seconds"},
            **FEDERATION_FIELDS},
           extra=True)
OTHER_PEER = obj({"peer_id": PEER_ID, "connected": {"type": "boolean"}}, FEDERATION_FIELDS,
                 extra=True)
IDENTITY = obj({"peer_id": PEER_ID, "public_key": {"type": "string", "pattern": "^[0-9a-f]*$"},
                "listen_addrs": ADDRS, "dial_addrs": ADDRS})
STATUS = obj({
    "peer_id": PEER_ID, "version": STRING, "listen_addrs": ADDRS, "dial_addrs": ADDRS,
    "api_url": STRING, "uptime_s": NUMBER, "peers": arr(PEER), "peer_count": integer(),
    "counters": {"type": "object", "additionalProperties": integer()}, "data_dir": STRING,
}, {"connection_gate": {"type": "object"}, "discovery": {"type": ["object", "null"]}}, extra=True)
CONNECTED = obj({
    "peer_id": PEER_ID,
    "already_connected": {"type": "boolean", "description": "true: no dial was made, the "
                          "peer was connected already (on the addresses in addrs)"},
    "addrs": arr(MULTIADDR),
})


def is_peer_id(text: str) -> bool:
    """Whether ``text`` is a libp2p peer ID: base58btc of an identity multihash (ed25519
    keys, ``12D3Koo…``) or of a SHA2-256 multihash (``Qm…``)."""
    try:
        raw = parse_peer_id(text).to_bytes()
    except (AddressError, ValueError):
        return False
    if raw[:1] == b"\x00":
        return len(raw) >= 2 and raw[1] == len(raw) - 2
    return raw[:2] == b"\x12\x20" and len(raw) == 34


def node_routes(node: Node) -> Sequence[ApiRoute]:
    async def get_id(_r: Request) -> Response:
        return JSONResponse(node.identity())

    async def get_status(_r: Request) -> Response:
        return JSONResponse(node.status())

    def federated(peers: list[dict[str, Any]]) -> dict[str, Any]:
        # hello / score / banned / refusal / traffic per peer (node/p2p/federation.py), and
        # the refused or banned peers that are no longer connected.
        federation = getattr(node, "federation", None)
        if federation is None:
            return {"peers": peers, "others": []}
        return {"peers": [{**p, **federation.peer_fields(p["peer_id"])} for p in peers],
                "others": federation.other_peers({p["peer_id"] for p in peers})}

    async def get_peers(_r: Request) -> Response:
        return JSONResponse(federated(node.peers()))

    async def post_ban(request: Request) -> Response:
        body = await read_json(request)
        peer, seconds = body["peer_id"], body.get("seconds")
        if not is_peer_id(peer):
            raise ApiProblem(400, "bad_peer_id", f"{peer[:100]} is not a peer ID")
        if node.federation is None:
            raise ApiProblem(503, "not_ready", "the node's federation layer is not running")
        try:
            result = await node.federation.ban(peer, seconds)
        except ValueError as exc:
            raise ApiProblem(400, "bad_seconds", str(exc)) from exc
        return JSONResponse(result)

    async def post_unban(request: Request) -> Response:
        peer = (await read_json(request))["peer_id"]
        if not is_peer_id(peer):
            raise ApiProblem(400, "bad_peer_id", f"{peer[:100]} is not a peer ID")
        if node.federation is None:
            raise ApiProblem(503, "not_ready", "the node's federation layer is not running")
        return JSONResponse(node.federation.unban(peer))

    async def post_connect(request: Request) -> Response:
        addr = (await read_json(request))["multiaddr"]
        try:
            peer_id = str(parse_peer_addr(addr)[0])
        except AddressError as exc:
            raise ApiProblem(400, "bad_multiaddr", str(exc)) from exc
        # A connected peer is not dialled again (libp2p would return at once without
        # trying addr): say so, and which connection is in use.
        current = next((p for p in node.peers() if p["peer_id"] == peer_id), None)
        if current is not None:
            return JSONResponse({"peer_id": peer_id, "already_connected": True,
                                 "addrs": current["addrs"]})
        try:
            peer = await node.connect(addr)
        except AddressError as exc:
            raise ApiProblem(400, "bad_multiaddr", str(exc)) from exc
        except (NodeError, OSError) as exc:
            raise ApiProblem(502, "dial_failed", str(exc)) from exc
        used: list[str] = next((p["addrs"] for p in node.peers() if p["peer_id"] == peer), [])
        return JSONResponse({"peer_id": peer, "already_connected": False, "addrs": used})

    async def post_ping(request: Request) -> Response:
        peer = (await read_json(request))["peer_id"]
        if not is_peer_id(peer):
            raise ApiProblem(400, "bad_peer_id", f"{peer[:100]} is not a peer ID")
        try:
            rtt = await node.ping(peer)
        except AddressError as exc:
            raise ApiProblem(400, "bad_peer_id", str(exc)) from exc
        except (NodeError, OSError) as exc:
            raise ApiProblem(502, "ping_failed", str(exc)) from exc
        return JSONResponse({"peer_id": peer, "rtt_ms": round(rtt * 1000, 3)})

    short = {"type": "string", "minLength": 1, "maxLength": 1024}
    return [
        ApiRoute("GET", "/id", get_id, "The node's peer ID, public key and addresses", auth=False,
                 response_schema=IDENTITY),
        ApiRoute("GET", "/status", get_status, "Peer ID, addresses, uptime, peers, counters",
                 response_schema=STATUS),
        ApiRoute("GET", "/peers", get_peers,
                 "Connected peers (with hello, score, ban, refusal, traffic) and the refused "
                 "or banned ones no longer connected (others)",
                 response_schema=obj({"peers": arr(PEER)}, {"others": arr(OTHER_PEER)})),
        ApiRoute("POST", "/peers/ban", post_ban,
                 "Ban a peer: disconnect it and refuse it in and out for seconds "
                 "(default: the configured federation.ban_seconds)",
                 body=Body(JSON, obj({"peer_id": short},
                                     {"seconds": {"type": "number", "exclusiveMinimum": 0}})),
                 response_schema=obj({"peer_id": PEER_ID, "banned": {"type": ["object", "null"]}}),
                 errors=(503,)),
        ApiRoute("POST", "/peers/unban", post_unban, "Lift a peer's ban",
                 body=Body(JSON, obj({"peer_id": short})),
                 response_schema=obj({"peer_id": PEER_ID, "was_banned": {"type": "boolean"}}),
                 errors=(503,)),
        ApiRoute("POST", "/peers/connect", post_connect,
                 "Dial a peer by multiaddr (no dial when it is connected already)",
                 body=Body(JSON, obj({"multiaddr": short})), response_schema=CONNECTED,
                 errors=(502,)),
        ApiRoute("POST", "/peers/ping", post_ping, "Ping a connected peer",
                 body=Body(JSON, obj({"peer_id": short})),
                 response_schema=obj({"peer_id": PEER_ID, "rtt_ms": NUMBER}), errors=(502,)),
    ]
