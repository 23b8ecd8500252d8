"""Hostile peers for the hardening tests, written with the engine's own codec.

* :class:`HostileClient` speaks to a real server process: TLS, upgrade, then frames by hand.
* :class:`HostileServer` is a TLS server a real client process connects to (pinned by
  fingerprint); it answers the upgrade and the HELLO, then does what the test says.

Both are blocking sockets driven from the test thread (plus helper threads where the
test needs to read and write at once). Nothing here sleeps: waits are socket timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Engine, TunnelServerInfo
from tunnel_core.protocol import ws
from tunnel_core.protocol.frames import Frame, FrameDecoder, FrameType, json_payload

IO_TIMEOUT = 30.0
MB = 1 << 20


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident set size of a process, from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def peak_mb(pid: int) -> float:
    """The highest resident set size the process ever had (VmHWM)."""
    return rss_mb(pid, "VmHWM")


def frame(ftype: FrameType, stream_id: int = 0, payload: bytes = b"") -> bytes:
    return Frame(ftype, stream_id, payload).serialize()


def hello(ports: list[int], **extra: Any) -> bytes:
    return frame(FrameType.HELLO, 0, json_payload({"mode": "tcp", "ports": ports} | extra))


class Peer:
    """One end of an upgraded control connection; ``mask`` is True on the client side."""

    def __init__(self, conn: ssl.SSLSocket, *, mask: bool) -> None:
        self.conn = conn
        self.mask = mask
        self.ws = ws.WsDecoder(expect_mask=not mask, max_message=1 << 30)
        self.frames = FrameDecoder()
        self.pending: list[Frame] = []
        self.controls: list[tuple[ws.Opcode, bytes]] = []
        #: the first bytes read, as they came (WebSocket framing included)
        self.first_read = b""

    def send(self, *frames: bytes) -> None:
        self.conn.sendall(ws.encode(ws.Opcode.BINARY, b"".join(frames), mask=self.mask))

    def message(self, *frames: bytes) -> bytes:
        """One WebSocket message carrying ``frames``, to send many times."""
        return ws.encode(ws.Opcode.BINARY, b"".join(frames), mask=self.mask)

    def next_frame(self) -> Frame:
        while not self.pending:
            data = self.conn.recv(1 << 16)
            if not data:
                raise ConnectionResetError("the peer closed the connection")
            self.first_read = self.first_read or data
            payloads, controls = self.ws.feed(data)
            self.controls += controls
            for payload in payloads:
                self.pending += self.frames.feed(payload)
        return self.pending.pop(0)

    def expect(self, ftype: FrameType) -> Frame:
        """Skip frames until one of ``ftype`` arrives."""
        while (got := self.next_frame()).type is not ftype:
            pass
        return got

    def flood(self, message: bytes, total: int) -> int:
        """Send ``message`` until ``total`` bytes went or the peer hung up; bytes sent."""
        sent = 0
        try:
            while sent < total:
                self.conn.sendall(message)
                sent += len(message)
        except OSError:
            pass
        return sent

    def drain_in_background(self) -> threading.Thread:
        """Read and discard everything the peer sends (a client that reads its replies)."""

        def run() -> None:
            try:
                while self.conn.recv(1 << 20):
                    pass
            except OSError:
                pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class HostileClient(Peer):
    """A hand-written client of a real server process."""

    def __init__(self, server: TunnelServerInfo) -> None:
        raw = socket.create_connection(("127.0.0.1", server.control_port), timeout=IO_TIMEOUT)
        conn = _client_context().wrap_socket(raw)
        key = ws.new_key()
        conn.sendall(
            (
                f"GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {server.token}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(1)
            if not chunk:
                raise ConnectionResetError("closed during the upgrade")
            head += chunk
        assert head.startswith(b"HTTP/1.1 101 "), head
        #: the server's 101 answer, headers included
        self.upgrade_answer = head
        super().__init__(conn, mask=True)

    def register(self, ports: list[int], **extra: Any) -> dict[str, Any]:
        self.send(hello(ports, **extra))
        welcome = self.expect(FrameType.WELCOME).json()
        assert welcome.get("ok") is True, welcome
        return welcome


class HostileServer:
    """A TLS server speaking our codec by hand; a real client process connects to it."""

    def __init__(self, engine: Engine) -> None:
        cert, key, self.fingerprint = engine.cert("hostile")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(IO_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.url = f"wss://127.0.0.1:{self.port}"

    def client(self, engine: Engine, *args: str) -> Any:
        """Start a real ``tcp client`` process against this server."""
        return engine.start(
            "tcp", "client", "--url", self.url, "--token-env", "T",
            "--tls-fingerprint", self.fingerprint, "--upstream", "127.0.0.1", *args,
            env={"T": "t0ken"},
        )  # fmt: skip

    def accept(
        self,
        *,
        accept_key: Callable[[str], bytes] | None = None,
        welcome: dict[str, Any] | None = None,
        zero_key: bool = False,
    ) -> Peer:
        """Accept one client, answer its upgrade (``accept_key`` may forge the key; then
        nothing more; ``zero_key`` asks for the zero masking key, as our server does),
        read its HELLO and, unless ``welcome`` is ``{}``, answer it."""
        raw, _ = self.sock.accept()
        raw.settimeout(IO_TIMEOUT)
        conn = self.ctx.wrap_socket(raw, server_side=True)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(1)
            if not chunk:
                raise ConnectionResetError("closed during the upgrade")
            head += chunk
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        ).decode()
        accept = (
            accept_key(key)
            if accept_key
            else base64.b64encode(hashlib.sha1((key + ws.GUID).encode()).digest())
        )
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n"
            + (": ".join(ws.ZERO_KEY_HEADER).encode() + b"\r\n" if zero_key else b"")
            + b"\r\n"
        )  # fmt: skip
        peer = Peer(conn, mask=False)
        if accept_key is None:
            peer.hello = peer.expect(FrameType.HELLO).json()  # type: ignore[attr-defined]
            if welcome != {}:
                info = {"ok": True, "version": 1} if welcome is None else welcome
                peer.send(frame(FrameType.WELCOME, 0, json_payload(info)))
        return peer

    def close(self) -> None:
        self.sock.close()
