"""The asyncio side: peer connections, relays and the room's data-channel hub.

Every method here runs on the bridge's loop (call it through
:meth:`n3xus.webrtc.bridge.AsyncioBridge.run`); every aiortc object is created
here. The node (trio) sees only plain data: SDP strings in and out, and
:class:`PeerEvent` values through the ``on_event`` callback, which the trio side
points at a :class:`~n3xus.webrtc.bridge.TrioInbox`.

Data channels: each browser opens one channel, labelled ``room``, to the node;
the node is the hub that stamps the sender, checks the role, and forwards chat,
presence and reactions to the room's other members; world edits go to the node
(``PeerEvent(kind="world-edit")``), which applies and then broadcasts them. Room
pages send chat and presence to each other directly over their browser mesh
(specs/live-signaling.md §1.5) and use this hub only above MAX_MESH_PEERS or while their
mesh is incomplete; ``hub_messages`` in :meth:`LiveEngine.stats` counts what the
hub carried.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import (
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)

from .datachannel import DATA_BURST, DATA_RATE_PER_S, DataMessageError, parse_data_message
from .errors import SignalingError
from .relay import RelayedTrack, TrackRelay, wire_keyframe_requests
from .rooms import Permission, Role, allows
from .sdp import FORWARDED_CODEC, plan_offer
from .signaling import TokenBucket

#: What aiortc's SDP parser and negotiation raise on an offer they cannot use: its own
#: errors and, for malformed lines, whatever its parsing code trips on (found by
#: fuzzing offers: ValueError, AssertionError, RuntimeError, AttributeError,
#: KeyError, IndexError). Named one by one, never ``Exception``; each becomes a
#: ``bad-sdp`` error for the peer that sent the offer.
AIORTC_SDP_ERRORS = (
    ValueError, AssertionError, RuntimeError, AttributeError, KeyError, IndexError, TypeError,
    InternalError, InvalidAccessError, InvalidStateError, OperationError,
)
#: The one data-channel label a room page opens (specs/live-signaling.md §2).
DATA_CHANNEL_LABEL = "room"


@dataclass(frozen=True, slots=True)
class IceServer:
    """One configured STUN/TURN server. None by default: host candidates only."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def rtc_configuration(ice_servers: Sequence[IceServer]) -> RTCConfiguration:
    # An explicit empty list: aiortc falls back to a public STUN server on None.
    return RTCConfiguration(
        iceServers=[RTCIceServer(list(s.urls), s.username, s.credential) for s in ice_servers]
    )


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """Something the node should know: ``kind`` is ``state``, ``world-edit``,
    ``live`` or ``closed`` (specs/live-signaling.md §1.3 for what the browser is told)."""

    room: str
    peer: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Peer:
    room: str
    peer_id: str
    role: Role
    name: str
    pc: RTCPeerConnection
    channel: RTCDataChannel | None = None
    bucket: TokenBucket | None = None
    tracks: list[RelayedTrack] = field(default_factory=list)
    publishing: bool = False
    data_refused: int = 0


@dataclass
class RoomMedia:
    """One room's relays (one per kind) and members."""

    name: str
    relays: dict[str, TrackRelay]
    peers: dict[str, _Peer] = field(default_factory=dict)
    performer: str | None = None
    #: Data-channel messages the node carried as the hub, by type (chat and reactions
    #: fanned out, world edits taken in): tests read it to tell a mesh from the hub.
    hub_messages: dict[str, int] = field(default_factory=dict)


class LiveEngine:
    """All rooms' WebRTC state on the bridge loop."""

    def __init__(self, ice_servers: Sequence[IceServer] = (),
                 on_event: Callable[[PeerEvent], object] | None = None) -> None:
        self.ice_servers = tuple(ice_servers)
        self._on_event = on_event or (lambda event: None)
        self._rooms: dict[str, RoomMedia] = {}
        self.stats_unclosable = 0

    # -- rooms ------------------------------------------------------------------------

    def room(self, name: str) -> RoomMedia:
        media = self._rooms.get(name)
        if media is None:
            media = RoomMedia(name, {kind: TrackRelay(kind) for kind in FORWARDED_CODEC})
            self._rooms[name] = media
        return media

    def relay(self, room: str, kind: str = "video") -> TrackRelay:
        return self.room(room).relays[kind]

    def stats(self, room: str) -> dict[str, Any]:
        media = self.room(room)
        video = media.relays["video"]
        return {
            "live": video.live,
            "performer": media.performer,
            "peers": len(media.peers),
            "hub_messages": dict(media.hub_messages),
            "relays": {
                kind: {
                    "subscribers": relay.subscriber_count,
                    "frames_in": relay.stats.frames_in,
                    "keyframes_in": relay.stats.keyframes_in,
                    "keyframe_requests_sent": relay.stats.keyframe_requests_sent,
                    "keyframe_answered": (relay.stats.last_keyframe_at
                                          >= relay.stats.last_keyframe_request_at),
                    "rejected_frames": relay.stats.rejected_frames,
                }
                for kind, relay in media.relays.items()
            },
            "viewers": {
                peer.peer_id: {
                    track.kind: {
                        "delivered": track.queue.stats.delivered,
                        "dropped": track.queue.stats.dropped,
                        "skipped_until_keyframe": track.queue.stats.skipped_until_keyframe,
                    }
                    for track in peer.tracks
                }
                for peer in media.peers.values() if peer.tracks
            },
        }

    # -- peers ------------------------------------------------------------------------

    async def answer(self, room: str, peer_id: str, role: Role, name: str,
                     offer_sdp: str) -> str:
        """Answer a browser's offer; returns the answer SDP (all candidates in it).

        The offer is checked first (codecs, directions against the role); a refused
        offer raises and leaves the room untouched. A peer that offers again (a
        reload) replaces its previous connection.
        """
        plan = plan_offer(offer_sdp, may_publish=allows(role, Permission.PUBLISH),
                          may_watch=allows(role, Permission.WATCH))
        media = self.room(room)
        if peer_id in media.peers:
            await self.close_peer(room, peer_id)
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        peer = _Peer(room, peer_id, role, name, pc)
        media.peers[peer_id] = peer
        try:
            self._wire_peer(media, peer)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            except AIORTC_SDP_ERRORS as exc:
                raise SignalingError(f"unusable SDP offer: {type(exc).__name__}: {exc}"[:300],
                                     code="bad-sdp") from None
            for transceiver in pc.getTransceivers():
                _keep_forwarded_codec(transceiver)
                kind = transceiver.kind
                offered = transceiver._offerDirection  # our direction, from the offer
                if kind in plan.publish and offered in ("recvonly", "sendrecv"):
                    self._take_performer(media, peer, transceiver)
                if kind in plan.watch and offered in ("sendonly", "sendrecv"):
                    track = RelayedTrack(media.relays[kind])
                    peer.tracks.append(track)
                    transceiver.sender.replaceTrack(track)
                    transceiver.direction = offered
                    wire_keyframe_requests(transceiver.sender, media.relays[kind])
            try:
                await pc.setLocalDescription(await pc.createAnswer())
            except AIORTC_SDP_ERRORS as exc:
                raise SignalingError(f"cannot answer this offer: {type(exc).__name__}: {exc}"[:300],
                                     code="bad-sdp") from None
        except BaseException:
            await self.close_peer(room, peer_id)
            raise
        return pc.localDescription.sdp

    def _take_performer(self, media: RoomMedia, peer: _Peer,
                        transceiver: RTCRtpTransceiver) -> None:
        previous = media.performer
        if previous is not None and previous != peer.peer_id and previous in media.peers:
            media.peers[previous].publishing = False
        media.relays[transceiver.kind].attach(transceiver.receiver)
        media.performer = peer.peer_id
        peer.publishing = True
        self._on_event(PeerEvent(media.name, peer.peer_id, "live", {"live": True}))

    def _wire_peer(self, media: RoomMedia, peer: _Peer) -> None:
        pc = peer.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            self._on_event(PeerEvent(media.name, peer.peer_id, "state", {"state": state}))
            if state in ("failed", "closed") and media.peers.get(peer.peer_id) is peer:
                await self.close_peer(media.name, peer.peer_id)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != DATA_CHANNEL_LABEL or peer.channel is not None:
                channel.close()
                return
            peer.channel = channel

            @channel.on("message")
            def on_message(message: str | bytes) -> None:
                self._on_data(media, peer, message)

            @channel.on("open")
            def on_open() -> None:
                self._broadcast_presence(media)

            if channel.readyState == "open":
                self._broadcast_presence(media)

    async def close_peer(self, room: str, peer_id: str) -> None:
        media = self.room(room)
        peer = media.peers.pop(peer_id, None)
        if peer is None:
            return
        for track in peer.tracks:
            track.stop()
        if media.performer == peer_id:
            self._end_performance(media)
        try:
            await peer.pc.close()
        except AttributeError:
            # aiortc cannot close a connection whose remote description failed half-way
            # (a transceiver without a transport); such a connection holds no socket.
            self.stats_unclosable += 1
        self._broadcast_presence(media)
        self._on_event(PeerEvent(room, peer_id, "closed"))

    async def end_performance(self, room: str, peer_id: str | None = None) -> bool:
        """The performer's "End" (or the owner's): stop relaying; viewers stay
        connected and resume when someone goes live again. False if not live or
        ``peer_id`` is not the performer."""
        media = self.room(room)
        if media.performer is None or (peer_id is not None and media.performer != peer_id):
            return False
        performer = media.peers.get(media.performer)
        self._end_performance(media)
        if performer is not None:
            await self.close_peer(room, performer.peer_id)
        return True

    def _end_performance(self, media: RoomMedia) -> None:
        performer = media.performer
        media.performer = None
        for relay in media.relays.values():
            relay.detach()
        if performer is not None:
            self._on_event(PeerEvent(media.name, performer, "live", {"live": False}))

    async def end_room(self, room: str) -> None:
        media = self._rooms.get(room)
        if media is None:
            return
        for peer_id in list(media.peers):
            await self.close_peer(room, peer_id)
        for relay in media.relays.values():
            relay.close()
        del self._rooms[room]

    async def aclose(self) -> None:
        for room in list(self._rooms):
            await self.end_room(room)

    # -- data channels ----------------------------------------------------------------

    def _members(self, media: RoomMedia) -> list[dict[str, str]]:
        return [
            {"peer": p.peer_id, "name": p.name, "role": p.role.value}
            for p in media.peers.values() if p.channel is not None
        ]

    def _send(self, peer: _Peer, message: dict[str, Any]) -> None:
        if peer.channel is not None and peer.channel.readyState == "open":
            peer.channel.send(json.dumps(message, separators=(",", ":")))

    def broadcast(self, room: str, message: dict[str, Any], *, exclude: str | None = None) -> None:
        """Send a data-channel message to every member of ``room`` (the node uses
        this to announce applied world edits)."""
        media = self.room(room)
        for peer in list(media.peers.values()):
            if peer.peer_id != exclude:
                self._send(peer, message)

    def _broadcast_presence(self, media: RoomMedia) -> None:
        self.broadcast(media.name, {"type": "presence", "members": self._members(media)})

    def _on_data(self, media: RoomMedia, peer: _Peer, raw: str | bytes) -> None:
        message: dict[str, Any] | None = None
        if _may_be_ping(raw):
            # A ping is answered to its sender only (no fan-out, which is what the rate
            # limit below protects), so latency probes are not throttled; its size is
            # bounded and SCTP's own flow control paces the sender.
            try:
                message = parse_data_message(raw, peer.role)
            except DataMessageError as exc:
                self._send(peer, {"type": "error", "code": exc.code, "message": exc.message})
                return
            if message["type"] == "ping":
                self._send(peer, {"type": "pong", "t": message.get("t", 0)})
                return
        now = asyncio.get_running_loop().time()
        if peer.bucket is None:
            peer.bucket = TokenBucket(DATA_RATE_PER_S, DATA_BURST, now)
        if not peer.bucket.take(now):
            peer.data_refused += 1
            if peer.data_refused % DATA_BURST == 1:  # tell, but do not echo a flood back
                self._send(peer, {"type": "error", "code": "rate-limited",
                                  "message": f"more than {DATA_RATE_PER_S:g} messages/s"})
            return
        if message is None:
            try:
                message = parse_data_message(raw, peer.role)
            except DataMessageError as exc:
                self._send(peer, {"type": "error", "code": exc.code, "message": exc.message})
                return
        kind = message["type"]
        media.hub_messages[kind] = media.hub_messages.get(kind, 0) + 1
        stamped = {**message, "from": {"peer": peer.peer_id, "name": peer.name,
                                        "role": peer.role.value}}
        if kind == "world-edit":
            self._on_event(PeerEvent(media.name, peer.peer_id, "world-edit", stamped))
        elif kind in ("chat", "reaction"):
            self.broadcast(media.name, stamped)


#: A ping is ``{"type":"ping","t":<number>}``: well under this many bytes.
MAX_PING_BYTES = 64


def _may_be_ping(raw: str | bytes) -> bool:
    """A cheap pre-check before any parsing (the parse decides)."""
    return len(raw) <= MAX_PING_BYTES and (b'"ping"' in raw if isinstance(raw, bytes)
                                           else '"ping"' in raw)


def _keep_forwarded_codec(transceiver: RTCRtpTransceiver) -> None:
    """Answer with the forwarded codec only (and its RTX), whatever else was offered."""
    wanted = FORWARDED_CODEC.get(transceiver.kind)
    if wanted is None:
        return
    kept = [c for c in transceiver._codecs if c.name.upper() == wanted]
    kept_pts = {c.payloadType for c in kept}
    rtx = [c for c in transceiver._codecs
           if c.name.lower() == "rtx" and c.parameters.get("apt") in kept_pts]
    transceiver._codecs = kept + rtx
