"""Live performances over WebRTC: rooms, an encoded relay, recordings, stream pull.

aiortc is asyncio-only while the node runs on trio: all of it lives on one thread
with its own asyncio loop behind :mod:`.bridge`, the only crossing point. Layout:

* sans-IO cores (no sockets, no clocks): :mod:`.rooms` (roles, room tokens),
  :mod:`.signaling` (per-connection state machine, rate limit), :mod:`.schemas`
  (JSON Schemas), :mod:`.sdp` (what an offer may ask), :mod:`.datachannel`,
  :mod:`.pull` (``/n3xus/live/1.0.0`` messages), :mod:`.vp8`, :mod:`.recording`
  (WebM segments from encoded frames);
* asyncio side (runs on the bridge loop): :mod:`.relay` (encoded-frame fan-out, no
  re-encoding), :mod:`.engine` (peer connections, relays, the data-channel hub);
* trio side, the node's entry points: :mod:`.service` (``open_live_service``,
  ``LiveService``), :mod:`.asgi` (Starlette routes: signaling WebSocket, pages,
  replay, tips), :mod:`.pullstream` (framing for the pull protocol);
* ``pages/``: the room, performer and audience pages (static, no build step).

The normative description: specs/live.md (rooms, tokens, pages, recordings, the relay),
specs/live-signaling.md (what a page speaks to its node), specs/protocol-live.md (pull).
"""
