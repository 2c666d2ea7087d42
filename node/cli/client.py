"""A small synchronous client of a running node's HTTP API, used by the CLI.

It finds the node through the data dir: ``api.json`` (written by the running node)
says where the API listens, ``api.token`` holds the bearer token. It keeps one
HTTP/1.1 connection open for all the requests of a command (``http.client`` from the
standard library: a CLI call must not pay for importing and setting up a full HTTP
client library, nor for a new connection per request).

Every path segment is percent-encoded (:func:`api_path`), so a pin named ``x?y``, a
key ``a/../b`` or a name ``..`` reaches the node as itself.
"""

from __future__ import annotations

import http.client
import json as jsonlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ..config import DataDir
from ..errors import ApiError, NodeNotRunningError

API_PREFIX = "/api/v1"
# Local API calls answer in milliseconds; a dial or a large upload may take longer.
DEFAULT_TIMEOUT_S = 30.0
# Streamed downloads are read in pieces of this size.
READ_PIECE_BYTES = 256 * 1024
# A reused keep-alive connection the node closed meanwhile fails on first use; such
# a request (with a body we can send again) is retried once on a fresh connection.
_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)

Params = dict[str, Any] | list[tuple[str, Any]] | None


def segment(value: str) -> str:
    """One path segment, percent-encoded: every byte but the unreserved ones, and a
    lone ``.``/``..`` too (URL normalisation would otherwise remove them)."""
    encoded = quote(value, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def path_of(template: str, *values: str) -> str:
    """``template`` (relative to /api/v1) with each ``{}`` replaced by an encoded segment:
    ``path_of("/canon/pins/{}", "x?y")`` is ``/canon/pins/x%3Fy``."""
    return template.format(*(segment(v) for v in values))


class ApiClient:
    def __init__(self, data_dir: DataDir, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        info = data_dir.read_run_file()
        if info is None:
            raise NodeNotRunningError(
                f"no node is running for data dir {data_dir.path} "
                "(start one with `n3xus node start`)"
            )
        self.base_url = str(info["api_url"]).rstrip("/")
        url = urlsplit(self.base_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._token = data_dir.read_token()
        self._data_dir = data_dir
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    # -- plumbing -----------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, method: str, path: str, params: Params, body: Any,
              headers: dict[str, str]) -> http.client.HTTPResponse:
        target = path + ("?" + urlencode(params, doseq=True) if params else "")
        headers = {"Authorization": f"Bearer {self._token}", **headers}
        retry = not isinstance(body, Iterator)  # a consumed generator cannot be resent
        while True:
            reused = self._conn is not None
            conn = self._connection()
            try:
                if isinstance(body, Iterable) and not isinstance(body, bytes | bytearray | str):
                    conn.request(method, target, body=body, headers=headers, encode_chunked=True)
                else:
                    conn.request(method, target, body=body, headers=headers)
                response = conn.getresponse()
            except _STALE_CONNECTION:
                self.close()
                if reused and retry:
                    retry = False
                    continue
                raise self._gone() from None
            except ConnectionRefusedError:
                self.close()
                raise self._gone() from None
            except TimeoutError:
                self.close()
                raise ApiError(504, f"the node did not answer within {self._timeout:g} s") from None
            except OSError as exc:
                self.close()
                raise NodeNotRunningError(f"cannot reach the node at {self.base_url}: "
                                          f"{exc.strerror or exc}") from None
            if response.status >= 400:
                raise self._error(response)
            return response

    def _gone(self) -> NodeNotRunningError:
        return NodeNotRunningError(
            f"no node answers at {self.base_url} (data dir {self._data_dir.path}); "
            "it may have stopped: start one with `n3xus node start`")

    def _error(self, response: http.client.HTTPResponse) -> ApiError:
        raw = response.read()
        if response.will_close:
            self.close()
        try:
            error = jsonlib.loads(raw)["error"]
            return ApiError(response.status, str(error["message"]), str(error["code"]))
        except (ValueError, KeyError, TypeError):
            text = raw.decode("utf-8", "replace").strip()[:200]
            return ApiError(response.status, text or response.reason)

    # -- requests -------------------------------------------------------------------
    def request(self, method: str, path: str, *, json: Any = None, content: Any = None,
                params: Params = None, raw: bool = False) -> Any:
        """One request to ``path`` (already under /api/v1, segments encoded); the JSON
        answer, or its bytes if ``raw``. Errors raise ApiError with the node's message."""
        headers: dict[str, str] = {}
        body = content
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        elif content is not None:
            headers["Content-Type"] = "application/octet-stream"
        response = self._send(method, path, params, body, headers)
        data = response.read()
        if response.will_close:
            self.close()
        return data if raw else jsonlib.loads(data)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", API_PREFIX + path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", API_PREFIX + path, **kw)

    def text(self, method: str, path: str, **kw: Any) -> str:
        """A text/plain answer (checkpoints, proofs, keys)."""
        data: bytes = self.request(method, API_PREFIX + path, raw=True, **kw)
        return data.decode("utf-8")

    @contextmanager
    def stream(self, path: str, params: Params = None) -> Iterator[tuple[int | None, Iterator[bytes]]]:
        """GET ``path`` (under /api/v1) and yield (content length or None, pieces)."""
        response = self._send("GET", API_PREFIX + path, params, None, {})
        length = response.getheader("content-length")

        def pieces() -> Iterator[bytes]:
            while piece := response.read(READ_PIECE_BYTES):
                yield piece

        try:
            yield (int(length) if length and length.isdigit() else None), pieces()
        finally:
            if not response.isclosed():
                self.close()  # an unfinished body: the connection cannot be reused
            elif response.will_close:
                self.close()
