"""Join a TCP socket and a stream, at the asyncio.Protocol level (the hot path).

Backpressure both ways without a buffer that can grow:

* socket -> stream: when the stream runs out of credit (or the control connection's
  write buffer is full) the stream calls ``pause_producing`` and we stop reading the
  socket until credit comes back;
* stream -> socket: we return credit for bytes only once the socket's write buffer
  is below its high-water mark, so a slow reader stops its sender after one window.
"""

from __future__ import annotations

import asyncio
from typing import cast

from .session import Stream


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
        if self.transport is not None:
            self.transport.abort()

    def pause_producing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_producing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
