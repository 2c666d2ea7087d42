"""A small synchronous client of a running node's HTTP API, used by the CLI.

It finds the node through the data dir: ``api.json`` (written by the running node)
says where the API listens, ``api.token`` holds the bearer token.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..config import DataDir
from ..errors import ApiError, NodeNotRunningError

# Local API calls answer in milliseconds; a dial or a large upload may take longer.
DEFAULT_TIMEOUT_S = 30.0


class ApiClient:
    def __init__(self, data_dir: DataDir, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        info = data_dir.read_run_file()
        if info is None:
            raise NodeNotRunningError(
                f"no node is running for data dir {data_dir.path} "
                "(start one with `n3xus node start`)"
            )
        self.base_url = str(info["api_url"]).rstrip("/")
        self._token = data_dir.read_token()
        self._data_dir = data_dir
        self._timeout = timeout

    def request(self, method: str, path: str, *, json: Any = None, content: Any = None,
                params: dict[str, Any] | None = None, raw: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            response = httpx.request(
                method, self.base_url + path, json=json, content=content, params=params,
                headers=headers, timeout=self._timeout,
            )
        except httpx.ConnectError:
            raise NodeNotRunningError(
                f"no node answers at {self.base_url} (data dir {self._data_dir.path}); "
                "it may have stopped: start one with `n3xus node start`"
            ) from None
        except httpx.TimeoutException:
            raise ApiError(504, f"the node did not answer within {self._timeout:g} s") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text.strip()[:200] or response.reason_phrase
            raise ApiError(response.status_code, message)
        return response.content if raw else response.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", "/api/v1" + path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", "/api/v1" + path, **kw)
