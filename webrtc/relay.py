"""Forwarding a performer's encoded media to every viewer, without re-encoding.

Runs entirely on the bridge's asyncio loop (see :mod:`n3xus.webrtc.bridge`).

aiortc's ``MediaRelay`` hands every viewer the *decoded* frame and each viewer's
``RTCRtpSender`` encodes it again: 6-8 ms of CPU per 480p VP8 frame per viewer.
Here the performer's media is tapped *after* aiortc has reassembled the RTP packets
into whole encoded frames (its jitter buffer handles reordering, NACK/RTX, and the
VP8 payload descriptor) and *before* its decoder: the receiver's decoder queue is
replaced by :class:`_EncodedTap`. Each encoded frame goes once into every
subscriber's bounded :class:`FrameQueue`. A viewer's sender is fed by a
:class:`RelayedTrack` whose ``recv()`` returns that encoded frame; aiortc's sender
then only *packetizes* it (``Encoder.pack``) with the viewer's own SSRC, sequence
numbers, RTP timestamp origin and VP8 picture IDs, which is exactly the per-viewer
state that must differ. No decoder and no encoder run on the node.

Keyframes: VP8 inter frames depend on the frames before them, so a subscriber may
only start, or resume after a drop, at a keyframe. A new subscriber, a viewer's
PLI/FIR (aiortc calls ``sender._send_keyframe``, which we point at the relay) and a
slow subscriber's overflow all ask the performer for a keyframe (an RTCP PLI from
our receiver), rate-limited so that many joining viewers cost one keyframe.

Slow subscribers: a full queue is flushed, the loss is counted, and the subscriber
skips frames until the next keyframe; the other subscribers never wait for it.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from .vp8 import is_vp8_keyframe

#: RTP clock of VP8 video (RFC 7741) and of Opus (RFC 7587). aiortc hands the relay
#: frame timestamps in these clocks, starting at 0 for each new performer stream.
VIDEO_CLOCK_RATE = 90_000
AUDIO_CLOCK_RATE = 48_000
#: Frames a subscriber may fall behind before it is resynchronised: 15 frames is half
#: a second of 30 fps video, more than any healthy sender task lags, small enough that
#: a stuck subscriber holds little memory (15 x ~40 kB worst-case 480p keyframes).
SUBSCRIBER_QUEUE_FRAMES = 15
#: Opus frames are 20 ms; 25 of them are the same half second.
AUDIO_QUEUE_FRAMES = 25
#: At most one keyframe request to the performer per this interval: a keyframe of
#: 480p VP8 is ~10x an inter frame, so a burst of joining viewers or a flapping slow
#: viewer must not turn the stream into keyframes only.
KEYFRAME_REQUEST_INTERVAL_S = 0.5
#: Upper bound on one encoded frame we forward: a 1080p VP8 keyframe at high quality
#: is ~300 kB; anything larger is not a frame a browser sent us.
MAX_ENCODED_FRAME_BYTES = 1 << 20
#: Relayed media codecs (mimeType as aiortc spells it). VP8 only for video: the
#: Chromium builds here have no H.264, and forwarding needs one codec end to end.
VIDEO_MIME = "video/VP8"
AUDIO_MIME = "audio/opus"


@dataclass(slots=True)
class EncodedFrame:
    """One encoded media frame, shared read-only by every subscriber.

    Also the object a viewer's ``RTCRtpSender`` receives from :class:`RelayedTrack`:
    aiortc packs anything that is not a decoded ``av.Frame`` with ``Encoder.pack``,
    which reads only ``bytes(frame)``, ``pts`` and ``time_base``.
    """

    kind: str
    data: bytes
    pts: int
    time_base: Fraction
    keyframe: bool
    index: int

    def __bytes__(self) -> bytes:
        return self.data

    @property
    def pts_ms(self) -> int:
        return int(self.pts * 1000 * self.time_base)


@dataclass(slots=True)
class QueueStats:
    delivered: int = 0
    dropped: int = 0
    skipped_until_keyframe: int = 0
    resyncs: int = 0


class FrameQueue:
    """A subscriber's bounded queue of frames (asyncio side, loop thread only)."""

    def __init__(self, relay: TrackRelay, capacity: int) -> None:
        self._relay = relay
        self._frames: deque[EncodedFrame | None] = deque()
        self._capacity = capacity
        self._waiter: asyncio.Future[None] | None = None
        self.waiting_for_keyframe = relay.kind == "video"
        self.closed = False
        self.stats = QueueStats()

    def offer(self, frame: EncodedFrame) -> None:
        """Called by the relay for every frame; never blocks, never grows unbounded."""
        if self.closed:
            return
        if self.waiting_for_keyframe:
            if not frame.keyframe:
                self.stats.skipped_until_keyframe += 1
                return
            self.waiting_for_keyframe = False
        if len(self._frames) >= self._capacity:
            # The consumer is too slow: everything queued is stale. Drop it all and
            # resume at the next keyframe (video) or right away (audio).
            self.stats.dropped += len(self._frames) + 1
            self.stats.resyncs += 1
            self._frames.clear()
            if self._relay.kind == "video":
                self.waiting_for_keyframe = True
                self._relay.request_keyframe()
                return
        self._frames.append(frame)
        self._wake()

    def close(self) -> None:
        """End the subscription: the consumer gets what is queued, then ``None``."""
        if not self.closed:
            self.closed = True
            self._frames.append(None)
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def qsize(self) -> int:
        return len(self._frames)

    async def get(self) -> EncodedFrame | None:
        """Next frame, or ``None`` once the subscription has ended."""
        while not self._frames:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frame = self._frames.popleft()
        if frame is None:
            self._frames.append(None)  # stay ended for every later call
            return None
        self.stats.delivered += 1
        return frame


class _EncodedTap(queue.Queue[Any]):
    """Stands in for an ``RTCRtpReceiver``'s decoder queue.

    aiortc puts ``(codec, JitterFrame)`` into that queue on the loop thread for its
    decoder thread; we take the frame right there instead. Only the ``None`` that
    stops the decoder thread is really queued, so the (idle) thread ends cleanly.
    """

    def __init__(self, relay: TrackRelay) -> None:
        super().__init__()
        self._relay = relay

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
            return
        codec, jitter_frame = item
        self._relay._ingest(codec.mimeType, jitter_frame.data, jitter_frame.timestamp)


#: aiortc's video jitter buffer size (packets), kept for the replacement below.
VIDEO_JITTER_PACKETS = 128


class EarlyFrameJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer, but a frame leaves as soon as it is complete.

    aiortc only knows a frame is complete when the first packet of the *next* frame
    arrives, one frame interval (33 ms at 30 fps) later. The RTP marker bit flags the
    last packet of a video frame (RFC 7741 §4.1), so when the marked packet arrives
    and every packet from the buffer's origin up to it belongs to the same frame, the
    frame is taken right away. Anything else (a loss, reordering) falls back to
    aiortc's own logic unchanged.
    """

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli_flag, frame = super().add(packet)
        if frame is None and packet.marker and self._origin is not None:
            frame = self._take_marked_frame(packet)
        return pli_flag, frame

    def _take_marked_frame(self, marked: RtpPacket) -> JitterFrame | None:
        assert self._origin is not None
        count = uint16_add(marked.sequence_number, -self._origin) + 1
        if count > self._capacity:
            return None
        packets = []
        for i in range(count):
            packet = self._packets[(self._origin + i) % self._capacity]
            if packet is None or packet.timestamp != marked.timestamp:
                return None
            packets.append(packet)
        self.remove(count)
        return JitterFrame(data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
                           timestamp=marked.timestamp)


@dataclass(slots=True)
class RelayStats:
    frames_in: int = 0
    bytes_in: int = 0
    keyframes_in: int = 0
    rejected_frames: int = 0
    keyframe_requests_sent: int = 0
    keyframe_requests_coalesced: int = 0
    #: When (relay clock, s) the last keyframe request went out and the last keyframe
    #: came in: a request is answered once the second passes the first.
    last_keyframe_request_at: float = 0.0
    last_keyframe_at: float = 0.0


class TrackRelay:
    """Fans one performer track (video or audio) out to many subscribers.

    The performer may change (a reload, a new "Go live"): :meth:`attach` a new
    receiver and the subscribers keep their queues; timestamps stay monotonic.
    """

    def __init__(self, kind: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        if kind not in ("video", "audio"):
            raise ValueError(f"unknown media kind {kind!r}")
        self.kind = kind
        self.mime = VIDEO_MIME if kind == "video" else AUDIO_MIME
        self.time_base = Fraction(1, VIDEO_CLOCK_RATE if kind == "video" else AUDIO_CLOCK_RATE)
        self._clock = clock
        self._subscribers: set[FrameQueue] = set()
        self._receiver: RTCRtpReceiver | None = None
        self._index = 0
        # Output timestamps continue across performers: out = in + _pts_offset.
        self._pts_offset = 0
        self._last_out_pts = -1
        self._last_request = -KEYFRAME_REQUEST_INTERVAL_S
        self._pending_request: asyncio.TimerHandle | None = None
        #: Where keyframe requests go when the stream is pulled from another node
        #: (no local performer): set by the /n3xus/live/1.0.0 follower.
        self.upstream_keyframe: Callable[[], object] | None = None
        self.stats = RelayStats()

    # -- performer side --------------------------------------------------------------

    def attach(self, receiver: RTCRtpReceiver) -> None:
        """Tap a performer's receiver. Call before its ``receive()`` starts, i.e. after
        ``setRemoteDescription(offer)`` and before ``setLocalDescription(answer)``."""
        # aiortc keeps the queue in a name-mangled private attribute.
        receiver._RTCRtpReceiver__decoder_queue = _EncodedTap(self)  # type: ignore[attr-defined]
        if self.kind == "video":
            receiver._RTCRtpReceiver__jitter_buffer = EarlyFrameJitterBuffer(  # type: ignore[attr-defined]
                capacity=VIDEO_JITTER_PACKETS, is_video=True)
        self._receiver = receiver
        # A new performer stream restarts at pts 0: continue after the last frame out.
        frame_step = 3000 if self.kind == "video" else 960
        self._pts_offset = self._last_out_pts + frame_step if self._last_out_pts >= 0 else 0
        self.request_keyframe()

    def detach(self) -> None:
        """The performer stopped: subscribers stay and wait for the next one."""
        self._receiver = None

    @property
    def live(self) -> bool:
        return self._receiver is not None

    def _ingest(self, mime: str, data: bytes, pts: int) -> None:
        if mime.lower() != self.mime.lower() or not data or len(data) > MAX_ENCODED_FRAME_BYTES:
            self.stats.rejected_frames += 1
            return
        keyframe = is_vp8_keyframe(data) if self.kind == "video" else True
        out_pts = pts + self._pts_offset
        if out_pts <= self._last_out_pts:
            out_pts = self._last_out_pts + 1
        self._last_out_pts = out_pts
        self._index += 1
        frame = EncodedFrame(self.kind, data, out_pts, self.time_base, keyframe, self._index)
        self.stats.frames_in += 1
        self.stats.bytes_in += len(data)
        if keyframe and self.kind == "video":
            self.stats.keyframes_in += 1
            self.stats.last_keyframe_at = self._clock()
        self.publish(frame)

    def publish(self, frame: EncodedFrame) -> None:
        """Offer one frame to every subscriber (also the entry for pulled streams)."""
        for subscriber in self._subscribers:
            subscriber.offer(frame)

    def request_keyframe(self) -> None:
        """Ask the performer for a keyframe, at most once per interval (coalesced)."""
        if self.kind != "video":
            return
        now = self._clock()
        wait = self._last_request + KEYFRAME_REQUEST_INTERVAL_S - now
        if wait <= 0:
            self._send_pli()
            return
        self.stats.keyframe_requests_coalesced += 1
        if self._pending_request is None:
            loop = asyncio.get_running_loop()
            self._pending_request = loop.call_later(wait, self._deferred_pli)

    def _deferred_pli(self) -> None:
        self._pending_request = None
        self._send_pli()

    def _send_pli(self) -> None:
        self._last_request = self._clock()
        receiver = self._receiver
        if receiver is None:
            if self.upstream_keyframe is not None:
                self.stats.keyframe_requests_sent += 1
                self.upstream_keyframe()
            return  # else nobody to ask: the next performer's first frame is a keyframe
        ssrc = _media_ssrc(receiver)
        if ssrc is None:
            return  # no media yet; the first frame of a stream is a keyframe
        self.stats.keyframe_requests_sent += 1
        self.stats.last_keyframe_request_at = self._clock()
        loop = asyncio.get_running_loop()
        loop.create_task(receiver._send_rtcp_pli(ssrc))

    # -- subscriber side -------------------------------------------------------------

    def subscribe(self, capacity: int | None = None) -> FrameQueue:
        if capacity is None:
            capacity = SUBSCRIBER_QUEUE_FRAMES if self.kind == "video" else AUDIO_QUEUE_FRAMES
        subscriber = FrameQueue(self, capacity)
        self._subscribers.add(subscriber)
        self.request_keyframe()
        return subscriber

    def unsubscribe(self, subscriber: FrameQueue) -> None:
        self._subscribers.discard(subscriber)
        subscriber.close()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """End every subscription (the performance is over)."""
        if self._pending_request is not None:
            self._pending_request.cancel()
            self._pending_request = None
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)
        self._receiver = None


def _media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The performer's media SSRC, the one a PLI must name.

    Not simply the first SSRC seen: Chromium sends bandwidth probes as padding on
    its RTX SSRC before any media, and ignores a PLI for that SSRC. The offer's
    ``ssrc-group:FID`` maps RTX to media SSRCs (aiortc keeps it privately).
    """
    rtx_to_media: dict[int, int] = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", {})
    if rtx_to_media:
        return next(iter(rtx_to_media.values()))
    for source in receiver.getSynchronizationSources():
        if source.source not in rtx_to_media:
            return source.source
    return None


class RelayedTrack(MediaStreamTrack):
    """The track a viewer's ``RTCRtpSender`` sends: encoded frames from a relay."""

    def __init__(self, relay: TrackRelay, capacity: int | None = None) -> None:
        super().__init__()
        self.kind = relay.kind
        self.relay = relay
        self.queue = relay.subscribe(capacity)

    async def recv(self) -> EncodedFrame:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        super().stop()
        self.relay.unsubscribe(self.queue)


def wire_keyframe_requests(sender: RTCRtpSender, relay: TrackRelay) -> None:
    """Make a viewer's PLI/FIR reach the performer.

    aiortc answers an RTCP PLI or FIR from the viewer by calling the sender's
    ``_send_keyframe()``, which only flags its (unused) encoder; we point that
    method of this one sender at the relay instead.
    """
    sender._send_keyframe = relay.request_keyframe  # type: ignore[method-assign]
