"""The whole product on loopback: create local -> connect -> GET through the tunnel -> delete."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inletsctl.store import Store
from providers.local import pid_alive
from tests.inletsctl.conftest import run_cli

pytestmark = pytest.mark.network
#: Bound on waiting for the first byte through a fresh tunnel.
TUNNEL_DEADLINE_S = 30.0
MARKER = b"hello through the tunnel"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("Content-Length", str(len(MARKER)))
        self.end_headers()
        self.wfile.write(MARKER)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_through(port: int, client: subprocess.Popen[bytes]) -> bytes:
    deadline = time.monotonic() + TUNNEL_DEADLINE_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert client.poll() is None, "the tunnel client exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:  # e.g. 502 until the HTTP client registers
            exc.close()
            last = exc
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"no answer through the tunnel: {last}")


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_create_connect_get_delete(state_dir: Path, upstream: int, mode: str) -> None:
    if mode == "tcp":
        public = free_port()
        res = run_cli("create", "--tcp", "--ports", f"{public}:{upstream}", "-o", "json")
        connect_upstream = []
    else:
        res = run_cli("create", "--http", "-o", "json")
        connect_upstream = ["--upstream", f"http://127.0.0.1:{upstream}"]
    assert res.returncode == 0, res.stderr
    host = json.loads(res.stdout)
    assert host["provider"] == "local" and host["status"] == "ready" and host["ready"] is True
    assert host["ip"] == "127.0.0.1" and host["mode"] == mode
    if mode == "tcp":
        assert host["ports"] == f"{public}:{upstream}"
    else:
        public = host["data_port"]
        assert public > 0 and public != host["control_port"]
        assert host["public_url"] == f"http://127.0.0.1:{public}"
    assert host["tls_fingerprint"].startswith("sha256:") and len(host["tls_fingerprint"]) == 71
    assert f"--tls-fingerprint {host['tls_fingerprint']}" in host["client_command"]
    assert host["token"] not in host["client_command"], "the client reads it from INLETS_TOKEN"
    assert "--token-env INLETS_TOKEN" in host["client_command"]
    assert host["url"] == f"wss://127.0.0.1:{host['control_port']}"
    assert host["delete_command"] == (
        f"inletsctl delete --id {host['id']} --provider local --region local"
    )
    # local's create itself waits for /healthz: ready comes on the first probe
    assert res.stderr.splitlines() == [f"[1] Host: {host['id']}, status: active, tunnel: ready"]
    pid = int(Store(state_dir).get(host["id"]).additional["pid"])
    assert pid_alive(pid)
    logs = run_cli("logs", host["id"])
    assert logs.returncode == 0, logs.stderr
    assert "tunnel-core INFO control port" in logs.stdout, "the server's own log"
    assert f"127.0.0.1:{host['control_port']}" in logs.stdout

    client = subprocess.Popen(
        [sys.executable, "-m", "inletsctl", "connect", host["id"], *connect_upstream],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        assert get_through(public, client) == MARKER
        cmdline = Path(f"/proc/{client.pid}/cmdline").read_bytes()
        assert host["token"].encode() not in cmdline, "connect keeps the token out of argv"
    finally:
        client.terminate()
        client.wait(timeout=10)

    got = json.loads(run_cli("get", host["id"], "-o", "json").stdout)
    assert "token" not in got and "--token-env INLETS_TOKEN" in got["client_command"]
    shown = json.loads(run_cli("get", host["id"], "--show-token", "-o", "json").stdout)
    assert shown["token"] == host["token"]

    remote = json.loads(run_cli("list", "--provider", "local", "--remote", "-o", "json").stdout)
    assert [(h["id"], h["status"], h["ip"]) for h in remote] == [  # the provider's word
        (host["id"], "active", "127.0.0.1")
    ]
    planned = json.loads(run_cli("connect", host["id"], "--print", "-o", "json").stdout)
    assert planned["env"] == ["INLETS_TOKEN"] and host["token"] not in planned["argv"]

    res = run_cli("delete", "--id", host["id"], "-o", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"id": host["id"], "provider": "local", "status": "deleted"}
    assert not pid_alive(pid), "the server process is gone"
    assert not (state_dir / "local" / host["id"]).exists()
    assert json.loads(run_cli("list", "-o", "json").stdout) == []
    everything = json.loads(run_cli("list", "--all", "-o", "json").stdout)
    assert [(h["id"], h["status"]) for h in everything] == [(host["id"], "deleted")]
