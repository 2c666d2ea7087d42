"""Real headless Chromium (Debian's /usr/bin/chromium, fake camera) against the live
routes served by hypercorn on trio, as the node will serve them: a performer page
goes live, two audience pages play (and keep playing when the performer's tab
reloads and goes live again), a chat line crosses from one room page to another. Playwright's sync API runs in one trio worker thread."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from browser_support import BASE_ARGS, CHROMIUM, FAKE_MEDIA_ARGS, go_live
from hypercorn.config import Config
from hypercorn.trio import serve
from playwright.sync_api import Page, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from webrtc_support import TOKEN_KEY, accept_answer, close_peer, join, new_performer, offer

from n3xus.canon.cid import cid_of
from n3xus.webrtc.asgi import live_routes
from n3xus.webrtc.bridge import open_bridge
from n3xus.webrtc.recording import RecordedSegment, Recorder, manifest_block, manifest_json
from n3xus.webrtc.rooms import Role
from n3xus.webrtc.service import LiveService, open_live_service

CHROMIUM_ARGS = [
    *BASE_ARGS, *FAKE_MEDIA_ARGS,
    # Real host candidates instead of mDNS names (the node resolves no .local names).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
ROOM = "gig"
#: Browser waits: the first frame needs ICE + DTLS + a keyframe (about a second here).
PLAY_TIMEOUT_MS = 30_000


@asynccontextmanager
async def serve_live(live: LiveService, recordings: Any = None,
                     extra_routes: list[Any] | None = None,
                     tips: Any = None) -> AsyncIterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    app = Starlette(routes=live_routes(live, recordings, tips) + (extra_routes or []))
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
            go_live(performer, PLAY_TIMEOUT_MS)
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
            go_live(performer, PLAY_TIMEOUT_MS)
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


class DirectoryRecordings:
    """A stand-in for the node's canon: segment files in a directory, one manifest."""

    def __init__(self, directory: Path, manifest: bytes) -> None:
        self.directory = directory
        self.manifest = manifest
        self.manifest_cid = str(cid_of(manifest))

    async def replay(self, room: str, manifest_cid: str) -> dict[str, Any] | None:
        if room != ROOM or manifest_cid != self.manifest_cid:
            return None
        return manifest_json(self.manifest, lambda cid: f"/test-files/{cid}")

    def route(self) -> Route:
        async def serve_file(request: Request) -> Response:
            path = self.directory / f"{request.path_params['cid']}.webm"
            if not path.exists():
                return Response(status_code=404)
            return FileResponse(path, media_type="video/webm")
        return Route("/test-files/{cid}", serve_file)


def replay_in_browser(base: str, manifest_cid: str, seek_to_ms: int) -> dict[str, Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(f"{base}/rooms/{ROOM}/watch#recording={manifest_cid}")
            page.wait_for_function("document.getElementById('stage').videoWidth > 0",
                                   timeout=PLAY_TIMEOUT_MS)
            page.wait_for_function(
                "Number(document.getElementById('position').dataset.ms) > 300",
                timeout=PLAY_TIMEOUT_MS)
            started = {"width": page.evaluate("document.getElementById('stage').videoWidth")}
            page.eval_on_selector(
                "#seek", "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('change')); }",
                seek_to_ms)
            page.wait_for_function(
                f"Number(document.getElementById('position').dataset.ms) >= {seek_to_ms}",
                timeout=PLAY_TIMEOUT_MS)
            landed = int(page.eval_on_selector("#position", "el => Number(el.dataset.ms)"))
            page.wait_for_function(
                f"Number(document.getElementById('position').dataset.ms) > {landed} + 300",
                timeout=PLAY_TIMEOUT_MS)
            return {"started": started, "landed": landed,
                    "duration": page.eval_on_selector("#seek", "el => Number(el.max)")}
        finally:
            browser.close()


async def test_a_recording_replays_on_the_audience_page_with_seeking(tmp_path: Path) -> None:
    segments: list[RecordedSegment] = []

    async def keep(segment: RecordedSegment) -> None:
        segments.append(segment)

    async with open_live_service(TOKEN_KEY) as live, open_bridge("clients") as clients:
        async with trio.open_nursery() as nursery:
            socket_, _ = await join(live, nursery, ROOM, Role.PERFORMER, "performer")
            performer, sdp = await clients.run(new_performer)
            answer = await offer(socket_, sdp)
            await clients.run(accept_answer, performer, answer["sdp"])
            with trio.move_on_after(5.0):
                await live.record(ROOM, keep, Recorder(segment_target_ms=1500))
            await clients.run(close_peer, performer)
            nursery.cancel_scope.cancel()
        assert len(segments) >= 3
        stored = []
        for segment in segments:
            cid = cid_of(segment.data, codec="raw")
            (tmp_path / f"{cid}.webm").write_bytes(segment.data)
            stored.append((segment, cid))
        recordings = DirectoryRecordings(tmp_path, manifest_block(ROOM, stored, 0))
        middle = segments[len(segments) // 2]
        target = middle.start_ms + 200  # inside a later segment than the one playing
        async with serve_live(live, recordings, [recordings.route()]) as base:
            result = await trio.to_thread.run_sync(
                replay_in_browser, base, recordings.manifest_cid, target)
            missing = await trio.to_thread.run_sync(
                lambda: httpx.get(f"{base}/api/v1/rooms/{ROOM}/recordings/bafy"))
    assert result["started"]["width"] == 640
    assert target <= result["landed"] < target + 1500
    assert result["duration"] == sum(s.duration_ms for s in segments)
    assert missing.status_code == 404


class LedgerDesk:
    """A stand-in for the node's ledger behind the Tip control: it serves what a tip
    needs and checks each envelope with the ledger package's own decoder and
    signature verification (the node will submit it to its ledger instead)."""

    def __init__(self) -> None:
        self.network = str(cid_of(b"test network"))
        self.creator = bytes(range(32))
        self.prev = str(cid_of(b"the viewer's previous transaction"))
        self.ref = str(cid_of(b"a performance"))
        self.asked: list[bytes] = []
        self.received: list[Any] = []

    async def tip_info(self, room: str, account: bytes) -> dict[str, Any] | None:
        self.asked.append(account)
        return {"network": self.network, "creator": self.creator.hex(), "next_seq": 3,
                "prev": self.prev, "ref": self.ref}

    async def submit_tip(self, room: str, envelope: bytes) -> dict[str, Any]:
        from n3xus.ledger.tx import decode_tx, verify_tx_signature
        from n3xus.webrtc.errors import TipRefusedError
        try:
            tx = decode_tx(envelope)
        except ValueError as exc:
            raise TipRefusedError(str(exc), code="malformed") from None
        if not verify_tx_signature(tx):
            raise TipRefusedError("signature does not verify", code="bad-signature")
        self.received.append(tx)
        return {"id": str(tx.cid)}


def tip_in_browser(base: str, token: str) -> list[str]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(f"{base}/rooms/{ROOM}/watch#token={token}")
            statuses = []
            for amount in ("25", "7"):
                page.fill("#tip-amount", amount)
                page.get_by_role("button", name="Tip").click()
                page.wait_for_function(
                    f"document.getElementById('tip-status').textContent.includes('tip of {amount} ')"
                    " && !document.getElementById('tip-status').textContent.includes('signing')",
                    timeout=PLAY_TIMEOUT_MS)
                statuses.append(page.inner_text("#tip-status"))
            return statuses
        finally:
            browser.close()


async def test_a_tip_is_signed_in_the_browser_and_verifies_with_the_ledger_code() -> None:
    desk = LedgerDesk()
    async with open_live_service(TOKEN_KEY) as live:
        async with serve_live(live, tips=desk) as base:
            statuses = await trio.to_thread.run_sync(
                tip_in_browser, base, live.issue_token(ROOM, "viewer"))
    assert all("sent" in s for s in statuses), statuses
    assert [tx.args["amount"] for tx in desk.received] == [25, 7]
    for tx in desk.received:
        assert tx.op.value == "tip" and tx.args["to"] == desk.creator
        assert str(tx.args["ref"]) == desk.ref and str(tx.prev_cid) == desk.prev
        assert tx.seq == 3 and str(tx.network_cid) == desk.network
        assert tx.account == desk.asked[0]  # the key the page created and kept
    assert len(set(desk.asked)) == 1  # the same key for both tips (IndexedDB)


def mesh_chat(base: str, token: str) -> dict[str, Any]:
    """Two room pages: a chat line over their direct data channel, an RTT probe on
    it, then a world edit (to the node and, as a preview, to the other page)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(bypass_csp=True)
            pages = []
            for name in ("ada", "bob"):
                page = context.new_page()
                page.goto(f"{base}/rooms/{ROOM}#token={token}")
                page.fill("#name", name)
                pages.append(page)
            for page in pages:
                page.wait_for_function(
                    "document.getElementById('status').textContent.startsWith('connected')"
                    " && window.n3xusRoom.openLinks().length === 1", timeout=PLAY_TIMEOUT_MS)
            ada, bob = pages
            ada.fill("#chat-input", "straight to bob")
            ada.get_by_role("button", name="Send").click()
            bob.wait_for_function(
                "[...document.querySelectorAll('.chat-line')].some("
                "l => l.textContent.includes('straight to bob'))", timeout=PLAY_TIMEOUT_MS)
            via = bob.evaluate(
                "[...document.querySelectorAll('.chat-line')].find("
                "l => l.textContent.includes('straight to bob')).dataset.via")
            received = bob.evaluate("({...window.n3xusRoom.received})")
            presence = bob.inner_text("#presence")
            rtt = ada.evaluate("window.n3xusRoom.meshRtt(50)")
            ada.fill("#edit-key", "stage/colour")
            ada.fill("#edit-value", "teal")
            ada.get_by_role("button", name="Apply").click()
            for page in pages:  # the node's "applied" comes back over its own channel
                page.wait_for_function(
                    "[...document.querySelectorAll('.edit-line')].some(l => l.dataset.via"
                    " === 'node' && l.textContent.includes('stage/colour = teal'))",
                    timeout=PLAY_TIMEOUT_MS)
            preview = bob.evaluate(
                "[...document.querySelectorAll('.edit-line')].some(l => l.dataset.via"
                " === 'peer' && l.textContent.includes('pending'))")
            return {"via": via, "received": received, "presence": presence, "rtt": rtt,
                    "preview": preview}
        finally:
            browser.close()


async def test_two_room_pages_chat_over_their_direct_data_channel() -> None:
    edits: list[tuple[str, dict[str, Any]]] = []

    async def world_edit(room: str, edit: dict[str, Any]) -> bool:
        edits.append((room, edit))
        return True

    async with open_live_service(TOKEN_KEY, world_edit=world_edit) as live, \
            serve_live(live) as base:
        result = await trio.to_thread.run_sync(
            mesh_chat, base, live.issue_token(ROOM, "collaborator"))
        stats = await live.stats(ROOM)
        relayed = live.peer_signals_relayed
    # Direct: bob's page got it on the mesh channel, and the node's hub carried no chat.
    assert result["via"] == "peer"
    assert result["received"] == {"peer": 1, "node": 0}
    assert "chat" not in stats["hub_messages"]
    assert relayed == 2  # one peer-offer and one peer-answer, through the node
    assert "ada" in result["presence"] and "bob" in result["presence"]  # mesh presence
    # The world edit went to the node (one hub message), which applied it.
    assert stats["hub_messages"] == {"world-edit": 1}
    assert [(room, e["key"], e["value"], e["from"]["role"]) for room, e in edits] == [
        (ROOM, "stage/colour", "teal", "collaborator")]
    assert result["preview"]
    rtt = sorted(result["rtt"])
    print(f"mesh data-channel RTT browser<->browser: median={rtt[len(rtt) // 2]:.2f} ms "
          f"p95={rtt[int(len(rtt) * 0.95)]:.2f} ms (n={len(rtt)})")
    assert len(rtt) == 50 and all(r >= 0 for r in rtt)
