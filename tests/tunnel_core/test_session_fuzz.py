"""A hypothesis state machine drives random frame sequences into a real Session.

The session is the production class on a fake transport (the peer's side of the
socket): the machine sends it well-formed and malformed frames, WebSocket controls
and garbage, pauses and resumes its writes as a peer that stops reading would, and
lets the loop turn. Whatever the sequence, the session never raises into its
transport, never holds more than its limits allow, and once it dropped the peer it
holds nothing and says nothing more.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tunnel_core.protocol import ws
from tunnel_core.protocol.frames import HEADER, HEADER_SIZE, MAX_JSON, Frame, FrameType
from tunnel_core.protocol.mux import Role
from tunnel_core.session import Session, SessionLimits, Stream

WINDOW = 16 * 1024
LIMITS = SessionLimits(
    max_pending=32 * 1024,
    max_owed=8 * 1024,
    frames_per_turn=16,
    max_frame_rate=None,
    max_open_rate=None,
)
MAX_FEED = 64 * 1024  # what one rule sends: one read


class PeerTransport:
    """The socket as the session sees it; ``out`` is what the peer would read."""

    def __init__(self) -> None:
        self.out = 0
        self.written_while_paused = 0
        self.paused = False
        self.aborted = False
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.aborted, "wrote after abort"
        self.out += len(data)
        if self.paused:
            self.written_while_paused += len(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Sink:
    """A socket that takes every byte (or, when ``slow``, holds them until resumed)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.held = 0

    def stream_data(self, data: bytes) -> None:
        self.stream.consumed(len(data))

    def stream_eof(self) -> None: ...
    def stream_reset(self, reason: str) -> None: ...
    def pause_producing(self) -> None: ...
    def resume_producing(self) -> None: ...


ids = st.integers(0, 40)
payloads = st.binary(max_size=2048)
frame_types = st.sampled_from(list(FrameType))


@settings(deadline=None, max_examples=200, stateful_step_count=50)
class SessionMachine(RuleBasedStateMachine):
    @initialize(sinks=st.booleans(), accept=st.booleans(), chaos=st.booleans())
    def start(self, sinks: bool, accept: bool, chaos: bool) -> None:
        """``chaos``: the peer also sends malformed frames (a run then ends early in a
        drop); without it, only well-formed ones, so runs get deep into stream states."""
        self.chaos = chaos
        self.loop = asyncio.new_event_loop()
        self.transport = PeerTransport()
        self.opened: list[Stream] = []
        self.next_open = 1
        self.pause_base = 0

        def on_stream(stream: Stream) -> None:
            self.opened.append(stream)
            if not accept:
                stream.reset("no")
            elif sinks:
                stream.set_sink(Sink(stream))

        async def make() -> Session:
            return Session(
                Role.SERVER,
                self.transport,  # type: ignore[arg-type]
                on_stream=on_stream,
                on_event=lambda event: None,
                initial_window=WINDOW,
                limits=LIMITS,
            )

        self.session = self.loop.run_until_complete(make())
        self.feed_frames(Frame(FrameType.HELLO, 0, b'{"mode":"fuzz"}').serialize())
        if self.session.mux.phase.value == "await WELCOME":
            self.session.mux.send_welcome({"ok": True})

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.session.connection_lost(None)
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    # What the peer sends ----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """One read, delivered as a transport would: never while reading is paused."""
        assert len(data) <= MAX_FEED + 16
        for _ in range(100_000):
            if self.transport.reading or self.transport.closing:
                break
            self.loop.run_until_complete(asyncio.sleep(0))
        else:
            raise AssertionError("reading stayed paused")
        self.session.data_received(data)  # must never raise

    def feed_frames(self, *frames: bytes) -> None:
        self.feed(ws.encode(ws.Opcode.BINARY, b"".join(frames), mask=True))

    @precondition(lambda self: self.chaos)
    @rule(sid=ids, size=st.integers(0, 3 * WINDOW // 2))
    def data(self, sid: int, size: int) -> None:
        self.feed_frames(HEADER.pack(FrameType.DATA, sid, size) + b"d" * size)

    @rule()
    def open_next(self) -> None:
        self.feed_frames(Frame(FrameType.OPEN, self.next_open, b'{"port":1}').serialize())
        self.next_open += 2

    @precondition(lambda self: self.chaos)
    @rule(ftype=frame_types, sid=ids, payload=payloads)
    def any_frame(self, ftype: FrameType, sid: int, payload: bytes) -> None:
        """Any type on any stream with any payload: mostly protocol errors."""
        self.feed_frames(HEADER.pack(ftype, sid, len(payload)) + payload)

    @precondition(lambda self: self.chaos)
    @rule(sid=ids, increment=st.integers(1, 1 << 20))
    def window(self, sid: int, increment: int) -> None:
        self.feed_frames(HEADER.pack(FrameType.WINDOW, sid, 4) + increment.to_bytes(4, "big"))

    @precondition(lambda self: self.chaos)
    @rule(sid=ids, kind=st.sampled_from([FrameType.EOF, FrameType.RESET]))
    def end(self, sid: int, kind: FrameType) -> None:
        self.feed_frames(HEADER.pack(kind, sid, 0))

    @rule(n=st.integers(1, 2500), size=st.integers(0, 16))
    def pings(self, n: int, size: int) -> None:
        self.feed_frames(Frame(FrameType.PING, 0, b"p" * size).serialize() * n)

    @precondition(lambda self: self.chaos)
    @rule(opcode=st.sampled_from([ws.Opcode.PING, ws.Opcode.PONG, ws.Opcode.CLOSE]))
    def ws_control(self, opcode: ws.Opcode) -> None:
        self.feed(ws.encode(opcode, b"\x03\xe8", mask=True))

    @precondition(lambda self: self.chaos)
    @rule(data=st.binary(min_size=1, max_size=64))
    def garbage(self, data: bytes) -> None:
        self.feed(data)

    @precondition(lambda self: self.chaos)
    @rule(data=st.binary(min_size=1, max_size=64), cut=st.integers(1, 63))
    def split(self, data: bytes, cut: int) -> None:
        """A well-formed message split at an arbitrary byte."""
        message = ws.encode(ws.Opcode.BINARY, data, mask=True)
        self.feed(message[:cut])
        self.feed(message[cut:])

    def live(self, index: int) -> Stream | None:
        streams = list(self.session.streams.values())
        return streams[index % len(streams)] if streams else None

    @rule(index=st.integers(0, 20), size=st.integers(0, WINDOW))
    def data_within_credit(self, index: int, size: int) -> None:
        stream = self.live(index)
        if stream is not None:
            state = self.session.mux._streams.get(stream.id)
            if state is not None and state.state.value in ("open", "half-closed (local)"):
                size = min(size, state.recv_window)
                self.feed_frames(HEADER.pack(FrameType.DATA, stream.id, size) + b"v" * size)

    @rule(index=st.integers(0, 20), increment=st.integers(1, WINDOW))
    def grant(self, index: int, increment: int) -> None:
        stream = self.live(index)
        if stream is not None:
            frame = HEADER.pack(FrameType.WINDOW, stream.id, 4) + increment.to_bytes(4, "big")
            self.feed_frames(frame)

    @rule(index=st.integers(0, 20), kind=st.sampled_from([FrameType.EOF, FrameType.RESET]))
    def end_a_stream(self, index: int, kind: FrameType) -> None:
        stream = self.live(index)
        if stream is not None:
            state = self.session.mux.state(stream.id).value
            if kind is FrameType.RESET or state in ("open", "half-closed (local)"):
                self.feed_frames(HEADER.pack(kind, stream.id, 0))

    # What the local side does ---------------------------------------------------------

    @rule()
    def peer_stops_reading(self) -> None:
        if not self.transport.paused:
            self.transport.paused = True
            self.pause_base = self.transport.written_while_paused
            self.session.pause_writing()

    @rule()
    def peer_reads_again(self) -> None:
        if self.transport.paused:
            self.transport.paused = False
            self.session.resume_writing()

    @precondition(lambda self: not self.transport.closing)
    @rule(size=st.integers(1, 2 * WINDOW))
    def local_stream_writes(self, size: int) -> None:
        stream = self.session.open_stream({"port": 1})
        stream.write(b"w" * size)
        self.opened.append(stream)

    @rule(size=st.integers(1, 256 * 1024))
    def write_to_an_open_stream(self, size: int) -> None:
        live = [s for s in self.opened if not s.done and s._reset_reason is None]
        if live and not live[0]._eof_sent:
            live[0].write(b"x" * size)

    @rule(turns=st.integers(1, 5))
    def loop_turns(self, turns: int) -> None:
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    # Invariants -------------------------------------------------------------------------

    @invariant()
    def input_held_is_bounded(self) -> None:
        s = self.session
        decoder = s.mux._decoder
        assert decoder.buffered <= HEADER_SIZE + max(MAX_JSON, 2048)
        assert decoder.backlog <= MAX_FEED + 16
        assert sum(map(len, s._backlog)) <= 2 * (MAX_FEED + 16)

    @invariant()
    def streams_hold_at_most_their_window_and_their_limit(self) -> None:
        for stream in self.session.streams.values():
            assert stream.buffered <= LIMITS.max_pending + 256 * 1024
            assert sum(map(len, stream._rbuf)) <= WINDOW

    @invariant()
    def replies_owed_are_bounded(self) -> None:
        s, transport = self.session, self.transport
        if s.write_paused and not transport.aborted:
            assert s._owed() <= LIMITS.max_owed

    @invariant()
    def a_dropped_peer_leaves_nothing_behind(self) -> None:
        if self.transport.aborted:
            assert self.session.close_reason
            assert not self.session.streams  # and PeerTransport.write asserts no output


TestSession = SessionMachine.TestCase
