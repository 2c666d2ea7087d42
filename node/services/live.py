"""Live rooms in the node: the room registry, the room-token key, recordings into the
canon, tips into the ledger, world edits from room pages, and following a room of
another node over ``/n3xus/live/1.0.0`` (node/p2p/live.py).

The WebRTC core (``n3xus.webrtc``) is sans-node: it gets from here a 32-byte token
key, a world-edit handler, a :class:`~n3xus.webrtc.asgi.TipDesk` and a
:class:`~n3xus.webrtc.asgi.RecordingSource`. This module owns the tasks a room needs:

* an **origin** room (``room create``) has a recorder task: when a performance goes
  live it records the encoded video into WebM segments, each stored as a canon file;
  when the performance ends the manifest block (specs/live.md §4) is stored and a
  canon-log entry of type ``recording`` signed by the node (for the performer) points
  at it;
* a **followed** room (``room follow NAME --from PEER --token T``) has a puller task:
  it pulls one copy of the origin's stream into the local relay and reconnects (with
  backoff) when the stream ends or the connection drops; a refusal (bad or expired
  token) stops it with the reason kept in the registry.

Rooms are kept in LMDB (``live/rooms``: name -> JSON), so a restarted node serves the
same rooms; room tokens are stateless (HMAC), so links keep working until they expire.
"""

from __future__ import annotations

import io
import json
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import trio

from n3xus.canon.cid import CID
from n3xus.canon.errors import CanonError
from n3xus.webrtc.engine import IceServer
from n3xus.webrtc.errors import PullProtocolError, RemoteLiveError, TipRefusedError
from n3xus.webrtc.recording import RecordedSegment, manifest_block, manifest_json
from n3xus.webrtc.rooms import check_room_name
from n3xus.webrtc.service import LiveService, open_live_service

from ..errors import ConfigError
from ..logs import get_logger

if TYPE_CHECKING:
    from ..runtime import Node

log = get_logger("n3xus.live")

TOKEN_KEY_FILE = "live.key"
#: HMAC-SHA256 key size (specs/live.md §2).
TOKEN_KEY_BYTES = 32
_DB_ROOMS = b"live/rooms"
#: How often the recorder looks whether a room's performance is live. A performance
#: is recorded from the first keyframe after this, so half a second loses nothing (the
#: recorder waits for a keyframe anyway and asks the performer for one).
LIVE_POLL_S = 0.5
#: A performer's reload briefly leaves the room without a performer; a recording is
#: closed only once the room has not been live for this long.
END_GRACE_S = 3.0
#: Reconnect backoff of a followed room (doubling from the first to the last).
FOLLOW_RETRY_FIRST_S = 1.0
FOLLOW_RETRY_MAX_S = 15.0
#: The canon-log entry type that points at a recording manifest (specs/README.md §3.3).
RECORDING_ENTRY = "recording"
#: Recordings listed per room (newest kept): a room that performs every day for years
#: still answers ``room show`` with a short document.
MAX_LISTED_RECORDINGS = 100


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def read_token_key(data_dir: Path) -> bytes:
    """The node's room-token key (``live.key``, 32 random bytes, mode 0600), created on
    first use. A key readable by others is refused: tokens made with it could be forged."""
    path = data_dir / TOKEN_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as out:
            out.write(os.urandom(TOKEN_KEY_BYTES))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    key = path.read_bytes()
    if len(key) != TOKEN_KEY_BYTES:
        raise ConfigError(f"{path} must hold {TOKEN_KEY_BYTES} bytes, not {len(key)}")
    return key


@dataclass
class RoomRecord:
    name: str
    created: int
    creator: str  # the account (hex) tips go to
    origin: dict[str, str] | None = None  # followed rooms: {"peer", "room", "token"}
    ended: bool = False
    recordings: list[str] | None = None
    follow_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created": self.created, "creator": self.creator,
                "origin": self.origin, "ended": self.ended,
                "recordings": list(self.recordings or []), "follow_error": self.follow_error}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RoomRecord:
        return cls(value["name"], int(value["created"]), str(value["creator"]),
                   value.get("origin"), bool(value.get("ended")),
                   list(value.get("recordings") or []), value.get("follow_error"))


class RoomError(Exception):
    """A room operation the caller must fix: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class RoomRegistry:
    """Rooms in LMDB (blocking; callers use worker threads)."""

    def __init__(self, env: lmdb.Environment) -> None:
        self.env = env
        self._db = env.open_db(_DB_ROOMS)

    def get(self, name: str) -> RoomRecord | None:
        with self.env.begin(db=self._db) as txn:
            raw = txn.get(name.encode())
        return None if raw is None else RoomRecord.from_json(json.loads(bytes(raw)))

    def put(self, record: RoomRecord) -> None:
        with self.env.begin(write=True, db=self._db) as txn:
            txn.put(record.name.encode(), json.dumps(record.to_json()).encode())

    def all(self) -> list[RoomRecord]:
        with self.env.begin(db=self._db) as txn:
            return [RoomRecord.from_json(json.loads(bytes(v))) for _, v in txn.cursor()]


def ice_servers_of(settings: dict[str, Any]) -> list[IceServer]:
    """``[live] ice_servers = ["stun:…", …]`` in config.toml: none by default (host
    candidates only, nothing leaves the machine for an external STUN server)."""
    urls = settings.get("ice_servers", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError("[live] ice_servers must be a list of URL strings")
    return [IceServer((url,)) for url in urls]


class LiveNode:
    """Live rooms of one node (module doc). ``run`` opens the WebRTC service."""

    def __init__(self, node: Node) -> None:
        assert node.env is not None and node.canon is not None and node.ledger is not None
        self.node = node
        self.canon = node.canon
        self.ledger = node.ledger
        self.rooms = RoomRegistry(node.env)
        self.key = read_token_key(node.data_dir.path)
        self.ice_servers = ice_servers_of(node.config.extra.get("live") or {})
        self.node_account = node.canon.author.hex()
        self.live: LiveService | None = None
        self._nursery: trio.Nursery | None = None
        #: Each room's task: its cancel scope and an event set once it has finished
        #: (the recorder stores the manifest on its way out; ``end`` waits for that).
        self._tasks: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        #: Followed rooms' state for ``room show`` (connected, frames pulled, last error).
        self.follow_state: dict[str, dict[str, Any]] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_live_service(self.key, ice_servers=self.ice_servers,
                                     world_edit=self.world_edit) as live, \
                trio.open_nursery() as nursery:
            self.live, self._nursery = live, nursery
            for record in await trio.to_thread.run_sync(self.rooms.all):
                if not record.ended:
                    self._start_room_task(record)
            task_status.started(self)
            await trio.sleep_forever()

    # -- rooms ------------------------------------------------------------------------

    def _start_room_task(self, record: RoomRecord) -> None:
        assert self._nursery is not None
        scope, done = trio.CancelScope(), trio.Event()
        self._tasks[record.name] = (scope, done)

        async def task() -> None:
            try:
                with scope:
                    if record.origin is None:
                        await self._record_loop(record.name)
                    else:
                        await self._follow_loop(record.name, record.origin)
            finally:
                done.set()

        self._nursery.start_soon(task)

    async def create(self, name: str, creator: str | None) -> RoomRecord:
        try:
            check_room_name(name)
        except ValueError as exc:
            raise RoomError(400, "bad-room-name", str(exc)) from None
        if creator is not None and (len(creator) != 64 or
                                    not all(c in "0123456789abcdef" for c in creator)):
            raise RoomError(400, "bad-account", "creator must be 64 lower-case hex digits")
        existing = await trio.to_thread.run_sync(self.rooms.get, name)
        if existing is not None and not existing.ended:
            raise RoomError(409, "room-exists", f"room {name!r} already exists")
        record = RoomRecord(name, now_ms(), creator or self.node_account, recordings=[])
        await trio.to_thread.run_sync(self.rooms.put, record)
        self._start_room_task(record)
        log.info("room created", room=name)
        return record

    async def follow(self, name: str, peer: str, token: str, remote_room: str | None) -> RoomRecord:
        try:
            check_room_name(name)
            check_room_name(remote_room or name)
        except ValueError as exc:
            raise RoomError(400, "bad-room-name", str(exc)) from None
        existing = await trio.to_thread.run_sync(self.rooms.get, name)
        if existing is not None and not existing.ended:
            raise RoomError(409, "room-exists", f"room {name!r} already exists on this node")
        record = RoomRecord(name, now_ms(), self.node_account,
                            origin={"peer": peer, "room": remote_room or name, "token": token},
                            recordings=[])
        await trio.to_thread.run_sync(self.rooms.put, record)
        self._start_room_task(record)
        log.info("room followed", room=name, peer=peer)
        return record

    async def get(self, name: str) -> RoomRecord:
        record = await trio.to_thread.run_sync(self.rooms.get, name)
        if record is None:
            raise RoomError(404, "not-found", f"no room named {name!r}")
        return record

    async def end(self, name: str) -> RoomRecord:
        record = await self.get(name)
        if record.ended:
            return record
        assert self.live is not None
        await self.live.end_room(name)
        task = self._tasks.pop(name, None)
        if task is not None:
            task[0].cancel()
            # The recorder stores the last segment and the manifest on its way out.
            await task[1].wait()
        record = await self.get(name)
        record.ended = True
        await trio.to_thread.run_sync(self.rooms.put, record)
        log.info("room ended", room=name)
        return record

    async def describe(self, record: RoomRecord) -> dict[str, Any]:
        doc = record.to_json()
        if record.origin is not None:
            doc["origin"] = {k: v for k, v in record.origin.items() if k != "token"}
            doc["follow"] = dict(self.follow_state.get(record.name, {}))
        if self.live is not None and not record.ended:
            stats = await self.live.stats(record.name)
            doc["live"] = stats["live"]
            doc["peers"] = stats["peers"]
            doc["viewers"] = len(stats["viewers"])
        else:
            doc["live"], doc["peers"], doc["viewers"] = False, 0, 0
        return doc

    def invites(self, name: str, base_url: str) -> dict[str, Any]:
        """The three invite links (token in the fragment) and the tokens."""
        assert self.live is not None
        tokens = {role: self.live.issue_token(name, role)
                  for role in ("owner", "performer", "collaborator", "viewer")}
        links = {"room": f"{base_url}/rooms/{name}#token={tokens['collaborator']}",
                 "perform": f"{base_url}/rooms/{name}/perform#token={tokens['performer']}",
                 "watch": f"{base_url}/rooms/{name}/watch#token={tokens['viewer']}"}
        return {"links": links, "tokens": tokens}

    # -- world edits from room pages --------------------------------------------------

    async def world_edit(self, room: str, edit: dict[str, Any]) -> bool:
        """A room edits its own world only (the world named like the room): a
        collaborator's token must not reach the node's other worlds."""
        if edit.get("world") != room:
            return False
        key = str(edit["key"])
        if edit.get("op") == "set":
            changes: tuple[dict[str, Any], list[str]] = ({key: str(edit.get("value", ""))}, [])
        else:
            changes = ({}, [key])
        try:
            await trio.to_thread.run_sync(self.canon.world_update, room, *changes)
        except (CanonError, ValueError) as exc:
            log.info("room world edit refused", room=room, reason=str(exc))
            return False
        return True

    # -- recordings ---------------------------------------------------------------------

    async def _is_live(self, room: str) -> bool:
        assert self.live is not None
        return bool((await self.live.stats(room))["live"])

    async def _record_loop(self, room: str) -> None:
        while True:
            while not await self._is_live(room):
                await trio.sleep(LIVE_POLL_S)
            await self._record_performance(room)

    async def _record_performance(self, room: str) -> None:
        assert self.live is not None
        started = now_ms()
        stored: list[tuple[RecordedSegment, CID]] = []

        async def keep(segment: RecordedSegment) -> None:
            cid, _ = await trio.to_thread.run_sync(
                self.canon.add_file, io.BytesIO(segment.data), True)
            stored.append((segment, cid))

        try:
            async with trio.open_nursery() as nursery:
                async def until_ended() -> None:
                    quiet_since: float | None = None
                    while True:
                        await trio.sleep(LIVE_POLL_S)
                        if await self._is_live(room):
                            quiet_since = None
                        elif quiet_since is None:
                            quiet_since = trio.current_time()
                        elif trio.current_time() - quiet_since >= END_GRACE_S:
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(until_ended)
                await self.live.record(room, keep)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if stored:
                    try:
                        cid = await trio.to_thread.run_sync(self._store_recording, room,
                                                            stored, started)
                    except (CanonError, ValueError, lmdb.Error) as exc:
                        # The segments stay stored (pinned); the room keeps serving.
                        log.error("recording not stored", room=room, reason=str(exc))
                    else:
                        log.info("performance recorded", room=room, manifest=str(cid),
                                 segments=len(stored))

    def _store_recording(self, room: str, stored: list[tuple[RecordedSegment, CID]],
                         started: int) -> CID:
        block = manifest_block(room, stored, started)
        # The log stores and pins the manifest block (its payload): its CID is the
        # recording's.
        entry = self.canon.log.append(self.canon.key, RECORDING_ENTRY, block,
                                      time=max(now_ms(), self.canon.log.head().time))
        cid = entry.payload
        record = self.rooms.get(room)
        if record is not None:
            record.recordings = [*(record.recordings or []), str(cid)][-MAX_LISTED_RECORDINGS:]
            self.rooms.put(record)
        return cid

    async def replay(self, room: str, manifest_cid: str) -> dict[str, Any] | None:
        """The replay JSON of one of ``room``'s recordings (segments served by the
        room's public segment route, with Range)."""
        record = await trio.to_thread.run_sync(self.rooms.get, room)
        if record is None or manifest_cid not in (record.recordings or []):
            return None
        block = await trio.to_thread.run_sync(self.canon.store.get, CID(manifest_cid))
        return manifest_json(block, lambda cid: recording_segment_url(room, manifest_cid, cid))

    async def segment_allowed(self, room: str, manifest_cid: str, segment: str) -> bool:
        record = await trio.to_thread.run_sync(self.rooms.get, room)
        if record is None or manifest_cid not in (record.recordings or []):
            return False
        block = await trio.to_thread.run_sync(self.canon.store.get, CID(manifest_cid))
        doc = manifest_json(block, str)
        return any(s["url"] == segment for s in doc["segments"])

    # -- tips -----------------------------------------------------------------------------

    async def tip_info(self, room: str, account: bytes) -> dict[str, Any] | None:
        record = await trio.to_thread.run_sync(self.rooms.get, room)
        if record is None or record.ended:
            return None
        state = await trio.to_thread.run_sync(self.ledger.account, account)
        recordings = record.recordings or []
        return {"network": str(self.ledger.genesis.cid), "creator": record.creator,
                "next_seq": state["next_seq"], "prev": state["prev"],
                "head_time": state["head_time"],
                "ref": recordings[-1] if recordings else None}

    async def submit_tip(self, room: str, envelope: bytes) -> dict[str, Any]:
        from n3xus.ledger.errors import TxRejected
        from n3xus.ledger.tx import decode_tx

        record = await trio.to_thread.run_sync(self.rooms.get, room)
        if record is None or record.ended:
            raise TipRefusedError("this room takes no tips", code="not-found")
        try:
            tx = decode_tx(envelope)
        except ValueError as exc:
            raise TipRefusedError(f"not a signed transaction: {exc}", code="malformed") from None
        # The route is public: it carries tips to this room's creator and nothing else.
        if str(tx.op) != "tip" or tx.args.get("to") != bytes.fromhex(record.creator):
            raise TipRefusedError("only a tip to this room's creator is accepted here",
                                  code="not-a-tip")
        try:
            accepted = await trio.to_thread.run_sync(self.ledger.submit, envelope)
        except TxRejected as exc:
            raise TipRefusedError(str(exc), code=str(exc.reason)) from None
        log.info("tip received", room=room, amount=tx.args.get("amount"))
        result = accepted.result
        return {"id": str(CID(tx.id)), "log_index": accepted.log_index,
                "result": None if result is None else str(result)}

    # -- following a room of another node ---------------------------------------------------

    async def _follow_loop(self, room: str, origin: dict[str, str]) -> None:
        from ..p2p.live import pull_room

        assert self.live is not None
        state = self.follow_state.setdefault(room, {"connected": False, "streams": 0,
                                                    "error": None})
        delay = FOLLOW_RETRY_FIRST_S
        while True:
            try:
                peer = await self._resolve_peer(origin["peer"])
                state["connected"] = True
                state["streams"] += 1
                await pull_room(self.node, self.live, room, peer, origin["token"],
                                origin["room"])
                delay = FOLLOW_RETRY_FIRST_S  # a stream that ran resets the backoff
                state["error"] = None
            except RemoteLiveError as exc:
                if not isinstance(exc, PullProtocolError) and exc.code in (
                        "bad-token", "wrong-room", "token-expired", "forbidden"):
                    state["connected"], state["error"] = False, f"{exc.code}: {exc.message}"
                    await self._note_follow_error(room, state["error"])
                    log.warning("room follow refused", room=room, reason=state["error"])
                    return  # a new token is needed: `room end` then `room follow` again
                state["error"] = f"{exc.code}: {exc.message}"
            except (OSError, ValueError, ConnectionError) as exc:
                state["error"] = str(exc) or type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - libp2p's dial and stream errors have
                # no common base; the follower retries whatever went wrong, and says what.
                state["error"] = f"{type(exc).__name__}: {exc}"
            state["connected"] = False
            await trio.sleep(delay)
            delay = min(delay * 2, FOLLOW_RETRY_MAX_S)

    async def _note_follow_error(self, room: str, error: str) -> None:
        record = await trio.to_thread.run_sync(self.rooms.get, room)
        if record is not None:
            record.follow_error = error
            await trio.to_thread.run_sync(self.rooms.put, record)

    async def _resolve_peer(self, source: str) -> str:
        """A peer id; a dial address is dialled first (its /p2p/ part is the peer)."""
        if source.startswith("/"):
            return await self.node.connect(source)
        return source


def recording_segment_url(room: str, manifest_cid: str, segment: CID | str) -> str:
    return f"/api/v1/rooms/{room}/recordings/{manifest_cid}/segments/{segment}"


def room_ice_note(servers: Sequence[IceServer]) -> str:
    return ", ".join(u for s in servers for u in s.urls) or "host candidates only"
