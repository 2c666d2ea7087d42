"""The OpenAPI 3.1 document, generated from the route table (:class:`.server.ApiRoute`).

Every operation declares its path, query and header parameters with their schemas,
its request body with the right media type (JSON, DAG-CBOR, CAR or octets), its 200
answer (schema and media type, plus alternative media types), other success
statuses, and each error status it can answer with, all sharing the one error schema.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .schemas import JSON, Schema

if TYPE_CHECKING:
    from .server import ApiRoute


def _operation_id(route: ApiRoute) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", route.template).strip("_")
    return f"{route.method.lower()}_{words}"


def _content(media_type: str, schema: Schema) -> dict[str, Any]:
    return {media_type: {"schema": schema}}


def _operation(route: ApiRoute) -> dict[str, Any]:
    success_content = _content(route.response_media_type, route.response_schema)
    for media_type, schema in route.alt_responses:
        success_content.update(_content(media_type, schema))
    responses: dict[str, Any] = {"200": {"description": "OK", "content": success_content}}
    for status, media_type in route.other_statuses:
        responses[str(status)] = {
            "description": HTTPStatus(status).phrase,
            "content": _content(media_type, route.response_schema) if media_type else {},
        }
    for status in route.error_statuses():
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op: dict[str, Any] = {
        "summary": route.summary,
        "operationId": _operation_id(route),
        "tags": [route.tag],
        "responses": responses,
        "security": [{"bearer": []}] if route.auth else [],
    }
    if route.description:
        op["description"] = route.description
    parameters = []
    for param in route.all_params():
        schema = ({"type": "array", "items": param.schema} if param.repeated
                  else param.schema)
        entry: dict[str, Any] = {"name": param.name, "in": param.where,
                                 "required": param.required or param.where == "path",
                                 "schema": schema}
        if param.description:
            entry["description"] = param.description
        if param.repeated:
            entry.update(style="form", explode=True)
        parameters.append(entry)
    if parameters:
        op["parameters"] = parameters
    if route.body is not None:
        op["requestBody"] = {"required": route.body.required,
                             "content": _content(route.body.media_type, route.body.schema)}
        if route.body.description:
            op["requestBody"]["description"] = route.body.description
    return op


def openapi_document(routes: Sequence[ApiRoute], version: str, error_schema: Schema) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    statuses: set[int] = set()
    for route in routes:
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route)
        statuses.update(route.error_statuses())
    error_ref = {"$ref": "#/components/schemas/Error"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "n3xus node API", "version": version,
            "description": "The local HTTP API of an n3xus node. Errors are "
                           "`{\"error\": {\"code\", \"message\"}}`; path segments are "
                           "percent-encoded (a `/`, `?`, `#`, `%` or a lone `.`/`..` in a "
                           "name must be encoded).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the content of api.token"}},
            "schemas": {"Error": error_schema},
            "responses": {
                f"E{status}": {"description": HTTPStatus(status).phrase,
                               "content": _content(JSON, error_ref)}
                for status in sorted(statuses)
            },
        },
    }
