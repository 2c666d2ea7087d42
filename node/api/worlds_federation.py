"""HTTP routes of world federation: follow/unfollow another node's world, the writer set of
a shared world, and a world's federation status (node/services/worlds_federation.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from n3xus.canon.errors import CanonError

from ..errors import NodeError
from ..p2p.world_sync import WorldSyncFailed
from ..services.canon import WorldNotFoundError
from ..services.worlds_federation import NotAWriterError, WorldFederationError
from .schemas import HEX32, JSON, NUMBER, STRING, arr, enum, integer, nullable, obj
from .server import ApiProblem, ApiRoute, Body, Param, Problem, problems, read_json

if TYPE_CHECKING:
    from ..runtime import Node
    from ..services.worlds_federation import WorldsFederation


WORLD_NAME = Param("name", {"type": "string", "minLength": 1}, "the world's name",
                   where="path", required=True)
WRITER_KEY = Param("key", HEX32, "the writer's ed25519 public key", where="path", required=True)
MODE = enum("local", "follow", "shared")
WRITERS = obj({"world": STRING, "mode": MODE, "owner": HEX32, "writers": arr(HEX32)})
SYNC = obj({"world": STRING, "peer": STRING, "head": nullable(STRING),
            "result": enum("current", "adopted", "merged", "rejected", "failed", "untracked"),
            "reason": nullable(STRING), "commits_verified": integer(),
            "blocks_fetched": integer(), "root": nullable(STRING)})
STATUS = obj({"world": STRING, "mode": MODE, "owner": nullable(HEX32), "sources": arr(STRING),
              "stats": obj({"syncs": integer(), "adopted": integer(), "rejected": integer(),
                            "commits_verified": integer(), "blocks_fetched": integer(),
                            "last_blocks_fetched": integer(), "last_error": nullable(STRING),
                            "last_rejected": nullable(STRING),
                            "last_sync_at": nullable(NUMBER)})})


_problems = problems(
    Problem(WorldNotFoundError, 404, "not_found",
            lambda exc: str(exc.args[0] if exc.args else exc)),
    Problem(NotAWriterError, 403, "not_a_writer"),
    Problem(WorldFederationError, 409, "conflict"),
    Problem((NodeError, WorldSyncFailed), 502, "peer_unreachable"),
    Problem((CanonError, ValueError), 400, "bad_request"),
)


def world_federation_routes(node: Node) -> Sequence[ApiRoute]:
    run = trio.to_thread.run_sync

    def service() -> WorldsFederation:
        worlds = getattr(node, "worlds", None)
        if worlds is None:
            raise ApiProblem(503, "not_ready", "world federation is not running yet")
        return worlds

    @_problems
    async def follow(request: Request) -> Response:
        body = await read_json(request)
        outcome = await service().follow(request.path_params["name"], body["from"])
        return JSONResponse(outcome.view())

    @_problems
    async def unfollow(request: Request) -> Response:
        return JSONResponse(await service().unfollow(request.path_params["name"]))

    @_problems
    async def list_writers(request: Request) -> Response:
        return JSONResponse(await run(service().writers, request.path_params["name"]))

    @_problems
    async def add_writer(request: Request) -> Response:
        body = await read_json(request)
        return JSONResponse(await run(service().set_writer, request.path_params["name"],
                                      bytes.fromhex(body["key"]), True))

    @_problems
    async def remove_writer(request: Request) -> Response:
        return JSONResponse(await run(service().set_writer, request.path_params["name"],
                                      bytes.fromhex(request.path_params["key"]), False))

    @_problems
    async def status(request: Request) -> Response:
        return JSONResponse(service().status(request.path_params["name"]))

    source = {"type": "string", "minLength": 1, "maxLength": 1024,
              "description": "a connected peer's ID or a dial address /ip4/…/tcp/…/p2p/<peer id>"}
    errors = (403, 404, 409, 502, 503)
    return [
        ApiRoute("POST", "/worlds/{name}/follow", follow,
                 "Follow a peer's world of this name: fetch and verify its commits and the "
                 "changed tree paths, then keep it in sync", tag="worlds", params=(WORLD_NAME,),
                 body=Body(JSON, obj({"from": source})), response_schema=SYNC, errors=errors),
        ApiRoute("DELETE", "/worlds/{name}/follow", unfollow,
                 "Stop following a world (its data stays)", tag="worlds", params=(WORLD_NAME,),
                 response_schema=obj({"world": STRING, "following": {"type": "boolean"}}),
                 errors=errors),
        ApiRoute("GET", "/worlds/{name}/writers", list_writers,
                 "Who may write the world (a shared world's writer set)", tag="worlds",
                 params=(WORLD_NAME,), response_schema=WRITERS, errors=errors),
        ApiRoute("POST", "/worlds/{name}/writers", add_writer,
                 "Add a writer (owner only; makes an own world shared)", tag="worlds",
                 params=(WORLD_NAME,), body=Body(JSON, obj({"key": HEX32})),
                 response_schema=WRITERS, errors=errors),
        ApiRoute("DELETE", "/worlds/{name}/writers/{key}", remove_writer,
                 "Remove a writer (owner only; their records stop counting)", tag="worlds",
                 params=(WORLD_NAME, WRITER_KEY), response_schema=WRITERS, errors=errors),
        ApiRoute("GET", "/worlds/{name}/federation", status,
                 "How the world federates: mode, owner, sources, sync counters", tag="worlds",
                 params=(WORLD_NAME,), response_schema=STATUS, errors=(503,)),
    ]
