"""One client, several servers (``--url`` repeated): a session to each, each on its own.

The basis for exit servers behind a load balancer: any server can answer any public
connection. Two real servers on 127.0.0.1 and 127.0.0.2 (same public port, same
token and certificate), one real client process.
"""

from __future__ import annotations

import os
import signal
import socket

import pytest

from tests.conftest import Engine, EngineProcess, free_port, healthz, wait_for
from tests.tunnel_core.tcp.test_e2e import IO_TIMEOUT, Upstream, echo

pytestmark = pytest.mark.network
HOSTS = ("127.0.0.1", "127.0.0.2")


def roundtrip(host: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=IO_TIMEOUT) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := conn.recv(1 << 16):
            received += chunk
        return bytes(received)


def servers(engine: Engine, token: str) -> tuple[list[EngineProcess], list[int], str]:
    cert, key, fingerprint = engine.cert("shared")
    processes, controls = [], []
    for host in HOSTS:
        control = free_port()
        processes.append(
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
                env={"T": token},
            )  # fmt: skip
        )
        controls.append(control)
    for host, control in zip(HOSTS, controls, strict=True):
        wait_for(lambda h=host, c=control: healthz(c, h) is not None, what=f"{host}:{control}")
    return processes, controls, fingerprint


def client(engine: Engine, controls: list[int], fingerprint: str, token: str, ports: str,
           *extra: str) -> EngineProcess:  # fmt: skip
    urls = [a for h, c in zip(HOSTS, controls, strict=True) for a in ("--url", f"wss://{h}:{c}")]
    return engine.start(
        "tcp", "client", *urls, "--token-env", "T", "--tls-fingerprint", fingerprint,
        "--ports", ports, *extra, env={"T": token},
    )  # fmt: skip


def test_every_server_forwards_and_one_dying_leaves_the_others(engine: Engine) -> None:
    upstream = Upstream(echo)
    token = os.urandom(16).hex()
    try:
        processes, controls, fingerprint = servers(engine, token)
        public = free_port()
        client(engine, controls, fingerprint, token, f"{public}:{upstream.port}")
        for host, control in zip(HOSTS, controls, strict=True):
            wait_for(lambda h=host, c=control: (healthz(c, h) or {}).get("clients") == 1)
            assert roundtrip(host, public, f"via {host}".encode()) == f"via {host}".encode()
        processes[0].signal(signal.SIGKILL)
        processes[0].wait_exit()
        for n in range(3):
            assert roundtrip(HOSTS[1], public, b"still %d" % n) == b"still %d" % n
    finally:
        upstream.close()


def test_a_url_given_twice_is_one_session(engine: Engine) -> None:
    token = os.urandom(16).hex()
    _, controls, fingerprint = servers(engine, token)
    url = f"wss://{HOSTS[0]}:{controls[0]}"
    engine.start(
        "tcp", "client", "--url", url, "--url", url, "--token-env", "T",
        "--tls-fingerprint", fingerprint, "--ports", str(free_port()), env={"T": token},
    )  # fmt: skip
    wait_for(lambda: (healthz(controls[0]) or {}).get("clients") == 1)
    assert (healthz(controls[0]) or {}).get("clients") == 1


def test_a_server_refusing_for_good_ends_the_client_for_all(engine: Engine) -> None:
    """A port outside one server's allow-list will never be granted there: the client
    exits 1 with that server's reason, leaving the other server too, not a retry loop."""
    token = os.urandom(16).hex()
    _, controls, _ = servers(engine, token)
    cert, key, _ = engine.cert("strict")
    strict = free_port()
    engine.start(
        "tcp", "server", "--bind", "127.0.0.3", "--control-port", str(strict),
        "--token-env", "T", "--tls-cert", str(cert), "--tls-key", str(key),
        "--allow-ports", "2000", env={"T": token},
    )  # fmt: skip
    wait_for(lambda: healthz(strict, "127.0.0.3") is not None)
    proc = engine.start(
        "tcp", "client", "--url", f"wss://{HOSTS[0]}:{controls[0]}",
        "--url", f"wss://127.0.0.3:{strict}", "--token-env", "T", "--insecure",
        "--ports", str(free_port()), env={"T": token},
    )  # fmt: skip
    assert proc.wait_exit() == 1
    assert "outside the server's allow-list" in proc.stderr()
    wait_for(lambda: (healthz(controls[0]) or {}).get("clients") == 0)
