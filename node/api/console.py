"""The operator console: the node's own web page (``GET /``), its static assets, and the
small JSON routes the page needs beyond the rest of the API.

The page (``node/console/``: index.html, app.css, icon.svg and the ES modules app.js,
charts.js, dom.js; no framework, no build step, no CDN) is a client of the public API like any other: it reads ``/api/v1/openapi.json``
to learn which routes this node has (agents, rooms and peer bans come with later
issues; their panels say "not available on this node" until the routes exist) and
calls the existing routes for everything they already answer. This module adds:

- ``GET /api/v1/console/session`` — is the bearer token valid? Always 200 with
  ``{"signed_in": bool}``, so a sign-in attempt does not produce a failed request in
  the browser's console;
- ``GET /api/v1/console/node`` — identity, version, uptime, inference backend, data
  dir disk use, and warnings ("is anything wrong");
- ``GET /api/v1/console/canon`` and ``/console/ledger`` — totals and listings the
  API has no single route for (worlds with their writers, accounts and assets seen in
  the ledger log, listings, fraud proofs);
- ``GET /api/v1/console/metrics`` — the in-memory metrics history (charts);
- ``GET /api/v1/console/events`` — live updates as server-sent events.

Live-update auth: ``EventSource`` cannot send an ``Authorization`` header, and the
token must never be in a URL. The page therefore reads the event stream with
``fetch()`` (which sends the header) and parses the ``text/event-stream`` body
itself; the stream is an ordinary bearer-token route. Reconnecting resumes with
``?after=<last seq>`` so no sample is lost across a short disconnect.

Every console response carries a Content-Security-Policy that allows only the
node's own origin (no inline script or style, no framing).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from n3xus.canon.cid import CID

from ..services.metrics_history import MetricsHistory, registry_values
from .schemas import BOOLEAN, HEX, INTEGER, NUMBER, STRING, arr, nullable, obj
from .server import ApiProblem, ApiRoute, Param, query

if TYPE_CHECKING:
    from ..runtime import Node
    from ..services.canon import CanonService
    from ..services.ledger import LedgerService

CONSOLE_PACKAGE = "n3xus.node.console"
# The only files served from the package: a fixed allow-list, never a path from the
# request, so no request can read anything else from disk.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
INDEX_FILE = "index.html"
# Only the node's own origin; nothing inline; no plugins, frames or foreign forms.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Revalidated on every load (ETag), so an upgraded node never serves a stale page.
    "Cache-Control": "no-cache",
}

# The stream sends a comment line this often when no sample arrived, so proxies and
# the page can tell a quiet stream from a dead one (the page reconnects after 3x).
SSE_HEARTBEAT_S = 15.0
# Each open stream is one parked task; a page opens one. A few tabs and a script or
# two are normal, hundreds are a leak or an attack.
MAX_EVENT_STREAMS = 16
# Canon block and pin totals come from a scan of every block (BlockStore.stats); in
# the metrics history they are refreshed at most this often, so a large store costs
# one scan per 30 s, not one per sample. (The console's canon panel reads fresh totals
# when it loads.)
CANON_SCAN_INTERVAL_S = 30.0
# The ledger log is indexed incrementally (accounts, assets, listings and fraud
# proofs seen in it), in batches of this many entries per thread hop.
LEDGER_SCAN_BATCH = 1000
# The first refresh reads only this many of the newest log entries (decoding a
# million transactions would keep the first page load waiting for minutes).
INITIAL_SCAN_ENTRIES = 100_000
# The index remembers this many of the most recently active accounts, assets and
# listed editions; older ones fall out (the API still answers for any of them).
MAX_TRACKED = 10_000
# What the console's ledger panel shows at once.
ACCOUNTS_SHOWN = 50
ASSETS_SHOWN = 30
LISTINGS_SHOWN = 50
# Editions read per asset for the panel (an asset may have millions).
EDITIONS_SHOWN = 20
# Worlds listed in the canon panel (each costs one head read).
WORLDS_SHOWN = 200
# "Disk nearly full" warning threshold: free space below this fraction.
LOW_DISK_FRACTION = 0.05


def _read_asset(name: str) -> bytes:
    return resources.files(CONSOLE_PACKAGE).joinpath(name).read_bytes()


def _static(name: str, media_type: str, request: Request, cache: dict[str, tuple[bytes, str]]) -> Response:
    if name not in cache:
        body = _read_asset(name)
        cache[name] = (body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
    body, etag = cache[name]
    headers = {**PAGE_HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def dir_usage(path: Path) -> dict[str, int]:
    """Apparent size and allocated bytes of the files under ``path`` (LMDB files are
    sparse, so the two differ), and the file system's size and free space."""
    apparent = allocated = files = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:  # removed while we walk (a temp file): skip it
                continue
            files += 1
            apparent += st.st_size
            allocated += getattr(st, "st_blocks", 0) * 512
    disk = shutil.disk_usage(path)
    return {"files": files, "apparent_bytes": apparent, "allocated_bytes": allocated,
            "fs_total_bytes": disk.total, "fs_free_bytes": disk.free}


def probe_inference() -> dict[str, Any]:
    """The inference backend as n3xus.imvu.inference would use it, without loading the
    model: is llama.cpp importable, can it offload to a GPU, where is the model."""
    from n3xus.imvu import inference

    info: dict[str, Any] = {"threads": os.cpu_count() or 1}
    try:
        path = inference.bundled_model_path()
        info["model"] = {"file": path.name, "bytes": path.stat().st_size}
    except (inference.InferenceError, OSError) as exc:
        info["model"] = {"error": str(exc)}
    try:
        gpu = inference.gpu_offload_supported()
        import llama_cpp
    except (ImportError, OSError, AttributeError) as exc:
        info.update(available=False, backend=None, gpu_offload=False, error=str(exc))
        return info
    info.update(available=True, backend="gpu" if gpu else "cpu", gpu_offload=gpu,
                llama_cpp=str(getattr(llama_cpp, "__version__", "unknown")))
    return info


def _rss_bytes() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as f:  # Linux: pages, resident is field 2
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return None


class LedgerIndex:
    """Accounts, assets, listed editions and fraud proofs seen in the ledger log,
    built incrementally (only new entries are read). Thread-safe: it is refreshed
    from worker threads."""

    def __init__(self, service: LedgerService) -> None:
        self.service = service
        self.scanned = 0
        self.accounts: OrderedDict[str, int] = OrderedDict()  # hex -> txs signed or received
        self.assets: OrderedDict[str, int] = OrderedDict()  # asset id -> mint log index
        self.listed: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.fraud_entries: list[int] = []
        self._lock = threading.Lock()

    @staticmethod
    def _touch(table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > MAX_TRACKED:
            table.popitem(last=False)

    def refresh(self) -> None:
        with self._lock:
            size = self.service.store.log_size()
            if self.scanned == 0:  # first look: the recent past is what the panel shows
                self.scanned = max(0, size - INITIAL_SCAN_ENTRIES)
            while self.scanned < size:
                rows = self.service.log(self.scanned, min(LEDGER_SCAN_BATCH, size - self.scanned))
                if not rows:
                    break
                for row in rows:
                    self._index(row)
                self.scanned = rows[-1]["index"] + 1

    def _index(self, row: dict[str, Any]) -> None:
        if row["kind"] == "fraud-proof":
            self.fraud_entries = [*self.fraud_entries[-MAX_TRACKED + 1:], row["index"]]
            return
        if row["kind"] != "tx":
            return
        args = row.get("args") or {}
        for account in (row["account"], args.get("to")):
            if isinstance(account, str):
                self._touch(self.accounts, account, self.accounts.get(account, 0) + 1)
        if row["op"] == "mint":
            self._touch(self.assets, row["id"], row["index"])
        elif row["op"] == "list" and isinstance(args.get("asset"), str):
            self._touch(self.listed, (args["asset"], int(args.get("edition", 0))), None)

    def view(self) -> dict[str, Any]:
        self.refresh()
        store = self.service.store
        with self._lock:
            accounts = list(self.accounts.items())[-ACCOUNTS_SHOWN:][::-1]
            assets = list(self.assets.items())[-ASSETS_SHOWN:][::-1]
            listed = list(self.listed)[::-1]
            fraud_entries = list(self.fraud_entries)
            scanned = self.scanned
        account_rows = []
        for hex_key, txs in accounts:
            raw = bytes.fromhex(hex_key)
            account_rows.append({"account": hex_key, "balance": store.balance(raw),
                                 "frozen": store.is_frozen(raw), "txs": txs})
        asset_rows = []
        for asset_id, index in assets:
            asset = store.asset(CID(asset_id))
            if asset is None:
                continue
            owners = []
            for edition in range(1, min(asset.editions, EDITIONS_SHOWN) + 1):
                owner = store.owner(CID(asset_id), edition)
                owners.append({"edition": edition, "owner": None if owner is None else owner.hex()})
            asset_rows.append({"asset": asset_id, "log_index": index,
                               "creator": asset.creator.hex(), "artifact": str(asset.artifact),
                               "editions": asset.editions, "royalty_bps": asset.royalty_bps,
                               "owners": owners})
        listings: list[dict[str, Any]] = []
        for asset_id, edition in listed:
            if len(listings) >= LISTINGS_SHOWN:
                break
            listing = store.listing(CID(asset_id), edition)
            if listing is not None:
                listings.append({"asset": asset_id, "edition": edition,
                                 "seller": listing.seller.hex(), "price": listing.price})
        frozen = [a.hex() for a in store.frozen_accounts()]
        return {"scanned": scanned, "accounts": account_rows, "assets": asset_rows,
                "listings": listings, "frozen_accounts": frozen,
                "fraud_proof_entries": fraud_entries}


def _canon_view(service: CanonService) -> dict[str, Any]:
    stats = service.store.stats()
    worlds = []
    for name in service.world_names()[:WORLDS_SHOWN]:
        head, commit = service.world_head(name)
        worlds.append({"world": name, "head": str(head), "seq": commit.seq, "time": commit.time,
                       "writer": commit.author.hex()})
    return {"blocks": stats.blocks, "bytes": stats.bytes, "pins": stats.pins,
            "corrupt": [str(c) for c in stats.corrupt], "log_size": len(service.log),
            "checkpoint": service.log.last_checkpoint(), "worlds": worlds}


class ConsoleSampler:
    """The metrics history's sampling function: the node's Prometheus counters and
    gauges plus totals read from its services (peers, ledger, canon, data dir)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._canon_totals: dict[str, float] = {}
        self._canon_scanned_at = -CANON_SCAN_INTERVAL_S

    async def __call__(self) -> dict[str, float]:
        node = self.node
        peers = float(len(node.peers()))  # the host lives on the trio thread
        values = await trio.to_thread.run_sync(self._in_thread)
        values["peers"] = peers
        values["uptime_seconds"] = node.uptime()
        return values

    def _in_thread(self) -> dict[str, float]:
        # Collectors read LMDB: they run in a worker thread, as for a /metrics scrape
        # (the node's canon collector then keeps block totals itself, every 15 s).
        values = registry_values(self.node.counters.registry.collect())
        known = values.get("n3xus_canon_blocks")
        values.update(self._stored(known is None))
        if known is not None:
            values["canon_blocks"] = known
            for mine, theirs in (("canon_bytes", "n3xus_canon_stored_bytes"),
                                 ("canon_pins", "n3xus_canon_pins"),
                                 ("canon_corrupt_blocks", "n3xus_canon_corrupt_blocks")):
                if theirs in values:
                    values[mine] = values[theirs]
        return values

    def _stored(self, scan_canon: bool) -> dict[str, float]:
        node = self.node
        out: dict[str, float] = {"process_cpu_seconds": time.process_time()}
        rss = _rss_bytes()
        if rss is not None:
            out["process_rss_bytes"] = rss
        out["data_dir_bytes"] = float(dir_usage(node.data_dir.path)["allocated_bytes"])
        if node.ledger is not None:
            store = node.ledger.store
            out["ledger_log_size"] = float(store.log_size())
            out["ledger_supply"] = float(store.supply())
            out["ledger_frozen_accounts"] = float(len(store.frozen_accounts()))
        if node.canon is not None:
            canon = node.canon
            out["canon_log_size"] = float(len(canon.log))
            out["worlds"] = float(len(canon.world_names()))
            now = time.monotonic()
            if scan_canon and now - self._canon_scanned_at >= CANON_SCAN_INTERVAL_S:
                stats = canon.store.stats()
                self._canon_totals = {"canon_blocks": float(stats.blocks),
                                      "canon_bytes": float(stats.bytes),
                                      "canon_pins": float(stats.pins),
                                      "canon_corrupt_blocks": float(len(stats.corrupt))}
                self._canon_scanned_at = now
            out.update(self._canon_totals)
        return out


def _warnings(node: Node, usage: dict[str, int], inference: dict[str, Any],
              latest: dict[str, float], frozen: int) -> list[dict[str, str]]:
    """Things an operator should look at, each with a short code and a sentence."""
    out: list[dict[str, str]] = []
    if usage["fs_total_bytes"] and usage["fs_free_bytes"] / usage["fs_total_bytes"] < LOW_DISK_FRACTION:
        out.append({"code": "low_disk", "message":
                    f"less than {LOW_DISK_FRACTION:.0%} free on the data dir's file system"})
    if latest.get("canon_corrupt_blocks", 0) > 0:
        out.append({"code": "corrupt_blocks", "message":
                    f"{int(latest['canon_corrupt_blocks'])} corrupt block(s) in the canon store"})
    if frozen:
        out.append({"code": "frozen_accounts", "message":
                    f"{frozen} account(s) frozen by fraud proofs"})
    if not node.peers():
        out.append({"code": "no_peers", "message": "not connected to any peer"})
    if not inference.get("available"):
        out.append({"code": "no_inference", "message": "local inference is not available"})
    return out


def console_routes(node: Node, history: MetricsHistory) -> Sequence[ApiRoute]:
    run = trio.to_thread.run_sync
    expected_auth = f"Bearer {node.data_dir.read_token()}".encode()
    asset_cache: dict[str, tuple[bytes, str]] = {}
    inference_info: dict[str, Any] = {}
    inference_lock = trio.Lock()
    ledger_index = LedgerIndex(node.ledger) if node.ledger is not None else None
    open_streams = [0]

    def _resume_point(after: int) -> int:
        # A seq past the end was issued before a restart of the node (a new boot):
        # the client gets the whole new history rather than waiting for it to catch up.
        return 0 if after > history.last_seq else after

    async def index_page(request: Request) -> Response:
        return _static(INDEX_FILE, "text/html; charset=utf-8", request, asset_cache)

    async def asset(request: Request) -> Response:
        name = request.path_params["asset"]
        if name not in ASSETS:
            raise ApiProblem(404, "not_found", f"no console asset {name!r}")
        return _static(name, ASSETS[name], request, asset_cache)

    async def session(request: Request) -> Response:
        # Scheme case-insensitive (RFC 7235), compared in constant time.
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        normalised = f"Bearer {credentials}".encode() if scheme.lower() == "bearer" else b""
        return JSONResponse({"signed_in": hmac.compare_digest(normalised, expected_auth)},
                            headers={"Cache-Control": "no-store"})

    async def inference() -> dict[str, Any]:
        async with inference_lock:  # importing llama.cpp once, in a thread
            if not inference_info:
                inference_info.update(await run(probe_inference))
        return inference_info

    async def node_view(_request: Request) -> Response:
        usage = await run(dir_usage, node.data_dir.path)
        ledger = node.ledger
        frozen = 0 if ledger is None else len(await run(ledger.store.frozen_accounts))
        info = await inference()
        samples = history.since(max(0, history.last_seq - 1))
        latest = samples[-1].values if samples else {}
        status = node.status()
        return JSONResponse({
            "peer_id": node.peer_id,
            "public_key": node.identity()["public_key"],
            "version": status["version"],
            "listen_addrs": status["listen_addrs"],
            "dial_addrs": status["dial_addrs"],
            "api_url": status["api_url"],
            "uptime_s": status["uptime_s"],
            "started_at": round(time.time() - node.uptime(), 3),
            "peer_count": status["peer_count"],
            "counters": status["counters"],
            "data_dir": {"path": str(node.data_dir.path), **usage},
            "inference": info,
            "runtime": {"python": platform.python_version(), "platform": sys.platform,
                        "pid": os.getpid()},
            "warnings": _warnings(node, usage, info, latest, frozen),
        })

    async def canon_view(_request: Request) -> Response:
        if node.canon is None:
            raise ApiProblem(404, "not_found", "this node has no canon store")
        canon = node.canon
        return JSONResponse(await run(_canon_view, canon))

    async def ledger_view(_request: Request) -> Response:
        if node.ledger is None or ledger_index is None:
            raise ApiProblem(404, "not_found", "this node has no ledger")
        return JSONResponse(await run(ledger_index.view))

    async def metrics(request: Request) -> Response:
        return JSONResponse(history.columns(_resume_point(query(request).get("after", 0))))

    async def events(request: Request) -> Response:
        after = _resume_point(query(request).get("after", 0))
        if open_streams[0] >= MAX_EVENT_STREAMS:
            raise ApiProblem(429, "too_many_streams",
                             f"at most {MAX_EVENT_STREAMS} event streams at once")
        open_streams[0] += 1

        async def stream() -> AsyncIterator[str]:
            nonlocal after
            try:
                hello = json.dumps({"boot": history.boot, "last_seq": history.last_seq})
                yield f"retry: 2000\nevent: hello\ndata: {hello}\n\n"
                while True:
                    samples: list[Any] = []
                    with trio.move_on_after(SSE_HEARTBEAT_S):
                        samples = await history.wait_after(after)
                    if not samples:
                        yield ": keepalive\n\n"
                        continue
                    for s in samples:
                        data = json.dumps({"seq": s.seq, "time": round(s.time, 3),
                                           "values": s.values}, separators=(",", ":"))
                        yield f"id: {s.seq}\nevent: sample\ndata: {data}\n\n"
                    after = samples[-1].seq
            finally:
                open_streams[0] -= 1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    html = {"type": "string", "description": "the console page (HTML)"}
    after = Param("after", INTEGER, "only samples with a larger seq (resume after a reconnect)")
    samples = arr(obj({"seq": INTEGER, "time": NUMBER, "values": obj(extra=True)}))
    history_schema = obj({
        "boot": STRING, "interval_s": NUMBER, "capacity": INTEGER, "last_seq": INTEGER,
        "seq": arr(INTEGER), "time": arr(NUMBER),
        "series": {"type": "object", "additionalProperties": arr(nullable(NUMBER))}})
    warning = obj({"code": STRING, "message": STRING})
    node_schema = obj({
        "peer_id": STRING, "public_key": HEX, "version": STRING, "listen_addrs": arr(STRING),
        "dial_addrs": arr(STRING), "api_url": STRING, "uptime_s": NUMBER, "started_at": NUMBER,
        "peer_count": INTEGER, "counters": obj(extra=True),
        "data_dir": obj({"path": STRING, "files": INTEGER, "apparent_bytes": INTEGER,
                         "allocated_bytes": INTEGER, "fs_total_bytes": INTEGER,
                         "fs_free_bytes": INTEGER}),
        "inference": obj({"available": BOOLEAN, "threads": INTEGER}, extra=True),
        "runtime": obj({"python": STRING, "platform": STRING, "pid": INTEGER}),
        "warnings": arr(warning)})
    canon_schema = obj({
        "blocks": INTEGER, "bytes": INTEGER, "pins": INTEGER, "corrupt": arr(STRING),
        "log_size": INTEGER, "checkpoint": nullable(STRING),
        "worlds": arr(obj({"world": STRING, "head": STRING, "seq": INTEGER, "time": INTEGER,
                           "writer": HEX}))})
    ledger_schema = obj({
        "scanned": INTEGER,
        "accounts": arr(obj({"account": HEX, "balance": INTEGER, "frozen": BOOLEAN,
                             "txs": INTEGER})),
        "assets": arr(obj({"asset": STRING, "log_index": INTEGER, "creator": HEX,
                           "artifact": STRING, "editions": INTEGER, "royalty_bps": INTEGER,
                           "owners": arr(obj({"edition": INTEGER, "owner": nullable(HEX)}))})),
        "listings": arr(obj({"asset": STRING, "edition": INTEGER, "seller": HEX,
                             "price": INTEGER})),
        "frozen_accounts": arr(HEX), "fraud_proof_entries": arr(INTEGER)})
    return [
        ApiRoute("GET", "/", index_page, "The operator console (HTML page)", auth=False,
                 absolute=True, tag="console", response_schema=html,
                 response_media_type="text/html", other_statuses=((304, ""),)),
        ApiRoute("GET", "/console/{asset}", asset, "A static asset of the operator console",
                 auth=False, absolute=True, tag="console",
                 params=(Param("asset", STRING, "file name: " + ", ".join(ASSETS), where="path"),),
                 response_schema=STRING, response_media_type="text/javascript",
                 alt_responses=(("text/css", STRING), ("image/svg+xml", STRING)),
                 other_statuses=((304, ""),), errors=(404,)),
        ApiRoute("GET", "/console/session", session,
                 "Whether the bearer token sent is valid (always 200, for the sign-in form)",
                 auth=False, tag="console", response_schema=obj({"signed_in": BOOLEAN}),
                 description="Send the token as `Authorization: Bearer <token>`; the answer "
                             "is 200 either way, so a failed sign-in is not a failed request."),
        ApiRoute("GET", "/console/node", node_view,
                 "Identity, version, uptime, inference backend, data dir use, warnings",
                 tag="console", response_schema=node_schema),
        ApiRoute("GET", "/console/canon", canon_view,
                 "Canon totals, log size, latest signed checkpoint, worlds and their writers",
                 tag="console", response_schema=canon_schema, errors=(404,)),
        ApiRoute("GET", "/console/ledger", ledger_view,
                 "Accounts, assets, listings and fraud proofs seen in the ledger log",
                 tag="console", response_schema=ledger_schema, errors=(404,)),
        ApiRoute("GET", "/console/metrics", metrics,
                 "In-memory history of the main metrics, as columns", tag="console",
                 params=(after,), response_schema=history_schema),
        ApiRoute("GET", "/console/events", events,
                 "Live metric samples as server-sent events (never ends; resume with after)",
                 tag="console", params=(after,), response_schema=STRING,
                 response_media_type="text/event-stream", errors=(429,),
                 description="Events: `hello` (data: boot id and last seq; a new boot id "
                             "means the node restarted and the history began again), then "
                             "`sample` (data: " + json.dumps(samples["items"]) + "), with a "
                             f"comment line every {SSE_HEARTBEAT_S:g} s when idle."),
    ]
