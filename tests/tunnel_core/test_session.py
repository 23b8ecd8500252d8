"""The control plane and the Stream API in one process, over real TLS on loopback."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from tests.certs import self_signed
from tunnel_core import tls
from tunnel_core.client import Backoff, ClientConfig, connect, run_client
from tunnel_core.errors import ConfigError, Refused, StreamClosedError
from tunnel_core.ports import parse_port_map, parse_port_ranges
from tunnel_core.server import ServerConfig, TunnelServer
from tunnel_core.session import Session, Stream

pytestmark = pytest.mark.network


class EchoPlane:
    """A minimal data plane: remembers sessions; tests open streams on them."""

    mode = "echo"

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.refuse: Refused | None = None

    async def register(self, session: Session, hello: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise self.refuse
        self.sessions.append(session)
        return {"echo": hello.get("name")}

    def unregister(self, session: Session) -> None:
        self.sessions.remove(session)

    def on_stream(self, session: Session, stream: Stream) -> None:
        stream.reset("no")

    def health(self) -> dict[str, Any]:
        return {}

    async def close(self) -> None:
        pass


async def echo_handler(stream: Stream) -> None:
    """The client side: echo every byte back, then half-close."""
    while data := await stream.read():
        stream.write(data)
        await stream.drain()
    stream.write_eof()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def start(window: int | None = None) -> tuple[TunnelServer, EchoPlane, ClientConfig]:
    cert, key, fingerprint = self_signed()
    plane = EchoPlane()
    server = TunnelServer(
        ServerConfig(
            token="t0ken",
            ssl_context=tls.server_context_from_pem(cert, key),
            bind="127.0.0.1",
            control_port=0,
            initial_window=window,
        ),
        plane,
    )
    await server.start()
    config = ClientConfig(
        url=f"wss://127.0.0.1:{server.port}",
        token="t0ken",
        hello={"mode": "echo", "name": "x"},
        fingerprint=fingerprint,
        initial_window=window,
    )
    return server, plane, config


def spawn(stream: Stream) -> None:
    asyncio.get_running_loop().create_task(echo_handler(stream))


def test_streams_echo_with_the_coroutine_api_under_small_windows():
    async def main() -> None:
        server, plane, config = await start(window=4096)
        session, welcome = await connect(config, spawn)
        assert welcome["ok"] and welcome["echo"] == "x"
        payloads = [os.urandom(50_000 + i) for i in range(5)]

        async def roundtrip(payload: bytes) -> bytes:
            stream = plane.sessions[0].open_stream({"n": len(payload)})
            writer = asyncio.ensure_future(_write_all(stream, payload))
            got = bytearray()
            while chunk := await stream.read():
                got += chunk
            await writer
            return bytes(got)

        results = await asyncio.gather(*(roundtrip(p) for p in payloads))
        assert results == payloads
        session.close()
        await server.close()

    run(main())


async def _write_all(stream: Stream, payload: bytes) -> None:
    for pos in range(0, len(payload), 7000):
        stream.write(payload[pos : pos + 7000])
        await stream.drain()
    stream.write_eof()


def test_reset_reaches_the_reader_and_other_streams_continue():
    async def main() -> None:
        server, plane, config = await start()
        opened: list[Stream] = []
        session, _ = await connect(config, opened.append)
        a = plane.sessions[0].open_stream({})
        b = plane.sessions[0].open_stream({})
        await _until(lambda: len(opened) == 2)
        opened[0].reset("upstream unreachable")
        with pytest.raises(StreamClosedError, match="upstream unreachable"):
            await a.read()
        opened[1].write(b"fine")
        assert await b.read() == b"fine"
        session.close()
        await server.close()

    run(main())


def test_refusal_carries_the_message_and_retry_flag():
    async def main() -> None:
        server, plane, config = await start()
        plane.refuse = Refused("port 80 outside the allow-list", retry=False)
        with pytest.raises(Refused, match="port 80 outside") as info:
            await connect(config, spawn)
        assert info.value.retry is False
        await server.close()

    run(main())


def test_losing_the_connection_resets_its_streams():
    async def main() -> None:
        server, plane, config = await start()
        session, _ = await connect(config, spawn)
        stream = plane.sessions[0].open_stream({})
        session.transport.abort()
        with pytest.raises(StreamClosedError):
            while await stream.read():
                pass
        await _until(lambda: not plane.sessions)
        await server.close()

    run(main())


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def test_backoff_is_capped_exponential_with_injectable_jitter():
    low = Backoff(initial=1, cap=8, jitter=lambda: 0.0)
    high = Backoff(initial=1, cap=8, jitter=lambda: 1.0)
    assert [low.delay(n) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert [high.delay(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]
    assert high.delay(10_000) == 8


def test_fingerprints_accept_colons_and_upper_case():
    hexdigits = "ab" * 32
    colons = ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2)).upper()
    assert tls.parse_fingerprint(f"SHA256:{colons}") == f"sha256:{hexdigits}"
    assert tls.parse_fingerprint(hexdigits) == f"sha256:{hexdigits}"
    with pytest.raises(ConfigError):
        tls.parse_fingerprint("sha1:" + hexdigits)


def test_port_flags():
    assert parse_port_map("8000,2222:22") == {8000: 8000, 2222: 22}
    assert parse_port_ranges("1024-65535,80") == [(1024, 65535), (80, 80)]
    for bad in ("", "x", "70000", "8000,8000", "1:2:3"):
        with pytest.raises(ConfigError):
            parse_port_map(bad)
    for bad in ("", "9-1", "0-10", "a-b"):
        with pytest.raises(ConfigError):
            parse_port_ranges(bad)


def test_silent_server_is_detected_by_keepalive_and_the_client_reconnects():
    async def main() -> None:
        server, plane, config = await start()
        config.keepalive = 0.1
        config.backoff = Backoff(initial=0.01, cap=0.02, jitter=lambda: 0.0)
        connected: list[dict[str, Any]] = []
        stop = asyncio.Event()
        task = asyncio.ensure_future(run_client(config, spawn, stop, connected.append))
        await _until(lambda: len(plane.sessions) == 1)
        first = plane.sessions[0]
        first.transport.pause_reading()  # alive at TCP level, but never answers a ping
        await _until(lambda: len(connected) == 2)
        assert plane.sessions[-1] is not first
        stop.set()
        await task
        first.transport.abort()
        await server.close()

    run(main())


def test_client_reconnects_after_the_server_drops_the_session_and_streams_pass_again():
    """The server drops a client's session (as on a protocol error) while a stream is
    open; the client's reconnect loop must register again and carry new streams."""

    async def main() -> None:
        server, plane, config = await start()
        config.backoff = Backoff(initial=0.01, cap=0.02, jitter=lambda: 0.0)
        connected: list[dict[str, Any]] = []
        stop = asyncio.Event()
        task = asyncio.ensure_future(run_client(config, spawn, stop, connected.append))
        await _until(lambda: len(plane.sessions) == 1)
        first = plane.sessions[0]
        in_flight = first.open_stream({})
        in_flight.write(b"x" * 100_000)
        for round_ in range(3):
            dropped = plane.sessions[0]
            dropped.transport.abort()  # what "dropping PEER: ..." does
            await _until(lambda n=round_ + 2: len(connected) == n and len(plane.sessions) == 1)
            assert plane.sessions[0] is not dropped
            stream = plane.sessions[0].open_stream({})
            stream.write(b"after %d" % round_)
            stream.write_eof()
            got = bytearray()
            while chunk := await stream.read():
                got += chunk
            assert bytes(got) == b"after %d" % round_
        with pytest.raises(StreamClosedError):
            while await in_flight.read():
                pass
        stop.set()
        await task
        await server.close()

    run(main())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /connect HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000, b"400"),  # no end
        (b"GET /connect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\n\r\n", b"426"),
        (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"\x16\x03garbage\r\n\r\n", b"400"),
    ],
    ids=["huge-header", "no-upgrade", "post", "unknown-path", "garbage"],
)
def test_bad_http_on_the_control_port_gets_an_error_and_the_server_stays_up(request_bytes, status):
    async def main() -> None:
        server, plane, config = await start()
        ctx = tls.client_context()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx)
        writer.write(request_bytes)
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ")[1] == status
        session, _ = await connect(config, spawn)  # still serving
        session.close()
        await server.close()

    run(main())


class _FakeTransport:
    """Collects what a Session writes; remembers whether it was aborted."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.pieces: list[bytes] = []  # as given, not copied
        self.aborted = False
        self.closing = False

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def writelines(self, chunks: list[bytes]) -> None:
        self.pieces.extend(chunks)
        self.out.extend(bytes(c) for c in chunks)

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True

    def close(self) -> None:
        self.closing = True


def test_window_then_reset_in_one_message_resets_only_that_stream():
    """Regression (iperf3 loop): the peer granted credit and reset a stream in one
    message while we had bytes pending; the session sent on the closed stream and
    dropped the whole connection ("stream N cannot send in state closed")."""
    from tunnel_core.protocol import ws
    from tunnel_core.protocol.frames import Frame, FrameType, window_frame
    from tunnel_core.protocol.mux import Role

    async def scenario() -> None:
        transport = _FakeTransport()
        session = Session(
            Role.SERVER,
            transport,  # type: ignore[arg-type]
            on_stream=lambda stream: None,
            on_event=lambda event: None,
            initial_window=64,
        )
        hello = Frame(FrameType.HELLO, 0, b"{}").serialize()
        session.data_received(ws.encode(ws.Opcode.BINARY, hello, mask=True))
        session.mux.send_welcome({"ok": True})
        a, b = session.open_stream({}), session.open_stream({})
        a.write(b"x" * 100)  # 36 bytes wait for credit
        assert a.paused
        reset = Frame(FrameType.RESET, a.id, b"upstream closed").serialize()
        message = window_frame(a.id, 64) + reset
        session.data_received(ws.encode(ws.Opcode.BINARY, message, mask=True))
        assert not transport.aborted
        with pytest.raises(StreamClosedError):
            await a.read()
        b.write(b"still fine")
        session._flush()  # what the scheduled call_soon would do
        assert not transport.aborted
        assert any(b"still fine" in chunk for chunk in transport.out)

    run(scenario())


def test_the_server_sets_tcp_keepalive_pings_each_client_and_expires_a_silent_one():
    import socket

    from tunnel_core.protocol.mux import PingReceived

    async def main() -> None:
        server, plane, config = await start()
        server.config.keepalive, server.config.keepalive_timeout = 0.05, 0.3
        events: list[Any] = []
        session, _ = await connect(config, spawn, events.append)
        ours = plane.sessions[0]
        sock = ours.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 300
        await _until(lambda: any(isinstance(e, PingReceived) for e in events))
        session.transport.pause_reading()  # the client goes silent (its PONGs stop)
        await asyncio.wait_for(ours.closed, 5)
        assert "(keepalive_timeout)" in ours.close_reason
        assert not plane.sessions
        session.transport.abort()
        await server.close()

    run(main())


def test_sides_with_different_windows_work_together():
    """Before: a server with a 64 KiB window and a client with the default 4 MiB broke
    each other ("peer sent beyond its credit")."""

    async def main() -> None:
        server, plane, config = await start(window=65536)
        config.initial_window = None  # the client keeps the default
        session, _ = await connect(config, spawn)
        payload = os.urandom(3 << 20)
        stream = plane.sessions[0].open_stream({})
        writer = asyncio.ensure_future(_write_all(stream, payload))
        got = bytearray()
        while chunk := await stream.read():
            got += chunk
        await writer
        assert bytes(got) == payload
        session.close()
        await server.close()

    run(main())


def test_small_frames_reach_the_transport_as_one_piece_and_large_ones_uncopied():
    """The TLS transport makes a record of every piece it is given: the headers and
    small payloads of one flush are joined (one record), a large payload is not copied."""
    from tunnel_core.protocol import ws
    from tunnel_core.protocol.frames import Frame, FrameType
    from tunnel_core.protocol.mux import Role

    async def scenario() -> None:
        transport = _FakeTransport()
        session = Session(
            Role.SERVER,
            transport,  # type: ignore[arg-type]
            on_stream=lambda stream: None,
            on_event=lambda event: None,
        )
        hello = Frame(FrameType.HELLO, 0, b"{}").serialize()
        session.data_received(ws.encode(ws.Opcode.BINARY, hello, mask=True))
        session.mux.send_welcome({"ok": True})
        session._flush()
        transport.out.clear()
        streams = [session.open_stream({}) for _ in range(3)]
        for stream in streams:
            stream.write(b"+OK\r\n")
        session._flush()
        assert len(transport.out) == 1
        assert transport.out[0].count(b"+OK\r\n") == 3
        transport.out.clear()
        big = b"x" * (64 * 1024)
        streams[0].write(big)
        session._flush()
        assert any(piece is big for piece in transport.pieces)
        assert len(transport.out) == 2  # the headers before it joined, then it

    run(scenario())
