"""Engine hardening: hostile peers against real server and client processes.

Each test drives a peer written with the engine's own codec (tests/tunnel_core/hostile.py)
against a real ``tunnel-core`` process over real TLS on loopback, under both event
loops (``TUNNEL_CORE_LOOP=uvloop`` and ``=asyncio``), and asserts the
exact error in the log or a bounded RSS (``/proc/PID/status``). The volumes are sized
so that each attack takes seconds, and the bounds sit far from both the fixed figure
and the figure of the bug, so a loaded machine does not make them flaky.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import free_port, wait_for
from tests.tunnel_core.hostile import (
    MB,
    HostileClient,
    HostileServer,
    Peer,
    frame,
    hello,
    peak_mb,
    rss_mb,
)
from tests.tunnel_core.http.test_tunnel import http_client, http_server
from tunnel_core.protocol import ws
from tunnel_core.protocol.frames import FrameType, json_payload

pytestmark = pytest.mark.network
STALL = 1.0  # a sender blocked this long is being held back by the tunnel
IO_TIMEOUT = 30.0


@pytest.fixture(params=["uvloop", "asyncio"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the engine processes of the test, servers and clients, under this event loop."""
    monkeypatch.setenv("TUNNEL_CORE_LOOP", str(request.param))
    return str(request.param)


def push(port: int, total: int, sent: list[int]) -> None:
    """Connect to ``port`` and send up to ``total`` bytes; stop once sends block for STALL."""
    block = b"p" * MB
    count = 0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=STALL) as conn:
            while count < total:
                count += conn.send(block)
            conn.settimeout(STALL)
    except OSError:  # socket.timeout: the tunnel stopped reading us, as it should
        pass
    sent.append(count)


def push_all(port: int, n: int, total: int) -> list[int]:
    sent: list[int] = []
    threads = [threading.Thread(target=push, args=(port, total, sent)) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return sent


class Pusher:
    """An upstream that sends ``total`` bytes to every connection until they block."""

    def __init__(self, total: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.total = total
        self.sent: list[int] = []
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._push, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _push(self, conn: socket.socket) -> None:
        block, count = b"u" * MB, 0
        conn.settimeout(STALL)
        with conn:
            try:
                while count < self.total:
                    count += conn.send(block)
            except OSError:
                pass
            self.sent.append(count)
            try:  # keep the connection open so the client keeps its buffers
                conn.settimeout(30)
                conn.recv(1)
            except OSError:
                pass

    def wait(self, n: int) -> None:
        wait_for(lambda: len(self.sent) >= n, timeout=60, what=f"{n} upstream pushes")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def pusher() -> Iterator[Pusher]:
    upstream = Pusher(25 * MB)
    yield upstream
    upstream.close()


# 1. Backpressure -------------------------------------------------------------------------


def test_public_connections_accepted_while_the_client_is_stalled_stay_bounded(engine, loop):
    """A client that stopped reading: the first connections fill the control link (its
    write buffer is full), the next ones are accepted while it is. Each may hold its
    window plus one read, never what the public side sends (was 25 MB each, uvloop)."""
    server = engine.tcp_server()
    public = free_port()
    client = HostileClient(server)
    client.register([public])  # and never reads again
    base = rss_mb(server.process.pid)
    first = push_all(public, 4, 25 * MB)
    later = push_all(public, 16, 25 * MB)
    rss = rss_mb(server.process.pid)
    print(f"{loop}: rss {base:.0f} -> {rss:.0f} MB; first {first}; later {later}")
    assert rss < 200, (rss, later)
    assert sum(later) < 16 * 8 * MB, later
    client.close()


def test_upstream_connections_opened_while_the_server_is_stalled_stay_bounded(engine, loop, pusher):
    """The same on the client: a server that never reads opens streams; the upstream
    pushes 25 MB into each. Streams opened after the link filled must stay paused."""
    hostile = HostileServer(engine)
    try:
        client = hostile.client(engine, "--ports", f"9000:{pusher.port}")
        peer = hostile.accept(welcome={"ok": True, "version": 1, "ports": [9000]})
        meta = json_payload({"port": 9000, "remote": "x"})
        peer.send(*(frame(FrameType.OPEN, sid, meta) for sid in (2, 4, 6, 8)))
        pusher.wait(4)  # and the hostile server never reads
        base = rss_mb(client.pid)
        peer.send(*(frame(FrameType.OPEN, sid, meta) for sid in range(10, 42, 2)))
        pusher.wait(20)
        rss = rss_mb(client.pid)
        later = pusher.sent[4:]
        print(f"{loop}: rss {base:.0f} -> {rss:.0f} MB; first {pusher.sent[:4]}; later {later}")
        assert rss < 200, (rss, later)
        assert sum(later) < 16 * 8 * MB, later
        peer.close()
    finally:
        hostile.close()


# 2. Replies owed to a peer that does not read ----------------------------------------------

PING_64K = frame(FrameType.PING, 0, b"p" * 65536)


@pytest.mark.parametrize(
    ("flood", "total"),
    [
        (lambda peer: peer.message(*[PING_64K] * 16), 300 * MB),  # mux PINGs
        (lambda peer: b"".join([ws.encode(ws.Opcode.PING, b"w" * 125, mask=True)] * 8192),
         40 * MB),  # WebSocket pings
    ],
    ids=["mux-ping", "ws-ping"],
)  # fmt: skip
def test_a_client_that_pings_and_never_reads_is_dropped(engine, loop, flood, total):
    """Before: every PONG queued (300 MB of PINGs: 30 -> 340 MB RSS, never dropped)."""
    server = engine.tcp_server()
    client = HostileClient(server)
    client.register([free_port()])
    sent = client.flood(flood(client), total)
    server.process.wait_log("bytes of replies owed while it does not read")
    peak = peak_mb(server.process.pid)
    print(f"{loop}: sent {sent / MB:.0f} MB, server peak {peak:.0f} MB")
    assert peak < 150
    assert server.clients() == 0
    client.close()


def test_a_server_that_pings_and_never_reads_is_dropped_by_the_client(engine, loop):
    hostile = HostileServer(engine)
    try:
        client = hostile.client(engine, "--ports", "9000")
        peer = hostile.accept(welcome={"ok": True, "version": 1, "ports": [9000]})
        sent = peer.flood(peer.message(*[PING_64K] * 16), 300 * MB)
        client.wait_log("bytes of replies owed while it does not read")
        peak = peak_mb(client.pid)
        print(f"{loop}: sent {sent / MB:.0f} MB, client peak {peak:.0f} MB")
        assert peak < 150
        peer.close()
    finally:
        hostile.close()


# 3. One client must not starve the others ---------------------------------------------------


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


class EchoUpstream:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                echo(conn)
            except OSError:
                pass


def probe(port: int) -> float:
    """One round trip through a tunnel; seconds it took."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as conn:
        conn.sendall(b"probe")
        assert conn.recv(5) == b"probe"
    return time.monotonic() - start


def test_a_client_flooding_tiny_frames_is_cut_and_the_others_are_served(engine, loop):
    """Before: the server processed a whole read of PINGs per turn (tens of thousands of
    frames), so every other client waited for the whole flood, which never ended."""
    upstream = EchoUpstream()
    server = engine.tcp_server()
    public = free_port()
    engine.tcp_client(server, f"{public}:{upstream.port}")
    wait_for(lambda: server.clients() == 1)
    wait_for(lambda: _answers(public), what="the good tunnel")
    flooder = HostileClient(server)
    flooder.register([free_port()])
    flooder.drain_in_background()  # it reads its PONGs: nothing is owed
    pings = flooder.message(*[frame(FrameType.PING)] * 8192)
    flood = threading.Thread(target=flooder.flood, args=(pings, 40 * MB))
    flood.start()
    latencies = []
    while flood.is_alive():
        latencies.append(probe(public))
    flood.join()
    print(f"{loop}: {len(latencies)} probes, max {max(latencies, default=0):.3f}s")
    server.process.wait_log("frames/s (max_frame_rate)")
    assert server.clients() == 1
    assert probe(public) < IO_TIMEOUT
    flooder.close()
    upstream.sock.close()


def _answers(port: int) -> bool:
    try:
        probe(port)
    except OSError:
        return False
    return True


def test_a_client_opening_streams_in_a_flood_is_cut(engine, loop):
    server = engine.tcp_server()
    client = HostileClient(server)
    client.register([free_port()])
    opens = b"".join(frame(FrameType.OPEN, sid, b"{}") for sid in range(1, 2 * 50_000, 2))
    client.flood(client.message(opens), len(opens) + 1)
    server.process.wait_log("opens/s (max_open_rate)")
    assert peak_mb(server.process.pid) < 150
    client.close()


# 4. A vanished client ---------------------------------------------------------------------


def test_a_vanished_client_is_expired_and_its_ports_go_to_the_next(engine, loop):
    """The client's host vanished without a FIN (SIGSTOP: the kernel still acks, nothing
    answers). Before: /healthz counted it for good and its ports stayed taken."""
    upstream = EchoUpstream()
    server = engine.tcp_server("--keepalive", "0.5")
    public = free_port()
    first = engine.tcp_client(server, f"{public}:{upstream.port}")
    wait_for(lambda: server.clients() == 1, what="the first client")
    first.signal(signal.SIGSTOP)
    server.process.wait_log("nothing received for", timeout=10)
    assert "(keepalive_timeout)" in server.process.stderr()
    wait_for(lambda: server.clients() == 0, timeout=5, what="the session to expire")
    engine.tcp_client(server, f"{public}:{upstream.port}")
    wait_for(lambda: _answers(public), what="the next client to serve the port")
    upstream.sock.close()


def test_an_http_server_expires_a_vanished_client_on_its_keepalive(engine) -> None:
    """HTTP mode takes --keepalive too (it had only the 15 s default)."""
    server = http_server(engine, "--keepalive", "0.5")
    client = http_client(engine, server, "http://127.0.0.1:9")
    server.wait_clients(1)
    client.signal(signal.SIGSTOP)
    server.info.process.wait_log("nothing received for", timeout=10)
    assert "(keepalive_timeout)" in server.info.process.stderr()
    server.wait_clients(0)


def test_a_client_reconnecting_with_the_same_id_takes_its_ports_over_at_once(engine, loop):
    """Its old connection is dead but the server cannot know yet. Before: the new one was
    refused "already served by another client" until the old one timed out."""
    upstream = EchoUpstream()
    server = engine.tcp_server()
    public = free_port()
    old = HostileClient(server)
    old.register([public], client_id="laptop-1")  # then silent: the path broke
    new = engine.tcp_client(server, f"{public}:{upstream.port}", "--client-id", "laptop-1")
    new.wait_log(f"connected to {server.url}")
    server.process.wait_log("replaced by a new connection of the same client")
    wait_for(lambda: _answers(public), what="the new connection to serve the port")
    assert server.clients() == 1
    assert "already served" not in new.stderr()
    old.close()
    upstream.sock.close()


# 8. Protocol edges: the exact error, on both sides ----------------------------------------


def unfinished(opcode: ws.Opcode, payload: bytes, *, mask: bool) -> bytes:
    """A WebSocket data frame without FIN (the first of a fragmented message)."""
    out = bytearray(ws.encode(opcode, payload, mask=mask))
    out[0] &= 0x7F
    return bytes(out)


VIOLATIONS = {
    "data-after-eof": "stream 2: DATA after the peer's EOF",
    "continuation-first": "WebSocket CONTINUATION without a message started",
    "message-inside-message": "WebSocket message started inside a fragmented one",
}


def violate(peer: Peer, kind: str) -> None:
    mask = peer.mask
    if kind == "data-after-eof":
        peer.send(frame(FrameType.EOF, 2), frame(FrameType.DATA, 2, b"more"))
    elif kind == "continuation-first":
        peer.conn.sendall(ws.encode(ws.Opcode.CONTINUATION, b"x", mask=mask))
    else:
        peer.conn.sendall(
            unfinished(ws.Opcode.BINARY, b"", mask=mask)
            + ws.encode(ws.Opcode.BINARY, b"", mask=mask)
        )


@pytest.mark.parametrize("kind", list(VIOLATIONS))
def test_protocol_violations_of_a_client_drop_it_with_the_exact_error(engine, loop, kind):
    """Before: DATA after EOF was dropped silently, and a CONTINUATION no message had
    started (or a message inside a fragmented one) was taken as data."""
    server = engine.tcp_server()
    public = free_port()
    client = HostileClient(server)
    client.register([public])
    with socket.create_connection(("127.0.0.1", public), timeout=IO_TIMEOUT):
        assert client.expect(FrameType.OPEN).stream_id == 2
        violate(client, kind)
        server.process.wait_log(f": {VIOLATIONS[kind]}")
    assert "dropping 127.0.0.1:" in server.process.stderr()
    assert server.clients() == 0
    client.close()


@pytest.mark.parametrize("kind", list(VIOLATIONS))
def test_protocol_violations_of_a_server_drop_it_with_the_exact_error(engine, loop, kind):
    upstream = EchoUpstream()
    hostile = HostileServer(engine)
    try:
        client = hostile.client(engine, "--ports", f"9000:{upstream.port}")
        peer = hostile.accept(welcome={"ok": True, "version": 1, "ports": [9000]})
        peer.send(frame(FrameType.OPEN, 2, json_payload({"port": 9000})))
        violate(peer, kind)
        client.wait_log(f"dropping {hostile.url}: {VIOLATIONS[kind]}")
        peer.close()
    finally:
        hostile.close()
        upstream.sock.close()


def test_a_non_utf8_accept_key_is_a_clean_protocol_error(engine, loop):
    """Before: ``UnicodeDecodeError`` escaped from the client's handshake."""
    hostile = HostileServer(engine)
    try:
        client = hostile.client(engine, "--ports", "9000")
        hostile.accept(accept_key=lambda key: b"\xff\xfe\xfd").close()
        client.wait_log("the server's WebSocket accept key is wrong")
        assert "Traceback" not in client.stderr()
    finally:
        hostile.close()


def test_a_welcome_whose_ok_is_not_true_is_not_success(engine, loop):
    """Before: ``{"ok": "yes"}`` counted as a successful registration."""
    hostile = HostileServer(engine)
    try:
        client = hostile.client(engine, "--ports", "9000")
        peer = hostile.accept(welcome={"ok": "yes"})
        client.wait_log("WELCOME 'ok' must be true or false")
        assert "connected to" not in client.stderr()
        peer.close()
    finally:
        hostile.close()


def read_close(peer: Peer) -> bytes | None:
    """Read until the peer hangs up; the payload of the WebSocket Close it sent, if any."""
    try:
        while True:
            peer.next_frame()
    except (OSError, ConnectionResetError):
        pass
    closes = [payload for opcode, payload in peer.controls if opcode is ws.Opcode.CLOSE]
    return closes[0] if closes else None


def test_the_server_answers_a_websocket_close_with_a_close(engine, loop):
    server = engine.tcp_server()
    client = HostileClient(server)
    client.register([free_port()])
    client.conn.sendall(ws.encode(ws.Opcode.CLOSE, ws.close_payload(1000), mask=True))
    assert read_close(client) == ws.close_payload(1000)  # before: a TLS/TCP close only
    client.close()


def test_the_client_answers_a_websocket_close_with_a_close(engine, loop):
    hostile = HostileServer(engine)
    try:
        hostile.client(engine, "--ports", "9000")
        peer = hostile.accept(welcome={"ok": True, "version": 1, "ports": [9000]})
        peer.conn.sendall(ws.encode(ws.Opcode.CLOSE, ws.close_payload(1001), mask=False))
        assert read_close(peer) == ws.close_payload(1001)
        peer.close()
    finally:
        hostile.close()


def test_a_public_connection_whose_tunnel_broke_gets_a_reset_not_a_fin(engine, loop):
    """Before: the public client saw a clean end (b"") and took a truncated stream for
    a whole one."""
    server = engine.tcp_server()
    public = free_port()
    client = HostileClient(server)
    client.register([public])
    with socket.create_connection(("127.0.0.1", public), timeout=IO_TIMEOUT) as conn:
        sid = client.expect(FrameType.OPEN).stream_id
        client.send(frame(FrameType.DATA, sid, b"partial"))
        assert conn.recv(7) == b"partial"
        client.send(frame(FrameType.RESET, sid, b"upstream died"))
        with pytest.raises(ConnectionResetError):
            conn.recv(100)
    client.close()


def test_an_upstream_connection_whose_tunnel_broke_gets_a_reset_not_a_fin(engine, loop):
    accepted: list[socket.socket] = []
    upstream = socket.create_server(("127.0.0.1", 0))
    hostile = HostileServer(engine)
    try:
        hostile.client(engine, "--ports", f"9000:{upstream.getsockname()[1]}")
        peer = hostile.accept(welcome={"ok": True, "version": 1, "ports": [9000]})
        peer.send(frame(FrameType.OPEN, 2, json_payload({"port": 9000})))
        upstream.settimeout(IO_TIMEOUT)
        conn, _ = upstream.accept()
        accepted.append(conn)
        conn.settimeout(IO_TIMEOUT)
        peer.send(frame(FrameType.DATA, 2, b"partial"))
        assert conn.recv(7) == b"partial"
        peer.send(frame(FrameType.RESET, 2, b"public side died"))
        with pytest.raises(ConnectionResetError):
            conn.recv(100)
        peer.close()
    finally:
        for conn in accepted:
            conn.close()
        upstream.close()
        hostile.close()


# Connection phases (the mux's CONNECTION_TRANSITIONS) ---------------------------------------

PHASE_ERRORS = {
    "open-before-hello": (
        [frame(FrameType.OPEN, 1, b"{}")],
        "peer sent OPEN in phase await HELLO",
    ),
    "ping-before-hello": ([frame(FrameType.PING)], "peer sent PING in phase await HELLO"),
    "second-hello": ([hello([]), hello([])], "peer sent HELLO in phase await WELCOME"),
    "ping-after-goaway": (
        [hello([]), frame(FrameType.GOAWAY, 0, b"bye"), frame(FrameType.PING)],
        "peer sent PING in phase client gone",
    ),
}


@pytest.mark.parametrize("case", list(PHASE_ERRORS))
def test_a_client_out_of_phase_is_dropped_with_the_exact_error(engine, loop, case):
    """Before: the phases lived in server.py, which only waited for a HELLO: frames
    before it, a second HELLO and frames after GOAWAY were all taken."""
    frames, error = PHASE_ERRORS[case]
    server = engine.tcp_server()
    client = HostileClient(server)
    client.send(*frames)
    server.process.wait_log(f": {error}")
    client.close()


def test_a_server_that_opens_streams_before_its_welcome_is_dropped(engine, loop):
    hostile = HostileServer(engine)
    try:
        client = hostile.client(engine, "--ports", "9000")
        peer = hostile.accept(welcome={})  # HELLO read, no WELCOME sent
        peer.send(frame(FrameType.OPEN, 2, json_payload({"port": 9000})))
        client.wait_log(f"dropping {hostile.url}: peer sent OPEN in phase await WELCOME")
        peer.close()
    finally:
        hostile.close()


@pytest.mark.parametrize("asks", [True, False], ids=["server-asks", "server-does-not"])
def test_the_client_masks_with_the_zero_key_only_when_the_server_asks(engine, asks):
    """Our server asks in its 101 answer; a server that does not (an older one, or any
    other WebSocket server) gets random keys, as RFC 6455 wants."""
    hostile = HostileServer(engine)
    try:
        hostile.client(engine, "--ports", "9000")
        peer = hostile.accept(zero_key=asks)
        first = peer.first_read  # the HELLO message: short, so its key is bytes 2-5
        assert first[1] & 0x80, "masked either way: a valid client frame"
        assert (first[2:6] == ws.ZERO_KEY) is asks
        peer.close()
    finally:
        hostile.close()


def test_the_server_asks_for_the_zero_key_and_still_takes_random_ones(engine):
    server = engine.tcp_server()
    client = HostileClient(server)  # masks with random keys
    asked = b"\r\n" + ": ".join(ws.ZERO_KEY_HEADER).encode() + b"\r\n"
    assert asked in client.upgrade_answer.lower()
    assert client.register([free_port()])["ok"] is True
    client.close()
