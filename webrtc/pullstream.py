"""Byte stream <-> whole /n3xus/live/1.0.0 messages, with the common framing.

:meth:`LiveService.serve_pull` and :meth:`LiveService.pull_into` exchange message
*bodies*. The node hands them a libp2p stream through :func:`framed`, which adds
the varint length prefix on the way out and, on the way in, splits frames with
``protocol.framing.FrameDecoder`` (prefix and size checked before a body is read,
a frame that stalls past its deadline is a ``timeout``), so nothing here knows
libp2p: anything with ``read(max)``/``write(bytes)`` works (tests use trio streams).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from n3xus.protocol.errors import ProtocolError
from n3xus.protocol.framing import FrameDecoder, encode_frame

from . import pull
from .errors import PullProtocolError

#: Bytes asked of the stream per read: one 64 KiB read holds several typical frames.
READ_BYTES = 65536

Read = Callable[[int], Awaitable[bytes]]
Write = Callable[[bytes], Awaitable[None]]


def framed(read: Read, write: Write) -> tuple[Callable[[bytes], Awaitable[None]],
                                                Callable[[], Awaitable[bytes | None]]]:
    """``(send, receive)`` over a byte stream: ``send(body)`` writes one frame;
    ``receive()`` returns the next body, or ``None`` at a clean end of stream. A framing
    breach raises :class:`PullProtocolError` with the common ``wire_code``."""
    decoder = FrameDecoder(pull.MAX_PULL_MESSAGE_BYTES)

    async def send(body: bytes) -> None:
        await write(encode_frame(body, pull.MAX_PULL_MESSAGE_BYTES))

    async def receive() -> bytes | None:
        try:
            while True:
                body = decoder.next_frame()
                if body is not None:
                    return body
                if decoder.at_end:
                    return None
                deadline = decoder.deadline
                data = b""
                if deadline is None:
                    data = await read(READ_BYTES)
                else:
                    with trio.move_on_at(deadline):
                        data = await read(READ_BYTES)
                    decoder.check_deadline(trio.current_time())
                if data:
                    decoder.receive_data(data, trio.current_time())
                else:
                    decoder.receive_eof()
        except ProtocolError as exc:
            raise PullProtocolError(str(exc), wire_code=exc.code) from None

    return send, receive
