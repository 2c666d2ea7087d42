"""HTTP routes of the canon memory: blocks, files, pins, GC, worlds, the log, CAR.

Blocking work (LMDB, hashing, signing) runs in worker threads. Uploads (files, CAR
imports) are streamed: the worker thread pulls the request body chunk by chunk from
the trio side, so a large artifact never sits in memory whole. Downloads stream the
other way and honour a single ``Range: bytes=a-b`` for files (media seeking).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
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
from ..services.worlds_federation import NotAWriterError
from .jsonview import from_json, to_json
from .schemas import (
    ANY,
    BINARY,
    BOOLEAN,
    CAR,
    CID_TEXT,
    HEX32,
    JSON,
    MAX_I63,
    OCTETS,
    STRING,
    TEXT,
    arr,
    enum,
    integer,
    nullable,
    obj,
)
from .server import (
    ApiProblem,
    ApiRoute,
    Body,
    Param,
    Problem,
    error_response,
    problems,
    query,
    read_body,
    read_json,
)

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



#: Canon errors as HTTP answers with a JSON error body.
_problems = problems(
    Problem((BlockNotFoundError, WorldNotFoundError), 404, "not_found", lambda exc: _message(exc)),
    Problem(CorruptBlockError, 500, "corrupt_block"),
    Problem(LimitExceededError, 413, "too_large"),
    Problem(VerificationError, 422, "verification_failed"),
    # A world this key may not write (shared, followed).
    Problem(NotAWriterError, 403, "not_a_writer"),
    Problem((CanonError, ValueError), 400, "bad_request"),
)


def _message(exc: BaseException) -> str:
    """What was not found, in words: a bare CID becomes ``block … is not stored on this
    node``. (KeyError subclasses repr() their argument; show the plain text.)"""
    text = str(exc.args[0]) if exc.args else str(exc)
    if isinstance(exc, BlockNotFoundError) and " " not in text:
        return f"block {text} is not stored on this node"
    return text


# CID texts shorter than this are not near misses: the parser's detail about them
# ("unsupported CID version 13" for `zzz`) would only confuse.
_CID_DETAIL_MIN_CHARS = 32


def parse_cid(text: str) -> CID:
    """A CID from request text, or a 400 that says the text is not a CID."""
    try:
        return CID(text)
    except ValueError as exc:
        detail = f" ({exc})" if len(text) >= _CID_DETAIL_MIN_CHARS else ""
        raise ApiProblem(400, "bad_cid", f"{text[:100]} is not a CID{detail}") from exc


_cid = parse_cid


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


PIN = obj({"name": STRING, "cid": CID_TEXT, "recursive": BOOLEAN})
STORED = obj({"cid": CID_TEXT, "size": integer(), "pinned": BOOLEAN})
STAT = obj({"cid": CID_TEXT, "size": integer(), "codec": STRING, "hash": STRING,
            "links": integer(), "pins": arr(STRING)},
           {"file": obj({"size": integer(), "chunk_size": integer(), "chunks": integer()})})
LOG_ENTRY = obj({"index": integer(), "cid": CID_TEXT, "type": STRING, "version": integer(),
                 "author": HEX32, "time": integer(), "payload": CID_TEXT})
WORLD_NAME = Param("name", {"type": "string", "minLength": 1}, "the world's name",
                   where="path", required=True)
WORLD_WRITE = obj({"world": STRING, "head": CID_TEXT, "root": CID_TEXT, "seq": integer(),
                   "log_index": integer()})
HASH = Param("hash", enum("blake3", "sha2-256"), "hash function of the CID (default blake3)")
PIN_FLAG = Param("pin", BOOLEAN, "pin what was stored (default true)")
LIMIT_DOC = f"at most this many rows (default {DEFAULT_LIST_LIMIT})"
COMMIT_OR_ROOT = "a commit or tree-root CID"


def canon_routes(service: CanonService) -> list[ApiRoute]:
    run = trio.to_thread.run_sync

    # -- blocks and files ----------------------------------------------------------
    @_problems
    async def put_block(request: Request) -> Response:
        q = query(request)
        pin = q.get("pin", True)
        data = await read_body(request, MAX_BLOCK_SIZE, ApiProblem(
            413, "too_large", f"body over {MAX_BLOCK_SIZE} bytes"))
        cid = await run(service.put_block, data, q.get("codec", "raw"), q.get("hash", "blake3"), pin)
        return JSONResponse({"cid": str(cid), "size": len(data), "pinned": pin})

    @_problems
    async def put_file(request: Request) -> Response:
        q = query(request)
        pin = q.get("pin", True)
        reader = _BodyReader(request, MAX_UPLOAD_BYTES)
        root, size = await run(service.add_file, reader, pin, q.get("hash", "blake3"))
        return JSONResponse({"cid": str(root), "size": size, "pinned": pin})

    @_problems
    async def get_block(request: Request) -> Response:
        cid = _cid(request.path_params["cid"])
        data = await run(service.store.get, cid)
        return Response(data, media_type=OCTETS, headers={"X-Content-CID": str(cid)})

    @_problems
    async def get_file(request: Request) -> Response:
        cid = _cid(request.path_params["cid"])
        info = await run(service.file_info, cid)
        if info is None:
            if not await run(service.store.has, cid):
                raise BlockNotFoundError(str(cid))
            raise ApiProblem(400, "not_a_file", f"{cid} is not an n3xus file root")
        start, end, status = 0, info.size, 200
        headers = {"Accept-Ranges": "bytes", "X-Content-CID": str(cid)}
        wanted = request.headers.get("range")
        if wanted:
            m = _RANGE.match(wanted.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise ApiProblem(416, "bad_range", f"unsupported Range {wanted[:80]!r}")
            if m.group(1):
                start = int(m.group(1))
                end = min(info.size, int(m.group(2)) + 1) if m.group(2) else info.size
            else:  # suffix range: the last N bytes
                start = max(0, info.size - int(m.group(2)))
            if start >= max(info.size, 1) or end <= start:
                return error_response(416, "bad_range", f"range outside the file's {info.size} "
                                      "bytes", {"Content-Range": f"bytes */{info.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        headers["Content-Length"] = str(end - start)
        chunks = files.iter_range(service.store, cid, start, end - start)
        return StreamingResponse(stream_from_threads(chunks), status_code=status, headers=headers,
                                 media_type=OCTETS)

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
        cid = _cid(body["cid"])
        name = body.get("name") or str(cid)
        recursive = body.get("recursive", True)
        report = await run(service.store.pin, cid, name, recursive)
        return JSONResponse({"name": report.name, "cid": str(report.cid), "blocks": report.blocks,
                             "recursive": recursive})

    @_problems
    async def remove_pin(request: Request) -> Response:
        name = request.path_params["name"]
        if not await run(service.store.unpin, name):
            raise ApiProblem(404, "not_found", f"there is no pin named {name!r}")
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
        q = query(request)
        roots = [_cid(r) for r in q.get("root", [])]
        author = q.get("author")
        if bool(roots) == bool(author):
            raise ApiProblem(400, "bad_request", "give either root=CID (repeatable) or author=KEY")
        if author is not None:
            sections = service.author_sections(bytes.fromhex(author))
        else:
            sections = service.export_sections(roots)
        # Pull the first piece now, so unknown roots are a 404 rather than a
        # stream that breaks after the 200 was sent.
        first = await run(next, sections)
        return StreamingResponse(stream_from_threads(_batched(first, sections)), media_type=CAR)

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
        def read() -> tuple[CID, Any, int]:
            cid, commit = service.world_head(name)
            return cid, commit, len(service.world_values(name))

        cid, commit, size = await run(read)
        return JSONResponse({"world": name, "head": str(cid), "root": str(commit.root),
                             "seq": commit.seq, "time": commit.time,
                             "author": commit.author.hex(), "keys": size})

    @_problems
    async def update_world(request: Request) -> Response:
        name = request.path_params["name"]
        body = await read_json(request)
        set_values = from_json(body.get("set", {}))
        write = await run(service.world_update, name, set_values, body.get("delete", []))
        return JSONResponse({"world": name, "head": str(write.commit_cid),
                             "root": str(write.commit.root), "seq": write.commit.seq,
                             "log_index": write.log_index})

    @_problems
    async def get_key(request: Request) -> Response:
        name, key = request.path_params["name"], request.path_params["key"]
        at = query(request).get("at")
        at_cid = _cid(at) if at else None

        def read() -> tuple[CID | None, Any]:  # one worker-thread hop for the whole read
            world = service.world_values(name, at_cid)
            link = world.get_link(key)
            return link, (None if link is None else world.get(key))

        link, value = await run(read)
        if link is None:
            raise ApiProblem(404, "not_found", f"world {name!r} has no key {key!r}")
        return JSONResponse({"key": key, "value": to_json(value), "cid": str(link)})

    @_problems
    async def list_entries(request: Request) -> Response:
        name = request.path_params["name"]
        q = query(request)
        prefix, limit = q.get("prefix"), q.get("limit", DEFAULT_LIST_LIMIT)

        def collect() -> list[dict[str, Any]]:
            world = service.world_values(name, None)
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
        q = query(request)
        frm, to = _cid(q["from"]), (_cid(q["to"]) if "to" in q else None)

        def compute() -> dict[str, Any]:
            a = service.world(name, frm)
            b = service.world(name, to)
            d = a.diff(b)
            return {"world": name, "from": str(a.root), "to": str(b.root),
                    "blocks_read": d.blocks_read,
                    "changes": [{"key": c.key, "old": to_json(c.old), "new": to_json(c.new)}
                                for c in d.changes]}

        return JSONResponse(await run(compute))

    @_problems
    async def history(request: Request) -> Response:
        name = request.path_params["name"]
        limit = query(request).get("limit", 100)
        rows = await run(lambda: [
            {"commit": str(cid), "seq": c.seq, "time": c.time, "root": str(c.root),
             "author": c.author.hex()} for cid, c in service.world_history(name, limit)])
        return JSONResponse({"world": name, "history": rows})

    # -- log ----------------------------------------------------------------------------
    @_problems
    async def log_entries(request: Request) -> Response:
        q = query(request)
        rows = await run(service.log_entries, q.get("start", 0), q.get("limit", DEFAULT_LIST_LIMIT))
        return JSONResponse({"size": len(service.log), "entries": rows})

    @_problems
    async def checkpoint(request: Request) -> Response:
        if request.method == "POST":
            note = await run(service.log.checkpoint, service.key)
        else:
            last: str | None = await run(service.log.last_checkpoint)
            if last is None:
                raise ApiProblem(404, "not_found", "no checkpoint of the canon log was signed yet "
                                                   "(sign one: POST /api/v1/canon/log/checkpoint)")
            note = last
        return Response(note, media_type=TEXT)

    @_problems
    async def proof(request: Request) -> Response:
        index = request.path_params["index"]
        size = await run(len, service.log)
        if index >= size:
            raise ApiProblem(404, "not_found", f"the canon log has no entry {index} "
                                               f"(it has {size})")
        bundle = await run(service.log.prove, index)
        return Response(bundle.to_text(), media_type=TEXT)

    text = {"type": "string"}
    start = Param("start", integer(0, MAX_I63), "first entry index (default 0)")
    limit = Param("limit", integer(0, MAX_LIST_LIMIT), LIMIT_DOC)
    cid_path = Param("cid", CID_TEXT, where="path", required=True)
    key_list = {"type": "string", "minLength": 1}
    return [
        ApiRoute("POST", "/canon/blocks", put_block, "Store one block", tag="canon",
                 params=(Param("codec", enum("raw", "dag-cbor"), "codec of the block (default "
                               "raw; dag-cbor must be canonical)"), HASH, PIN_FLAG),
                 body=Body(OCTETS, BINARY, f"the block's bytes (at most {MAX_BLOCK_SIZE})"),
                 response_schema=STORED, errors=(413,)),
        ApiRoute("POST", "/canon/files", put_file, "Store a file of any size, chunked (streamed body)",
                 tag="canon", params=(HASH, PIN_FLAG), body=Body(OCTETS, BINARY, "the file's bytes"),
                 response_schema=STORED, errors=(413,)),
        ApiRoute("GET", "/canon/blocks/{cid}", get_block, "A block's bytes, hash-verified", tag="canon",
                 params=(cid_path,), response_schema=BINARY, response_media_type=OCTETS,
                 errors=(404, 500)),
        ApiRoute("GET", "/canon/files/{cid}", get_file, "A file's content (Range supported)", tag="canon",
                 params=(cid_path, Param("Range", STRING, "one range: bytes=A-B, A- or -N",
                                         where="header")),
                 response_schema=BINARY, response_media_type=OCTETS,
                 other_statuses=((206, OCTETS),), errors=(404, 416, 500)),
        ApiRoute("GET", "/canon/stat/{cid}", stat, "Size, codec, links and pins of a block", tag="canon",
                 params=(cid_path,), response_schema=STAT, errors=(404,)),
        ApiRoute("GET", "/canon/stats", stats, "Block store totals", tag="canon",
                 response_schema=obj({"blocks": integer(), "bytes": integer(), "pins": integer(),
                                      "corrupt": arr(CID_TEXT)})),
        ApiRoute("GET", "/canon/pins", list_pins, "Named pins", tag="canon",
                 response_schema=obj({"pins": arr(PIN)})),
        ApiRoute("POST", "/canon/pins", add_pin, "Pin a CID (recursive by default)", tag="canon",
                 body=Body(JSON, obj({"cid": CID_TEXT}, {"name": nullable(STRING),
                                                         "recursive": BOOLEAN})),
                 response_schema=obj({"name": STRING, "cid": CID_TEXT, "blocks": integer(),
                                      "recursive": BOOLEAN}), errors=(404,)),
        ApiRoute("DELETE", "/canon/pins/{name:path}", remove_pin, "Remove a pin", tag="canon",
                 params=(Param("name", {"type": "string", "minLength": 1},
                               "the pin's name, percent-encoded", where="path", required=True),),
                 response_schema=obj({"name": STRING, "removed": BOOLEAN}), errors=(404,)),
        ApiRoute("POST", "/canon/gc", gc, "Garbage-collect unpinned blocks", tag="canon",
                 response_schema=obj({"blocks_removed": integer(), "bytes_freed": integer()})),
        ApiRoute("GET", "/canon/export", export, "CARv1 of the DAGs under root=… or of author=KEY",
                 tag="canon", params=(Param("root", CID_TEXT, "a root CID", repeated=True),
                                      Param("author", HEX32, "everything this key signed")),
                 response_schema=BINARY, response_media_type=CAR, errors=(404,)),
        ApiRoute("POST", "/canon/import", import_car, "Import a CARv1 (streamed body); bad blocks reported",
                 tag="canon", body=Body(CAR, BINARY, "a CARv1 stream"), errors=(413,),
                 response_schema=obj({"roots": arr(CID_TEXT), "imported": integer(),
                                      "bytes_read": integer(),
                                      "bad_blocks": arr(obj({"cid": CID_TEXT, "offset": integer(),
                                                             "reason": STRING}))})),
        ApiRoute("GET", "/canon/log", log_entries, "Canon log entries (start, limit)", tag="canon",
                 params=(start, limit),
                 response_schema=obj({"size": integer(), "entries": arr(LOG_ENTRY)})),
        ApiRoute("GET", "/canon/log/checkpoint", checkpoint, "The last signed checkpoint (C2SP signed note)",
                 tag="canon", response_schema=text, response_media_type=TEXT, errors=(404,)),
        ApiRoute("POST", "/canon/log/checkpoint", checkpoint, "Sign a checkpoint of the log now",
                 tag="canon", response_schema=text, response_media_type=TEXT),
        ApiRoute("GET", "/canon/log/proof/{index:int}", proof, "Offline inclusion proof (C2SP tlog-proof)",
                 tag="canon", params=(Param("index", integer(0, MAX_I63), "log entry index",
                                            where="path", required=True),),
                 response_schema=text, response_media_type=TEXT, errors=(404,)),
        ApiRoute("GET", "/worlds", list_worlds, "World names", tag="worlds",
                 response_schema=obj({"worlds": arr(STRING)})),
        ApiRoute("GET", "/worlds/{name}", show_world, "A world's head commit", tag="worlds",
                 params=(WORLD_NAME,), errors=(404,),
                 response_schema=obj({"world": STRING, "head": CID_TEXT, "root": CID_TEXT,
                                      "seq": integer(), "time": integer(), "author": HEX32,
                                      "keys": integer()})),
        ApiRoute("POST", "/worlds/{name}", update_world, "Set/delete keys; signs and logs a commit",
                 tag="worlds", params=(WORLD_NAME,),
                 body=Body(JSON, obj(optional={
                     "set": {"type": "object", "description": "key -> value (DAG-JSON view: "
                             "links {\"/\": CID}, bytes {\"/\": {\"bytes\": base64}})",
                             "propertyNames": {"minLength": 1}},
                     "delete": arr(key_list)})),
                 response_schema=WORLD_WRITE, errors=(403,)),
        ApiRoute("GET", "/worlds/{name}/entries", list_entries, "Keys and values (prefix, limit)",
                 tag="worlds", params=(WORLD_NAME, Param("prefix", STRING, "only keys with this prefix"),
                                       limit), errors=(404,),
                 response_schema=obj({"world": STRING, "entries": arr(obj({"key": STRING,
                                                                           "value": ANY}))})),
        ApiRoute("GET", "/worlds/{name}/keys/{key:path}", get_key, "One key's value", tag="worlds",
                 params=(WORLD_NAME, Param("key", {"type": "string", "minLength": 1},
                                           "the key, percent-encoded", where="path", required=True),
                         Param("at", CID_TEXT, f"read at this past state ({COMMIT_OR_ROOT})")),
                 response_schema=obj({"key": STRING, "value": ANY, "cid": CID_TEXT}), errors=(404,)),
        ApiRoute("GET", "/worlds/{name}/diff", diff_world, "Changes between two commits or roots",
                 tag="worlds", params=(WORLD_NAME, Param("from", CID_TEXT, COMMIT_OR_ROOT, required=True),
                                       Param("to", CID_TEXT, f"{COMMIT_OR_ROOT} (default: the head)")),
                 errors=(404,),
                 response_schema=obj({"world": STRING, "from": CID_TEXT, "to": CID_TEXT,
                                      "blocks_read": integer(),
                                      "changes": arr(obj({"key": STRING, "old": ANY, "new": ANY}))})),
        ApiRoute("GET", "/worlds/{name}/history", history, "Commits, newest first", tag="worlds",
                 params=(WORLD_NAME, Param("limit", integer(0, MAX_LIST_LIMIT), "at most this many "
                                           "commits (default 100)")), errors=(404,),
                 response_schema=obj({"world": STRING, "history": arr(obj({
                     "commit": CID_TEXT, "seq": integer(), "time": integer(), "root": CID_TEXT,
                     "author": HEX32}))})),
    ]
