"""Reason phrases on HTTP/1.1 status lines.

ASGI has no field for a reason phrase and Hypercorn's HTTP/1.1 writer sends none
(``HTTP/1.1 404 \\r\\n``), which RFC 9112 allows but tools and people reading raw
responses trip over. This patch fills in the standard phrase (``404 Not Found``) for
every response Hypercorn writes through h11, including its own error answers. It is
written against hypercorn 0.17/0.18 (``H11Protocol._send_h11_event``, pinned in
pyproject.toml) and installed once, idempotently, by :func:`.server.build_app`.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h11
from hypercorn.protocol import h11 as hypercorn_h11

_MARK = "_n3xus_reason_phrases"


def reason_phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:  # a status code without a registered phrase
        return b""


def install_reason_phrases() -> None:
    protocol: Any = hypercorn_h11.H11Protocol
    original = protocol._send_h11_event
    if getattr(original, _MARK, False):
        return

    async def send_with_reason(self: Any, event: Any) -> None:
        if isinstance(event, h11.Response | h11.InformationalResponse) and not event.reason:
            event = type(event)(status_code=event.status_code, headers=list(event.headers),
                                reason=reason_phrase(event.status_code),
                                http_version=event.http_version)
        await original(self, event)

    setattr(send_with_reason, _MARK, True)
    protocol._send_h11_event = send_with_reason
