"""Live performances over WebRTC (aiortc).

aiortc is asyncio-only while the node runs on trio. All of it will live behind one
bridge module in this package that owns a dedicated thread with its own asyncio loop;
the trio side talks to it through memory channels only. Nothing else in n3xus imports
aiortc. (Built by the live-performance issue.)"""
