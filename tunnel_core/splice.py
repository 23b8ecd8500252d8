"""Stream plumbing shared by the modes: join two byte streams, with backpressure.

Two ways, for two kinds of peers:

* :class:`SpliceProtocol` joins a TCP socket and a tunnel stream at the
  ``asyncio.Protocol`` level (the hot path, TCP mode), with backpressure both ways
  and no buffer that can grow:

  * socket -> stream: when the stream runs out of credit (or the control connection's
    write buffer is full) the stream calls ``pause_producing`` and we stop reading the
    socket until credit comes back;
  * stream -> socket: we return credit for bytes only once the socket's write buffer
    is below its high-water mark, so a slow reader stops its sender after one window.

* :func:`splice` copies between two :class:`Duplex` byte streams with coroutines, for
  code that reads the bytes first (HTTP mode parses a request, then pipes the rest):
  :class:`StreamDuplex` is a TCP connection, :class:`TunnelDuplex` a tunnel stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Protocol, cast

from .errors import StreamClosedError
from .session import Stream

__all__ = ["READ_SIZE", "Duplex", "SpliceProtocol", "StreamDuplex", "TunnelDuplex", "splice"]

#: Bytes asked of a :class:`Duplex` per read.
READ_SIZE = 64 * 1024
#: SO_LINGER on, zero seconds: close() sends a RST.
_LINGER_RST = struct.pack("ii", 1, 0)


class SpliceProtocol(asyncio.Protocol):
    """The protocol of a public (server) or upstream (client) TCP connection."""

    __slots__ = ("stream", "transport", "_write_paused", "_held", "_eof_in", "_eof_out")

    def __init__(self, stream: Stream | None = None) -> None:
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self._write_paused = False
        self._held = 0  # bytes written to the socket but not yet credited back
        self._eof_in = False  # the socket sent EOF
        self._eof_out = False  # we half-closed the socket

    # socket side -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; the interface is the same.
        self.transport = cast(asyncio.Transport, transport)
        if self.stream is not None:
            self.stream.set_sink(self)

    def data_received(self, data: bytes) -> None:
        assert self.stream is not None
        self.stream.write(data)

    def eof_received(self) -> bool:
        assert self.stream is not None
        self._eof_in = True
        self.stream.write_eof()
        if self._eof_out:
            return False  # both directions done: let asyncio close the socket
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None and not self.stream.done:
            self.stream.reset("connection closed" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._held and self.stream is not None:
            held, self._held = self._held, 0
            self.stream.consumed(held)

    # stream side (StreamSink) ------------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        assert self.transport is not None and self.stream is not None
        if self.transport.is_closing():  # the socket is going away; the bytes have nowhere to go
            self.stream.consumed(len(data))
            return
        self.transport.write(data)
        if self._write_paused:
            self._held += len(data)
        else:
            self.stream.consumed(len(data))

    def stream_eof(self) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self._eof_out = True
        if self._eof_in or not self.transport.can_write_eof():
            self.transport.close()
        else:
            self.transport.write_eof()

    def stream_reset(self, reason: str) -> None:
        """The tunnel broke mid-stream: end the socket with a RST, never a FIN, so the
        peer cannot take a truncated stream for a complete one."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        self.transport.abort()

    def pause_producing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_producing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class Duplex(Protocol):
    """A reliable byte stream: a tunnel stream or a TCP connection."""

    async def read(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes``; ``b""`` at EOF. Raises ConnectionError on a reset."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data``, waiting while the peer has no room for it."""
        ...

    async def write_eof(self) -> None: ...

    async def close(self) -> None: ...


class StreamDuplex:
    """:class:`Duplex` over an asyncio reader/writer pair."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self, max_bytes: int) -> bytes:
        return await self.reader.read(max_bytes)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class TunnelDuplex:
    """A tunnel :class:`Stream` seen as a :class:`Duplex`; resets become ConnectionError."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def read(self, max_bytes: int) -> bytes:
        try:
            return await self.stream.read(max_bytes)
        except StreamClosedError as exc:
            raise ConnectionResetError(exc.message) from exc

    async def write(self, data: bytes) -> None:
        self.stream.write(data)
        try:
            await self.stream.drain()
        except StreamClosedError as exc:
            raise ConnectionResetError(exc.message) from exc

    async def write_eof(self) -> None:
        self.stream.write_eof()

    async def close(self) -> None:
        """Abort what is left: by now every byte that mattered was drained in order."""
        self.stream.reset("done")


async def _copy(src: Duplex, dst: Duplex, count: Callable[[int], None]) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await src.read(READ_SIZE):
            count(len(data))
            await dst.write(data)
        await dst.write_eof()


async def splice(
    a: Duplex,
    b: Duplex,
    a_to_b: Callable[[int], None] = lambda n: None,
    b_to_a: Callable[[int], None] = lambda n: None,
    *,
    half_close: bool = True,
) -> None:
    """Copy bytes both ways until both directions reached EOF or either broke.

    With ``half_close=False`` the first direction to end ends both, for peers
    (keep-alive HTTP servers) that never close their side on their own.
    """
    forward = asyncio.ensure_future(_copy(a, b, a_to_b))
    backward = asyncio.ensure_future(_copy(b, a, b_to_a))
    try:
        if half_close:
            await asyncio.gather(forward, backward)
        else:
            await asyncio.wait((forward, backward), return_when=asyncio.FIRST_COMPLETED)
    finally:
        forward.cancel()
        backward.cancel()
