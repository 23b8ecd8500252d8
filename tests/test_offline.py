"""The suite reaches nothing but loopback (DESIGN.md, "Tests and the network").

Fakes and moto hand out public-looking addresses; a probe aimed at one must fail at once
in the test instead of leaving the machine. 203.0.113.7 is a documentation address
(TEST-NET-3, RFC 5737): nothing answers it, so a packet that escaped would hang until
the timeout rather than be refused.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pytest_socket import SocketConnectBlockedError

from tests.conftest import OfflineGuard

PUBLIC = ("203.0.113.7", 80)
#: Bounds a connect that escaped, so a broken guard fails the test instead of hanging it.
ESCAPE_TIMEOUT_S = 10.0


def loopback_only() -> bool:
    """True inside the network namespace `make test` makes as root: lo is the only link."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def test_in_process_connect_off_loopback_is_refused(offline_guard: OfflineGuard) -> None:
    with socket.socket() as sock, pytest.raises(SocketConnectBlockedError, match="203.0.113.7"):
        sock.settimeout(ESCAPE_TIMEOUT_S)
        sock.connect(PUBLIC)
    assert len(offline_guard.blocked) == 1
    offline_guard.blocked.clear()  # provoked on purpose; the guard would fail the test


def test_a_swallowed_refusal_still_fails_the_test(offline_guard: OfflineGuard) -> None:
    """Code under test that retries on any exception must not hide the attempt."""
    try:
        socket.create_connection(PUBLIC, timeout=ESCAPE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 (the careless caller this test stands for)
        pass
    assert offline_guard.blocked and "203.0.113.7" in offline_guard.blocked[0]
    offline_guard.blocked.clear()


def _accept_one(server: socket.socket) -> threading.Thread:
    def run() -> None:
        conn, _ = server.accept()
        conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.5"])
def test_all_of_127_slash_8_is_allowed(host: str) -> None:
    with socket.create_server((host, 0)) as server:
        thread = _accept_one(server)
        with socket.create_connection(server.getsockname()[:2], timeout=ESCAPE_TIMEOUT_S):
            pass
        thread.join(ESCAPE_TIMEOUT_S)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_ipv6_loopback_is_allowed() -> None:
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:  # a kernel booted without IPv6 has no ::1 to listen on
        pytest.skip(f"cannot listen on ::1: {exc}")
    with server:
        thread = _accept_one(server)
        with socket.create_connection(server.getsockname()[:2], timeout=ESCAPE_TIMEOUT_S):
            pass
        thread.join(ESCAPE_TIMEOUT_S)


def test_unix_sockets_are_allowed(tmp_path: Path) -> None:
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        thread = _accept_one(server)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
        thread.join(ESCAPE_TIMEOUT_S)


@pytest.mark.skipif(
    not loopback_only(), reason="not in a loopback-only namespace (`make test` as root is)"
)
def test_a_subprocess_cannot_reach_off_loopback() -> None:
    """pytest-socket patches this interpreter only; the namespace stops every process."""
    probe = (
        "import socket, sys\n"
        "s = socket.socket()\n"
        f"s.settimeout({ESCAPE_TIMEOUT_S})\n"
        "try:\n"
        f"    s.connect({PUBLIC!r})\n"
        "except OSError as exc:\n"
        "    sys.exit(exc.errno or 1)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe], timeout=ESCAPE_TIMEOUT_S * 3, env=os.environ.copy()
    )
    assert res.returncode == errno.ENETUNREACH, os.strerror(res.returncode)
