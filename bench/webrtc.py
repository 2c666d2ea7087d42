"""Viewers one core serves from one 480p 30 fps VP8 performer: our encoded relay vs
aiortc's MediaRelay (decode once, encode per viewer), in the same run.

The node runs in a child process (the engine of n3xus.webrtc for "ours", aiortc's
MediaRelay for the reference), so its CPU time is measured alone (getrusage of the
child: every thread, aiortc's decoder and encoder threads included). The performer
(a synthetic 640x480 30 fps camera, VP8 from aiortc's encoder) and the viewers
(real aiortc peers that count the frames they receive without decoding them) run in
this process. For each relay, the node's CPU is measured with 1 viewer and with N:

    per_frame = (cpu_N - cpu_1) / (frames_N - frames_1)   (CPU s per viewer-frame
                                                           delivered; frames per s)
    base      = cpu_1 - per_frame * frames_1               (ingest, RTCP, the loop)
    capacity  = (1 - base) / (per_frame * 30)               (30 fps viewers per core)

and the frames each viewer received in the window are checked against the 30 fps
sent ("on time": at least ON_TIME_FRACTION of them). ratio = capacity(ours) /
capacity(MediaRelay); the issue's goal is >= 10.

Also printed (informational, not in the ratio): the round trip of a JSON ping over
the room data channel between headless Chromium and the node (median, p95).

    python bench/webrtc.py [--json] [--large]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Result, parser, report  # noqa: E402

FPS = 30
WIDTH, HEIGHT = 640, 480
#: Distinct synthetic frames cycled by the camera (noise: VP8 cannot shrink it to
#: nothing, so frames are the size rate control makes them, as with a real camera).
PATTERN_FRAMES = 30
WARMUP_S = 3.0
WINDOW_S = 3.0
#: Windows per measurement; their median is used (the machine is shared and noisy).
WINDOWS = 3
#: A viewer that receives at least this share of the frames sent is served on time.
ON_TIME_FRACTION = 0.9
#: Viewers for the N measurement: MediaRelay needs ~7 ms/frame/viewer, so a few
#: viewers already fill a core; ours needs many to rise above the noise.
VIEWERS = {"ours": 16, "mediarelay": 3}
VIEWERS_LARGE = {"ours": 48, "mediarelay": 4}


# -- the node (child process) ---------------------------------------------------------

def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _node_main(conn: multiprocessing.connection.Connection, variant: str) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaRelay

    from n3xus.webrtc.engine import LiveEngine
    from n3xus.webrtc.rooms import Role

    loop = asyncio.get_running_loop()
    engine = LiveEngine()
    media_relay = MediaRelay()
    source: list[Any] = []
    pcs: list[RTCPeerConnection] = []
    count = 0

    async def answer_media_relay(role: str, sdp: str) -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)

        @pc.on("track")
        def on_track(track: Any) -> None:
            source.append(track)

        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        if role == "viewer":
            pc.addTrack(media_relay.subscribe(source[0]))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    while True:
        command, arg = await loop.run_in_executor(None, conn.recv)
        if command == "stop":
            break
        if command == "cpu":
            conn.send(_cpu_s())
        elif command in ("performer", "viewer"):
            count += 1
            if variant == "ours":
                role = Role.PERFORMER if command == "performer" else Role.VIEWER
                conn.send(await engine.answer("bench", f"p{count}", role, command, arg))
            else:
                conn.send(await answer_media_relay(command, arg))
    await engine.aclose()
    for pc in pcs:
        await pc.close()


def node_process(conn: multiprocessing.connection.Connection, variant: str) -> None:
    asyncio.run(_node_main(conn, variant))


# -- performer and viewers (this process) --------------------------------------------

class _CountingTap(queue.Queue[Any]):
    """Replaces a viewer receiver's decoder queue: counts whole frames, decodes none."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None)
        else:
            self.frames += 1


def _camera_track() -> Any:
    import numpy as np
    from aiortc import VideoStreamTrack
    from av import VideoFrame

    rng = np.random.default_rng(7)
    frames = []
    for i in range(PATTERN_FRAMES):
        base = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        base[:, :, 0] = (np.arange(WIDTH) + i * 8) % 256
        base[:, :, 1] = (np.arange(HEIGHT)[:, None] + i * 4) % 256
        base[:, :, 2] = rng.integers(0, 64, (HEIGHT, WIDTH), dtype=np.uint8)
        frames.append(VideoFrame.from_ndarray(base, format="rgb24").reformat(format="yuv420p"))

    class Camera(VideoStreamTrack):
        index = 0

        async def recv(self) -> Any:
            pts, time_base = await self.next_timestamp()
            frame = frames[self.index % PATTERN_FRAMES]
            self.index += 1
            frame.pts, frame.time_base = pts, time_base
            return frame

    return Camera()


class Run:
    def __init__(self, variant: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=node_process, args=(child, variant), daemon=True)
        self.process.start()
        self.pcs: list[Any] = []
        self.taps: list[_CountingTap] = []

    async def ask(self, command: str, arg: Any = None) -> Any:
        self.conn.send((command, arg))
        return await asyncio.get_running_loop().run_in_executor(None, self.conn.recv)

    async def connect(self, role: str) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        if role == "performer":
            pc.addTransceiver(_camera_track(), direction="sendonly")
        else:
            transceiver = pc.addTransceiver("video", direction="recvonly")
            tap = _CountingTap()
            transceiver.receiver._RTCRtpReceiver__decoder_queue = tap
            self.taps.append(tap)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.ask(role, pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def window(self) -> tuple[float, list[float]]:
        """Node CPU seconds per second, and each viewer's share of frames received."""
        frames0 = [t.frames for t in self.taps]
        cpu0, t0 = await self.ask("cpu"), time.monotonic()
        await asyncio.sleep(WINDOW_S)
        cpu1, t1 = await self.ask("cpu"), time.monotonic()
        elapsed = t1 - t0
        shares = [(t.frames - f0) / (FPS * elapsed) for t, f0 in zip(self.taps, frames0,
                                                                      strict=True)]
        return (cpu1 - cpu0) / elapsed, shares

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()
        self.conn.send(("stop", None))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


async def _windows(run: Run) -> tuple[float, float, list[float]]:
    """Medians over WINDOWS windows: node CPU s/s, viewer-frames delivered per s."""
    cpus, rates, shares = [], [], []
    for _ in range(WINDOWS):
        cpu, window_shares = await run.window()
        cpus.append(cpu)
        rates.append(sum(window_shares) * FPS)
        shares += window_shares
    return statistics.median(cpus), statistics.median(rates), shares


async def measure(variant: str, viewers: int) -> dict[str, Any]:
    run = Run(variant)
    try:
        await run.connect("performer")
        await run.connect("viewer")
        await asyncio.sleep(WARMUP_S)
        cpu_1, rate_1, shares_1 = await _windows(run)
        for _ in range(viewers - 1):
            await run.connect("viewer")
        await asyncio.sleep(WARMUP_S)
        cpu_n, rate_n, shares_n = await _windows(run)
    finally:
        await run.close()
    # Cost per viewer-frame actually delivered, so that a relay that falls behind
    # (delivers fewer frames) is not credited with the CPU it did not spend.
    per_frame = max((cpu_n - cpu_1) / max(rate_n - rate_1, 1.0), 1e-9)
    base = max(cpu_1 - per_frame * rate_1, 0.0)
    return {
        "viewers": viewers,
        "cpu_1_viewer": round(cpu_1, 4),
        "cpu_n_viewers": round(cpu_n, 4),
        "ms_per_viewer_frame": round(per_frame * 1000, 4),
        "capacity": (1.0 - base) / (per_frame * FPS),
        "min_frame_share": round(min(shares_1 + shares_n), 3),
        "on_time": all(s >= ON_TIME_FRACTION for s in shares_1 + shares_n),
    }


# -- data-channel round trip, browser <-> node (informational) -------------------------

#: Round trips timed in the browser (after 20 untimed ones).
RTT_SAMPLES = 200
# Debian's chromium unless N3XUS_CHROMIUM names another build (tests/install-system-deps.sh).
CHROMIUM = os.environ.get("N3XUS_CHROMIUM", "/usr/bin/chromium")
_RTT_SCRIPT = """async (n) => {
  const live = await import('/live/static/live.js');
  const signal = await live.connectSignal('bench');
  const pc = live.newPeerConnection(signal);
  let resolvePong = null;
  const channel = live.openRoomChannel(pc, (msg) => {
    if (msg.type === 'pong' && resolvePong) { resolvePong(); resolvePong = null; }
  });
  const opened = new Promise((r) => { channel.onopen = r; });
  await live.negotiate(pc, signal);
  await opened;
  const once = () => new Promise((r, reject) => {
    const timer = setTimeout(() => reject(new Error('no pong within 2 s')), 2000);
    resolvePong = () => { clearTimeout(timer); r(); };
    channel.send(JSON.stringify({type: 'ping', t: performance.now()}));
  });
  for (let i = 0; i < 20; i++) await once();
  const rtts = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await once();
    rtts.push(performance.now() - t0);
  }
  pc.close();
  return rtts;
}"""


def _launch_chromium(playwright: Any, *extra_args: str) -> Any:
    """Headless Chromium as every browser bench here runs it (host candidates unmasked)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless=new", "--no-sandbox", "--disable-background-networking",
        "--disable-features=WebRtcHideLocalIpsWithMdns", *extra_args])


def _browser_rtts(base: str, token: str, samples: int) -> list[float]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = _launch_chromium(p)
        try:
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(f"{base}/rooms/bench#token={token}")
            return [float(x) for x in page.evaluate(_RTT_SCRIPT, samples)]
        finally:
            browser.close()


def datachannel_rtt(samples: int) -> dict[str, Any]:
    """Median and p95 of a JSON ping/pong over the room data channel, Chromium <-> node."""

    def drive(base: str, tokens: dict[str, str], samples: int) -> list[float]:
        return _browser_rtts(base, tokens["bench"], samples)

    rtts = sorted(_with_live_server(drive, samples))
    return {"samples": len(rtts), "median_ms": round(statistics.median(rtts), 3),
            "p95_ms": round(rtts[int(len(rtts) * 0.95) - 1], 3), "goal_median_ms": 5}


# -- glass-to-glass latency, Chromium performer -> node -> Chromium audience ------------

#: The performer paints Date.now() (low 24 bits of ms) as 24 black/white bars on a
#: canvas it publishes; the audience reads the bars back from the decoded video.
#: Both pages run in one browser, so they share the clock.
_G2G_BARS = 24
#: Paints the clock as bars on canvas ``c`` (2D context ``g``), every animation frame.
_G2G_PAINT_JS = """function paint() {
  const t = Date.now() & 0xffffff, w = c.width / BARS;
  for (let i = 0; i < BARS; i++) {
    g.fillStyle = (t >> (BARS - 1 - i)) & 1 ? '#fff' : '#000';
    g.fillRect(i * w, 0, w, c.height);
  }
  requestAnimationFrame(paint);
}
paint();
"""


def _g2g_read_js(context: str) -> str:
    """Reads the bars of each frame of video ``v`` back through the 2D ``context`` and
    pushes the glass-to-glass delay (ms) to ``window.samples``."""
    return """function read() {
  if (v.videoWidth) {
    CTX.drawImage(v, 0, 0, 640, 480);
    const row = CTX.getImageData(0, 240, 640, 1).data, w = 640 / BARS;
    let t = 0;
    for (let i = 0; i < BARS; i++) t = (t << 1) | (row[4 * Math.floor(i * w + w / 2)] > 127 ? 1 : 0);
    const d = ((Date.now() & 0xffffff) - t) & 0xffffff;
    if (d < 5000) window.samples.push(d);
  }
  v.requestVideoFrameCallback(read);
}
v.requestVideoFrameCallback(read);
""".replace("CTX", context)


_G2G_PERFORM = ("""<!doctype html><meta charset="utf-8"><canvas id="c" width="640" height="480"></canvas>
<script type="module">
import * as live from '/live/static/live.js';
const c = document.getElementById('c'), g = c.getContext('2d');
""" + _G2G_PAINT_JS + """const signal = await live.connectSignal('g2g');
const pc = live.newPeerConnection(signal);
const stream = c.captureStream(30);
live.preferVp8(pc.addTransceiver(stream.getVideoTracks()[0], {direction: 'sendonly'}));
await live.negotiate(pc, signal);
window.ready = true;
</script>""").replace("BARS", str(_G2G_BARS))
_G2G_WATCH = ("""<!doctype html><meta charset="utf-8"><video id="v" autoplay muted playsinline></video>
<canvas id="c" width="640" height="480"></canvas>
<script type="module">
import * as live from '/live/static/live.js';
const v = document.getElementById('v'), g = document.getElementById('c').getContext('2d', {willReadFrequently: true});
window.samples = [];
const signal = await live.connectSignal('g2g');
const pc = live.newPeerConnection(signal);
live.preferVp8(pc.addTransceiver('video', {direction: 'recvonly'}));
pc.ontrack = (e) => { v.srcObject = new MediaStream([e.track]); };
await live.negotiate(pc, signal);
""" + _g2g_read_js("g") + """</script>""").replace("BARS", str(_G2G_BARS))
#: Reference: the same canvas and reader with a direct browser-to-browser connection
#: (two peer connections in one page, no node): what WebRTC alone costs here.
_G2G_DIRECT = ("""<!doctype html><meta charset="utf-8"><canvas id="c" width="640" height="480"></canvas>
<video id="v" autoplay muted playsinline></video><canvas id="r" width="640" height="480"></canvas>
<script type="module">
const c = document.getElementById('c'), g = c.getContext('2d');
const v = document.getElementById('v'), r = document.getElementById('r').getContext('2d', {willReadFrequently: true});
""" + _G2G_PAINT_JS + """window.samples = [];
const a = new RTCPeerConnection(), b = new RTCPeerConnection();
a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
b.ontrack = (e) => { v.srcObject = new MediaStream([e.track]); };
const tr = a.addTransceiver(c.captureStream(30).getVideoTracks()[0], {direction: 'sendonly'});
tr.setCodecPreferences(RTCRtpSender.getCapabilities('video').codecs.filter(x => /vp8|rtx/i.test(x.mimeType)));
await a.setLocalDescription(); await b.setRemoteDescription(a.localDescription);
await b.setLocalDescription(); await a.setRemoteDescription(b.localDescription);
""" + _g2g_read_js("r") + """</script>""").replace("BARS", str(_G2G_BARS))
G2G_SAMPLES = 150


def _browser_glass_to_glass(base: str, tokens: dict[str, str]) -> tuple[list[float],
                                                                         list[float]]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = _launch_chromium(p, "--autoplay-policy=no-user-gesture-required")
        try:
            context = browser.new_context(bypass_csp=True)
            performer = context.new_page()
            performer.goto(f"{base}/bench/rooms/g2g/perform#token={tokens['performer']}")
            performer.wait_for_function("window.ready === true", timeout=30_000)
            audience = context.new_page()
            audience.goto(f"{base}/bench/rooms/g2g/watch#token={tokens['viewer']}")
            audience.wait_for_function(f"window.samples && window.samples.length >= {G2G_SAMPLES}",
                                       timeout=60_000)
            via_node = [float(x) for x in audience.evaluate("window.samples")]
            performer.close()
            audience.close()
            direct = context.new_page()
            direct.goto(f"{base}/bench/direct")
            direct.wait_for_function(f"window.samples && window.samples.length >= {G2G_SAMPLES}",
                                     timeout=60_000)
            return via_node, [float(x) for x in direct.evaluate("window.samples")]
        finally:
            browser.close()


def _with_live_server(drive: Any, *args: Any) -> Any:
    """Run ``drive(base_url, tokens, *args)`` in a thread against live routes served by
    hypercorn on trio (as the node serves them), plus the two bench pages."""
    import socket

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from n3xus.webrtc.asgi import live_routes
    from n3xus.webrtc.service import open_live_service

    async def page_perform(request: Any) -> HTMLResponse:
        return HTMLResponse(_G2G_PERFORM)

    async def page_watch(request: Any) -> HTMLResponse:
        return HTMLResponse(_G2G_WATCH)

    async def page_direct(request: Any) -> HTMLResponse:
        return HTMLResponse(_G2G_DIRECT)

    async def run() -> Any:
        async with open_live_service(bytes(32)) as live, trio.open_nursery() as nursery:
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = listener.getsockname()[1]
            config = Config()
            config.bind = [f"fd://{listener.detach()}"]
            config.accesslog = None
            config.errorlog = None
            stop = trio.Event()
            app = Starlette(routes=live_routes(live) + [
                Route("/bench/rooms/{name}/perform", page_perform),
                Route("/bench/rooms/{name}/watch", page_watch),
                Route("/bench/direct", page_direct)])
            nursery.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
            await trio.sleep(0.3)
            tokens = {role: live.issue_token(room, role) for role in ("performer", "viewer")
                      for room in ("g2g",)}
            tokens["bench"] = live.issue_token("bench", "viewer")
            try:
                return await trio.to_thread.run_sync(drive, f"http://127.0.0.1:{port}",
                                                     tokens, *args)
            finally:
                stop.set()

    return trio.run(run)


def glass_to_glass() -> dict[str, Any]:
    via_node, direct = (sorted(x) for x in _with_live_server(_browser_glass_to_glass))

    def summary(samples: list[float]) -> dict[str, float]:
        return {"median_ms": statistics.median(samples),
                "p95_ms": samples[int(len(samples) * 0.95) - 1]}

    return {"samples": len(via_node), "via_node": summary(via_node),
            "direct_browser_to_browser": summary(direct),
            "path": "canvas -> Chromium VP8 -> (node relay) -> Chromium decode -> canvas"}


def build(args: Any) -> tuple[list[Result], dict[str, Any]]:
    counts = VIEWERS_LARGE if args.large else VIEWERS
    ours = asyncio.run(measure("ours", counts["ours"]))
    reference = asyncio.run(measure("mediarelay", counts["mediarelay"]))
    extra: dict[str, Any] = {
        "reference": "aiortc MediaRelay, same performer, same machine, same run"}
    if Path(CHROMIUM).exists():
        extra["datachannel_rtt (Chromium <-> node)"] = datachannel_rtt(RTT_SAMPLES)
        extra["glass_to_glass (Chromium -> node -> Chromium)"] = glass_to_glass()
    else:
        extra["datachannel_rtt"] = f"not measured: no {CHROMIUM}"
    result = Result(
        name="viewers served by one core (480p30 VP8)", unit="viewers", units=1,
        ours_s=1.0 / ours["capacity"], ceiling_s=1.0 / reference["capacity"],
        target=10.0, headline=True,
        notes={"ours (encoded relay)": ours, "reference (aiortc MediaRelay)": reference},
    )
    # ratio = ours / reference capacity: Result.ratio is ceiling_s / ours_s.
    return [result], extra


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    results, extra = build(args)
    report("webrtc relay capacity", results, extra, args.json)


if __name__ == "__main__":
    main()
