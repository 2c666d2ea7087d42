"""Starlette routes for live rooms: the signaling WebSocket and the three pages.

The node mounts :func:`live_routes` into its ASGI app (Starlette on hypercorn's
trio worker); tests mount the same routes on a bare Starlette app. Pages are static
files from ``webrtc/pages/`` (no build step, no CDN); each reads its room name from
the path and its room token from the URL fragment (``#token=...``), which browsers
never send in a request, so the token appears in no request line and no log.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketState

from .errors import TipRefusedError
from .rooms import ROOM_NAME_RE
from .service import LiveService

PAGES_DIR = Path(__file__).resolve().parent / "pages"
#: The signaling WebSocket (specs/live-signaling.md §1).
SIGNAL_PATH = "/api/v1/rooms/{name}/signal"
#: Static assets the pages load (absolute, so every page path finds them).
STATIC_PREFIX = "/live/static"
#: A recording's replay description (specs/live.md §4.1), read by the audience page.
RECORDING_PATH = "/api/v1/rooms/{name}/recordings/{cid}"
#: Tips from the audience page (specs/live-signaling.md §2.1).
TIP_INFO_PATH = "/api/v1/rooms/{name}/tip-info"
TIPS_PATH = "/api/v1/rooms/{name}/tips"
#: A tip envelope is ~250 bytes (a transaction map with two links and a signature);
#: a few kB leaves room for a long ``ref`` and refuses anything else unread.
MAX_TIP_ENVELOPE_BYTES = 4096
ACCOUNT_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
#: Page paths -> files (the issue fixes these paths; `n3xus room create` prints them).
PAGES = {
    "/rooms/{name}": "room.html",
    "/rooms/{name}/perform": "perform.html",
    "/rooms/{name}/watch": "watch.html",
}
#: Pages load only their own scripts and connect only to their own origin; the
#: fragment is never sent, and no Referer leaks the page URL elsewhere.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; media-src 'self' blob: mediastream:; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class StarletteSignalingSocket:
    """Adapts a Starlette WebSocket to :class:`~n3xus.webrtc.service.SignalingSocket`."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def receive_text(self) -> str | None:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        # A binary frame: hand its bytes on as text so that the size, JSON and
        # schema checks refuse it with their usual clear error.
        return bytes(message.get("bytes") or b"").decode("utf-8", "replace")

    async def send_text(self, text: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            await self.websocket.send_text(text)

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            await self.websocket.close(code, reason)


class RecordingSource(Protocol):
    """Where the node keeps recordings: the replay JSON of one, or ``None``."""

    async def replay(self, room: str, manifest_cid: str) -> dict[str, Any] | None: ...


class TipDesk(Protocol):
    """The node's ledger, as the audience page's Tip control needs it."""

    async def tip_info(self, room: str, account: bytes) -> dict[str, Any] | None:
        """``{"network", "creator", "next_seq", "prev", "ref"}`` for a tip by ``account``
        in ``room`` (``creator`` hex, ``prev``/``ref`` CID text or null), or ``None``."""

    async def submit_tip(self, room: str, envelope: bytes) -> dict[str, Any]:
        """Submit a signed tip envelope; the JSON answer (``{"id", ...}``), or raise
        :class:`~n3xus.webrtc.errors.TipRefusedError`."""


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def live_routes(service: LiveService, recordings: RecordingSource | None = None,
                tips: TipDesk | None = None) -> list[BaseRoute]:
    async def signal(websocket: WebSocket) -> None:
        await websocket.accept()
        await service.serve_signaling(StarletteSignalingSocket(websocket),
                                      websocket.path_params["name"])

    def page(filename: str) -> Any:
        async def endpoint(request: Request) -> Response:
            if not ROOM_NAME_RE.match(request.path_params["name"]):
                return Response("no such room name\n", status_code=404, media_type="text/plain")
            return FileResponse(PAGES_DIR / filename, media_type="text/html; charset=utf-8",
                                headers=PAGE_HEADERS)
        return endpoint

    async def recording(request: Request) -> Response:
        replay = None
        if recordings is not None and ROOM_NAME_RE.match(request.path_params["name"]):
            replay = await recordings.replay(request.path_params["name"],
                                             request.path_params["cid"])
        if replay is None:
            return JSONResponse({"error": {"code": "not-found", "message": "no such recording"}},
                                status_code=404)
        return JSONResponse(replay, headers={"Cache-Control": "no-store"})

    async def tip_info(request: Request) -> Response:
        room = request.path_params["name"]
        account = request.query_params.get("account", "")
        if tips is None or not ROOM_NAME_RE.match(room):
            return _problem(404, "not-found", "tipping is not available in this room")
        if not ACCOUNT_HEX_RE.match(account):
            return _problem(400, "bad-account", "account must be 64 lower-case hex digits")
        info = await tips.tip_info(room, bytes.fromhex(account))
        if info is None:
            return _problem(404, "not-found", "tipping is not available in this room")
        return JSONResponse(info, headers={"Cache-Control": "no-store"})

    async def submit_tip(request: Request) -> Response:
        room = request.path_params["name"]
        if tips is None or not ROOM_NAME_RE.match(room):
            return _problem(404, "not-found", "tipping is not available in this room")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_TIP_ENVELOPE_BYTES:
                return _problem(413, "too-large",
                                f"a tip envelope is at most {MAX_TIP_ENVELOPE_BYTES} bytes")
        try:
            answer = await tips.submit_tip(room, bytes(body))
        except TipRefusedError as exc:
            return _problem(422, exc.code, exc.message)
        return JSONResponse(answer)

    routes: list[BaseRoute] = [WebSocketRoute(SIGNAL_PATH, signal),
                               Route(RECORDING_PATH, recording),
                               Route(TIP_INFO_PATH, tip_info),
                               Route(TIPS_PATH, submit_tip, methods=["POST"])]
    routes += [Route(path, page(filename)) for path, filename in PAGES.items()]
    routes.append(Mount(STATIC_PREFIX, app=StaticFiles(directory=PAGES_DIR), name="live-static"))
    return routes
