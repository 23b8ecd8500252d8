"""TCP mode features end to end: PROXY protocol (against nginx), --allow-ips, IPv6.

Real server and client processes over real TLS on loopback; public clients bind
127.0.0.5 / 127.0.0.6 (all of 127.0.0.0/8 is loopback on Linux) or ::1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Engine, TunnelServerInfo, free_port, healthz, wait_for
from tests.tunnel_core.tcp.test_e2e import IO_TIMEOUT, Upstream, echo, exchange

pytestmark = pytest.mark.network


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None
    )


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[int]:
    """nginx on 127.0.0.1 with a ``proxy_protocol`` listener that answers what it was told."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    port = free_port()
    root = tmp_path / "nginx"
    root.mkdir()
    conf = root / "nginx.conf"
    temp = "\n".join(
        f"  {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    answer = " ".join(
        f"$proxy_protocol_{v}" for v in ("addr", "port", "server_addr", "server_port")
    )
    conf.write_text(
        f"""daemon off;
master_process off;
pid {root / "nginx.pid"};
error_log {root / "error.log"} info;
events {{}}
http {{
  access_log {root / "access.log"};
{temp}
  server {{
    listen 127.0.0.1:{port} proxy_protocol;
    location / {{
      return 200 "{answer}\\n";
    }}
  }}
}}
"""
    )
    check = subprocess.run(
        [binary, "-t", "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check.returncode != 0:
        pytest.skip(f"nginx cannot run here: {check.stderr.strip()[-300:]}")
    proc = subprocess.Popen(
        [binary, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            assert proc.poll() is None, (root / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(listening, what="nginx to listen")
        yield port
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def get_from(source: str, port: int, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET / over a connection from ``source``; (our local port, the whole response)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(IO_TIMEOUT)
        conn.bind((source, 0))
        conn.connect((host, port))
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        return conn.getsockname()[1], bytes(data)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_nginx_sees_the_public_client_address(engine: Engine, nginx: int, version: str) -> None:
    public = free_port()
    server = engine.tcp_server()
    engine.tcp_client(server, f"{public}:{nginx}", "--proxy-protocol", version)
    wait_for(lambda: server.clients() == 1, what="the client to connect")
    sport, response = get_from("127.0.0.5", public)
    assert response.startswith(b"HTTP/1.1 200"), response
    body = response.split(b"\r\n\r\n", 1)[1].decode().split()
    # $proxy_protocol_addr, _port, _server_addr, _server_port
    assert body == ["127.0.0.5", str(sport), "127.0.0.1", str(public)]


def test_without_proxy_protocol_nginx_refuses(engine: Engine, nginx: int) -> None:
    """The control: nginx's proxy_protocol listener really needs the header we send."""
    public = free_port()
    server = engine.tcp_server()
    engine.tcp_client(server, f"{public}:{nginx}")
    wait_for(lambda: server.clients() == 1, what="the client to connect")
    try:
        _, response = get_from("127.0.0.5", public)
    except ConnectionResetError:
        response = b""
    assert b"127.0.0.5" not in response


class Recording(Upstream):
    """An echo upstream that records every connection and every byte it was sent."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.accepted = 0
        self.lock = threading.Lock()
        super().__init__(self.record)

    def record(self, conn: socket.socket) -> None:
        with self.lock:
            self.accepted += 1
        while data := conn.recv(1 << 16):
            with self.lock:
                self.received += data
            conn.sendall(data)


def closed_without_answer(source: str, port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(IO_TIMEOUT)
        conn.bind((source, 0))
        conn.connect((host, port))
        try:
            conn.sendall(b"refused-bytes")
            return conn.recv(100) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True


def tcp_server(
    engine: Engine, *extra: str, bind: str = "127.0.0.1", verbose: bool = False
) -> TunnelServerInfo:
    port, token = free_port(), os.urandom(16).hex()
    cert, key, fingerprint = engine.cert(f"server-{port}")
    process = engine.start(
        *(["-v"] if verbose else []), "tcp", "server", "--bind", bind,
        "--control-port", str(port), "--token-env", "T", "--tls-cert", str(cert),
        "--tls-key", str(key), *extra,
        env={"T": token},
    )  # fmt: skip
    wait_for(lambda: healthz(port) is not None or process.proc.poll() is not None)
    assert process.proc.poll() is None, process.stderr()
    return TunnelServerInfo(process, port, token, fingerprint, engine.tmp)


def test_allow_ips_closes_other_sources_before_any_open(engine: Engine) -> None:
    upstream = Recording()
    try:
        public = free_port()
        server = tcp_server(engine, "--allow-ips", "127.0.0.5/32,::1/128", verbose=True)
        engine.tcp_client(server, f"{public}:{upstream.port}")
        wait_for(lambda: server.clients() == 1, what="the client to connect")
        assert get_echo("127.0.0.5", public, b"allowed") == b"allowed"
        assert upstream.accepted == 1
        assert closed_without_answer("127.0.0.6", public)
        server.process.wait_log(f"port {public}: refused 127.0.0.6:")  # at debug level
        # A later allowed connection's OPEN travels after any the refused one could have
        # caused, on the same ordered connection: the upstream would have seen it first.
        assert get_echo("127.0.0.5", public, b"again") == b"again"
        assert upstream.accepted == 2
        assert b"refused-bytes" not in upstream.received
    finally:
        upstream.close()


def get_echo(source: str, port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(IO_TIMEOUT)
        conn.bind((source, 0))
        conn.connect((host, port))
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        data = bytearray()
        while chunk := conn.recv(65536):
            data += chunk
        return bytes(data)


def test_allow_ips_refusal_is_not_logged_at_info(engine: Engine) -> None:
    upstream = Upstream(echo)
    try:
        public = free_port()
        server = tcp_server(engine, "--allow-ips", "127.0.0.5")
        engine.tcp_client(server, f"{public}:{upstream.port}")
        wait_for(lambda: server.clients() == 1, what="the client to connect")
        assert closed_without_answer("127.0.0.6", public)
        assert get_echo("127.0.0.5", public, b"ok") == b"ok"
        assert "127.0.0.6" not in server.process.stderr()
    finally:
        upstream.close()


@pytest.mark.parametrize(
    "bad", ["10.0.0.1/8", "300.1.2.3", "10.0.0.0/33", "fe80::/200", "nonsense", ","]
)
def test_a_bad_cidr_is_a_usage_error_and_nothing_listens(engine: Engine, bad: str) -> None:
    port = free_port()
    cert, key, _ = engine.cert("bad")
    result = subprocess.run(
        [
            sys.executable, "-m", "tunnel_core", "tcp", "server", "--bind", "127.0.0.1",
            "--control-port", str(port), "--token", "t", "--tls-cert", str(cert),
            "--tls-key", str(key), "--allow-ips", bad,
        ],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--allow-ips" in result.stderr and "Traceback" not in result.stderr
    assert healthz(port) is None


def test_a_bad_cidr_is_refused_by_generate_systemd_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tunnel_core", "http", "server", "--token", "t",
         "--auto-tls", "--allow-ips", "1.2.3.4/8", "--generate", "systemd"],
        capture_output=True, text=True, timeout=30, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 2
    assert "1.2.3.4/8" in result.stderr and result.stdout == ""


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1)")


@ipv6
def test_ipv6_bind_url_and_public_clients(engine: Engine) -> None:
    """``--bind ::`` serves IPv6 and IPv4; the client dials ``wss://[::1]:PORT``; a v6
    public client is forwarded and the upstream's PROXY header names it."""
    seen: list[bytes] = []

    def first_line(conn: socket.socket) -> None:
        data = bytearray()
        while b"\r\n" not in data and (chunk := conn.recv(1024)):
            data += chunk
        seen.append(bytes(data.split(b"\r\n", 1)[0]))
        echo_rest = data.split(b"\r\n", 1)[1]
        conn.sendall(echo_rest)
        echo(conn)

    upstream = Upstream(first_line)
    try:
        public = free_port()
        server = tcp_server(engine, bind="::")
        port, token, fingerprint = server.control_port, server.token, server.fingerprint
        engine.start(
            "tcp", "client", "--url", f"wss://[::1]:{port}", "--token-env", "T",
            "--tls-fingerprint", fingerprint, "--upstream", "127.0.0.1",
            "--ports", f"{public}:{upstream.port}", "--proxy-protocol", "v1",
            env={"T": token},
        )  # fmt: skip
        wait_for(lambda: server.clients() == 1, what="the v6 client")
        assert get_echo("::1", public, b"over six", host="::1") == b"over six"
        sport6 = seen[-1].split()[4]
        assert seen[-1] == f"PROXY TCP6 ::1 ::1 {int(sport6)} {public}".encode()
        assert exchange(public, b"over four") == b"over four"  # 127.0.0.1 on the same --bind
        assert seen[-1].startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
    finally:
        upstream.close()
