"""Live rooms over HTTP: the room registry (list, create, show, end, follow), the public
routes the pages use (tip-info, tips, recordings and their segments), and the plain
Starlette routes that are not API operations (the signaling WebSocket, the three pages,
their static assets).

Routes for people running the node need the API token; the routes the pages call are
public by design (specs/live.md §3): a tip envelope is self-authenticating and goes only
to the room's creator, a recording is replayable by anyone with its CID, and segment
bytes are served only for segments of a recording of that room. The signaling
WebSocket accepts a room token in its ``hello`` (browsers) or the API token in an
``Authorization`` header on the upgrade request, which makes the caller the room's owner.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from n3xus.webrtc.asgi import (
    MAX_TIP_ENVELOPE_BYTES,
    SIGNAL_PATH,
    StarletteSignalingSocket,
    live_routes,
)
from n3xus.webrtc.errors import TipRefusedError
from n3xus.webrtc.rooms import DEFAULT_TOKEN_TTL_MS, Grant, Role

from ..services.live import LiveNode, RoomError, RoomRecord
from .schemas import BINARY, CID_TEXT, HEX32, OCTETS, STRING, arr, nullable, obj
from .server import ApiProblem, ApiRoute, Body, Param, read_body, read_json

if TYPE_CHECKING:
    from ..runtime import Node

ROOM_NAME: dict[str, Any] = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$",
                             "description": "a room name (lower-case letters, digits, '-')"}
_name = Param("name", ROOM_NAME, "room name", where="path", required=True)
_cid = Param("cid", CID_TEXT, "the recording manifest's CID", where="path", required=True)
_LINKS = obj({"room": STRING, "perform": STRING, "watch": STRING})
_TOKENS = obj({"owner": STRING, "performer": STRING, "collaborator": STRING,
               "viewer": STRING})
ROOM_SCHEMA = obj({"name": STRING, "created": {"type": "integer"}, "creator": HEX32,
                   "ended": {"type": "boolean"}, "live": {"type": "boolean"},
                   "recordings": arr(STRING)},
                  {"origin": nullable({"type": "object"}), "follow": {"type": "object"},
                   "links": _LINKS, "tokens": _TOKENS, "peers": {"type": "integer"},
                   "viewers": {"type": "integer"}, "follow_error": nullable(STRING)},
                  extra=True)
#: How a WebSocket's ``Authorization`` header is compared to the API token (digest,
#: constant time), as the HTTP boundary does.
_BEARER = "bearer "


def _problem(exc: RoomError) -> ApiProblem:
    return ApiProblem(exc.status, exc.code, exc.message)


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def room_routes(node: Node, live: LiveNode) -> list[ApiRoute]:
    async def room_doc(request: Request, record: RoomRecord, with_links: bool) -> dict[str, Any]:
        doc = await live.describe(record)
        if with_links and not record.ended:
            doc.update(live.invites(record.name, _base_url(request)))
        return doc

    async def list_rooms(request: Request) -> Response:
        import trio

        records = await trio.to_thread.run_sync(live.rooms.all)
        return JSONResponse({"rooms": [await room_doc(request, r, False) for r in records]})

    async def create_room(request: Request) -> Response:
        body = await read_json(request)
        try:
            record = await live.create(body["name"], body.get("creator"))
        except RoomError as exc:
            raise _problem(exc) from None
        return JSONResponse(await room_doc(request, record, True), status_code=201)

    async def follow_room(request: Request) -> Response:
        body = await read_json(request)
        try:
            record = await live.follow(request.path_params["name"], body["from"],
                                       body["token"], body.get("remote_room"))
        except RoomError as exc:
            raise _problem(exc) from None
        return JSONResponse(await room_doc(request, record, True), status_code=201)

    async def show_room(request: Request) -> Response:
        try:
            record = await live.get(request.path_params["name"])
        except RoomError as exc:
            raise _problem(exc) from None
        return JSONResponse(await room_doc(request, record, True))

    async def end_room(request: Request) -> Response:
        try:
            record = await live.end(request.path_params["name"])
        except RoomError as exc:
            raise _problem(exc) from None
        return JSONResponse(await room_doc(request, record, False))

    async def tip_info(request: Request) -> Response:
        account = request.query_params.get("account", "")
        info = await live.tip_info(request.path_params["name"], bytes.fromhex(account))
        if info is None:
            raise ApiProblem(404, "not-found", "tipping is not available in this room")
        return JSONResponse(info, headers={"Cache-Control": "no-store"})

    async def submit_tip(request: Request) -> Response:
        body = await read_body(request, MAX_TIP_ENVELOPE_BYTES, ApiProblem(
            413, "too-large", f"a tip envelope is at most {MAX_TIP_ENVELOPE_BYTES} bytes"))
        try:
            answer = await live.submit_tip(request.path_params["name"], body)
        except TipRefusedError as exc:
            raise ApiProblem(422, exc.code, exc.message) from None
        return JSONResponse(answer)

    async def recording(request: Request) -> Response:
        replay = await live.replay(request.path_params["name"], request.path_params["cid"])
        if replay is None:
            raise ApiProblem(404, "not-found", "no such recording")
        return JSONResponse(replay, headers={"Cache-Control": "no-store"})

    file_handler = _canon_file_handler(node)

    async def segment(request: Request) -> Response:
        params = request.path_params
        if not await live.segment_allowed(params["name"], params["cid"], params["segment"]):
            raise ApiProblem(404, "not-found", "no such segment in this recording")
        request.scope["path_params"] = {**params, "cid": params["segment"]}
        return await file_handler(request)

    tag = "rooms"
    room_json = Body("application/json", obj({"name": ROOM_NAME}, {"creator": HEX32}))
    follow_json = Body("application/json", obj(
        {"from": {"type": "string", "minLength": 1, "maxLength": 512,
                  "description": "the origin: a peer id or a dial address /ip4/…/p2p/<id>"},
         "token": {"type": "string", "minLength": 1, "maxLength": 512,
                   "description": "a room token of the origin with `watch` (a viewer link's)"}},
        {"remote_room": ROOM_NAME}))
    return [
        ApiRoute("GET", "/rooms", list_rooms, "Live rooms of this node", tag=tag,
                 response_schema=obj({"rooms": arr(ROOM_SCHEMA)})),
        ApiRoute("POST", "/rooms", create_room, "Create a room: its invite links and tokens",
                 tag=tag, body=room_json, response_schema=ROOM_SCHEMA, errors=(409,)),
        ApiRoute("GET", "/rooms/{name}", show_room, "A room, with fresh invite links",
                 tag=tag, params=(_name,), response_schema=ROOM_SCHEMA, errors=(404,)),
        ApiRoute("POST", "/rooms/{name}/end", end_room,
                 "End a room: performers and viewers are disconnected, the recording closed",
                 tag=tag, params=(_name,), response_schema=ROOM_SCHEMA, errors=(404,)),
        ApiRoute("POST", "/rooms/{name}/follow", follow_room,
                 "Serve another node's room here: pull its stream over /n3xus/live/1.0.0",
                 tag=tag, params=(_name,), body=follow_json, response_schema=ROOM_SCHEMA,
                 errors=(409,)),
        ApiRoute("GET", "/rooms/{name}/tip-info", tip_info,
                 "What a tip by ACCOUNT needs (live-signaling.md §2.1)", auth=False, tag=tag,
                 params=(_name, Param("account", HEX32, "the tipper's account", required=True)),
                 response_schema=obj({"network": STRING, "creator": HEX32,
                                      "next_seq": {"type": "integer"},
                                      "prev": nullable(STRING), "ref": nullable(STRING)},
                                     extra=True), errors=(404,)),
        ApiRoute("POST", "/rooms/{name}/tips", submit_tip,
                 "A signed tip envelope to the room's creator (live-signaling.md §2.1)", auth=False,
                 tag=tag, params=(_name,), body=Body(OCTETS, BINARY),
                 response_schema=obj({"id": STRING}, extra=True), errors=(404, 413, 422)),
        ApiRoute("GET", "/rooms/{name}/recordings/{cid}", recording,
                 "A recording's replay description (live.md §4.1)", auth=False, tag=tag,
                 params=(_name, _cid), errors=(404,)),
        ApiRoute("GET", "/rooms/{name}/recordings/{cid}/segments/{segment}", segment,
                 "A recording segment's WebM bytes (Range supported)", auth=False, tag=tag,
                 params=(_name, _cid, Param("segment", CID_TEXT, "segment CID", where="path",
                                            required=True),
                         Param("Range", STRING, "one range: bytes=A-B, A- or -N",
                               where="header")),
                 response_schema=BINARY, response_media_type="video/webm",
                 other_statuses=((206, "video/webm"),), errors=(404, 416)),
    ]


def _canon_file_handler(node: Node) -> Callable[[Request], Any]:
    """The canon file route's handler (Range reads), reused for public segments."""
    from .canon import canon_routes

    assert node.canon is not None
    for route in canon_routes(node.canon):
        if route.method == "GET" and route.path == "/canon/files/{cid}":
            return route.handler
    raise RuntimeError("the canon file route is missing")


def live_extra_routes(live: LiveNode, api_token: str) -> list[BaseRoute]:
    """The signaling WebSocket (room token, or the API token for the owner), the pages
    and their assets: plain Starlette routes (build_app ``extra_routes``)."""
    assert live.live is not None
    service = live.live
    digest = hashlib.sha256(api_token.encode()).digest()

    def owner_by_api_token(websocket: WebSocket, room: str) -> Grant | None:
        header = websocket.headers.get("authorization", "")
        if not header.lower().startswith(_BEARER):
            return None
        given = hashlib.sha256(header[len(_BEARER):].strip().encode()).digest()
        if not hmac.compare_digest(given, digest):
            return None
        now = time.time_ns() // 1_000_000
        return Grant(room, Role.OWNER, now + DEFAULT_TOKEN_TTL_MS, now)

    async def signal(websocket: WebSocket) -> None:
        room = websocket.path_params["name"]
        await websocket.accept()
        await service.serve_signaling(StarletteSignalingSocket(websocket), room,
                                      grant=owner_by_api_token(websocket, room))

    routes = [r for r in live_routes(service) if not isinstance(r, WebSocketRoute)]
    return [WebSocketRoute(SIGNAL_PATH, signal), *routes]
