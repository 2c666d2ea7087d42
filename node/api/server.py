"""The node's local HTTP API: JSON under ``/api/v1/``, an OpenAPI 3.1 document at
``/api/v1/openapi.json``, ``/healthz`` and Prometheus ``/metrics``.

It is a Starlette (ASGI, anyio) application served by Hypercorn's trio worker inside
the node's nursery, so handlers run on the node's own trio loop and may talk to the
libp2p host directly. Blocking LMDB work that can take long goes through
``trio.to_thread``.

Routes are declared once as :class:`ApiRoute` values (path, method, handler, auth,
summary, schemas); the Starlette routing table and the OpenAPI document are both
generated from that list, so they cannot drift apart. Feature packages (canon,
ledger, later agents and performances) contribute their own lists of routes.

Auth: every mutating or private route requires ``Authorization: Bearer <token>``
(the token lives in the data dir, mode 0600). A missing or wrong token gets 401 with
a JSON error body; the comparison is constant-time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = structlog.get_logger("n3xus.api")

API_PREFIX = "/api/v1"
# JSON request bodies are small commands; anything bigger is refused before parsing
# so a client cannot make the node buffer arbitrary amounts of memory. (Uploads of
# blocks and files use their own streaming routes with their own limits.)
MAX_JSON_BODY_BYTES = 1024 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class ApiProblem(Exception):
    """Raised by handlers to answer with a JSON error: ``{"error": {code, message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="n3xus"'} if status == 401 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


@dataclass(frozen=True)
class ApiRoute:
    """One API operation; the source of both routing and the OpenAPI document."""

    method: str
    path: str  # relative to API_PREFIX unless absolute=True
    handler: Handler
    summary: str
    auth: bool = True
    absolute: bool = False
    request_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    response_media_type: str = "application/json"
    tag: str = "node"

    @property
    def full_path(self) -> str:
        return self.path if self.absolute else API_PREFIX + self.path


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, within :data:`MAX_JSON_BODY_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_JSON_BODY_BYTES:
        raise ApiProblem(413, "too_large", f"JSON body over {MAX_JSON_BODY_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_JSON_BODY_BYTES:
            raise ApiProblem(413, "too_large", f"JSON body over {MAX_JSON_BODY_BYTES} bytes")
    try:
        value = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiProblem(400, "bad_json", f"request body is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ApiProblem(400, "bad_json", "request body must be a JSON object")
    return value


def require_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiProblem(400, "bad_request", f"field {key!r} (a non-empty string) is required")
    return value


def _wrap(route: ApiRoute, token: str) -> Handler:
    expected = f"Bearer {token}".encode()

    async def endpoint(request: Request) -> Response:
        if route.auth:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return error_response(
                    401, "unauthorized", "a valid bearer token is required (see api.token)"
                )
        try:
            return await route.handler(request)
        except ApiProblem as problem:
            return error_response(problem.status, problem.code, problem.message)
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered 500
            log.exception("API handler failed", method=route.method, path=route.full_path)
            return error_response(500, "internal_error", "internal error (see the node's log)")

    return endpoint


def openapi_document(routes: Sequence[ApiRoute], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{route.full_path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
            "tags": [route.tag],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {route.response_media_type: {"schema": route.response_schema}},
                },
                "400": {"$ref": "#/components/responses/Error"},
            },
        }
        params = [seg[1:-1] for seg in route.full_path.split("/") if seg.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p.split(":")[0], "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        if route.auth:
            op["security"] = [{"bearer": []}]
            op["responses"]["401"] = {"$ref": "#/components/responses/Error"}
        else:
            op["security"] = []
        if route.request_schema is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": route.request_schema}},
            }
        openapi_path = "/".join(
            "{" + seg[1:-1].split(":")[0] + "}" if seg.startswith("{") else seg
            for seg in route.full_path.split("/")
        )
        paths.setdefault(openapi_path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "n3xus node API", "version": version},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
            "responses": {
                "Error": {
                    "description": "Error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
        },
    }


def build_app(
    routes: Sequence[ApiRoute], *, token: str, registry: CollectorRegistry, version: str
) -> Starlette:
    """The ASGI application for ``routes`` plus the built-in public endpoints."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    builtin = [
        ApiRoute("GET", "/healthz", healthz, "Liveness probe", auth=False, absolute=True, tag="ops"),
        ApiRoute(
            "GET", "/metrics", metrics, "Prometheus metrics", auth=False, absolute=True,
            response_schema={"type": "string"}, response_media_type="text/plain", tag="ops",
        ),
    ]
    all_routes = [*builtin, *routes]
    document = openapi_document(all_routes, version)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    starlette_routes = [
        Route(r.full_path, _wrap(r, token), methods=[r.method]) for r in all_routes
    ]
    starlette_routes.append(Route(API_PREFIX + "/openapi.json", openapi, methods=["GET"]))

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    return Starlette(routes=starlette_routes, exception_handlers={HTTPException: http_error})
