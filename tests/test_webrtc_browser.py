"""Real headless Chromium (Debian's /usr/bin/chromium, fake camera) against the live
routes served by hypercorn on trio, as the node will serve them: a performer page
goes live, two audience pages play (and keep playing when the performer's tab
reloads and goes live again), a chat line crosses from one room page to another. Playwright's sync API runs in one trio worker thread."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from playwright.sync_api import Page, sync_playwright
from starlette.applications import Starlette
from webrtc_support import TOKEN_KEY

from n3xus.webrtc.asgi import live_routes
from n3xus.webrtc.service import LiveService, open_live_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--disable-background-networking",
    # Real host candidates instead of mDNS names (the node resolves no .local names).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]
ROOM = "gig"
#: Browser waits: the first frame needs ICE + DTLS + a keyframe (about a second here).
PLAY_TIMEOUT_MS = 30_000


@asynccontextmanager
async def serve_live(live: LiveService) -> AsyncIterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    app = Starlette(routes=live_routes(live))
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        nursery.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        await trio.sleep(0.3)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop.set()


def wait_playing(page: Page) -> dict[str, float]:
    page.wait_for_function("document.getElementById('stage').videoWidth > 0",
                           timeout=PLAY_TIMEOUT_MS)
    first = page.evaluate("document.getElementById('stage').currentTime")
    page.wait_for_function(f"document.getElementById('stage').currentTime > {first} + 0.5",
                           timeout=PLAY_TIMEOUT_MS)
    return {
        "width": page.evaluate("document.getElementById('stage').videoWidth"),
        "time": page.evaluate("document.getElementById('stage').currentTime"),
    }


def drive(base: str, tokens: dict[str, str]) -> dict[str, Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Our pages forbid eval by CSP; Playwright's string predicates need it.
            context = browser.new_context(bypass_csp=True)
            performer = context.new_page()
            performer.goto(f"{base}/rooms/{ROOM}/perform#token={tokens['performer']}")
            go_live = performer.get_by_role("button", name="Go live")
            performer.wait_for_function("!document.getElementById('go-live').disabled")
            go_live.click()
            performer.wait_for_function(
                "document.getElementById('status').textContent === 'live'",
                timeout=PLAY_TIMEOUT_MS)
            audiences = []
            for _ in range(2):
                page = context.new_page()
                page.goto(f"{base}/rooms/{ROOM}/watch#token={tokens['viewer']}")
                audiences.append(page)
            played = [wait_playing(page) for page in audiences]
            muted = audiences[0].evaluate("document.getElementById('stage').muted")
            audiences[0].get_by_role("button", name="Unmute").click()
            unmuted = not audiences[0].evaluate("document.getElementById('stage').muted")
            has_tip = audiences[0].get_by_role("button", name="Tip").count() == 1

            rooms = []
            for name in ("ada", "bob"):
                page = context.new_page()
                page.goto(f"{base}/rooms/{ROOM}#token={tokens['collaborator']}")
                page.fill("#name", name)
                rooms.append(page)
            for page in rooms:
                page.wait_for_function(
                    "document.getElementById('status').textContent.startsWith('connected')",
                    timeout=PLAY_TIMEOUT_MS)
            rooms[0].fill("#chat-input", "hello over the data channel")
            rooms[0].get_by_role("button", name="Send").click()
            rooms[1].wait_for_function(
                "[...document.querySelectorAll('.chat-line')].some("
                "l => l.textContent.includes('hello over the data channel'))",
                timeout=PLAY_TIMEOUT_MS)

            # The performer's tab reloads and goes live again: the audience keeps playing.
            performer.reload()
            performer.wait_for_function("!document.getElementById('go-live').disabled",
                                        timeout=PLAY_TIMEOUT_MS)
            performer.get_by_role("button", name="Go live").click()
            performer.wait_for_function(
                "document.getElementById('status').textContent === 'live'",
                timeout=PLAY_TIMEOUT_MS)
            after_reload = [wait_playing(page) for page in audiences]
            still_playing = all(a["time"] > b["time"] for a, b in
                                zip(after_reload, played, strict=True))

            performer.get_by_role("button", name="End").click()
            audiences[0].wait_for_function(
                "document.getElementById('status').textContent.includes('ended')",
                timeout=PLAY_TIMEOUT_MS)
            return {"played": played, "muted_at_start": muted, "unmuted": unmuted,
                    "has_tip": has_tip, "still_playing": still_playing}
        finally:
            browser.close()


async def test_performer_page_publishes_and_two_audience_pages_play() -> None:
    async with open_live_service(TOKEN_KEY) as live, serve_live(live) as base:
        tokens = {role: live.issue_token(ROOM, role)
                  for role in ("performer", "viewer", "collaborator")}
        result = await trio.to_thread.run_sync(drive, base, tokens)
        stats = await live.stats(ROOM)
    assert [p["width"] for p in result["played"]] == [640, 640]
    assert all(p["time"] > 0.5 for p in result["played"])
    assert result["muted_at_start"] and result["unmuted"] and result["has_tip"]
    assert result["still_playing"]
    video = stats["relays"]["video"]
    assert video["frames_in"] > 30 and video["rejected_frames"] == 0
    assert stats["relays"]["audio"]["frames_in"] > 0  # the microphone is relayed too
    assert stats["live"] is False  # "End" stopped the performance
