"""Recording a performance as self-contained WebM segments, without re-encoding.

The recorder is a relay subscriber like any viewer: it receives the performer's
encoded VP8 frames and *muxes* them (PyAV/FFmpeg's WebM muxer) into segments. A
segment begins at a keyframe and is a complete WebM file on its own (header,
clusters, cues), so each one plays and seeks alone and the node can store each one
in the canon as soon as it is cut (``canon.files.add_bytes``: content-addressed
chunks) instead of holding a whole show in memory. The list of segment CIDs and
their times is the recording's manifest (:func:`manifest_block`, schema
``n3xus/recording/v1`` in specs/live.md §4), whose CID goes into the canon log.

Sans-IO: :meth:`Recorder.push` takes a frame and returns the segments it completed;
:attr:`Recorder.wants_keyframe` tells the driver to ask the performer for one.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from n3xus.canon import codec
from n3xus.canon.cid import CID

from .errors import CodecError
from .relay import EncodedFrame
from .vp8 import vp8_keyframe_info

#: Cut a segment at the first keyframe after this much media: short enough that a
#: crash loses little and a seek fetches little, long enough that per-file overhead
#: (~1 kB of WebM header and cues) stays under 1% at 500 kbit/s.
SEGMENT_TARGET_MS = 10_000
#: A segment is cut regardless at this size, then frames are skipped (counted)
#: until the next keyframe: bounds memory if a performer ignores keyframe requests.
SEGMENT_MAX_BYTES = 16 * 1024 * 1024
#: WebM's usual timestamp scale: milliseconds.
WEBM_TIME_BASE = Fraction(1, 1000)
RECORDING_TYPE = "n3xus/recording/v1"


@dataclass(frozen=True, slots=True)
class RecordedSegment:
    index: int
    start_ms: int  # since the start of the recording
    duration_ms: int
    frames: int
    width: int
    height: int
    data: bytes  # a complete WebM file


class _Segment:
    def __init__(self, start_pts: int, width: int, height: int) -> None:
        self.out = io.BytesIO()
        self.container: Any = av.open(self.out, mode="w", format="webm")
        stream = self.container.add_stream("libvpx", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = WEBM_TIME_BASE
        self.stream = stream
        self.start_pts = start_pts
        self.last_pts = start_pts
        self.frames = 0
        self.bytes = 0
        self.width, self.height = width, height

    def add(self, frame: EncodedFrame) -> None:
        packet = av.Packet(frame.data)
        packet.stream = self.stream
        packet.time_base = WEBM_TIME_BASE
        packet.pts = packet.dts = int((frame.pts - self.start_pts) * frame.time_base * 1000)
        packet.is_keyframe = frame.keyframe
        self.container.mux(packet)
        self.last_pts = frame.pts
        self.frames += 1
        self.bytes += len(frame.data)

    def finish(self) -> bytes:
        self.container.close()
        return self.out.getvalue()


class Recorder:
    """Turns a stream of encoded VP8 frames into WebM segments."""

    def __init__(self, *, segment_target_ms: int = SEGMENT_TARGET_MS) -> None:
        self.segment_target_ms = segment_target_ms
        self._segment: _Segment | None = None
        self._origin_pts: int | None = None
        self._time_base = Fraction(1, 90_000)
        self._index = 0
        self.skipped_frames = 0
        self.wants_keyframe = False

    def _ms(self, pts: int) -> int:
        assert self._origin_pts is not None
        return int((pts - self._origin_pts) * self._time_base * 1000)

    def push(self, frame: EncodedFrame) -> list[RecordedSegment]:
        if frame.kind != "video":
            return []
        self._time_base = frame.time_base
        done: list[RecordedSegment] = []
        segment = self._segment
        if segment is not None:
            length_ms = int((frame.pts - segment.start_pts) * frame.time_base * 1000)
            if frame.keyframe and length_ms >= self.segment_target_ms:
                done.append(self._cut(frame.pts))
                segment = None
            elif segment.bytes >= SEGMENT_MAX_BYTES:
                done.append(self._cut(frame.pts))
                segment = None
            else:
                # Browsers send keyframes only when asked: ask once the segment is
                # long enough (the relay rate-limits repeated asks).
                self.wants_keyframe = length_ms >= self.segment_target_ms
        if segment is None:
            if not frame.keyframe:
                self.skipped_frames += 1
                self.wants_keyframe = True
                return done
            info = vp8_keyframe_info(frame.data)
            if self._origin_pts is None:
                self._origin_pts = frame.pts
            segment = self._segment = _Segment(frame.pts, info.width, info.height)
            self.wants_keyframe = False
        segment.add(frame)
        return done

    def _cut(self, next_pts: int) -> RecordedSegment:
        segment = self._segment
        assert segment is not None
        self._segment = None
        data = segment.finish()
        result = RecordedSegment(
            index=self._index,
            start_ms=self._ms(segment.start_pts),
            duration_ms=int((next_pts - segment.start_pts) * self._time_base * 1000),
            frames=segment.frames,
            width=segment.width,
            height=segment.height,
            data=data,
        )
        self._index += 1
        return result

    def finish(self) -> list[RecordedSegment]:
        """Close the open segment (the performance ended)."""
        segment = self._segment
        if segment is None:
            return []
        frame_ms = 1000 // 30
        end_pts = segment.last_pts + int(Fraction(frame_ms, 1000) / self._time_base)
        return [self._cut(end_pts)]


def manifest_block(room: str, segments: list[tuple[RecordedSegment, CID]],
                   started_ms: int) -> bytes:
    """The recording's manifest as strict DAG-CBOR (specs/live.md §4)."""
    return codec.encode({
        "type": RECORDING_TYPE,
        "room": room,
        "started": started_ms,
        "codec": "VP8",
        "container": "webm",
        "segments": [
            {"cid": cid, "start_ms": seg.start_ms, "duration_ms": seg.duration_ms,
             "frames": seg.frames, "width": seg.width, "height": seg.height,
             "bytes": len(seg.data)}
            for seg, cid in segments
        ],
    })


def manifest_json(block: bytes, segment_url: Callable[[CID], str]) -> dict[str, Any]:
    """The JSON the audience page replays from (specs/live.md §4.1): the manifest
    with each segment's CID turned into the URL the node serves its bytes at."""
    try:
        value = codec.decode(block)
    except ValueError as exc:
        raise CodecError(f"recording manifest is not DAG-CBOR: {exc}") from None
    if not isinstance(value, dict) or value.get("type") != RECORDING_TYPE:
        raise CodecError("not a n3xus/recording/v1 manifest")
    segments = value.get("segments")
    if not isinstance(segments, list) or not all(
            isinstance(s, dict) and isinstance(s.get("cid"), CID) for s in segments):
        raise CodecError("recording manifest has malformed segments")
    return {
        "room": value.get("room"),
        "started": value.get("started"),
        "duration_ms": sum(int(s["duration_ms"]) for s in segments),
        "segments": [
            {"url": segment_url(s["cid"]), "start_ms": s["start_ms"],
             "duration_ms": s["duration_ms"], "width": s["width"], "height": s["height"]}
            for s in segments
        ],
    }
