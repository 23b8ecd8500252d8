"""TCP mode end to end: the real CLIs as subprocesses, real TLS, loopback only."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Engine, TunnelServerInfo, free_port, healthz, wait_for
from tunnel_core import ws
from tunnel_core.frames import HEADER, FrameType

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


def test_abrupt_upstream_closes_during_bulk_transfers_keep_the_tunnel_up(engine, echo_upstream):
    """Regression: a stream closed/reset locally while frames for it are in flight
    (iperf3 closing its control connection) used to drop the whole session."""

    def read_then_slam(conn: socket.socket) -> None:
        got = 0
        while got < 2 * 1024 * 1024:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            got += len(chunk)
        conn.sendall(b"x" * 65536)  # data towards the public side while it still sends
        if got % 2:
            conn.close()
        else:  # RST instead of FIN
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

    slam = Upstream(read_then_slam)
    try:
        public, echo_public = free_port(), free_port()
        server = tunnel(engine, f"{public}:{slam.port},{echo_public}:{echo_upstream.port}")
        block = os.urandom(1 << 20)
        for _ in range(8):
            with connect(public) as conn:
                try:
                    for _ in range(64):  # far more than the upstream reads
                        conn.sendall(block)
                except OSError:
                    pass  # reset by the tunnel once the upstream went away: expected
            assert server.clients() == 1, server.process.stderr()
            assert exchange(echo_public, b"still up") == b"still up", server.process.stderr()
        assert "dropping" not in server.process.stderr()
    finally:
        slam.close()


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
