"""UDP mode end to end: real server and client processes over real TLS, loopback only.

Public clients bind 127.0.0.5 / 127.0.0.6 (all of 127.0.0.0/8 is loopback on Linux),
so the server sees distinct sources and the allow-list has something to tell apart.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Engine, TunnelServerInfo, free_port, healthz, wait_for
from tests.tunnel_core.tcp.test_features import ipv6

pytestmark = pytest.mark.network
IO_TIMEOUT = 10.0


class UdpEcho:
    """A UDP echo server on loopback that records who sent what."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.sources: set[tuple[str, int]] = set()
        self.payloads: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(1 << 16)
            except OSError:
                return
            self.sources.add(addr)
            self.payloads.append(data)
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def udp_echo() -> Iterator[UdpEcho]:
    upstream = UdpEcho()
    yield upstream
    upstream.close()


def public_socket(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    sock.settimeout(IO_TIMEOUT)
    return sock


def tunnel(engine: Engine, upstream_port: int, *server_args: str) -> tuple[TunnelServerInfo, int]:
    """A UDP server and a client forwarding a fresh public port to ``upstream_port``."""
    server = engine.tcp_server(*server_args, mode="udp")
    public = free_port()
    engine.tcp_client(server, f"{public}:{upstream_port}", mode="udp")
    wait_for(lambda: public in (healthz(server.control_port) or {}).get("ports", []))
    return server, public


def test_ten_thousand_datagrams_come_back_whole_and_in_full(
    engine: Engine, udp_echo: UdpEcho
) -> None:
    """At most 32 in flight (a moderate rate set by the answers, not a clock): none lost,
    every boundary kept, sizes from empty to 8 KiB."""
    server, public = tunnel(engine, udp_echo.port)
    total, window = 10_000, 32

    def datagram(seq: int) -> bytes:
        size = 8192 if seq % 1000 == 999 else seq % 1400
        return struct.pack("!I", seq) + bytes([seq % 251]) * size

    received: dict[int, bytes] = {}
    with public_socket("127.0.0.5", public) as sock:
        sent = 0
        while sent < min(window, total):
            sock.send(datagram(sent))
            sent += 1
        while len(received) < total:
            answer = sock.recv(1 << 16)
            (seq,) = struct.unpack_from("!I", answer)
            assert seq not in received, f"datagram {seq} came back twice"
            received[seq] = answer
            if sent < total:
                sock.send(datagram(sent))
                sent += 1
    assert all(received[seq] == datagram(seq) for seq in range(total))
    assert len(udp_echo.payloads) == total
    health = healthz(server.control_port)
    assert health is not None and health["dropped"] == 0 and health["flows"] == 1


def test_each_source_is_a_flow_of_its_own(engine: Engine, udp_echo: UdpEcho) -> None:
    _, public = tunnel(engine, udp_echo.port)
    with public_socket("127.0.0.5", public) as a, public_socket("127.0.0.6", public) as b:
        for _ in range(3):
            a.send(b"from a")
            b.send(b"from b")
            assert a.recv(100) == b"from a"
            assert b.recv(100) == b"from b"
    assert len(udp_echo.sources) == 2  # one upstream socket per public source


def test_sources_outside_allow_ips_never_reach_the_client(
    engine: Engine, udp_echo: UdpEcho
) -> None:
    server, public = tunnel(engine, udp_echo.port, "--allow-ips", "127.0.0.5/32")
    with public_socket("127.0.0.6", public) as stranger, public_socket("127.0.0.5", public) as ok:
        stranger.send(b"let me in")
        wait_for(lambda: (healthz(server.control_port) or {}).get("dropped") == 1)
        ok.send(b"allowed")
        assert ok.recv(100) == b"allowed"
    assert udp_echo.payloads == [b"allowed"]


def test_an_idle_flow_is_closed_and_the_next_datagram_opens_another(
    engine: Engine, udp_echo: UdpEcho
) -> None:
    server, public = tunnel(engine, udp_echo.port, "--idle-timeout", "0.3")
    with public_socket("127.0.0.5", public) as sock:
        sock.send(b"one")
        assert sock.recv(100) == b"one"
        wait_for(lambda: (healthz(server.control_port) or {}).get("flows") == 0)
        sock.send(b"two")
        assert sock.recv(100) == b"two"
    # the first flow's upstream socket was closed with it: the second came from a new one
    assert len(udp_echo.sources) == 2


def test_max_flows_drops_further_sources(engine: Engine, udp_echo: UdpEcho) -> None:
    server, public = tunnel(engine, udp_echo.port, "--max-flows", "1")
    with public_socket("127.0.0.5", public) as first, public_socket("127.0.0.6", public) as more:
        first.send(b"first")
        assert first.recv(100) == b"first"
        more.send(b"more")
        wait_for(lambda: (healthz(server.control_port) or {}).get("dropped") == 1)
    assert udp_echo.payloads == [b"first"]


def _dns_query(name: str, query_id: int) -> bytes:
    labels = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"


def _dns_answer(response: bytes, query_id: int) -> str:
    """The A record of a one-answer response (its last four bytes)."""
    rid, flags, _, answers, _, _ = struct.unpack_from("!HHHHHH", response)
    assert (rid, flags & 0x800F, answers) == (query_id, 0x8000, 1)  # a response, NOERROR
    return socket.inet_ntoa(response[-4:])


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[int]:
    """Debian's dnsmasq on 127.0.0.1, answering 192.0.2.44 for *.tunnel.test, no upstream."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(binary).exists():
        pytest.skip("dnsmasq is not installed (apt-get install -y dnsmasq-base)")
    port = free_port()
    log = (tmp_path / "dnsmasq.log").open("wb")
    proc = subprocess.Popen(
        [binary, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
         "--listen-address=127.0.0.1", "--bind-interfaces", f"--port={port}",
         "--address=/tunnel.test/192.0.2.44", "--pid-file=", "--user=root", "--log-facility=-"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    def answers() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.2)
            try:
                probe.sendto(_dns_query("probe.tunnel.test", 1), ("127.0.0.1", port))
                return bool(probe.recv(512))
            except OSError:
                return proc.poll() is not None

    try:
        wait_for(answers, what="dnsmasq to answer")
        assert proc.poll() is None, (tmp_path / "dnsmasq.log").read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log.close()


def test_a_dns_query_through_the_tunnel(engine: Engine, dnsmasq: int) -> None:
    _, public = tunnel(engine, dnsmasq)
    with public_socket("127.0.0.5", public) as sock:
        sock.send(_dns_query("www.tunnel.test", 0x4242))
        assert _dns_answer(sock.recv(512), 0x4242) == "192.0.2.44"


def test_bad_udp_server_flags_are_usage_errors(engine: Engine) -> None:
    for flags in (["--idle-timeout", "0"], ["--max-flows", "0"], ["--allow-ips", "10.0.0.1/8"]):
        process = engine.start(
            "udp", "server", "--token", "t", "--auto-tls", "--control-port", str(free_port()),
            *flags,
        )  # fmt: skip
        assert process.wait_exit() == 2, flags
        assert "Traceback" not in process.stderr()


@ipv6
def test_bind_all_serves_ipv6_and_ipv4_sources(engine: Engine, udp_echo: UdpEcho) -> None:
    server = engine.tcp_server("--bind", "::", mode="udp")  # the later --bind wins
    public = free_port()
    engine.tcp_client(server, f"{public}:{udp_echo.port}", mode="udp")
    wait_for(lambda: public in (healthz(server.control_port) or {}).get("ports", []))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as six:
        six.settimeout(IO_TIMEOUT)
        six.sendto(b"over six", ("::1", public))
        assert six.recv(100) == b"over six"
    with public_socket("127.0.0.5", public) as four:
        four.send(b"over four")
        assert four.recv(100) == b"over four"
    assert (healthz(server.control_port) or {}).get("flows") == 2
