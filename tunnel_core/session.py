"""The asyncio driver of one control connection after the WebSocket upgrade.

:class:`Session` is the ``asyncio.Protocol`` of the upgraded TLS transport: it unframes
WebSocket messages, feeds the :class:`~tunnel_core.protocol.mux.Mux`, dispatches its events to
:class:`Stream` objects, and writes the mux's outbox once per loop iteration so that
WINDOW updates and small frames share one WebSocket message.

A :class:`Stream` is what data planes use. Two ways to consume it:

* the coroutine API: ``await stream.read()``, ``stream.write()``, ``await stream.drain()``,
  ``stream.write_eof()``, ``stream.reset()``;
* the hot path: ``stream.set_sink(sink)`` with a :class:`StreamSink` (see
  :class:`tunnel_core.splice.SpliceProtocol`), which gets callbacks and tells the stream
  when it consumed bytes, so credit goes back to the peer only when a socket took them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import LocalProtocolError, ProtocolError, StreamClosedError
from .protocol import ws
from .protocol.mux import (
    CAN_SEND,
    CreditAvailable,
    Event,
    Mux,
    Role,
    StreamData,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
)

log = logging.getLogger("tunnel_core")
#: Largest WebSocket message the session writes; bigger outboxes are split.
MAX_WS_MESSAGE = 1 << 20
#: Bytes a stream holds beyond its credit (written while it waits for credit or for the
#: control connection). A producer pauses at the first such byte, so this is one socket
#: read (256 KiB in both loops) with room to spare; a producer that keeps writing past it
#: ignores backpressure and its stream is reset.
DEFAULT_MAX_PENDING = 1 << 20
#: Bytes of replies (mux PONGs, RESETs of streams the peer opened, WebSocket pongs) the
#: peer may make us queue while it does not read what we write; past that it is dropped.
#: Our own peers owe a ping every few seconds; this is many thousands of them.
DEFAULT_MAX_OWED = 1 << 20
#: Mux frames parsed per loop turn for one connection; a read full of tiny frames is
#: spread over several turns (reading paused meanwhile), so other connections get
#: their turn. About 4 ms of work; a read of large DATA frames never reaches it.
DEFAULT_FRAMES_PER_TURN = 1024
#: The buffer asyncio's TLS transport decrypts into (its own read size). One buffer per
#: session, reused by every read: with ``data_received`` the transport joined the
#: records of a read into a new bytes object, a copy and a large allocation per read
#: that made glibc grow and trim its heap all the time (bulk: 1.7-1.9 client CPU-s per
#: GB, 1.1-1.3 with the heap left alone).
READ_BUFFER = 256 * 1024


@dataclass(frozen=True)
class SessionLimits:
    """What one control connection's peer may make us hold or do (see the defaults above).

    Exceeding a limit the peer controls is the peer's protocol error: the session is
    dropped with one log line (``dropping PEER: ...``), memory never grows instead.
    """

    #: bytes a stream holds beyond its credit before its producer counts as broken
    max_pending: int = DEFAULT_MAX_PENDING
    #: bytes of replies owed to a peer that does not read
    max_owed: int = DEFAULT_MAX_OWED
    #: mux frames parsed per loop turn
    frames_per_turn: int = DEFAULT_FRAMES_PER_TURN
    #: frames/s the peer may send, averaged over a second (a token bucket); None: any
    max_frame_rate: float | None = None
    #: streams/s the peer may open, averaged over a second; None: any
    max_open_rate: float | None = None


#: The server's limits per client session (ServerConfig.limits). A client sending bulk
#: data sends a few thousand frames/s (DATA carries up to 256 KiB); none of our clients
#: opens streams (the server opens them), so a thousand a second is already abuse.
SERVER_LIMITS = SessionLimits(max_frame_rate=50_000, max_open_rate=1_000)


def set_keepalive(transport: asyncio.BaseTransport, interval: float, timeout: float) -> None:
    """TCP keepalive on a control connection's socket: the kernel probes an idle peer
    every ``interval`` and, where it can, gives up on unacknowledged data after ``timeout``
    (``TCP_USER_TIMEOUT``), so a peer that vanished without a FIN is noticed even by a
    side that is not pinging. Best effort: options the platform lacks are skipped."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    idle = max(1, int(interval))
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", idle),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", max(1, int(timeout * 1000))),
    ):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except OSError:  # pragma: no cover - a platform without that option
            log.debug("cannot set socket option %s on the control connection", option)


class StreamSink(Protocol):
    """Callbacks of a stream's consumer (the hot path); the consumer calls ``consumed``."""

    def stream_data(self, data: bytes) -> None: ...
    def stream_eof(self) -> None: ...
    def stream_reset(self, reason: str) -> None: ...
    def pause_producing(self) -> None: ...
    def resume_producing(self) -> None: ...


class Stream:
    """One multiplexed byte stream with credit-based backpressure both ways."""

    __slots__ = (
        "session", "id", "metadata", "_sink", "_pending", "_pending_size", "_eof_pending",
        "_eof_sent", "_producing", "_rbuf", "_eof_received", "_reset_reason", "_waiter",
    )  # fmt: skip

    def __init__(self, session: Session, stream_id: int, metadata: dict[str, Any]) -> None:
        self.session = session
        self.id = stream_id
        self.metadata = metadata
        self._sink: StreamSink | None = None
        self._pending: deque[bytes] = deque()  # written, waiting for credit
        self._pending_size = 0
        self._eof_pending = False
        self._eof_sent = False
        self._producing = True
        self._rbuf: deque[bytes] = deque()  # received, no sink yet
        self._eof_received = False
        self._reset_reason: str | None = None
        self._waiter: asyncio.Future[None] | None = None

    # Sending ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the stream is fully closed or reset (nothing more will happen)."""
        return self.session.mux.state(self.id) is StreamState.CLOSED

    def write(self, data: bytes) -> None:
        """Queue bytes; never blocks. A producer pauses when ``stream.paused`` or via its sink.

        Invariant, whatever the event loop: the stream holds at most its credit (in the
        connection's outbox) plus ``session.max_pending`` bytes. A write while paused
        pauses the sink again (uvloop ignores a ``pause_reading()`` made inside
        ``connection_made``), and a producer that still writes past the limit is a bug
        on our side: its stream is reset instead of growing.
        """
        if self._eof_sent or self._eof_pending or self._reset_reason is not None:
            if self._reset_reason is not None:
                return  # the peer is gone; drop silently like a socket after RST
            raise LocalProtocolError(f"stream {self.id}: write after write_eof")
        if not data:
            return
        if self._pending:
            self._pending.append(data)
            self._pending_size += len(data)
            self._hold()
            return
        sent = self.session.mux.send_data(self.id, data)
        self.session.schedule_flush()
        if sent < len(data):
            self._pending.append(data[sent:])
            self._pending_size = len(data) - sent
            self._hold()
        elif self.session.write_paused:
            self._hold()

    @property
    def buffered(self) -> int:
        """Bytes written but not yet handed to the mux (they wait for credit)."""
        return self._pending_size

    def _hold(self) -> None:
        """Pause the producer (again: a loop may have ignored the first pause)."""
        if self._pending_size > self.session.max_pending:
            log.warning(
                "stream %d: %d bytes written while paused (max_pending %d); resetting it",
                self.id, self._pending_size, self.session.max_pending,
            )  # fmt: skip
            self.reset("backpressure ignored")
            if self._sink is not None:
                self._sink.stream_reset("backpressure ignored")
            return
        if self._sink is not None:
            self._producing = False
            self._sink.pause_producing()

    @property
    def paused(self) -> bool:
        return bool(self._pending) or self.session.write_paused

    async def drain(self) -> None:
        """Wait until every written byte was handed to the connection."""
        while self.paused and self._reset_reason is None:
            await self._wait()
        if self._reset_reason is not None:
            raise StreamClosedError(f"stream reset: {self._reset_reason}")

    def write_eof(self) -> None:
        """Half-close: no more data from us; the peer may keep sending."""
        if self._eof_sent or self._eof_pending or self._reset_reason is not None:
            return
        if self._pending:
            self._eof_pending = True
        else:
            self._send_eof()

    def close(self) -> None:
        """Finish our direction; the stream ends when the peer finishes theirs."""
        self.write_eof()

    def reset(self, reason: str = "") -> None:
        """Abort both directions at once; the peer gets ``reason``."""
        if self._reset_reason is not None or self.done:
            return
        self._reset_reason = reason or "reset"
        self._pending.clear()
        self._pending_size = 0
        self.session.mux.reset(self.id, reason)
        self.session.schedule_flush()
        self.session.forget(self.id)
        self._wake()

    def _send_eof(self) -> None:
        self._eof_sent = True
        self.session.mux.send_eof(self.id)
        self.session.schedule_flush()
        if self.done:
            self.session.forget(self.id)

    def _credit(self) -> None:
        pending, mux = self._pending, self.session.mux
        while pending:
            chunk = pending[0]
            sent = mux.send_data(self.id, chunk)
            self._pending_size -= sent
            if sent < len(chunk):
                pending[0] = chunk[sent:]
                break
            pending.popleft()
        self.session.schedule_flush()
        if not pending:
            if self._eof_pending:
                self._eof_pending = False
                self._send_eof()
            self._update_producing()
            self._wake()

    def _update_producing(self) -> None:
        producing = not self.paused
        if producing != self._producing and self._sink is not None:
            self._producing = producing
            if producing:
                self._sink.resume_producing()
            else:
                self._sink.pause_producing()

    # Receiving ----------------------------------------------------------------------

    def set_sink(self, sink: StreamSink) -> None:
        """Hand received data to ``sink`` from now on (first what arrived before)."""
        self._sink = sink
        self._producing = True
        while self._rbuf:
            sink.stream_data(self._rbuf.popleft())
        if self._reset_reason is not None:
            sink.stream_reset(self._reset_reason)
            return
        if self._eof_received:
            sink.stream_eof()
        self._update_producing()

    def consumed(self, nbytes: int) -> None:
        """The sink took ``nbytes``; the peer may send that much more."""
        self.session.mux.consumed(self.id, nbytes)
        self.session.schedule_flush()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all buffered if -1); ``b""`` at EOF; raises if reset."""
        if self._sink is not None:
            raise LocalProtocolError("read() on a stream that has a sink")
        while not self._rbuf:
            if self._reset_reason is not None:
                raise StreamClosedError(f"stream reset: {self._reset_reason}")
            if self._eof_received:
                return b""
            await self._wait()
        data = self._rbuf.popleft() if n < 0 or len(self._rbuf[0]) <= n else b""
        if not data:
            head = self._rbuf[0]
            data, self._rbuf[0] = head[:n], head[n:]
        self.consumed(len(data))
        return data

    async def wait_closed(self) -> None:
        while not self.done and self._reset_reason is None:
            await self._wait()

    def _on_data(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.stream_data(data)
        else:
            self._rbuf.append(data)
            self._wake()

    def _on_eof(self) -> None:
        self._eof_received = True
        if self._sink is not None:
            self._sink.stream_eof()
        self._wake()

    def _on_reset(self, reason: str) -> None:
        if self._reset_reason is not None:
            return
        self._reset_reason = reason or "reset"
        self._pending.clear()
        self._pending_size = 0
        if self._sink is not None:
            self._sink.stream_reset(self._reset_reason)
        self._wake()

    def _wait(self) -> asyncio.Future[None]:
        if self._waiter is None or self._waiter.done():
            self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Session(asyncio.BufferedProtocol):
    """One upgraded control connection: WebSocket framing + mux + streams.

    A buffered protocol: reads land in one reused buffer (:data:`READ_BUFFER`), so what
    outlives a read (payload not parsed yet when a turn's frame budget ran out) is
    copied out of it before the next read can overwrite it.
    """

    def __init__(
        self,
        role: Role,
        transport: asyncio.Transport,
        *,
        on_stream: Callable[[Stream], None],
        on_event: Callable[[Event], None],
        initial_window: int | None = None,
        peer: str = "",
        limits: SessionLimits | None = None,
        zero_key: bool = False,
    ) -> None:
        """``zero_key``: the server asked for frames masked with the zero key (client)."""
        self.role = role
        self.limits = limits = limits or SessionLimits()
        self.max_pending = limits.max_pending
        self.max_owed = limits.max_owed
        self.frames_per_turn = limits.frames_per_turn
        self.max_frame_rate = limits.max_frame_rate
        self.max_open_rate = limits.max_open_rate
        self.peer = peer
        self.transport = transport
        self.mux = Mux(role) if initial_window is None else Mux(role, initial_window=initial_window)
        self._on_stream = on_stream
        self._on_event = on_event
        self._ws = ws.WsDecoder(expect_mask=role is Role.SERVER)
        self._mask = role is Role.CLIENT
        self._zero_key = zero_key and self._mask
        self.streams: dict[int, Stream] = {}
        self.write_paused = False
        self._flush_handle: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.close_reason = ""
        self.last_received = self._loop.time()
        self._close_sent = False  # a WebSocket Close went out
        self._close_received: bytes | None = None  # the payload of the peer's Close
        self._ws_replies = 0  # bytes of WebSocket pongs queued, since the start
        self._owed_base = 0  # replies queued when writing last paused
        self._backlog: deque[bytes | memoryview] = deque()  # WebSocket payload, not parsed
        self._read_view = memoryview(bytearray(READ_BUFFER))
        self._backlog_paused = False  # reading paused until the backlog is parsed
        self._resume_handle: asyncio.Handle | None = None
        self._rate_time = self._loop.time()
        self._rate_frames = 0  # mux.frames_received at _rate_time
        self._rate_opens = 0
        self._frame_tokens = limits.max_frame_rate or 0.0
        self._open_tokens = limits.max_open_rate or 0.0

    # Data planes call these -------------------------------------------------------------

    def open_stream(self, metadata: dict[str, Any]) -> Stream:
        """Open a stream to the peer, which gets ``metadata`` with it."""
        if self.closed.done() or self.transport.is_closing():
            raise StreamClosedError("the control connection is closed")
        stream_id = self.mux.open_stream(metadata)
        self.schedule_flush()
        stream = self.streams[stream_id] = Stream(self, stream_id, metadata)
        return stream

    def close(self, reason: str = "", code: int = 1000) -> None:
        """Say goodbye and close the connection once the outbox is written."""
        if self.transport.is_closing():
            return
        self.close_reason = self.close_reason or reason
        self.mux.go_away(reason)
        self._flush()
        self._close_sent = True
        self.transport.write(self._ws_encode(ws.Opcode.CLOSE, ws.close_payload(code)))
        # After our GOAWAY the mux sends nothing more, so the streams end here, not later.
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._on_reset("control connection closed")
        self.transport.close()

    def schedule_flush(self) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    # asyncio.BufferedProtocol ------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._read_view[:nbytes])
        if self._backlog:  # views of the buffer: the next read reuses it
            self._backlog = deque(bytes(piece) for piece in self._backlog)

    def data_received(self, data: bytes | memoryview) -> None:
        """Bytes from the peer; asyncio's reads come through :meth:`buffer_updated`."""
        self.last_received = self._loop.time()
        if self.transport.is_closing():
            return  # closed or dropped: what still comes is of no use
        try:
            payloads, controls = self._ws.feed(data)
        except ProtocolError as exc:
            self.drop(str(exc))
            return
        for opcode, payload in controls:
            if opcode is ws.Opcode.CLOSE:
                if self._close_received is None:
                    self._close_received = payload  # answered once what came before it is in
            elif opcode is ws.Opcode.PING:
                pong = self._ws_encode(ws.Opcode.PONG, payload)
                self._ws_replies += len(pong)
                self.transport.write(pong)
        self._backlog.extend(payloads)
        if self._resume_handle is None:  # else the backlog is being worked off already
            self._process()

    def _process(self) -> None:
        """Parse up to ``frames_per_turn`` frames of the backlog, then check the limits."""
        self._resume_handle = None
        mux, backlog = self.mux, self._backlog
        budget_end = mux.frames_received + self.frames_per_turn
        try:
            while (left := budget_end - mux.frames_received) > 0:
                if mux.backlog:
                    mux.receive_data(b"", left)
                elif backlog:
                    mux.receive_data(backlog.popleft(), left)
                else:
                    break
                self._dispatch()
        except ProtocolError as exc:
            self.drop(str(exc))
            return
        if self._over_limits() or self.transport.is_closing():
            return
        if mux.backlog or backlog:  # more to do: let the other connections have a turn
            if not self._backlog_paused:
                self._backlog_paused = True
                self.transport.pause_reading()
            self._resume_handle = self._loop.call_soon(self._process)
        elif self._close_received is not None:
            self._answer_close(self._close_received)
            return
        elif self._backlog_paused:
            self._backlog_paused = False
            self.transport.resume_reading()
        self.schedule_flush()

    def _over_limits(self) -> bool:
        """Drop the peer if it owes too much or sends too fast; True if it was dropped."""
        if self.write_paused and self._owed() > self.max_owed:
            self.drop(
                f"{self._owed()} bytes of replies owed while it does not read "
                f"(max_owed {self.max_owed})"
            )
            return True
        if self.max_frame_rate is None and self.max_open_rate is None:
            return False
        now = self._loop.time()
        elapsed, self._rate_time = now - self._rate_time, now
        frames, opens = self.mux.frames_received, self.mux.opens_received
        if self.max_frame_rate is not None:
            rate = self.max_frame_rate
            self._frame_tokens = min(rate, self._frame_tokens + elapsed * rate)
            self._frame_tokens -= frames - self._rate_frames
            if self._frame_tokens < 0:
                self.drop(f"more than {rate:.0f} frames/s (max_frame_rate)")
                return True
        if self.max_open_rate is not None:
            rate = self.max_open_rate
            self._open_tokens = min(rate, self._open_tokens + elapsed * rate)
            self._open_tokens -= opens - self._rate_opens
            if self._open_tokens < 0:
                self.drop(f"more than {rate:.0f} opens/s (max_open_rate)")
                return True
        self._rate_frames, self._rate_opens = frames, opens
        return False

    def _answer_close(self, payload: bytes) -> None:
        """RFC 6455 §5.5.1: answer a Close with a Close (echoing its code), then hang up."""
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
        self.close_reason = self.close_reason or f"WebSocket close {code} from the peer"
        if not self._close_sent and not self.transport.is_closing():
            self._close_sent = True
            self._flush()
            self.transport.write(self._ws_encode(ws.Opcode.CLOSE, payload[:2]))
        self.transport.close()

    def drop(self, reason: str) -> None:
        """Abort the connection of a peer that broke the protocol or a limit (one log line)."""
        if not self.transport.is_closing():
            log.warning("dropping %s: %s", self.peer or "peer", reason)
            self.close_reason = reason
            self.transport.abort()
        # Now, not at connection_lost: until then a stream must not touch the mux.
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._on_reset(f"control connection dropped: {reason}")

    def _owed(self) -> int:
        return self.mux.replies + self._ws_replies - self._owed_base

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        # We keep reading: a side that stopped reading while its own writes wait would
        # deadlock with a peer doing the same (both buffers full of DATA within credit).
        # What reading makes us owe the peer is bounded by max_owed instead.
        self.write_paused = True
        self._owed_base = self.mux.replies + self._ws_replies
        for stream in self.streams.values():
            stream._update_producing()

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            stream._update_producing()
            stream._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        self._backlog.clear()
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream._on_reset("control connection lost")
        if not self.closed.done():
            self.closed.set_result(None)

    # Internals ----------------------------------------------------------------------------

    def _ws_encode(self, opcode: ws.Opcode, payload: bytes) -> bytes:
        return ws.encode(opcode, payload, mask=self._mask, zero_key=self._zero_key)

    def _dispatch(self) -> None:
        streams = self.streams
        for event in self.mux.events_received():
            if isinstance(event, StreamData):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data)
            elif isinstance(event, CreditAvailable):
                stream = streams.get(event.stream_id)
                # The mux parses a whole feed before we see its events, so a RESET (or
                # the EOF that completes a close) later in the same feed may already
                # have closed the stream: its StreamReset/StreamEnded event follows.
                if stream is not None and self.mux.state(event.stream_id) in CAN_SEND:
                    stream._credit()
            elif isinstance(event, StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    if stream.done:
                        del streams[event.stream_id]
                    stream._on_eof()
            elif isinstance(event, StreamReset):
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    stream._on_reset(event.reason)
            elif isinstance(event, StreamOpened):
                stream = streams[event.stream_id] = Stream(self, event.stream_id, event.metadata)
                self._on_stream(stream)
            else:
                self._on_event(event)

    def _flush(self) -> None:
        self._flush_handle = None
        chunks = self.mux.data_to_send()
        if not chunks or self.transport.is_closing():
            return
        mask, zero_key, binary = self._mask, self._zero_key, ws.Opcode.BINARY
        out: list[bytes] = []
        batch: list[bytes] = []
        size = 0
        for chunk in chunks:
            if size + len(chunk) > MAX_WS_MESSAGE and batch:
                out += ws.encode_chunks(binary, batch, size, mask=mask, zero_key=zero_key)
                batch, size = [], 0
            batch.append(chunk)
            size += len(chunk)
        out += ws.encode_chunks(binary, batch, size, mask=mask, zero_key=zero_key)
        self.transport.writelines(_coalesced(out))


#: Pieces below this are joined before they reach TLS: the transport encrypts each piece
#: it is given as a record of its own, and a record costs a fixed amount of work.
_COALESCE = 16 * 1024


def _coalesced(pieces: list[bytes]) -> list[bytes]:
    """``pieces`` with every run of small ones joined (a large one is passed as it is)."""
    out: list[bytes] = []
    run: list[bytes] = []
    for piece in pieces:
        if len(piece) < _COALESCE:
            run.append(piece)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(piece)
    if run:
        out.append(b"".join(run))
    return out
