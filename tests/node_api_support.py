"""Shared helper of the in-process node API tests: a real node on 127.0.0.1 (free ports,
real LMDB) and an HTTP client that carries its API token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio

from n3xus.node.config import DataDir, NodeConfig
from n3xus.node.runtime import Node


@asynccontextmanager
async def api_node(tmp_path: Path, *, map_size_mib: int = 128, timeout: float = 30,
                   base_path: str = "/api/v1") -> AsyncIterator[tuple[Node, httpx.AsyncClient]]:
    """A fresh node in ``tmp_path / "n"`` running until the block ends, with a client whose
    base URL is the API URL plus ``base_path``."""
    dd = DataDir(tmp_path / "n")
    dd.init()
    node = Node(dd, NodeConfig(listen=("/ip4/127.0.0.1/tcp/0",), api_port=0,
                               map_size_mib=map_size_mib))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        headers = {"Authorization": f"Bearer {dd.read_token()}"}
        async with httpx.AsyncClient(base_url=node.api_url + base_path, headers=headers,
                                     timeout=timeout) as client:
            yield node, client
        nursery.cancel_scope.cancel()
