"""The node's local HTTP API: JSON under ``/api/v1/``, an OpenAPI 3.1 document at
``/api/v1/openapi.json``, ``/healthz`` and Prometheus ``/metrics``.

It is a Starlette (ASGI, anyio) application served by Hypercorn's trio worker inside
the node's nursery, so handlers run on the node's own trio loop and may talk to the
libp2p host directly. Blocking LMDB work goes through ``trio.to_thread``.

Routes are declared once as :class:`ApiRoute` values: path, method, handler, auth,
parameters, request body, answer and error statuses. The Starlette routing table, the
boundary checks and the OpenAPI document (:mod:`.openapi`) are all generated from that
list, so they cannot drift apart. Route groups live in their own modules.

The boundary: before a handler runs, every declared path and query parameter is
parsed and range-checked and every JSON body is parsed (bounded in size and depth)
and validated against its schema, so bad input is a 400 with the JSON error shape,
never a 500. Path segments are matched percent-encoded (``raw_path``) and decoded
once, so ``x%3Fy``, ``a%2F..%2Fb`` or ``%2E%2E`` reach the handler as the names they
are.

Auth: every mutating or private route requires ``Authorization: Bearer <token>``
(scheme case-insensitive, RFC 7235); the token lives in the data dir (mode 0600). A
missing or wrong token gets 401. Only a digest of the token is kept here, and
tracebacks are logged without local variables (:mod:`n3xus.node.logs`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

import structlog
import trio
from jsonschema import Draft202012Validator
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .metrics import api_metrics
from .reasons import install_reason_phrases
from .schema_errors import describe, not_matching
from .schemas import ERROR, JSON, PROMETHEUS, Schema, obj

log = structlog.get_logger("n3xus.api")

API_PREFIX = "/api/v1"
# JSON request bodies are small commands; anything bigger is refused before parsing
# so a client cannot make the node buffer arbitrary amounts of memory. (Uploads of
# blocks and files use their own streaming routes with their own limits.)
MAX_JSON_BODY_BYTES = 1024 * 1024
# JSON bodies nested deeper than this are refused before anything recurses over them
# (100,000 levels crashed the parser). A world value nests at most 128 levels (the
# canon codec's limit), its JSON view adds up to 2 (a bytes value), the request 2 more.
MAX_JSON_DEPTH = 132
# A query string value longer than this is not a parameter of ours.
MAX_PARAM_CHARS = 4096
_DIGITS = re.compile(r"[0-9]{1,20}")

Handler = Callable[[Request], Awaitable[Response]]
_SCOPE_QUERY = "n3xus.query"
_SCOPE_BODY = "n3xus.body"


class ApiProblem(Exception):
    """Raised by handlers to answer with a JSON error: ``{"error": {code, message}}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Problem:
    """One row of :func:`problems`: a service error and the JSON error it is answered with
    (the message is ``str(exc)`` unless ``message`` says otherwise)."""

    errors: type[Exception] | tuple[type[Exception], ...]
    status: int
    code: str | Callable[[Exception], str]
    message: Callable[[Exception], str] = str


def problems(*rules: Problem) -> Callable[[Handler], Handler]:
    """A handler decorator mapping a service's errors to JSON error answers: the first rule
    whose ``errors`` match raises :class:`ApiProblem` from the exception; anything no rule
    names propagates unchanged (the server answers it as a 500)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                for rule in rules:
                    if isinstance(exc, rule.errors):
                        code = rule.code if isinstance(rule.code, str) else rule.code(exc)
                        raise ApiProblem(rule.status, code, rule.message(exc)) from exc
                raise

        return wrapped

    return decorate


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = 'Bearer realm="n3xus"'
    if status == 413:
        # The rest of the body is never read: the connection cannot carry another
        # request, and the client must know that before it tries.
        all_headers["Connection"] = "close"
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=all_headers or None)


@dataclass(frozen=True)
class Param:
    """A path or query parameter: parsed and checked against ``schema`` at the boundary."""

    name: str
    schema: Schema
    description: str = ""
    where: Literal["query", "path", "header"] = "query"  # headers: checked by the handler
    required: bool = False
    repeated: bool = False


@dataclass(frozen=True)
class Body:
    """A request body. JSON bodies are parsed and validated before the handler runs;
    other media types are streamed by the handler itself."""

    media_type: str
    schema: Schema
    description: str = ""
    required: bool = True


@dataclass(frozen=True)
class ApiRoute:
    """One API operation; the source of routing, boundary checks and OpenAPI."""

    method: str
    path: str  # relative to API_PREFIX unless absolute=True
    handler: Handler
    summary: str
    auth: bool = True
    absolute: bool = False
    params: tuple[Param, ...] = ()
    body: Body | None = None
    response_schema: Schema = field(default_factory=lambda: {"type": "object"})
    response_media_type: str = JSON
    # Other media types of the 200 answer (e.g. the DAG-CBOR form of a JSON view).
    alt_responses: tuple[tuple[str, Schema], ...] = ()
    # Non-200 answers other than errors (e.g. 206 Partial Content).
    other_statuses: tuple[tuple[int, str], ...] = ()
    # Error statuses this operation answers with (400/401 are added when they apply).
    errors: tuple[int, ...] = ()
    tag: str = "node"
    description: str = ""

    @property
    def full_path(self) -> str:
        return self.path if self.absolute else API_PREFIX + self.path

    @property
    def template(self) -> str:
        """The path with converters dropped: ``/canon/pins/{name}`` (OpenAPI form)."""
        return re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", self.full_path)

    def path_param_names(self) -> list[str]:
        return re.findall(r"\{(\w+)(?::\w+)?\}", self.full_path)

    def all_params(self) -> tuple[Param, ...]:
        """Declared parameters plus a plain string for any undeclared path parameter."""
        declared = {p.name for p in self.params if p.where == "path"}
        implicit = tuple(Param(n, {"type": "string", "minLength": 1}, where="path",
                               required=True)
                         for n in self.path_param_names() if n not in declared)
        return self.params + implicit

    def error_statuses(self) -> list[int]:
        statuses = set(self.errors)
        if self.auth:
            statuses.add(401)
        if self.body is not None or self.all_params():
            statuses.add(400)
        if self.body is not None and self.body.media_type == JSON:
            statuses.add(413)
        return sorted(statuses)


def query(request: Request) -> dict[str, Any]:
    """The declared query parameters of this request, parsed and checked."""
    value: dict[str, Any] = request.scope.get(_SCOPE_QUERY, {})
    return value


async def read_json(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (already validated when the route declares
    a JSON body); otherwise read here, within :data:`MAX_JSON_BODY_BYTES`."""
    if _SCOPE_BODY in request.scope:
        body: dict[str, Any] = request.scope[_SCOPE_BODY]
        return body
    value = await _read_json_value(request)
    if not isinstance(value, dict):
        raise ApiProblem(400, "bad_json", "request body must be a JSON object")
    return value


def require_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiProblem(400, "bad_request", f"field {key!r} (a non-empty string) is required")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def read_body(request: Request, limit: int, too_large: ApiProblem) -> bytes:
    """The whole request body, at most ``limit`` bytes: ``too_large`` is raised as soon as
    the declared length or the bytes read pass it (the rest is never read, and the answer
    closes the connection). A body read to its end is marked so, so that an error answer
    after it keeps the connection alive."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    request.scope["n3xus.body_read"] = True
    return bytes(body)


async def _read_json_value(request: Request) -> Any:
    body = await read_body(request, MAX_JSON_BODY_BYTES, ApiProblem(
        413, "too_large", f"JSON body over {MAX_JSON_BODY_BYTES} bytes"))
    try:
        value = json.loads(body or b"{}", parse_constant=_reject_constant)
    except RecursionError:
        raise ApiProblem(400, "bad_json", f"request body nests deeper than {MAX_JSON_DEPTH} "
                                          "levels") from None
    except ValueError as exc:
        raise ApiProblem(400, "bad_json", f"request body is not JSON: {exc}") from None
    if _depth_over(value, MAX_JSON_DEPTH):
        raise ApiProblem(400, "bad_json", f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative: no recursion to blow)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _convert(param: Param, raw: Any) -> Any:
    """One parameter value, checked against its schema; ApiProblem(400) if it is not."""
    schema = param.schema
    kind = schema.get("type")
    where = f"{param.where} parameter {param.name!r}"
    if isinstance(raw, int):  # a path converter already made it an int
        raw = str(raw)
    if len(raw) > MAX_PARAM_CHARS:
        raise ApiProblem(400, "bad_request", f"{where} is over {MAX_PARAM_CHARS} characters")
    if kind == "integer":
        low, high = schema.get("minimum", 0), schema.get("maximum")
        if not _DIGITS.fullmatch(raw) or int(raw) < low or (high is not None and int(raw) > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise ApiProblem(400, "bad_request", f"{where} must be an integer {bounds}, "
                                                 f"not {raw[:40]!r}")
        return int(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise ApiProblem(400, "bad_request", f"{where} must be true or false")
        return raw == "true"
    if "enum" in schema and raw not in schema["enum"]:
        raise ApiProblem(400, "bad_request",
                         f"{where} must be one of {', '.join(schema['enum'])}, not {raw[:40]!r}")
    if "pattern" in schema and not re.search(schema["pattern"], raw):
        raise ApiProblem(400, "bad_request", not_matching(where, raw, schema))
    if len(raw) < schema.get("minLength", 0):
        raise ApiProblem(400, "bad_request", f"{where} must not be empty")
    return raw


def _check_params(route: ApiRoute, params: tuple[Param, ...], request: Request) -> None:
    decoded: dict[str, Any] = {}
    for name, value in request.path_params.items():
        if isinstance(value, str):
            try:
                value = unquote(value, errors="strict")
            except UnicodeDecodeError:
                raise ApiProblem(400, "bad_request",
                                 f"path parameter {name!r} is not percent-encoded UTF-8") from None
        decoded[name] = value
    request.scope["path_params"] = decoded
    parsed: dict[str, Any] = {}
    for param in params:
        if param.where == "header":
            continue
        if param.where == "path":
            raws = [decoded[param.name]] if param.name in decoded else []
        else:
            raws = request.query_params.getlist(param.name)
        if not raws:
            if param.required:
                raise ApiProblem(400, "bad_request",
                                 f"{param.where} parameter {param.name!r} is required")
            continue
        values = [_convert(param, raw) for raw in raws]
        if param.where == "path":
            decoded[param.name] = values[0]
        parsed[param.name] = values if param.repeated else values[-1]
    request.scope[_SCOPE_QUERY] = parsed


class _TokenCheck:
    """Constant-time bearer check that never holds the token itself, only its digest."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()

    def allows(self, header: str) -> bool:
        scheme, _, credentials = header.strip().partition(" ")
        given = hashlib.sha256(credentials.strip().encode()).digest()
        # Compare even for a wrong scheme, so timing says nothing about the header.
        return hmac.compare_digest(given, self._digest) and scheme.lower() == "bearer"


def _wrap(route: ApiRoute, check: _TokenCheck, metrics: Any) -> Handler:
    params = route.all_params()
    validator = (Draft202012Validator(route.body.schema)
                 if route.body is not None and route.body.media_type == JSON else None)
    label = (route.method, route.template)

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        response = await _answer(request)
        if response.status_code >= 400 and _has_unread_body(request):
            # The body was refused unread; keep-alive would desynchronise the stream.
            response.headers["Connection"] = "close"
        metrics.observe(*label, response.status_code, time.perf_counter() - started)
        return response

    async def _answer(request: Request) -> Response:
        if route.auth and not check.allows(request.headers.get("authorization", "")):
            return error_response(401, "unauthorized",
                                  "a valid bearer token is required (see api.token)")
        try:
            _check_params(route, params, request)
            if validator is not None:
                body = await _read_json_value(request)
                errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
                if errors:
                    raise ApiProblem(400, "bad_request", describe(errors[0]))
                request.scope[_SCOPE_BODY] = body
            return await route.handler(request)
        except ApiProblem as problem:
            return error_response(problem.status, problem.code, problem.message)
        except Exception:  # noqa: BLE001 - a bug: logged with its traceback, answered 500
            # The traceback is formatted here, plainly: a log renderer that shows
            # local variables would print request headers (the token) into the log.
            log.error("API handler failed", method=route.method, path=route.template,
                      traceback=traceback.format_exc())
            return error_response(500, "internal_error", "internal error (see the node's log)")

    return endpoint


def _has_unread_body(request: Request) -> bool:
    if request.scope.get("n3xus.body_read"):
        return False
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    return chunked or (length is not None and length != "0")


class _RawPathRouting:
    """Route on the path as sent (percent-encoded), so an encoded ``/`` or ``..`` in a
    name stays inside its segment; :func:`_check_params` decodes each value once."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("raw_path"):
            scope = dict(scope)
            scope["path"] = bytes(scope["raw_path"]).decode("latin-1")
        await self.app(scope, receive, send)


def build_app(
    routes: Sequence[ApiRoute], *, token: str, registry: CollectorRegistry, version: str,
    extra_routes: Sequence[BaseRoute] = (),
) -> Any:
    """The ASGI application for ``routes`` plus the built-in public endpoints.

    ``extra_routes`` are plain Starlette routes (WebSockets, static mounts, pages) that
    are not API operations: they are routed as given, with no boundary checks, auth or
    OpenAPI entry of ours, and see path parameters percent-encoded."""
    from .openapi import openapi_document

    install_reason_phrases()
    metrics = api_metrics(registry)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(_request: Request) -> Response:
        # Collectors read LMDB (canon and ledger totals): off the event loop.
        body = await trio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=PROMETHEUS)

    document: dict[str, Any] = {}

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document)

    builtin = [
        ApiRoute("GET", "/healthz", healthz, "Liveness probe", auth=False, absolute=True,
                 tag="ops", response_schema=obj({"status": {"const": "ok"}})),
        ApiRoute("GET", "/metrics", metrics_endpoint, "Prometheus metrics (text exposition)",
                 auth=False, absolute=True, response_schema={"type": "string"},
                 response_media_type=PROMETHEUS, tag="ops"),
        ApiRoute("GET", "/openapi.json", openapi, "This OpenAPI 3.1 document", auth=False,
                 tag="ops", response_schema=obj({"openapi": {"type": "string"},
                                                 "info": {"type": "object"},
                                                 "paths": {"type": "object"}}, extra=True)),
    ]
    all_routes = [*builtin, *routes]
    document.update(openapi_document(all_routes, version, ERROR))
    check = _TokenCheck(token)
    starlette_routes = [Route(r.full_path, _wrap(r, check, metrics), methods=[r.method])
                        for r in all_routes]

    async def http_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such API route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail))
        return error_response(exc.status_code, code, message)

    app = Starlette(routes=[*starlette_routes, *extra_routes],
                    exception_handlers={HTTPException: http_error})
    # `/worlds/` (an empty name) must be a 404, not a redirect to the world listing.
    app.router.redirect_slashes = False
    return _RawPathRouting(app)
