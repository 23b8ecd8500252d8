"""The real user-data on a real VM: create with the qemu provider, pass traffic, delete.

Slow (a Debian boot), so marked ``vm`` and run by ``make test-vm`` only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from inletsctl import hosts
from providers.local import healthz
from providers.models import Engine, Host, HostStatus, TunnelMode
from tests.vm.conftest import (
    BOOT_TIMEOUT_S,
    qemu_provider,
    run_cli,
    serial_tail,
    wait_for,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

PAYLOAD = os.urandom(10 * 1024 * 1024)
#: Bound on the tunnel client connecting once the server answers.
CONNECT_TIMEOUT_S = 60
#: Bound on one transfer through the tunnel (10 MB over TCG networking).
TRANSFER_TIMEOUT_S = 120


def create(*args: str, release_url: str) -> dict[str, object]:
    proc = run_cli(
        "create",
        "--provider",
        "qemu",
        "--release-url",
        release_url,
        "--poll",
        "2s",
        "--timeout",
        f"{BOOT_TIMEOUT_S}s",
        "-o",
        "json",
        *args,
        timeout=BOOT_TIMEOUT_S + 120,
    )
    assert proc.returncode == 0, f"create failed:\n{proc.stderr[-4000:]}"
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def provider_host(state: Path, image: Path, summary: dict[str, object]) -> Host:
    return qemu_provider(state, image).status(str(summary["provider_id"]))


@contextmanager
def tunnel_client(command: str, token: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The printed client command, run with this interpreter's tunnel_core; ended by PID.

    The command reads the token from INLETS_TOKEN, as the summary tells a user to set it.
    """
    argv = shlex.split(command)
    assert argv[0] == "tunnel-core", command
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tunnel_core", *argv[1:]],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "INLETS_TOKEN": token},
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_client_connected(host: Host, fingerprint: str, client: subprocess.Popen[bytes]) -> None:
    port = int(host.additional["control_port"])

    def probe() -> bool | None:
        assert client.poll() is None, f"tunnel client exited ({client.returncode})"
        try:
            doc = healthz("127.0.0.1", port, fingerprint)
        except OSError:
            return None
        return True if int(str(doc.get("clients", 0))) >= 1 else None

    wait_for("tunnel client connected to the VM", probe, CONNECT_TIMEOUT_S, poll=0.5)


def assert_wrong_token_refused(host: Host) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the refusal, not the certificate, is under test here
    conn = http.client.HTTPSConnection(
        "127.0.0.1", int(host.additional["control_port"]), timeout=30, context=ctx
    )
    try:
        conn.request(
            "GET",
            "/connect",
            headers={
                "Authorization": "Bearer not-the-token",
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        assert conn.getresponse().status == 401
    finally:
        conn.close()


def delete_and_check_gone(state: Path, host: Host, host_id: str) -> None:
    proc = run_cli("delete", "--id", host_id)
    assert proc.returncode == 0, proc.stderr
    pid = int(host.additional["pid"])
    assert (
        not Path(f"/proc/{pid}").exists()
        or b"qemu" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ), "qemu still running after delete"
    assert not Path(host.additional["state_dir"]).exists(), "overlay/seed left behind"
    assert not list((state / "qemu").glob("*/overlay.qcow2"))


@contextmanager
def byte_source(data: bytes) -> Iterator[int]:
    """A TCP upstream that sends ``data`` to each connection, then closes it."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        thread.join(timeout=5)


def read_all(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=TRANSFER_TIMEOUT_S) as s:
        chunks = []
        while chunk := s.recv(1 << 20):
            chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_tunnel_through_a_vm(
    state_dir: Path, vm_image: Path, guest_release: str, tmp_path: Path
) -> None:
    with byte_source(PAYLOAD) as upstream:
        summary = create("--tcp", "--ports", f"8080:{upstream}", release_url=guest_release)
        host = provider_host(state_dir, vm_image, summary)
        try:
            assert host.status is HostStatus.ACTIVE
            assert summary["ip"] == "127.0.0.1"
            forwards = dict(f.split(":") for f in host.additional["forwards"].split(","))
            public = next(h for h, g in forwards.items() if g == "8080")
            with tunnel_client(
                str(summary["client_command"]), str(summary["token"]), tmp_path / "client.log"
            ) as client:
                wait_client_connected(host, str(summary["tls_fingerprint"]), client)
                got = read_all(int(public))
            assert len(got) == len(PAYLOAD)
            assert hashlib.sha256(got).digest() == hashlib.sha256(PAYLOAD).digest()
            assert_wrong_token_refused(host)
        except BaseException as exc:
            raise AssertionError(f"{exc}\n--- serial console ---\n{serial_tail(host)}") from exc
    delete_and_check_gone(state_dir, host, str(summary["id"]))


class _Site(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = PAYLOAD if self.path == "/big" else b"hello from upstream\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def http_upstream(handler: type[BaseHTTPRequestHandler] = _Site) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 answering with ``handler``; yields its port."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def http_get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TRANSFER_TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Host": "example.test"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_http_tunnel_through_a_vm(
    state_dir: Path, vm_image: Path, guest_release: str, tmp_path: Path
) -> None:
    with http_upstream() as upstream:
        summary = create(
            "--http", "--upstream", f"http://127.0.0.1:{upstream}", release_url=guest_release
        )
        host = provider_host(state_dir, vm_image, summary)
        try:
            assert host.status is HostStatus.ACTIVE
            data_port = int(host.additional["data_port"])
            assert data_port and summary["data_port"] == data_port
            with tunnel_client(
                str(summary["client_command"]), str(summary["token"]), tmp_path / "client.log"
            ) as client:
                wait_client_connected(host, str(summary["tls_fingerprint"]), client)
                assert http_get(data_port, "/") == (200, b"hello from upstream\n")
                status, body = http_get(data_port, "/big")
            assert status == 200
            assert hashlib.sha256(body).digest() == hashlib.sha256(PAYLOAD).digest()
            assert_wrong_token_refused(host)
        except BaseException as exc:
            raise AssertionError(f"{exc}\n--- serial console ---\n{serial_tail(host)}") from exc
    delete_and_check_gone(state_dir, host, str(summary["id"]))


def test_inlets_pro_user_data_fails_cleanly_without_network(
    state_dir: Path, vm_image: Path
) -> None:
    """Upstream inlets-pro is fetched from the internet; with none, the boot must still end."""
    provider = qemu_provider(state_dir, vm_image)
    req = hosts.CreateRequest(
        provider="qemu", mode=TunnelMode.TCP, ports=((8080, 8080),), engine=Engine.INLETS_PRO
    )
    spec = hosts.build_spec(req, provider, hosts.new_host_id())
    host = provider.create(spec)

    def failed() -> Host | None:
        now = provider.status(host.id)
        return now if now.status is HostStatus.FAILED else None

    try:
        done = wait_for("inlets-pro boot to end in a failed state", failed, BOOT_TIMEOUT_S)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- serial console ---\n{serial_tail(host)}") from exc
    assert done.additional["boot_stage"] == "cloud-init failed", serial_tail(done)
    assert Path(f"/proc/{done.additional['pid']}").exists(), "qemu died instead of booting"
    provider.delete(host_id=host.id)
    assert not Path(done.additional["state_dir"]).exists()
