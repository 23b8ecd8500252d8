"""What moto cannot show about ``--load-balancer``: forwarding and health checks, for real.

The layout of ``create --count 2 --load-balancer nlb``, on loopback: two real exit
servers (``tunnel-core tcp server``) on 127.0.0.1 and 127.0.0.2 with the same
control and data ports, token and certificate (one user-data boots every member),
one real client with a ``--url`` for each, and a real load balancer from Debian
(haproxy) in front of the data ports, health-checking each server the way our
target groups ask AWS to: HTTPS ``GET /readyz`` on the control port, any
certificate (AWS's checks do not verify it either). Requests spread over both;
once haproxy has marked a killed server down, every request still succeeds.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.ec2_lb import HEALTH_PATH
from tests.conftest import Engine, EngineProcess, free_port, healthz, wait_for
from tests.tunnel_core.tcp.test_e2e import Upstream, echo
from tests.tunnel_core.test_several_servers import roundtrip

pytestmark = pytest.mark.network
HOSTS = ("127.0.0.1", "127.0.0.2")
REQUESTS = 1000
#: haproxy's wait for a health check answer, and the time between checks (ms)
CHECK_MS = 200


class HAProxy:
    """A foreground haproxy process; its stats socket says what it thinks of each server."""

    def __init__(self, tmp: Path, front: int, data: int, control: int) -> None:
        self.socket = tmp / "haproxy.sock"
        config = tmp / "haproxy.cfg"
        servers = "\n".join(
            f"    server exit{n} {host}:{data} check port {control} check-ssl verify none "
            f"inter {CHECK_MS}ms fall 1 rise 1"
            for n, host in enumerate(HOSTS)
        )
        config.write_text(
            f"""global
    stats socket {self.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check {CHECK_MS}ms
frontend public
    bind 127.0.0.1:{front}
    default_backend exits
backend exits
    balance roundrobin
    option httpchk GET {HEALTH_PATH}
    http-check expect status 200
{servers}
"""
        )
        checked = subprocess.run(
            ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stderr + checked.stdout
        self.log = (tmp / "haproxy.log").open("wb")
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the backend's servers: name -> columns (status, stot, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(b"show stat\n")
            answer = b""
            while chunk := sock.recv(1 << 16):
                answer += chunk
        rows = csv.DictReader(answer.decode().lstrip("# ").splitlines())
        return {
            r["svname"]: r
            for r in rows
            if r["pxname"] == "exits" and r["svname"].startswith("exit")
        }

    def status(self) -> dict[str, str]:
        try:
            return {name: row["status"] for name, row in self.stats().items()}
        except OSError:  # the socket is not there yet
            return {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def haproxy_bin() -> str:
    found = shutil.which("haproxy")
    if found is None:
        pytest.skip("haproxy is not installed (`apt-get install haproxy`, or `make deps`)")
    return found


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(echo)
    yield server
    server.close()


def exit_servers(
    engine: Engine, token: str, control: int, data: int
) -> tuple[list[EngineProcess], str]:
    """Both members, as one user-data would start them: same ports, token, certificate;
    and the certificate's fingerprint, which the client pins for both."""
    cert, key, fingerprint = engine.cert("group")
    processes = [
        engine.start(
            "tcp",
            "server",
            "--bind",
            host,
            "--control-port",
            str(control),
            "--token-env",
            "T",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--allow-ports",
            str(data),
            env={"T": token},
        )  # fmt: skip
        for host in HOSTS
    ]
    for host in HOSTS:
        wait_for(lambda h=host: healthz(control, h) is not None, what=f"{host}:{control}")
    return processes, fingerprint


def test_requests_spread_over_both_and_survive_one_server_dying(
    engine: Engine, tmp_path: Path, haproxy_bin: str, upstream: Upstream
) -> None:
    token = os.urandom(16).hex()
    control, data, front = free_port(), free_port(), free_port()
    servers, pin = exit_servers(engine, token, control, data)
    urls = [arg for host in HOSTS for arg in ("--url", f"wss://{host}:{control}")]
    engine.start(
        "tcp", "client", *urls, "--token-env", "T", "--tls-fingerprint", pin,
        "--upstream", "127.0.0.1", "--ports", f"{data}:{upstream.port}", env={"T": token},
    )  # fmt: skip
    for host in HOSTS:
        wait_for(lambda h=host: (healthz(control, h) or {}).get("clients") == 1, what=host)

    balancer = HAProxy(tmp_path, front, data, control)
    try:
        wait_for(lambda: balancer.status() == {"exit0": "UP", "exit1": "UP"}, what="both UP")
        for n in range(REQUESTS):
            payload = b"request %d" % n
            assert roundtrip("127.0.0.1", front, payload) == payload
        served = {name: int(row["stot"]) for name, row in balancer.stats().items()}
        assert sum(served.values()) == REQUESTS
        assert min(served.values()) >= REQUESTS // 4, f"not spread over both: {served}"

        servers[0].signal(signal.SIGKILL)
        servers[0].wait_exit()
        wait_for(
            lambda: balancer.status().get("exit0", "").startswith("DOWN"),
            what="haproxy marks the killed server down",
        )
        assert balancer.status()["exit1"] == "UP"
        for n in range(200):
            payload = b"after %d" % n
            assert roundtrip("127.0.0.1", front, payload) == payload
        after = {name: int(row["stot"]) for name, row in balancer.stats().items()}
        assert after["exit1"] - served["exit1"] == 200, "all of them through the survivor"
    finally:
        balancer.stop()


def test_a_server_without_a_client_is_kept_out_of_the_rotation(
    engine: Engine, tmp_path: Path, haproxy_bin: str, upstream: Upstream
) -> None:
    """/readyz is 503 while no client is connected: the balancer never sends a public
    request to a member that has nowhere to forward it (its client session dropped)."""
    token = os.urandom(16).hex()
    control, data, front = free_port(), free_port(), free_port()
    _, pin = exit_servers(engine, token, control, data)
    engine.start(
        "tcp", "client", "--url", f"wss://{HOSTS[0]}:{control}", "--token-env", "T",
        "--tls-fingerprint", pin, "--upstream", "127.0.0.1", "--ports",
        f"{data}:{upstream.port}", env={"T": token},
    )  # fmt: skip
    wait_for(lambda: (healthz(control, HOSTS[0]) or {}).get("clients") == 1, what="the client")
    balancer = HAProxy(tmp_path, front, data, control)
    try:
        wait_for(
            lambda: (
                balancer.status().get("exit0") == "UP"
                and balancer.status().get("exit1", "").startswith("DOWN")
            ),
            what="exit0 UP and the client-less exit1 DOWN",
        )
        for n in range(50):
            payload = b"only via exit0 %d" % n
            assert roundtrip("127.0.0.1", front, payload) == payload
        served = {name: int(row["stot"]) for name, row in balancer.stats().items()}
        assert served == {"exit0": 50, "exit1": 0}
    finally:
        balancer.stop()
