"""The node-facing (trio) side of live rooms: the entry points the node wires in.

``open_live_service(...)`` starts the bridge and the engine and yields a
:class:`LiveService`; the node's HTTP layer hands each signaling WebSocket to
:meth:`LiveService.serve_signaling` (see :mod:`n3xus.webrtc.asgi` for the ready
Starlette route). Everything crosses into aiortc through the bridge only.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import trio

from n3xus.protocol.codes import ErrorCode

from . import pull
from .bridge import AsyncioBridge, TrioInbox, open_bridge
from .engine import IceServer, LiveEngine, PeerEvent
from .errors import (
    ForbiddenError,
    PullProtocolError,
    RemoteLiveError,
    SignalingError,
    TokenError,
)
from .recording import RecordedSegment, Recorder
from .relay import AUDIO_CLOCK_RATE, VIDEO_CLOCK_RATE, EncodedFrame, FrameQueue, TrackRelay
from .rooms import DEFAULT_TOKEN_TTL_MS, Grant, Permission, Role, RoomTokens, check_room_name
from .schemas import MAX_MESH_PEERS
from .signaling import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    HELLO_TIMEOUT_S,
    Bye,
    End,
    Hello,
    Offer,
    PeerSignal,
    Ping,
    SignalingSession,
    State,
    is_fatal,
)

#: The recorder's queue: it consumes through the bridge, one hop per frame, so it
#: gets two seconds of slack before it is resynchronised at a keyframe.
RECORDER_QUEUE_FRAMES = 60
#: A pulling node's queue at the origin: a libp2p stream has backpressure, so a slow
#: follower fills this and is resynchronised at a keyframe instead of queueing.
PULL_QUEUE_FRAMES = 30
#: Notifications (``live``) queued per signaling connection or pulling node; a client
#: this far behind has stopped reading and loses further ones (counted).
NOTIFY_QUEUE = 16
#: How long the node waits for aiortc to answer one offer (ICE gathering of host
#: candidates and DTLS setup take well under a second on one machine).
ANSWER_TIMEOUT_S = 15.0


class SignalingSocket(Protocol):
    """What :meth:`LiveService.serve_signaling` needs of a WebSocket."""

    async def receive_text(self) -> str | None:
        """The next text message, or ``None`` once the peer has gone."""

    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


WorldEditHandler = Callable[[str, dict[str, Any]], Awaitable[bool]]
#: One whole /n3xus/live/1.0.0 message out / in (the node adds and strips framing);
#: ``None`` from a receive means the stream has ended.
SendMessage = Callable[[bytes], Awaitable[None]]
ReceiveMessage = Callable[[], Awaitable[bytes | None]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)  # identity: one per socket, kept in sets
class _Connection:
    room: str
    peer_id: str
    socket: SignalingSocket
    grant: Grant | None = None
    name: str = "guest"
    session: SignalingSession = field(default_factory=lambda: SignalingSession(trio.current_time()))
    #: Serialises sends on the socket (replies and notifications come from two tasks).
    lock: trio.Lock = field(default_factory=trio.Lock)
    #: Notifications for this connection (``live``), drained by its own task so a
    #: client that does not read blocks only itself.
    notify: trio.MemorySendChannel[dict[str, Any]] | None = None
    #: The page joined the room's browser mesh (``hello`` with ``mesh: true``).
    mesh: bool = False

    def member(self) -> dict[str, str]:
        assert self.grant is not None
        return {"peer": self.peer_id, "name": self.name, "role": self.grant.role.value}


class LiveService:
    def __init__(self, bridge: AsyncioBridge, engine: LiveEngine, tokens: RoomTokens,
                 ice_servers: Sequence[IceServer], clock_ms: Callable[[], int],
                 world_edit: WorldEditHandler | None) -> None:
        self.bridge = bridge
        self.engine = engine
        self.tokens = tokens
        self.ice_servers = tuple(ice_servers)
        self._clock_ms = clock_ms
        self._world_edit = world_edit
        self._connections: dict[str, set[_Connection]] = {}
        self._pullers: dict[str, set[trio.MemorySendChannel[pull.PullMessage]]] = {}
        #: Room -> mesh members by peer id, in joining order (§4.5).
        self._mesh: dict[str, dict[str, _Connection]] = {}
        #: peer-offer/peer-answer messages relayed between browsers (§4.5).
        self.peer_signals_relayed = 0
        #: Notifications not delivered because a client's queue was full or closed.
        self.notifications_dropped = 0

    # -- signaling --------------------------------------------------------------------

    async def serve_signaling(self, socket: SignalingSocket, room: str, *,
                              grant: Grant | None = None) -> None:
        """Serve one signaling WebSocket until it closes (specs/live-signaling.md §1).

        ``grant`` is for callers that authenticated the socket otherwise (the node's
        API token makes the holder the room's owner); without it the first message
        must be a ``hello`` with a room token for ``room``.
        """
        try:
            check_room_name(room)
        except TokenError as exc:
            await self._send_error(socket, exc, fatal=True)
            await socket.close(CLOSE_POLICY, exc.code)
            return
        conn = _Connection(room, secrets.token_hex(8), socket, grant)
        notify_send, notify_receive = trio.open_memory_channel[dict[str, Any]](NOTIFY_QUEUE)
        conn.notify = notify_send
        self._connections.setdefault(room, set()).add(conn)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward_notifications, conn, notify_receive)
                await self._serve(conn)
                nursery.cancel_scope.cancel()
        finally:
            self._connections[room].discard(conn)
            if self._mesh.get(room, {}).pop(conn.peer_id, None) is not None:
                self._send_roster(room)
            with trio.CancelScope(shield=True):
                await self.bridge.run(self.engine.close_peer, room, conn.peer_id)

    async def _forward_notifications(self, conn: _Connection,
                                     notes: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for message in notes:
            await self._send_to(conn, message)

    async def _serve(self, conn: _Connection) -> None:
        socket = conn.socket
        while True:
            if conn.session.state is State.AWAIT_HELLO:
                with trio.move_on_after(HELLO_TIMEOUT_S) as waited:
                    raw = await socket.receive_text()
                if waited.cancelled_caught:
                    await self._error_to(conn, SignalingError(
                        f"no hello within {HELLO_TIMEOUT_S:g} s", code="timeout"), fatal=True)
                    await socket.close(CLOSE_POLICY, "timeout")
                    return
            else:
                raw = await socket.receive_text()
            if raw is None:
                return
            state_before = conn.session.state
            try:
                event = conn.session.receive(raw, trio.current_time())
                if isinstance(event, Bye):
                    await socket.close(CLOSE_NORMAL, "bye")
                    return
                await self._handle(conn, event)
            except RemoteLiveError as exc:
                fatal = isinstance(exc, TokenError) or (
                    isinstance(exc, SignalingError) and is_fatal(exc, state_before))
                await self._error_to(conn, exc, fatal=fatal)
                if fatal:
                    await socket.close(CLOSE_POLICY, exc.code)
                    return

    async def _handle(self, conn: _Connection,
                      event: Hello | Offer | PeerSignal | End | Ping) -> None:
        if isinstance(event, Ping):
            await self._send_to(conn, {"type": "pong", "t": event.t})
            return
        if isinstance(event, Hello):
            if conn.grant is None:
                conn.grant = self.tokens.verify(event.token, room=conn.room,
                                                now_ms=self._clock_ms())
            conn.name = event.name
            live = await self.bridge.run(self._is_live, conn.room)
            await self._send_to(conn, {
                "type": "welcome", "v": 1, "peer": conn.peer_id, "room": conn.room,
                "role": conn.grant.role.value, "live": live,
                "ice_servers": [_ice_json(s) for s in self.ice_servers],
            })
            if event.mesh and conn.grant.allows(Permission.CHAT):
                conn.mesh = True
                self._mesh.setdefault(conn.room, {})[conn.peer_id] = conn
                self._send_roster(conn.room)
            return
        grant = conn.grant
        assert grant is not None  # the state machine admits nothing else before hello
        if self._clock_ms() >= grant.expires_ms:
            raise TokenError("room token has expired", code="token-expired")
        if isinstance(event, Offer):
            with trio.fail_after(ANSWER_TIMEOUT_S):
                answer = await self.bridge.run(self.engine.answer, conn.room, conn.peer_id,
                                               grant.role, conn.name, event.sdp)
            await self._send_to(conn, {"type": "answer", "sdp": answer})
        elif isinstance(event, PeerSignal):
            self._relay_peer_signal(conn, event)
        elif isinstance(event, End):
            if not grant.allows(Permission.END):
                raise ForbiddenError(f"role {grant.role.value} may not end the performance")
            # The owner may stop anyone's performance; a performer only their own.
            await self.bridge.run(self.engine.end_performance, conn.room,
                                  None if grant.role is Role.OWNER else conn.peer_id)

    def _send_roster(self, room: str) -> None:
        """Tell every mesh member who is in the mesh, or that the room is over
        MAX_MESH_PEERS and everyone uses the node as the hub (``mesh: false``)."""
        members = list(self._mesh.get(room, {}).values())
        mesh = len(members) <= MAX_MESH_PEERS
        roster = {"type": "roster", "mesh": mesh,
                  "peers": [m.member() for m in members] if mesh else []}
        for member in members:
            if member.notify is not None:
                self._offer(member.notify, roster)

    def _relay_peer_signal(self, conn: _Connection, event: PeerSignal) -> None:
        """Pass an SDP to another mesh member of the same room, naming the sender
        (the receiver trusts the node's ``from``, never the browser's word)."""
        mesh = self._mesh.get(conn.room, {})
        if not conn.mesh:
            raise ForbiddenError("only mesh members (room pages) signal peers")
        if len(mesh) > MAX_MESH_PEERS:
            raise SignalingError(f"the room's mesh is over {MAX_MESH_PEERS} members; "
                                 "use the node", code="mesh-full")
        target = mesh.get(event.to)
        if target is None or target is conn or target.notify is None:
            raise SignalingError(f"no mesh member {event.to} in this room", code="no-such-peer")
        self.peer_signals_relayed += 1
        self._offer(target.notify, {"type": event.kind, "from": conn.member(), "sdp": event.sdp})

    async def _is_live(self, room: str) -> bool:
        return self.engine.relay(room).live

    async def _send(self, socket: SignalingSocket, message: dict[str, Any]) -> None:
        await socket.send_text(json.dumps(message, separators=(",", ":")))

    async def _send_to(self, conn: _Connection, message: dict[str, Any]) -> None:
        async with conn.lock:
            await self._send(conn.socket, message)

    async def _error_to(self, conn: _Connection, exc: RemoteLiveError, *, fatal: bool) -> None:
        async with conn.lock:
            await self._send_error(conn.socket, exc, fatal=fatal)

    def _offer(self, channel: trio.MemorySendChannel[Any], message: Any) -> None:
        """Queue a notification without ever waiting for its receiver."""
        try:
            channel.send_nowait(message)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.notifications_dropped += 1

    async def _send_error(self, socket: SignalingSocket, exc: RemoteLiveError, *,
                          fatal: bool) -> None:
        await self._send(socket, {"type": "error", "code": exc.code, "message": exc.message,
                                  "fatal": fatal})

    # -- events from the engine -------------------------------------------------------

    async def _dispatch(self, inbox: TrioInbox[PeerEvent]) -> None:
        async for event in inbox:
            if event.kind == "live":
                live = bool(event.data["live"])
                for conn in list(self._connections.get(event.room, ())):
                    if conn.grant is not None and conn.notify is not None:
                        self._offer(conn.notify, {"type": "live", "live": live})
                for channel in list(self._pullers.get(event.room, ())):
                    self._offer(channel, pull.Live(live))
            elif event.kind == "world-edit":
                applied = self._world_edit is not None and await self._world_edit(
                    event.room, event.data)
                await self.bridge.run(self._broadcast, event.room,
                                      {**event.data, "applied": applied})

    async def _broadcast(self, room: str, message: dict[str, Any]) -> None:
        self.engine.broadcast(room, message)

    # -- node-facing helpers ----------------------------------------------------------

    def issue_token(self, room: str, role: str, ttl_ms: int | None = None) -> str:
        return self.tokens.issue(room, Role(role), now_ms=self._clock_ms(),
                                 ttl_ms=ttl_ms or DEFAULT_TOKEN_TTL_MS)

    async def stats(self, room: str) -> dict[str, Any]:
        async def get() -> dict[str, Any]:
            return self.engine.stats(room)
        return await self.bridge.run(get)

    async def end_room(self, room: str) -> None:
        for conn in list(self._connections.get(room, ())):
            await conn.socket.close(CLOSE_NORMAL, "room ended")
        await self.bridge.run(self.engine.end_room, room)

    @asynccontextmanager
    async def subscribe(self, room: str, kind: str = "video",
                        capacity: int | None = None) -> AsyncIterator[FrameSubscription]:
        """Encoded frames of the room's performance, for the recorder and for the
        /n3xus/live/1.0.0 pull (a slow consumer is resynchronised, never waited for)."""
        async def open_queue() -> tuple[TrackRelay, FrameQueue]:
            relay = self.engine.relay(room, kind)
            return relay, relay.subscribe(capacity)
        relay, frames = await self.bridge.run(open_queue)
        try:
            yield FrameSubscription(self.bridge, frames)
        finally:
            async def close_queue() -> None:
                relay.unsubscribe(frames)
            with trio.CancelScope(shield=True):
                await self.bridge.run(close_queue)

    async def request_keyframe(self, room: str) -> None:
        async def ask() -> None:
            self.engine.relay(room, "video").request_keyframe()
        await self.bridge.run(ask)

    async def record(self, room: str,
                     on_segment: Callable[[RecordedSegment], Awaitable[None]],
                     recorder: Recorder | None = None) -> None:
        """Record the room's video until cancelled or the room ends; every finished
        WebM segment goes to ``on_segment`` (the node stores it in the canon). The
        open segment is closed and delivered on the way out, cancellation included."""
        recorder = recorder or Recorder()
        try:
            async with self.subscribe(room, "video", RECORDER_QUEUE_FRAMES) as frames:
                async for frame in frames:
                    for segment in recorder.push(frame):
                        await on_segment(segment)
                    if recorder.wants_keyframe:
                        await self.request_keyframe(room)
        finally:
            with trio.CancelScope(shield=True):
                for segment in recorder.finish():
                    await on_segment(segment)

    async def publish_pulled(self, room: str, frame: EncodedFrame) -> None:
        """Feed a frame pulled from another node into this node's relay."""
        async def put() -> None:
            self.engine.relay(room, frame.kind).publish(frame)
        await self.bridge.run(put)

    # -- /n3xus/live/1.0.0 (the node frames messages and owns the libp2p stream) -------

    async def serve_pull(self, send: SendMessage, receive: ReceiveMessage) -> None:
        """Origin side of one pull stream: check the request, then stream frames
        until the follower says bye or goes away (specs/protocol-live.md).

        ``send``/``receive`` carry message *bodies*; the node frames them
        (``protocol.framing``, limit ``pull.MAX_PULL_MESSAGE_BYTES``). A follower's
        protocol breach raises :class:`PullProtocolError` (as in :meth:`pull_into`): the
        node sends the common ``error`` with its ``wire_code``, resets the stream and
        counts the breach against the peer. A refusal is an answer: ``refuse``, return."""
        send_lock = trio.Lock()

        async def send_locked(message: pull.PullMessage) -> None:
            async with send_lock:
                await send(pull.encode(message))

        first: bytes | None = None
        with trio.move_on_after(pull.PULL_REQUEST_TIMEOUT_S):
            first = await receive()
        if first is None:
            raise PullProtocolError("no pull request in time", code="timeout",
                                    wire_code=ErrorCode.TIMEOUT)
        request = pull.decode(first)
        if isinstance(request, pull.PeerErrorMessage):
            return
        if not isinstance(request, pull.Pull):
            raise PullProtocolError("the first message must be pull",
                                    wire_code=ErrorCode.UNEXPECTED_MESSAGE)
        try:
            grant = self.tokens.verify(request.token, room=request.room,
                                       now_ms=self._clock_ms())
            if not grant.allows(Permission.WATCH):
                raise ForbiddenError(f"role {grant.role.value} may not watch")
        except RemoteLiveError as exc:
            await send(pull.encode(pull.Refuse(exc.code, exc.message[:pull.MAX_TEXT_CHARS])))
            return
        room = request.room
        await send_locked(pull.Accept(room, await self.bridge.run(self._is_live, room)))
        notes_send, notes_receive = trio.open_memory_channel[pull.PullMessage](NOTIFY_QUEUE)
        pullers = self._pullers.setdefault(room, set())
        pullers.add(notes_send)

        async def forward_notes() -> None:
            async for note in notes_receive:
                await send_locked(note)

        # A breach is carried out of the nursery by hand: raised inside it, trio would
        # wrap it in an ExceptionGroup that the node's handler does not expect.
        breach: PullProtocolError | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_notes)
                for kind in request.kinds:
                    nursery.start_soon(self._pump_frames, room, kind, send_locked)
                try:
                    while (raw := await receive()) is not None:
                        message = pull.decode(raw)
                        if isinstance(message, pull.KeyframeRequest):
                            await self.request_keyframe(room)
                        elif isinstance(message, pull.Bye | pull.PeerErrorMessage):
                            break
                except PullProtocolError as exc:
                    breach = exc
                nursery.cancel_scope.cancel()
        finally:
            pullers.discard(notes_send)
        if breach is not None:
            raise breach

    async def _pump_frames(self, room: str, kind: str,
                           send: Callable[[pull.PullMessage], Awaitable[None]]) -> None:
        async with self.subscribe(room, kind, PULL_QUEUE_FRAMES) as frames:
            async for frame in frames:
                await send(pull.Frame(frame.kind, frame.index, frame.pts, frame.keyframe,
                                      frame.data))
        await send(pull.End())

    async def pull_into(self, room: str, token: str, send: SendMessage,
                        receive: ReceiveMessage, *, remote_room: str | None = None,
                        kinds: tuple[str, ...] = ("video",)) -> None:
        """Follower side: pull ``remote_room`` from another node into this node's
        ``room`` relay, whose local viewers then watch it; returns when the origin
        ends the stream, raises :class:`RemoteLiveError` if it refuses and
        :class:`PullProtocolError` on a breach (the node then sends the common ``error``
        with its ``wire_code`` and resets the stream)."""
        send_lock = trio.Lock()

        async def send_locked(message: pull.PullMessage) -> None:
            async with send_lock:
                await send(pull.encode(message))

        await send_locked(pull.Pull(remote_room or room, token, kinds))
        reply = await receive()
        message = pull.decode(reply) if reply is not None else None
        if isinstance(message, pull.Refuse):
            raise RemoteLiveError(f"origin refused the pull: {message.message}",
                                  code=message.code)
        if isinstance(message, pull.PeerErrorMessage):
            raise RemoteLiveError(f"origin sent error {message.code}: {message.message}",
                                  code="peer-error")
        if not isinstance(message, pull.Accept):
            raise PullProtocolError("origin did not accept the pull",
                                    wire_code=ErrorCode.UNEXPECTED_MESSAGE)
        wanted: TrioInbox[None] = TrioInbox(capacity=1)

        async def hook(on: bool) -> None:
            relay = self.engine.relay(room, "video")
            relay.upstream_keyframe = (lambda: wanted.post(None)) if on else None
            if on:
                relay.request_keyframe()  # the first frame we relay must be a keyframe

        async def forward_keyframe_requests() -> None:
            async for _ in wanted:
                await send_locked(pull.KeyframeRequest())

        await self.bridge.run(hook, True)
        breach: PullProtocolError | None = None  # carried out of the nursery (see serve_pull)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_keyframe_requests)
                try:
                    while (raw := await receive()) is not None:
                        message = pull.decode(raw)
                        if isinstance(message, pull.Frame):
                            relay_frame = EncodedFrame(
                                message.kind, message.data, message.pts,
                                Fraction(1, VIDEO_CLOCK_RATE if message.kind == "video"
                                         else AUDIO_CLOCK_RATE),
                                message.keyframe, message.index)
                            await self.publish_pulled(room, relay_frame)
                        elif isinstance(message, pull.End | pull.PeerErrorMessage):
                            break
                except PullProtocolError as exc:
                    breach = exc
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.bridge.run(hook, False)
        if breach is not None:
            raise breach


class FrameSubscription:
    """Trio view of a relay subscription."""

    def __init__(self, bridge: AsyncioBridge, frames: FrameQueue) -> None:
        self._bridge = bridge
        self.frames = frames

    async def next(self) -> EncodedFrame | None:
        return await self._bridge.run(self.frames.get)

    def __aiter__(self) -> FrameSubscription:
        return self

    async def __anext__(self) -> EncodedFrame:
        frame = await self.next()
        if frame is None:
            raise StopAsyncIteration
        return frame


def _ice_json(server: IceServer) -> dict[str, Any]:
    out: dict[str, Any] = {"urls": list(server.urls)}
    if server.username is not None:
        out["username"] = server.username
    if server.credential is not None:
        out["credential"] = server.credential
    return out


@asynccontextmanager
async def open_live_service(token_key: bytes, *, ice_servers: Sequence[IceServer] = (),
                            world_edit: WorldEditHandler | None = None,
                            clock_ms: Callable[[], int] = _now_ms) -> AsyncIterator[LiveService]:
    """Start live rooms: the bridge thread, the engine on it, the event pump."""
    tokens = RoomTokens(token_key)
    async with open_bridge() as bridge, trio.open_nursery() as nursery:
        inbox: TrioInbox[PeerEvent] = TrioInbox()

        async def make_engine() -> LiveEngine:
            return LiveEngine(ice_servers, inbox.post)

        engine = await bridge.run(make_engine)
        service = LiveService(bridge, engine, tokens, ice_servers, clock_ms, world_edit)
        nursery.start_soon(service._dispatch, inbox)
        try:
            yield service
        finally:
            with trio.CancelScope(shield=True):
                await bridge.run(engine.aclose)
            # Events left at shutdown concern nobody; the pump must not wait for them.
            nursery.cancel_scope.cancel()
