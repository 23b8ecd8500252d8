"""Shared fixtures. Engine helpers: start tunnel-core processes, wait for /healthz, kill by PID.

Network guard: pytest-socket (``--allow-hosts`` in pyproject.toml) makes an in-process
connect() to anything but loopback or a unix socket raise; ``offline_guard`` fails the
test even when the code under test catches that error. Subprocesses are out of its
reach: ``make test`` as root runs pytest in a loopback-only network namespace for them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pytest_socket import SocketConnectBlockedError

from tests.certs import self_signed

REPO = Path(__file__).resolve().parent.parent
ENGINE_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], bool], timeout: float = ENGINE_DEADLINE, what: str = ""
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def healthz(port: int, host: str = "127.0.0.1") -> dict | None:
    """The control port's /healthz JSON, or None while it is not answering."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://{host}:{port}/healthz", context=ctx, timeout=2) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.URLError):
        return None


@dataclass
class EngineProcess:
    """A tunnel-core subprocess whose stderr goes to a file the test can read."""

    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = ENGINE_DEADLINE) -> None:
        wait_for(lambda: text in self.stderr(), timeout, f"{text!r} in the log of {self.pid}")

    def wait_exit(self, timeout: float = ENGINE_DEADLINE) -> int:
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


@dataclass
class TunnelServerInfo:
    process: EngineProcess
    control_port: int
    token: str
    fingerprint: str
    cert_dir: Path

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.control_port}"

    def clients(self) -> int:
        body = healthz(self.control_port)
        return -1 if body is None else int(body["clients"])


@dataclass
class Engine:
    """Factory for engine processes; every process it starts is killed at teardown."""

    tmp: Path
    processes: list[EngineProcess] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str] | None = None) -> EngineProcess:
        log = self.tmp / f"engine-{len(self.processes)}.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tunnel_core", *args],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        process = EngineProcess(proc, log)
        self.processes.append(process)
        return process

    def cert(self, name: str) -> tuple[Path, Path, str]:
        cert_pem, key_pem, fingerprint = self_signed()
        cert, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        cert.write_text(cert_pem)
        key.write_text(key_pem)
        key.chmod(0o600)
        return cert, key, fingerprint

    def tcp_server(
        self,
        *extra: str,
        allow: str = "1024-65535",
        same_as: TunnelServerInfo | None = None,
        mode: str = "tcp",
    ) -> TunnelServerInfo:
        """A TCP (or ``mode="udp"``) server; ``same_as`` reuses a (stopped) server's port,
        token and certificate."""
        if same_as is None:
            port = free_port()
            token = os.urandom(16).hex()
            cert, key, fingerprint = self.cert(f"server-{port}")
        else:
            port, token, fingerprint = same_as.control_port, same_as.token, same_as.fingerprint
            cert, key = self.tmp / f"server-{port}.crt", self.tmp / f"server-{port}.key"
        process = self.start(
            mode, "server", "--bind", "127.0.0.1", "--control-port", str(port),
            "--token-env", "TEST_TUNNEL_TOKEN", "--tls-cert", str(cert), "--tls-key", str(key),
            "--allow-ports", allow, *extra,
            env={"TEST_TUNNEL_TOKEN": token},
        )  # fmt: skip
        wait_for(lambda: healthz(port) is not None or process.proc.poll() is not None)
        assert process.proc.poll() is None, process.stderr()
        return TunnelServerInfo(process, port, token, fingerprint, self.tmp)

    def tcp_client(
        self,
        server: TunnelServerInfo,
        ports: str,
        *extra: str,
        token: str | None = None,
        fingerprint: str | None = None,
        mode: str = "tcp",
    ) -> EngineProcess:
        return self.start(
            mode, "client", "--url", server.url, "--token-env", "TEST_TUNNEL_TOKEN",
            "--tls-fingerprint", fingerprint or server.fingerprint,
            "--upstream", "127.0.0.1", "--ports", ports, *extra,
            env={"TEST_TUNNEL_TOKEN": token or server.token},
        )  # fmt: skip

    def stop_all(self) -> None:
        for process in self.processes:
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGKILL)
            process.proc.wait(10)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    factory = Engine(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@dataclass
class OfflineGuard:
    """What pytest-socket refused in this test; a test that provokes it on purpose clears it."""

    blocked: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def offline_guard() -> Iterator[OfflineGuard]:
    """Records every refused connect(), so a retry loop or a broad ``except`` cannot hide one.

    pytest-socket installs its allow-list guard before fixtures are set up and restores the
    real connect() at teardown; this wraps its guard for the test's duration only.
    """
    guard = OfflineGuard()
    guarded = socket.socket.connect

    def connect(sock: socket.socket, address: object) -> None:
        try:
            guarded(sock, address)  # type: ignore[arg-type]
        except SocketConnectBlockedError as exc:
            guard.blocked.append(str(exc))
            raise

    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    try:
        yield guard
    finally:
        if socket.socket.connect is connect:
            socket.socket.connect = guarded  # type: ignore[method-assign]
    if guard.blocked:
        pytest.fail("connect() off loopback: " + "; ".join(guard.blocked), pytrace=False)
