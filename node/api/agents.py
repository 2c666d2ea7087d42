"""HTTP routes of the IMVU agents (specs/imvu.md; node/services/agents.py).

Signed things arrive signed: a manifest (create, upgrade) and an approval are DAG-CBOR blocks
signed by the creator's key, sent as hex in a JSON body; the node never sees a creator key.
The agent's own key is made by the node (``POST /agents/keys``) because the node is what
signs for the agent.

``POST /agents/{name}/ask`` answers with server-sent events (``text/event-stream``)::

    event: token          data: {"text": "<a decoded piece>"}        (zero or more)
    event: result         data: <the turn: decision, entry, verdict, action, result, output>
    event: error          data: {"status": 429, "code": "busy", "message": "..."}

Refusals that are known before the turn starts (unknown agent 404, stopped agent 409, a full
queue 429) are plain JSON errors instead of a stream. Closing the connection cancels the
turn (a queued generation is dropped, a running one stops at the next token, and a turn
cancelled before its decision records nothing).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from n3xus.imvu.errors import ApprovalError, ImvuError, QueueFullError, RegistryError
from n3xus.imvu.inference import InferenceError
from n3xus.imvu.prompt import MAX_CONTEXT_CHARS, MAX_CONTEXT_ITEMS, MAX_REQUEST_CHARS
from n3xus.imvu.prompt import Request as TurnRequest
from n3xus.imvu.runtime import TurnResult

from ..errors import ConfigError, NodeError
from ..services.agents import (
    MAX_LISTED_DECISIONS,
    MAX_LISTED_MEMORY,
    UNUSED_AGENT_KEY_TTL_S,
    AgentService,
    AgentStoppedError,
    UnknownAgentError,
    now_ms,
)
from .schemas import (
    ANY,
    BOOLEAN,
    CID_TEXT,
    HEX,
    HEX32,
    INTEGER,
    JSON,
    STRING,
    arr,
    integer,
    nullable,
    obj,
)
from .server import ApiProblem, ApiRoute, Body, Param, query, read_json

Handler = Callable[[Request], Awaitable[Response]]
EVENT_STREAM: Final = "text/event-stream"
TOKEN_BUFFER: Final = 1024
"""Pieces buffered between the turn and the response: more than the 512 tokens a turn may
generate, so the scheduler's sink never fills (it would stop the generation)."""
MAX_BLOCK_HEX: Final = 2 * 64 * 1024
"""A manifest block is at most 64 KiB (specs/imvu.md §12), so its hex at most twice that."""
DEFAULT_SENDER: Final = "user:api"


def _problems(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except UnknownAgentError as exc:
            raise ApiProblem(404, "unknown_agent", str(exc)) from exc
        except AgentStoppedError as exc:
            raise ApiProblem(409, "agent_stopped", str(exc)) from exc
        except QueueFullError as exc:
            raise ApiProblem(429, "busy", str(exc)) from exc
        except RegistryError as exc:
            raise ApiProblem(409, "conflict", str(exc)) from exc
        except InferenceError as exc:
            raise ApiProblem(503, "inference_unavailable", str(exc)) from exc
        except (ConfigError, ValueError, ImvuError) as exc:
            raise ApiProblem(400, "bad_request", str(exc)) from exc

    return wrapped


def _block(body: dict[str, Any], field: str) -> bytes:
    try:
        return bytes.fromhex(body[field])
    except ValueError:
        raise ApiProblem(400, "bad_request", f"{field!r} must be hex (the DAG-CBOR block)") from None


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class TurnStream(Response):
    """The SSE answer of an ask (module doc): the turn runs in this response's own task
    nursery, so a client that disconnects cancels it."""

    media_type = EVENT_STREAM

    def __init__(self, run_turn: Callable[[trio.MemorySendChannel[str]], Awaitable[TurnResult]]) -> None:
        super().__init__()
        # Set whole: Response would declare content-length 0 for its empty body.
        self.raw_headers = [(b"content-type", EVENT_STREAM.encode()), (b"cache-control", b"no-store"),
                            (b"x-accel-buffering", b"no")]
        self.run_turn = run_turn

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})

        async def body(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async with trio.open_nursery() as nursery:
            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_disconnect)
            tokens, pieces = trio.open_memory_channel[str](TOKEN_BUFFER)
            outcome: list[TurnResult | BaseException] = []
            finished = trio.Event()

            async def turn() -> None:
                try:
                    outcome.append(await self.run_turn(tokens))
                except (ImvuError, InferenceError, ValueError, NodeError) as exc:
                    outcome.append(exc)
                finished.set()

            nursery.start_soon(turn)
            async for piece in pieces:  # closed by the turn when it ends
                await body(_event("token", {"text": piece}))
            await finished.wait()  # the sink closes just before the turn returns
            result = outcome[0]
            if isinstance(result, TurnResult):
                await body(_event("result", result.to_json()))
            else:
                status, code = _status_of(result)
                await body(_event("error", {"status": status, "code": code, "message": str(result)}))
            nursery.cancel_scope.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _status_of(error: BaseException) -> tuple[int, str]:
    if isinstance(error, UnknownAgentError):
        return 404, "unknown_agent"
    if isinstance(error, AgentStoppedError):
        return 409, "agent_stopped"
    if isinstance(error, QueueFullError):
        return 429, "busy"
    if isinstance(error, InferenceError):
        return 503, "inference_unavailable"
    if isinstance(error, RegistryError):
        return 409, "conflict"
    return 400, "bad_request"


# -- schemas ------------------------------------------------------------------------------

MODEL = obj({"cid": CID_TEXT, "name": STRING, "size": INTEGER})
STATS = nullable(obj(extra=True, description="telemetry since the node started (turns, "
                                             "allowed, refused, escalated, executed, tokens, "
                                             "spent, inference_us, total_us)"))
AGENT = obj({
    "agent": HEX32, "account": HEX32, "name": STRING, "manifest": CID_TEXT, "version": INTEGER,
    "versions": arr(CID_TEXT), "memory": nullable(CID_TEXT), "pending": arr(CID_TEXT),
    "enabled": BOOLEAN, "turns": INTEGER, "creator": HEX32, "model": MODEL,
    "state": {**CID_TEXT, "description": "the agent's state block: the root of its CAR export"},
    "queued": INTEGER, "stats": STATS,
}, {"manifest_view": obj(extra=True, description="the active manifest, with its DAG-CBOR "
                                                 "`block` in hex"),
    "pending_actions": arr(obj({"decision": CID_TEXT, "action_cid": CID_TEXT, "action": ANY,
                                "primitive": STRING, "reason": STRING, "time": INTEGER}))})
TURN = obj({"decision": CID_TEXT, "entry": CID_TEXT, "verdict": {"enum": ["allow", "refuse", "escalate"]},
            "primitive": STRING, "reason": STRING, "executed": BOOLEAN,
            "action": nullable(obj(extra=True)), "result": STRING, "output": STRING})
MEMORY_ITEM = obj({"cid": CID_TEXT, "kind": {"enum": ["turn", "fact"]}, "text": STRING,
                   "who": STRING, "time": INTEGER, "seq": INTEGER, "decision": nullable(CID_TEXT)})
DECISION = obj({"index": INTEGER, "entry": CID_TEXT, "decision": CID_TEXT, "agent": HEX32,
                "manifest": CID_TEXT, "verdict": STRING, "primitive": STRING, "reason": STRING,
                "executed": BOOLEAN, "result": STRING}, extra=True)
BLOCK_HEX = {**HEX, "minLength": 2, "maxLength": MAX_BLOCK_HEX}
NAME = {"type": "string", "minLength": 1, "maxLength": 64,
        "description": "an agent's name, or its key as 64 hex digits"}
EMPTY = Body(JSON, obj({}), "nothing (an empty object)", required=False)
ASK = obj({"text": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_CHARS}},
          {"context": arr({"type": "string", "maxLength": MAX_CONTEXT_CHARS}, max_items=MAX_CONTEXT_ITEMS),
           "sender": {"type": "string", "minLength": 1, "maxLength": 256,
                      "description": f"who asks, as the memory records it (default {DEFAULT_SENDER!r})"}})


def agent_routes(service: AgentService) -> list[ApiRoute]:
    run = trio.to_thread.run_sync

    @_problems
    async def list_agents(_request: Request) -> Response:
        return JSONResponse({"agents": await run(service.list_agents)})

    @_problems
    async def new_key(_request: Request) -> Response:
        agent = await run(service.new_key)
        ref = await service.model_ref()
        return JSONResponse({"agent": agent.hex(), "model": {"cid": str(ref.cid), "name": ref.name,
                                                             "size": ref.size}})

    def _full(state: Any) -> Response:
        return JSONResponse(service.view(state, full=True))

    @_problems
    async def create(request: Request) -> Response:
        return _full(await service.create(_block(await read_json(request), "manifest")))

    @_problems
    async def show(request: Request) -> Response:
        return _full(service.state(request.path_params["name"]))

    @_problems
    async def start(request: Request) -> Response:
        return _full(await service.set_enabled(request.path_params["name"], True))

    @_problems
    async def stop(request: Request) -> Response:
        return _full(await service.set_enabled(request.path_params["name"], False))

    @_problems
    async def upgrade(request: Request) -> Response:
        block = _block(await read_json(request), "manifest")
        return _full(await service.upgrade(request.path_params["name"], block))

    @_problems
    async def rollback(request: Request) -> Response:
        return _full(await service.rollback(request.path_params["name"]))

    @_problems
    async def ask(request: Request) -> Response:
        name = request.path_params["name"]
        body = await read_json(request)
        await service.precheck(name)  # 404 / 409 / 429 / 400 before the stream starts
        turn = TurnRequest(body.get("sender", DEFAULT_SENDER), body["text"], now_ms(),
                           tuple(body.get("context", ())))
        return TurnStream(lambda tokens: service.ask(name, turn, tokens))

    @_problems
    async def memory(request: Request) -> Response:
        limit = query(request).get("limit", 50)
        return JSONResponse({"items": await run(service.memory, request.path_params["name"], limit)})

    @_problems
    async def decisions(request: Request) -> Response:
        limit = query(request).get("limit", 50)
        return JSONResponse({"decisions": await run(service.decisions, request.path_params["name"], limit)})

    @_problems
    async def approve(request: Request) -> Response:
        block = _block(await read_json(request), "approval")
        try:
            turn = await service.approve(request.path_params["name"], block)
        except ApprovalError as exc:
            raise ApiProblem(409, "not_approved", str(exc)) from exc
        return JSONResponse(turn.to_json())

    name = Param("name", NAME, where="path", required=True)
    limit_of = lambda most: Param("limit", integer(1, most), f"at most this many, newest first "  # noqa: E731
                                                             f"(default 50, max {most})")

    def route(method: str, path: str, handler: Handler, summary: str, **kw: Any) -> ApiRoute:
        if "{name}" in path:
            kw.setdefault("params", (name,))
            kw["errors"] = tuple(sorted({404, *kw.get("errors", ())}))
        return ApiRoute(method, path, handler, summary, tag="agents", **kw)

    manifest_body = Body(JSON, obj({"manifest": BLOCK_HEX}), "the creator-signed manifest "
                         "(DAG-CBOR, specs/imvu.md §2) in hex")
    return [
        route("GET", "/agents", list_agents, "The agents this node hosts",
              response_schema=obj({"agents": arr(AGENT)})),
        route("POST", "/agents/keys", new_key, "Make a fresh agent key held by this node (sign "
              "a manifest naming it, then POST /agents)", body=EMPTY,
              response_schema=obj({"agent": HEX32, "model": MODEL}),
              description="`model` is the node's model reference for the manifest. A key "
                          f"no agent uses is removed at a node start once older than "
                          f"{UNUSED_AGENT_KEY_TTL_S // 86400} days (specs/imvu.md §13)."),
        route("POST", "/agents", create, "Create an agent from its signed version-1 manifest",
              body=manifest_body, response_schema=AGENT, errors=(409,),
              description="400 if the manifest is invalid, names another model or an agent key "
                          "this node does not hold; 409 if the name or key exists."),
        route("GET", "/agents/{name}", show, "An agent: state, active manifest, pending "
              "escalations, telemetry", response_schema=AGENT),
        route("POST", "/agents/{name}/start", start, "Take turns again (loads the model if "
              "needed)", body=EMPTY, response_schema=AGENT, errors=(503,)),
        route("POST", "/agents/{name}/stop", stop, "Take no new turns", body=EMPTY,
              response_schema=AGENT),
        route("POST", "/agents/{name}/upgrade", upgrade, "Activate the next manifest version "
              "(queued turns are kept)", body=manifest_body, response_schema=AGENT, errors=(409,)),
        route("POST", "/agents/{name}/rollback", rollback, "Activate the previous manifest "
              "version again", body=EMPTY, response_schema=AGENT, errors=(409,)),
        route("POST", "/agents/{name}/ask", ask, "Ask the agent: server-sent events of its "
              "tokens, then the turn", body=Body(JSON, ASK, "the request"),
              response_schema={"type": "string", "description": "event: token | result | error"},
              response_media_type=EVENT_STREAM, errors=(409, 429, 503)),
        route("GET", "/agents/{name}/memory", memory, "The agent's memory, newest first",
              params=(name, limit_of(MAX_LISTED_MEMORY)), response_schema=obj({"items": arr(MEMORY_ITEM)})),
        route("GET", "/agents/{name}/decisions", decisions, "The agent's decisions (canon log "
              "agent-decision entries), newest first", params=(name, limit_of(MAX_LISTED_DECISIONS)),
              response_schema=obj({"decisions": arr(DECISION)})),
        route("POST", "/agents/{name}/approve", approve, "Carry out an escalated action with the "
              "creator's signed approval", body=Body(JSON, obj({"approval": BLOCK_HEX}),
                                                      "the approval block (specs/imvu.md §7) in hex"),
              response_schema=TURN, errors=(409,)),
    ]
