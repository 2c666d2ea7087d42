"""Recording: a real performer's VP8 frames, muxed (not re-encoded) into WebM
segments that each decode on their own, chunked into the canon's file format."""

from __future__ import annotations

import io

import av
import trio
from test_webrtc_relay import ROOM, go_live, live_and_clients
from webrtc_support import close_peer, rgb_close

from n3xus.canon import codec
from n3xus.canon.cid import cid_of
from n3xus.webrtc.recording import RECORDING_TYPE, RecordedSegment, Recorder, manifest_block


def decode(segment: RecordedSegment) -> list[av.VideoFrame]:
    with av.open(io.BytesIO(segment.data)) as container:
        return list(container.decode(video=0))


async def test_a_performance_is_recorded_as_self_contained_webm_segments() -> None:
    segments: list[RecordedSegment] = []

    async def keep(segment: RecordedSegment) -> None:
        segments.append(segment)

    async with live_and_clients() as (live, clients, nursery):
        performer, _ = await go_live(live, clients, nursery)
        with trio.move_on_after(4.0):
            # 1 s segments so that 4 s of performance give several.
            await live.record(ROOM, keep, Recorder(segment_target_ms=1000))
        await clients.run(close_peer, performer)

    assert len(segments) >= 2, segments
    assert [s.index for s in segments] == list(range(len(segments)))
    total = 0
    for segment in segments:
        assert segment.data[:4] == b"\x1a\x45\xdf\xa3"  # EBML magic: a WebM file
        frames = decode(segment)
        assert len(frames) == segment.frames > 0  # every frame decodes, alone
        first = frames[0].to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
        assert rgb_close(tuple(float(c) for c in first))
        assert (segment.width, segment.height) == (640, 480)
        total += segment.frames
    # Segments follow each other without gaps.
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start_ms == before.start_ms + before.duration_ms
    assert total >= 60  # ~30 fps for ~4 s, minus connection set-up

    cids = [(s, cid_of(s.data, codec="raw")) for s in segments]
    manifest = codec.decode(manifest_block(ROOM, cids, started_ms=1_800_000_000_000))
    assert manifest["type"] == RECORDING_TYPE and manifest["codec"] == "VP8"
    assert [m["cid"] for m in manifest["segments"]] == [c for _, c in cids]


def test_the_recorder_waits_for_a_keyframe_and_asks_for_one() -> None:
    from fractions import Fraction

    from n3xus.webrtc.relay import EncodedFrame
    inter = EncodedFrame("video", b"\x01" * 50, 0, Fraction(1, 90000), False, 1)
    recorder = Recorder()
    assert recorder.push(inter) == []
    assert recorder.skipped_frames == 1 and recorder.wants_keyframe
    assert recorder.finish() == []
