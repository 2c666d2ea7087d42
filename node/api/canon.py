"""HTTP routes of the canon memory: blocks, files, pins, GC, worlds, the log, CAR.

Blocking work (LMDB, hashing, signing) runs in worker threads. Uploads (files, CAR
imports) are streamed: the worker thread pulls the request body chunk by chunk from
the trio side, so a large artifact never sits in memory whole. Downloads stream the
other way and honour a single ``Range: bytes=a-b`` for files (media seeking).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from n3xus.canon import files
from n3xus.canon.cid import CID
from n3xus.canon.codec import MAX_BLOCK_SIZE
from n3xus.canon.errors import (
    BlockNotFoundError,
    CanonError,
    CorruptBlockError,
    LimitExceededError,
    VerificationError,
)

from ..services.canon import CanonService, WorldNotFoundError
from .jsonview import from_json, to_json
from .server import ApiProblem, ApiRoute, read_json

# A CAR import or file upload bigger than this is refused: it bounds what one
# request can write. Recordings and model files fit; a whole disk does not.
MAX_UPLOAD_BYTES = 16 * 1024**3
# Listings return at most this many rows per call; callers page with start/limit.
MAX_LIST_LIMIT = 10_000
DEFAULT_LIST_LIMIT = 1_000
# Streamed responses are handed from worker threads to the event loop in pieces
# of about this size.
STREAM_PIECE_BYTES = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

Handler = Callable[[Request], Awaitable[Response]]


def _problems(handler: Handler) -> Handler:
    """Map canon errors to HTTP answers with a JSON error body."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except (BlockNotFoundError, WorldNotFoundError) as exc:
            raise ApiProblem(404, "not_found", _message(exc)) from exc
        except CorruptBlockError as exc:
            raise ApiProblem(500, "corrupt_block", str(exc)) from exc
        except LimitExceededError as exc:
            raise ApiProblem(413, "too_large", str(exc)) from exc
        except VerificationError as exc:
            raise ApiProblem(422, "verification_failed", str(exc)) from exc
        except (CanonError, ValueError) as exc:
            raise ApiProblem(400, "bad_request", str(exc)) from exc

    return wrapped


def _message(exc: BaseException) -> str:
    # KeyError subclasses repr() their argument; show the plain text.
    return str(exc.args[0]) if exc.args else str(exc)


def _cid(text: str) -> CID:
    try:
        return CID(text)
    except ValueError as exc:
        raise ApiProblem(400, "bad_cid", f"malformed CID {text!r}: {exc}") from exc


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > maximum:
        raise ApiProblem(400, "bad_request", f"{name} must be an integer 0..{maximum}")
    return int(raw)


class _BodyReader:
    """A blocking ``read(n)`` over a request body, for use in a worker thread."""

    def __init__(self, request: Request, limit: int) -> None:
        self._chunks: AsyncIterator[bytes] = request.stream().__aiter__()
        self._buffer = bytearray()
        self._done = False
        self._total = 0
        self._limit = limit

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int, /) -> bytes:
        while len(self._buffer) < size and not self._done:
            chunk = trio.from_thread.run(self._next)
            if chunk is None:
                self._done = True
                break
            self._total += len(chunk)
            if self._total > self._limit:
                raise LimitExceededError(f"upload over {self._limit} bytes")
            self._buffer += chunk
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


async def _read_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiProblem(413, "too_large", f"body over {limit} bytes")
    return bytes(body)


def stream_from_threads(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        while True:
            chunk = await trio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            yield chunk

    return gen()


def _batched(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    """Join small CAR sections into pieces of about STREAM_PIECE_BYTES, so that a
    stream of small blocks does not cost one thread hop per block."""
    piece = bytearray(first)
    for section in rest:
        piece += section
        if len(piece) >= STREAM_PIECE_BYTES:
            yield bytes(piece)
            piece.clear()
    if piece:
        yield bytes(piece)


def canon_routes(service: CanonService) -> list[ApiRoute]:
    run = trio.to_thread.run_sync

    # -- blocks and files ----------------------------------------------------------
    @_problems
    async def put_block(request: Request) -> Response:
        codec = request.query_params.get("codec", "raw")
        hash_name = request.query_params.get("hash", "blake3")
        pin = request.query_params.get("pin", "true") != "false"
        data = await _read_body(request, MAX_BLOCK_SIZE)
        cid = await run(service.put_block, data, codec, hash_name, pin)
        return JSONResponse({"cid": str(cid), "size": len(data), "pinned": pin})

    @_problems
    async def put_file(request: Request) -> Response:
        pin = request.query_params.get("pin", "true") != "false"
        hash_name = request.query_params.get("hash", "blake3")
        reader = _BodyReader(request, MAX_UPLOAD_BYTES)
        root, size = await run(service.add_file, reader, pin, hash_name)
        return JSONResponse({"cid": str(root), "size": size, "pinned": pin})

    @_problems
    async def get_block(request: Request) -> Response:
        cid = _cid(request.path_params["cid"])
        data = await run(service.store.get, cid)
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Content-CID": str(cid)})

    @_problems
    async def get_file(request: Request) -> Response:
        cid = _cid(request.path_params["cid"])
        info = await run(service.file_info, cid)
        if info is None:
            raise ApiProblem(400, "not_a_file", f"{cid} is not an n3xus file root")
        start, end, status = 0, info.size, 200
        headers = {"Accept-Ranges": "bytes", "X-Content-CID": str(cid)}
        wanted = request.headers.get("range")
        if wanted:
            m = _RANGE.match(wanted.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise ApiProblem(416, "bad_range", f"unsupported Range {wanted!r}")
            if m.group(1):
                start = int(m.group(1))
                end = min(info.size, int(m.group(2)) + 1) if m.group(2) else info.size
            else:  # suffix range: the last N bytes
                start = max(0, info.size - int(m.group(2)))
            if start >= max(info.size, 1) or end <= start:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{info.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        chunks = files.iter_range(service.store, cid, start, end - start)
        return StreamingResponse(stream_from_threads(chunks), status_code=status, headers=headers,
                                 media_type="application/octet-stream")

    @_problems
    async def stat(request: Request) -> Response:
        cid = _cid(request.path_params["cid"])
        return JSONResponse(await run(service.stat, cid))

    @_problems
    async def list_pins(_request: Request) -> Response:
        pins = await run(service.store.pins)
        return JSONResponse({"pins": [{"name": p.name, "cid": str(p.cid), "recursive": p.recursive}
                                      for p in pins]})

    @_problems
    async def add_pin(request: Request) -> Response:
        body = await read_json(request)
        cid = _cid(str(body.get("cid", "")))
        name = body.get("name") or str(cid)
        recursive = body.get("recursive", True)
        if not isinstance(name, str) or not isinstance(recursive, bool):
            raise ApiProblem(400, "bad_request", "name must be a string, recursive a boolean")
        report = await run(service.store.pin, cid, name, recursive)
        return JSONResponse({"name": report.name, "cid": str(report.cid), "blocks": report.blocks,
                             "recursive": recursive})

    @_problems
    async def remove_pin(request: Request) -> Response:
        name = request.path_params["name"]
        if not await run(service.store.unpin, name):
            raise ApiProblem(404, "not_found", f"no pin named {name!r}")
        return JSONResponse({"name": name, "removed": True})

    @_problems
    async def gc(_request: Request) -> Response:
        result = await run(service.store.collect_garbage)
        return JSONResponse({"blocks_removed": result.blocks_removed,
                             "bytes_freed": result.bytes_freed})

    @_problems
    async def stats(_request: Request) -> Response:
        st = await run(service.store.stats)
        return JSONResponse({"blocks": st.blocks, "bytes": st.bytes, "pins": st.pins,
                             "corrupt": [str(c) for c in st.corrupt]})

    # -- CAR ------------------------------------------------------------------------
    @_problems
    async def export(request: Request) -> Response:
        roots = [_cid(r) for r in request.query_params.getlist("root")]
        author = request.query_params.get("author")
        if bool(roots) == bool(author):
            raise ApiProblem(400, "bad_request", "give either root=CID (repeatable) or author=KEY")
        if author is not None:
            try:
                key = bytes.fromhex(author)
            except ValueError as exc:
                raise ApiProblem(400, "bad_request", "author must be a hex ed25519 key") from exc
            sections = service.author_sections(key)
        else:
            sections = service.export_sections(roots)
        # Pull the first piece now, so unknown roots are a 404 rather than a
        # stream that breaks after the 200 was sent.
        first = await run(next, sections)
        return StreamingResponse(stream_from_threads(_batched(first, sections)),
                                 media_type="application/vnd.ipld.car; version=1")

    @_problems
    async def import_car(request: Request) -> Response:
        reader = _BodyReader(request, MAX_UPLOAD_BYTES)
        report = await run(service.import_car, reader)
        return JSONResponse({
            "roots": [str(r) for r in report.roots], "imported": report.imported,
            "bytes_read": report.bytes_read,
            "bad_blocks": [{"cid": str(b.cid), "offset": b.offset, "reason": b.reason}
                           for b in report.bad_blocks],
        })

    # -- worlds -----------------------------------------------------------------------
    async def list_worlds(_request: Request) -> Response:
        names = await run(service.world_names)
        return JSONResponse({"worlds": names})

    @_problems
    async def show_world(request: Request) -> Response:
        name = request.path_params["name"]
        cid, commit = await run(service.world_head, name)
        size = await run(lambda: len(service.world(name)))
        return JSONResponse({"world": name, "head": str(cid), "root": str(commit.root),
                             "seq": commit.seq, "time": commit.time,
                             "author": commit.author.hex(), "keys": size})

    @_problems
    async def update_world(request: Request) -> Response:
        name = request.path_params["name"]
        body = await read_json(request)
        set_values = body.get("set", {})
        delete = body.get("delete", [])
        if not isinstance(set_values, dict) or not isinstance(delete, list):
            raise ApiProblem(400, "bad_request", "set must be an object, delete a list of keys")
        write = await run(service.world_update, name, from_json(set_values), delete)
        return JSONResponse({"world": name, "head": str(write.commit_cid),
                             "root": str(write.commit.root), "seq": write.commit.seq,
                             "log_index": write.log_index})

    @_problems
    async def get_key(request: Request) -> Response:
        name, key = request.path_params["name"], request.path_params["key"]
        at = request.query_params.get("at")
        world = await run(service.world, name, _cid(at) if at else None)
        link = await run(world.get_link, key)
        if link is None:
            raise ApiProblem(404, "not_found", f"world {name!r} has no key {key!r}")
        value = await run(lambda: world.get(key))
        return JSONResponse({"key": key, "value": to_json(value), "cid": str(link)})

    @_problems
    async def list_entries(request: Request) -> Response:
        name = request.path_params["name"]
        prefix = request.query_params.get("prefix")
        limit = _int_param(request, "limit", DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        world = await run(service.world, name, None)

        def collect() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for key, value in world.items(prefix=prefix):
                if len(out) >= limit:
                    break
                out.append({"key": key, "value": to_json(value)})
            return out

        return JSONResponse({"world": name, "entries": await run(collect)})

    @_problems
    async def diff_world(request: Request) -> Response:
        name = request.path_params["name"]
        frm, to = request.query_params.get("from"), request.query_params.get("to")
        if not frm:
            raise ApiProblem(400, "bad_request", "from=COMMIT_OR_ROOT is required")

        def compute() -> dict[str, Any]:
            a = service.world(name, _cid(frm))
            b = service.world(name, _cid(to) if to else None)
            d = a.diff(b)
            return {"world": name, "from": str(a.root), "to": str(b.root),
                    "blocks_read": d.blocks_read,
                    "changes": [{"key": c.key, "old": to_json(c.old), "new": to_json(c.new)}
                                for c in d.changes]}

        return JSONResponse(await run(compute))

    @_problems
    async def history(request: Request) -> Response:
        name = request.path_params["name"]
        limit = _int_param(request, "limit", 100, MAX_LIST_LIMIT)
        rows = await run(lambda: [
            {"commit": str(cid), "seq": c.seq, "time": c.time, "root": str(c.root),
             "author": c.author.hex()} for cid, c in service.world_history(name, limit)])
        return JSONResponse({"world": name, "history": rows})

    # -- log ----------------------------------------------------------------------------
    @_problems
    async def log_entries(request: Request) -> Response:
        start = _int_param(request, "start", 0, 2**63)
        limit = _int_param(request, "limit", DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
        rows = await run(service.log_entries, start, limit)
        return JSONResponse({"size": len(service.log), "entries": rows})

    @_problems
    async def checkpoint(request: Request) -> Response:
        if request.method == "POST":
            note = await run(service.log.checkpoint, service.key)
        else:
            last: str | None = await run(service.log.last_checkpoint)
            if last is None:
                raise ApiProblem(404, "not_found", "no checkpoint signed yet")
            note = last
        return Response(note, media_type="text/plain; charset=utf-8")

    @_problems
    async def proof(request: Request) -> Response:
        index = int(request.path_params["index"])
        bundle = await run(service.log.prove, index)
        return Response(bundle.to_text(), media_type="text/plain; charset=utf-8")

    octet = {"type": "string", "format": "binary"}
    text = {"type": "string"}
    return [
        ApiRoute("POST", "/canon/blocks", put_block, "Store one block (body = bytes; codec, hash, pin query params)", tag="canon"),
        ApiRoute("POST", "/canon/files", put_file, "Store a file of any size, chunked (streamed body)", tag="canon"),
        ApiRoute("GET", "/canon/blocks/{cid}", get_block, "A block's bytes, hash-verified", tag="canon",
                 response_schema=octet, response_media_type="application/octet-stream"),
        ApiRoute("GET", "/canon/files/{cid}", get_file, "A file's content (Range supported)", tag="canon",
                 response_schema=octet, response_media_type="application/octet-stream"),
        ApiRoute("GET", "/canon/stat/{cid}", stat, "Size, codec, links and pins of a block", tag="canon"),
        ApiRoute("GET", "/canon/stats", stats, "Block store totals", tag="canon"),
        ApiRoute("GET", "/canon/pins", list_pins, "Named pins", tag="canon"),
        ApiRoute("POST", "/canon/pins", add_pin, "Pin a CID (recursive by default)", tag="canon",
                 request_schema={"type": "object", "required": ["cid"], "properties": {
                     "cid": text, "name": text, "recursive": {"type": "boolean"}}}),
        ApiRoute("DELETE", "/canon/pins/{name:path}", remove_pin, "Remove a pin", tag="canon"),
        ApiRoute("POST", "/canon/gc", gc, "Garbage-collect unpinned blocks", tag="canon"),
        ApiRoute("GET", "/canon/export", export, "CARv1 of the DAGs under root=… or of author=KEY", tag="canon",
                 response_schema=octet, response_media_type="application/vnd.ipld.car"),
        ApiRoute("POST", "/canon/import", import_car, "Import a CARv1 (streamed body); bad blocks reported", tag="canon"),
        ApiRoute("GET", "/canon/log", log_entries, "Canon log entries (start, limit)", tag="canon"),
        ApiRoute("GET", "/canon/log/checkpoint", checkpoint, "The last signed checkpoint (C2SP signed note)", tag="canon",
                 response_schema=text, response_media_type="text/plain"),
        ApiRoute("POST", "/canon/log/checkpoint", checkpoint, "Sign a checkpoint of the log now", tag="canon",
                 response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/canon/log/proof/{index:int}", proof, "Offline inclusion proof (C2SP tlog-proof)", tag="canon",
                 response_schema=text, response_media_type="text/plain"),
        ApiRoute("GET", "/worlds", list_worlds, "World names", tag="worlds"),
        ApiRoute("GET", "/worlds/{name}", show_world, "A world's head commit", tag="worlds"),
        ApiRoute("POST", "/worlds/{name}", update_world, "Set/delete keys; signs and logs a commit", tag="worlds",
                 request_schema={"type": "object", "properties": {
                     "set": {"type": "object"}, "delete": {"type": "array", "items": text}}}),
        ApiRoute("GET", "/worlds/{name}/entries", list_entries, "Keys and values (prefix, limit)", tag="worlds"),
        ApiRoute("GET", "/worlds/{name}/keys/{key:path}", get_key, "One key's value (at=COMMIT_OR_ROOT)", tag="worlds"),
        ApiRoute("GET", "/worlds/{name}/diff", diff_world, "Changes between two commits or roots", tag="worlds"),
        ApiRoute("GET", "/worlds/{name}/history", history, "Commits, newest first", tag="worlds"),
    ]
