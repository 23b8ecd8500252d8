"""TCP mode end to end: the real CLIs as subprocesses, real TLS, loopback only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Engine, TunnelServerInfo, free_port, healthz, wait_for
from tunnel_core.protocol import ws
from tunnel_core.protocol.frames import (
    HEADER,
    Frame,
    FrameDecoder,
    FrameType,
    json_payload,
    window_frame,
)
from tunnel_core.protocol.mux import DEFAULT_WINDOW

pytestmark = pytest.mark.network
IO_TIMEOUT = 30.0


class Upstream:
    """A threaded TCP server on loopback running ``handler(conn)`` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.handler(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(1 << 16):
        conn.sendall(data)


def reverse_after_eof(conn: socket.socket) -> None:
    """Answers only after the peer half-closed: proves EOF travels and replies still flow."""
    data = bytearray()
    while chunk := conn.recv(1 << 16):
        data += chunk
    conn.sendall(bytes(reversed(data)))


@pytest.fixture
def echo_upstream() -> Iterator[Upstream]:
    upstream = Upstream(echo)
    yield upstream
    upstream.close()


def connect(port: int) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    conn.settimeout(IO_TIMEOUT)
    return conn


def exchange(port: int, payload: bytes) -> bytes:
    """Send everything, half-close, read until EOF (writer and reader run concurrently)."""
    with connect(port) as conn:
        received = bytearray()

        def reader() -> None:
            while chunk := conn.recv(1 << 20):
                received.extend(chunk)

        thread = threading.Thread(target=reader)
        thread.start()
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        thread.join(IO_TIMEOUT)
        assert not thread.is_alive()
        return bytes(received)


def tunnel(engine: Engine, ports: str, *extra: str) -> TunnelServerInfo:
    server = engine.tcp_server(*extra)
    engine.tcp_client(server, ports)
    wait_for(lambda: server.clients() == 1, what="the client to connect")
    return server


def listening(port: int) -> bool:
    """Whether a socket listens on ``port``, from /proc/net/tcp, without connecting."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def wait_listening(port: int) -> None:
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_for(ready, what=f"port {port}")


def test_50mb_random_payload_arrives_byte_identical(engine, echo_upstream):
    public = free_port()
    tunnel(engine, f"{public}:{echo_upstream.port}")
    payload = os.urandom(50 * 1024 * 1024)
    received = exchange(public, payload)
    assert len(received) == len(payload)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_half_close_lets_the_reply_flow_after_eof(engine):
    upstream = Upstream(reverse_after_eof)
    try:
        public = free_port()
        tunnel(engine, f"{public}:{upstream.port}")
        assert exchange(public, b"abcdef" * 10000) == bytes(reversed(b"abcdef" * 10000))
    finally:
        upstream.close()


def test_200_concurrent_connections_each_echo_their_own_data(engine, echo_upstream):
    public = free_port()
    tunnel(engine, f"{public}:{echo_upstream.port}")

    async def one(i: int) -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", public)
        payload = f"{i}:".encode() + os.urandom(20_000)
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        got = await reader.read()
        writer.close()
        return got == payload

    async def all_of_them() -> list[bool]:
        return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(200))), IO_TIMEOUT)

    assert all(asyncio.run(all_of_them()))


def test_slow_reader_does_not_stall_a_fast_one(engine, echo_upstream):
    public = free_port()
    server = tunnel(engine, f"{public}:{echo_upstream.port}")
    stalled = connect(public)
    try:
        stalled.setblocking(False)
        sent = 0
        block = b"s" * 65536

        # Never read: the echo fills every buffer, credit runs out, the sender is paused.
        def sender_blocked() -> bool:
            nonlocal sent
            try:
                while True:
                    sent += stalled.send(block)
            except BlockingIOError:
                return sent > 0

        wait_for(sender_blocked, what="the stalled connection to fill its buffers")
        payload = os.urandom(5 * 1024 * 1024)
        assert exchange(public, payload) == payload
        assert server.clients() == 1
    finally:
        stalled.close()


def test_killed_client_restarts_and_new_connections_pass(engine, echo_upstream):
    public = free_port()
    server = engine.tcp_server()
    client = engine.tcp_client(server, f"{public}:{echo_upstream.port}")
    wait_for(lambda: server.clients() == 1)
    assert exchange(public, b"before") == b"before"
    client.signal(signal.SIGKILL)
    client.wait_exit()
    wait_for(lambda: server.clients() == 0, what="the server to notice")
    engine.tcp_client(server, f"{public}:{echo_upstream.port}")
    wait_for(lambda: server.clients() == 1, what="the new client")
    wait_listening(public)
    assert exchange(public, b"after") == b"after"


def test_wrong_token_is_refused_with_401_and_never_logged(engine):
    server = engine.tcp_server()
    client = engine.tcp_client(server, str(free_port()), token="not-the-token-123")
    assert client.wait_exit() == 1
    assert "rejected the token (HTTP 401)" in client.stderr()
    server.process.wait_log("missing or wrong token")
    assert "not-the-token-123" not in server.process.stderr()
    assert server.token not in server.process.stderr()


class RecordingTLSServer:
    """Another server with another certificate: records every byte a client sends it."""

    def __init__(self, engine: Engine) -> None:
        cert, key, self.fingerprint = engine.cert("impostor")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            raw, _ = self.sock.accept()
            raw.settimeout(IO_TIMEOUT)
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                while chunk := conn.recv(4096):
                    self.received += chunk
        except OSError:
            pass


def test_wrong_fingerprint_never_sends_the_token(engine):
    real = engine.tcp_server()
    impostor = RecordingTLSServer(engine)
    try:
        client = engine.start(
            "tcp", "client", "--url", f"wss://127.0.0.1:{impostor.port}",
            "--token-env", "T", "--tls-fingerprint", real.fingerprint, "--ports", "9000",
            env={"T": real.token},
        )  # fmt: skip
        assert client.wait_exit() == 1
        impostor.thread.join(IO_TIMEOUT)
        # The client saw the impostor's certificate (so TLS completed)...
        assert f"certificate {impostor.fingerprint} does not match" in client.stderr()
        assert impostor.received == b""  # ...and sent nothing, least of all the token
    finally:
        impostor.sock.close()


def test_port_outside_the_allow_list_is_refused_clearly(engine):
    server = engine.tcp_server(allow="20000-20010")
    client = engine.tcp_client(server, "19999")
    assert client.wait_exit() == 1
    assert "19999 outside the server's allow-list 20000-20010" in client.stderr()
    assert server.clients() == 0


def test_port_taken_by_another_client_is_refused_and_retried(engine, echo_upstream):
    public = free_port()
    server = tunnel(engine, f"{public}:{echo_upstream.port}")
    second = engine.tcp_client(server, f"{public}:{echo_upstream.port}")
    second.wait_log(f"port(s) {public} already served by another client")
    assert second.proc.poll() is None  # it keeps retrying: the port may become free
    assert server.clients() == 1
    assert exchange(public, b"first client") == b"first client"


def test_unreachable_upstream_closes_the_connection_and_the_tunnel_stays_up(engine, echo_upstream):
    dead, good = free_port(), free_port()
    closed_port = free_port()
    server = tunnel(engine, f"{dead}:{closed_port},{good}:{echo_upstream.port}")
    with connect(dead) as conn:
        conn.sendall(b"hello?")
        try:
            assert conn.recv(100) == b""
        except ConnectionResetError:
            pass  # closed with RST: also fine
    assert server.clients() == 1
    assert exchange(good, b"still up") == b"still up"


def raw_tunnel_connection(server: TunnelServerInfo) -> ssl.SSLSocket:
    """A hand-written client: TLS, upgrade, then whatever bytes the test wants."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = ctx.wrap_socket(connect(server.control_port))
    key = ws.new_key()
    conn.sendall(
        (
            f"GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {server.token}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert ws.accept_key(key).encode() in head
    return conn


def read_until_closed(conn: ssl.SSLSocket) -> None:
    try:
        while conn.recv(4096):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass


@pytest.mark.parametrize(
    "garbage",
    [
        ws.encode(ws.Opcode.BINARY, HEADER.pack(99, 0, 0), mask=True),  # unknown frame type
        ws.encode(ws.Opcode.BINARY, HEADER.pack(FrameType.HELLO, 0, 1) + b"{", mask=True),
        ws.encode(ws.Opcode.BINARY, b"x", mask=False),  # unmasked client frame
        b"\xff" * 64,  # not even WebSocket
    ],
    ids=["unknown-type", "bad-json", "unmasked", "noise"],
)
def test_malformed_frames_drop_only_that_connection(engine, echo_upstream, garbage):
    public = free_port()
    server = tunnel(engine, f"{public}:{echo_upstream.port}")
    with raw_tunnel_connection(server) as bad:
        bad.sendall(garbage)
        read_until_closed(bad)  # the server hangs up (bounded by the socket timeout)
    server.process.wait_log("dropping")
    assert server.clients() == 1
    assert exchange(public, b"unaffected") == b"unaffected"


def test_healthz_needs_no_auth_and_tells_no_secrets(engine):
    server = engine.tcp_server()
    body = healthz(server.control_port)
    assert body == {"status": "ok", "mode": "tcp", "clients": 0, "ports": []}
    assert server.token not in str(body)


def test_sigterm_and_sigint_exit_0_without_traceback(engine, echo_upstream):
    public = free_port()
    server = engine.tcp_server()
    client = engine.tcp_client(server, f"{public}:{echo_upstream.port}")
    wait_for(lambda: server.clients() == 1)
    client.signal(signal.SIGINT)
    assert client.wait_exit() == 0
    server.process.signal(signal.SIGTERM)
    assert server.process.wait_exit() == 0
    for process in (client, server.process):
        assert "Traceback" not in process.stderr()


def test_auto_tls_prints_the_fingerprint_and_a_working_client_command(engine, echo_upstream):
    port = free_port()
    server = engine.start(
        "tcp", "server", "--bind", "127.0.0.1", "--control-port", str(port),
        "--token-file", str(engine.tmp / "token"), "--auto-tls", "--auto-tls-san", "127.0.0.1",
    )  # fmt: skip
    (engine.tmp / "token").write_text("s3cret-token\n")  # read once the server starts
    server.wait_log("connect a client with:")
    command = server.stderr().split("connect a client with:\n", 1)[1].splitlines()[0].split()
    assert command[:5] == ["tunnel-core", "tcp", "client", "--url", f"wss://127.0.0.1:{port}"]
    assert "s3cret-token" not in server.stderr()
    public = free_port()
    args = [a for a in command[3:] if a not in ("--ports", "PORTS")]
    client = engine.start(*["tcp", "client", *args, "--ports", f"{public}:{echo_upstream.port}"])
    wait_for(lambda: (healthz(port) or {}).get("clients") == 1)
    wait_listening(public)
    assert exchange(public, b"auto") == b"auto"
    assert client.proc.poll() is None


def test_insecure_warns(engine):
    server = engine.tcp_server()
    client = engine.start(
        "tcp", "client", "--url", server.url, "--token-env", "T", "--insecure",
        "--ports", str(free_port()), env={"T": server.token},
    )  # fmt: skip
    client.wait_log("NOT verified")
    wait_for(lambda: server.clients() == 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--token-env", "UNSET_VARIABLE_X", "--tls-fingerprint", "sha256:" + "a" * 64],
         "UNSET_VARIABLE_X is not set"),
        (["--token", "t", "--tls-fingerprint", "sha256:abc"], "is not a SHA-256 fingerprint"),
        (["--token", "t"], "--tls-fingerprint is required"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_a_hint(engine, args, message):
    client = engine.start("tcp", "client", "--url", "wss://127.0.0.1:1", "--ports", "8000", *args)
    assert client.wait_exit() == 2
    assert message in client.stderr()
    assert "Traceback" not in client.stderr()


def test_control_port_in_use_fails_with_a_message(engine):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        cert, key, _ = engine.cert("busy")
        server = engine.start(
            "tcp", "server", "--bind", "127.0.0.1", "--control-port", str(port),
            "--token", "t", "--tls-cert", str(cert), "--tls-key", str(key),
        )  # fmt: skip
        assert server.wait_exit() == 1
    assert f"cannot listen on 127.0.0.1:{port}" in server.stderr()
    assert "Traceback" not in server.stderr()


def test_upstream_closing_while_the_public_side_still_sends_keeps_the_tunnel_up(
    engine, echo_upstream
):
    """Regression (iperf3 loop): the upstream reads what it wanted and closes while
    the public side keeps sending. The client's writes to the closed socket fail, it
    grants the bytes it dropped and resets the stream in one message, and the server
    used to drop the whole session ("stream N cannot send in state closed"). Whether
    one close hits that window is timing, so the amounts sweep the grant threshold."""
    amounts = [(1 << 20) - 1 - (i * 40_961) % (1 << 20) for i in range(40)]
    done_reading: queue.Queue[int] = queue.Queue()
    wanted: queue.Queue[int] = queue.Queue()

    def read_then_close(conn: socket.socket) -> None:
        want, got = wanted.get(timeout=IO_TIMEOUT), 0
        while got < want:
            chunk = conn.recv(want - got)
            if not chunk:
                break
            got += len(chunk)
        done_reading.put(got)  # then close: a FIN, nothing unread

    upstream = Upstream(read_then_close)
    try:
        public, echo_public = free_port(), free_port()
        server = tunnel(engine, f"{public}:{upstream.port},{echo_public}:{echo_upstream.port}")
        rest = os.urandom(8 << 20)
        for first in amounts:
            wanted.put(first)
            with connect(public) as conn:
                conn.sendall(rest[:first])
                assert done_reading.get(timeout=IO_TIMEOUT) == first
                try:
                    conn.sendall(rest)  # into a stream whose upstream is gone
                except OSError:
                    pass  # reset by the tunnel once the upstream went away: expected
            assert server.clients() == 1, server.process.stderr()
        assert exchange(echo_public, b"still up") == b"still up", server.process.stderr()
        assert "dropping" not in server.process.stderr()
    finally:
        upstream.close()


class RawClient:
    """A hand-written tunnel client on :func:`raw_tunnel_connection` (frames by hand)."""

    def __init__(self, server: TunnelServerInfo) -> None:
        self.conn = raw_tunnel_connection(server)
        self.ws = ws.WsDecoder(expect_mask=False)
        self.frames = FrameDecoder()
        self.pending: list[Frame] = []

    def send(self, *frames: bytes) -> None:
        self.conn.sendall(ws.encode(ws.Opcode.BINARY, b"".join(frames), mask=True))

    def next_frame(self) -> Frame:
        while not self.pending:
            payloads, _ = self.ws.feed(self.conn.recv(1 << 16))
            for payload in payloads:
                self.pending += self.frames.feed(payload)
        return self.pending.pop(0)


def test_credit_and_reset_of_one_stream_in_one_message_reset_only_that_stream(engine):
    """Regression (iperf3 loop, deterministic): the peer grants credit on a stream
    whose bytes are waiting for it and resets that stream in the same WebSocket
    message. The server process used to send the waiting bytes on the now closed
    stream and drop the whole client ("stream 2 cannot send in state closed")."""
    public = free_port()
    server = engine.tcp_server()
    client = RawClient(server)
    client.send(
        Frame(FrameType.HELLO, 0, json_payload({"mode": "tcp", "ports": [public]})).serialize()
    )
    welcome = client.next_frame()
    assert welcome.type is FrameType.WELCOME and welcome.json()["ok"], welcome
    with connect(public) as sender:
        opened = client.next_frame()
        assert opened.type is FrameType.OPEN
        sid = opened.stream_id
        sender.setblocking(False)
        block = os.urandom(1 << 16)

        def sender_blocked() -> bool:  # the server ran out of credit and stopped reading
            try:
                while True:
                    sender.send(block)
            except BlockingIOError:
                return True

        received = 0
        while received < DEFAULT_WINDOW:  # all the credit the server had
            sender_blocked()
            frame = client.next_frame()
            if frame.type is FrameType.DATA and frame.stream_id == sid:
                received += len(frame.payload)
        wait_for(sender_blocked, what="the public sender to block")
        client.send(
            window_frame(sid, 1 << 20),
            Frame(FrameType.RESET, sid, b"upstream closed").serialize(),
        )
        client.send(Frame(FrameType.PING, 0, b"alive?").serialize())
        while (frame := client.next_frame()).type is not FrameType.PONG:
            pass  # DATA still in flight for the stream we reset
        assert frame.payload == b"alive?"
    assert "dropping" not in server.process.stderr()
    assert server.clients() == 1
    client.conn.close()


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 is not installed")
def test_iperf3_runs_in_a_row_all_pass_through_one_tunnel(engine, tmp_path):
    """The benchmark that found the session drop: iperf3 ends every test by closing
    its connections while data is still in flight through the tunnel."""
    upstream_port, public = free_port(), free_port()
    iperf_log = tmp_path / "iperf3-server.log"
    with iperf_log.open("wb") as log:
        iperf = subprocess.Popen(
            ["iperf3", "-s", "--forceflush", "-B", "127.0.0.1", "-p", str(upstream_port)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        # Read the listening sockets from /proc: a probe connection would be an aborted
        # iperf3 test, after which iperf3 may reset the next control connection.
        wait_for(lambda: listening(upstream_port), what=f"iperf3 on port {upstream_port}")
        server = tunnel(engine, f"{public}:{upstream_port}")
        wait_for(lambda: listening(public), what=f"the tunnel's public port {public}")
        for run in range(8):
            # iperf3 takes one test at a time and says so once it is free for the next
            # (it finishes the last one after its client has already gone).
            wait_for(
                lambda run=run: iperf_log.read_text().count("Server listening") > run,
                what=f"iperf3 free for test {run}",
            )
            result = subprocess.run(
                ["iperf3", "-c", "127.0.0.1", "-p", str(public), "-t", "1"],
                capture_output=True,
                timeout=IO_TIMEOUT,
            )
            stderr = server.process.stderr()
            assert "dropping" not in stderr, stderr
            assert result.returncode == 0, (run, result.stdout[-500:], result.stderr, stderr)
        assert server.clients() == 1
    finally:
        iperf.kill()
        iperf.wait(10)


def test_client_reconnects_after_the_server_drops_the_session(engine, echo_upstream):
    public = free_port()
    server = engine.tcp_server()
    client = engine.tcp_client(server, f"{public}:{echo_upstream.port}")
    wait_for(lambda: server.clients() == 1, what="the client to connect")
    wait_listening(public)
    assert exchange(public, b"before") == b"before"
    for round_ in range(2):
        server.process.signal(signal.SIGKILL)
        server.process.wait_exit()
        client.wait_log("reconnecting in", timeout=30)
        server = engine.tcp_server(same_as=server)
        wait_for(lambda s=server: s.clients() == 1, timeout=60, what=f"reconnect {round_}")
        wait_listening(public)
        assert exchange(public, b"after") == b"after"
    assert client.proc.poll() is None
