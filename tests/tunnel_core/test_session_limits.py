"""Limits of one Session, in process: a fake transport records what the session does.

Every test runs under both event loops (the stdlib loop and uvloop), because the
invariants must not depend on how a loop treats ``pause_reading``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from tunnel_core.errors import StreamClosedError
from tunnel_core.protocol import ws
from tunnel_core.protocol.frames import Frame, FrameDecoder, FrameType
from tunnel_core.protocol.mux import Role
from tunnel_core.session import Session, SessionLimits, Stream

LOOPS = ["asyncio", "uvloop"]


def run(loop: str, coro: Coroutine[Any, Any, Any]) -> Any:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(asyncio.wait_for(coro, 30))
    return asyncio.run(asyncio.wait_for(coro, 30))


class FakeTransport:
    """Collects what a Session writes; remembers pauses and aborts."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.aborted = False
        self.closing = False
        self.reading = True
        self.pauses = 0

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, chunks: list[bytes]) -> None:
        self.out.extend(bytes(c) for c in chunks)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def frames(self, *, masked: bool) -> list[Frame]:
        """Every mux frame written so far (WebSocket unframed)."""
        decoder = ws.WsDecoder(expect_mask=masked, max_message=1 << 30)
        frames = FrameDecoder()
        got: list[Frame] = []
        for payload in decoder.feed(b"".join(self.out))[0]:
            got += frames.feed(payload)
        return got


def session(
    role: Role = Role.SERVER, *, window: int | None = None, **limits: Any
) -> tuple[Session, FakeTransport]:
    """A session on a FakeTransport; ``on_stream`` among ``limits`` is passed through."""
    transport = FakeTransport()
    on_stream = limits.pop("on_stream", lambda stream: None)
    s = Session(
        role,
        transport,  # type: ignore[arg-type]
        on_stream=on_stream,
        on_event=lambda event: None,
        initial_window=window,
        limits=SessionLimits(**limits),
    )
    handshake(s)
    return s, transport


def handshake(s: Session) -> None:
    """Take a server-side session past HELLO and WELCOME, as TunnelServer does."""
    s.data_received(message(Frame(FrameType.HELLO, 0, b"{}").serialize()))
    s.mux.send_welcome({"ok": True})


def message(*frames: bytes, masked: bool = True) -> bytes:
    return ws.encode(ws.Opcode.BINARY, b"".join(frames), mask=masked)


class DeafSink:
    """A producer that keeps writing whatever it is told (a loop that ignores pauses)."""

    def __init__(self) -> None:
        self.pauses = 0
        self.reset: str | None = None

    def stream_data(self, data: bytes) -> None: ...
    def stream_eof(self) -> None: ...

    def stream_reset(self, reason: str) -> None:
        self.reset = reason

    def pause_producing(self) -> None:
        self.pauses += 1

    def resume_producing(self) -> None: ...


# 1. Backpressure -------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stream_never_buffers_more_than_its_window_and_one_read(loop):
    """Before: a producer whose pause was lost (uvloop ignores pause_reading inside
    connection_made) made ``_pending`` grow with every read: 50 MB here."""

    async def main() -> None:
        s, transport = session(window=64 * 1024)
        stream = s.open_stream({})
        sink = DeafSink()
        stream.set_sink(sink)
        read = b"r" * (256 * 1024)  # one socket read in either loop
        most = 0
        for _ in range(200):
            stream.write(read)
            most = max(most, stream.buffered)
        assert most <= (1 << 20) + len(read)  # max_pending + one read
        assert sink.pauses > 1  # asked again after the first pause was ignored
        assert sink.reset == "backpressure ignored"
        with pytest.raises(StreamClosedError):
            await stream.drain()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_stream_opened_while_the_link_is_full_pauses_its_producer_at_the_first_write(loop):
    async def main() -> None:
        s, transport = session()
        s.pause_writing()  # the control connection's buffer is full
        stream = s.open_stream({})
        sink = DeafSink()
        stream.set_sink(sink)
        sink.pauses = 0  # pretend the loop ignored the pause made in set_sink
        stream.write(b"x" * 1000)
        assert sink.pauses == 1
        assert stream.buffered == 0  # the bytes are within credit: in the outbox

    run(loop, main())


# 2. What is owed to a peer that does not read ----------------------------------------------


def opens(first: int, n: int) -> bytes:
    return b"".join(
        Frame(FrameType.OPEN, sid, b"{}").serialize() for sid in range(first, first + 2 * n, 2)
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_refused_opens_of_a_peer_that_does_not_read_are_owed_up_to_max_owed(loop):
    """Each refused OPEN costs a RESET; while writes are paused they add up (before: 467 MB
    of RSS for 56 MiB of OPENs), so the session drops the peer past ``max_owed``."""

    async def main() -> None:
        s, transport = session(on_stream=lambda stream: stream.reset("no"), max_owed=4096)
        s.pause_writing()
        s.data_received(message(opens(1, 50)))
        assert not transport.aborted  # 50 RESETs: under the limit
        s.data_received(message(opens(101, 500)))
        assert transport.aborted
        assert "bytes of replies owed while it does not read" in s.close_reason

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_replies_are_owed_only_while_the_peer_does_not_read(loop):
    async def main() -> None:
        s, transport = session(max_owed=4096)
        ping = Frame(FrameType.PING, 0, b"x" * 100).serialize()
        for _ in range(100):  # 11 KB of PONGs, but the transport takes them
            s.data_received(message(ping))
        assert not transport.aborted
        s.pause_writing()
        s.resume_writing()
        s.data_received(message(ping * 30))
        assert not transport.aborted

    run(loop, main())


# 3. Fairness and rates ----------------------------------------------------------------------

PING = Frame(FrameType.PING, 0, b"").serialize()


def pongs(transport: FakeTransport) -> int:
    return sum(f.type is FrameType.PONG for f in transport.frames(masked=False))


@pytest.mark.parametrize("loop", LOOPS)
def test_a_read_full_of_tiny_frames_is_parsed_over_several_loop_turns(loop):
    """Before: one read of 20,000 PINGs was parsed in one callback (~100 ms during which
    no other connection was served)."""

    async def main() -> None:
        s, transport = session(frames_per_turn=1000)
        start = s.mux.frames_received  # the HELLO
        s.data_received(message(PING * 20_000))
        assert s.mux.frames_received - start == 1000
        assert not transport.reading  # the rest waits; no more reads meanwhile
        steps = []
        while s.mux.frames_received - start < 20_000:
            before = s.mux.frames_received
            await asyncio.sleep(0)  # one loop turn: other callbacks run in between
            steps.append(s.mux.frames_received - before)
        assert max(steps) <= 1000, steps
        await asyncio.sleep(0)
        assert transport.reading
        assert pongs(transport) == 20_000

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_what_a_read_leaves_for_later_turns_survives_the_next_read_into_the_buffer(loop):
    """The transport decrypts every read into the session's one buffer (get_buffer);
    frames left for later turns must not be views of it, or the next read rewrites them.
    A client's session: what it receives is unmasked, so its payloads are such views."""

    async def main() -> None:
        transport = FakeTransport()
        s = Session(
            Role.CLIENT,
            transport,  # type: ignore[arg-type]
            on_stream=lambda stream: None,
            on_event=lambda event: None,
            limits=SessionLimits(frames_per_turn=1000),
        )
        s.mux.send_hello({})
        welcome = Frame(FrameType.WELCOME, 0, b'{"ok": true}').serialize()
        s.data_received(message(welcome, masked=False))
        # two messages, so both wait: the rest of the first in the mux, the second here
        read = message(PING * 1500, masked=False) + message(PING * 1500, masked=False)
        buffer = s.get_buffer(len(read))
        buffer[: len(read)] = read
        s.buffer_updated(len(read))
        assert not transport.reading  # 2,000 PINGs wait for later turns
        buffer[: len(read)] = b"\xff" * len(read)  # what the next read does to it
        while not transport.reading and not transport.aborted:
            await asyncio.sleep(0)
        assert not transport.aborted, s.close_reason
        assert sum(f.type is FrameType.PONG for f in transport.frames(masked=True)) == 3000

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_over_its_frame_rate_is_dropped(loop):
    async def main() -> None:
        s, transport = session(max_frame_rate=5000)
        s.data_received(message(PING * 4000))  # within the first second's allowance
        assert not transport.aborted
        s.data_received(message(PING * 4000))
        while not transport.aborted:
            await asyncio.sleep(0)
        assert s.close_reason == "more than 5000 frames/s (max_frame_rate)"

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_peer_over_its_open_rate_is_dropped(loop):
    async def main() -> None:
        s, transport = session(max_open_rate=100, on_stream=lambda stream: stream.reset("no"))
        s.data_received(message(opens(1, 90)))
        assert not transport.aborted
        s.data_received(message(opens(181, 20)))
        assert transport.aborted
        assert s.close_reason == "more than 100 opens/s (max_open_rate)"

    run(loop, main())


# 8. Edges ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_an_empty_data_frame_is_not_an_end_of_stream(loop):
    """Before: an empty DATA frame queued b"" and ``read()`` returned it: a false EOF."""

    async def main() -> None:
        opened: list[Stream] = []
        s, transport = session(on_stream=opened.append)
        s.data_received(
            message(
                Frame(FrameType.OPEN, 1, b"{}").serialize(),
                Frame(FrameType.DATA, 1, b"").serialize(),
                Frame(FrameType.DATA, 1, b"abc").serialize(),
                Frame(FrameType.EOF, 1).serialize(),
            )
        )
        assert await opened[0].read() == b"abc"
        assert await opened[0].read() == b""

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_websocket_close_is_answered_with_a_close(loop):
    async def main() -> None:
        s, transport = session()
        s.data_received(ws.encode(ws.Opcode.CLOSE, ws.close_payload(1001), mask=True))
        assert transport.closing and not transport.aborted
        decoder = ws.WsDecoder(expect_mask=False)
        assert decoder.feed(b"".join(transport.out))[1] == [(ws.Opcode.CLOSE, b"\x03\xe9")]

    run(loop, main())
