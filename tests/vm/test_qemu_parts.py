"""The qemu provider's parts that need no VM: fast, so they run in `make test`."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from providers.errors import InvalidSpec
from providers.models import HostSpec, ProviderConfig
from providers.qemu import (
    BOOT_FAILED,
    FORWARDS_ENV,
    GUESTFWD_ADDR,
    QemuProvider,
    accel,
    boot_stage,
    parse_forwards,
)
from tests.certs import server_spec

RELAY_TIMEOUT_S = 30


def test_boot_stage_is_the_furthest_marker_seen() -> None:
    assert boot_stage("") == ""
    assert boot_stage("[0.0] Linux version 6.1\nWelcome to Debian") == "systemd"
    final = "Linux version\nCloud-init v. 22 running 'modules:final'\n"
    assert boot_stage(final) == "cloud-init final (runcmd)"
    assert boot_stage(final + "INLETSCTL-BOOT: cloud-init done\n") == "cloud-init finished"
    assert boot_stage(final + BOOT_FAILED + "\n") == "cloud-init failed"


def test_unknown_accelerator_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidSpec) as exc:
        accel("hvf")
    assert "INLETSCTL_QEMU_ACCEL" in exc.value.hint
    assert accel("tcg") == "tcg"


def test_forwards_are_host_guest_pairs_of_ports() -> None:
    assert parse_forwards("") == {}
    assert parse_forwards("2222:22, 8123:8123") == {2222: 22, 8123: 8123}
    for bad in ("22", "ssh:22", "0:22", "2222:70000", "2222:22:1"):
        with pytest.raises(InvalidSpec) as exc:
            parse_forwards(bad)
        assert "HOST:GUEST" in exc.value.hint, bad


def test_missing_image_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    cfg = ProviderConfig(state_dir=str(tmp_path), extra={"image_dir": str(tmp_path / "none")})
    provider = QemuProvider(cfg)
    provider.qemu = sys.executable  # stands in for qemu: only its presence is checked first
    spec = HostSpec(
        host_id="abc123",
        name="t",
        region="local",
        plan="small",
        image="debian-12",
        user_data="#cloud-config\n",
        server=server_spec(),
    )
    if any(shutil.which(t) is None for t in ("qemu-img", "mkfs.vfat", "mcopy")):
        pytest.skip("qemu-utils, dosfstools or mtools not installed")
    with pytest.raises(InvalidSpec) as exc:
        provider.create(spec)
    assert "make vm-image" in exc.value.hint
    assert not (tmp_path / "qemu").exists()
    assert provider.list() == []


def test_relay_carries_one_guest_connection_to_the_host_port() -> None:
    """What guestfwd runs per guest connection: stdin/stdout <-> a host TCP port."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            request = b""
            while not request.endswith(b"\r\n\r\n"):
                request += conn.recv(1024)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + request.upper())

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "providers.qemu", "relay", "127.0.0.1", str(port)],
            input=b"GET /x HTTP/1.0\r\n\r\n",
            capture_output=True,
            timeout=RELAY_TIMEOUT_S,
        )
    finally:
        srv.close()
        thread.join(timeout=RELAY_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"HTTP/1.0 200 OK\r\n\r\nGET /X HTTP/1.0\r\n\r\n"


def test_the_guest_reaches_the_release_and_the_acme_directory_on_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One relay per port of 10.0.2.100 the guest fetches from; other hosts get none."""
    monkeypatch.setenv(FORWARDS_ENV, "18080:80")
    provider = QemuProvider(ProviderConfig(state_dir=str(tmp_path)))
    assert provider.forwards == {18080: 80}, "the CLI's way to set extra['forwards']"
    server = dataclasses.replace(
        server_spec(),
        release_url=f"http://{GUESTFWD_ADDR}:8080/releases/tunnel-core.pyz",
        acme_directory=f"https://{GUESTFWD_ADDR}/dir",
    )
    relays = provider._relays(server)
    assert relays.count("guestfwd=") == 2
    assert f"guestfwd=tcp:{GUESTFWD_ADDR}:443-cmd:" in relays and relays.endswith(" 8080")
    elsewhere = dataclasses.replace(server, acme_directory="https://acme.example.com/dir")
    assert provider._relays(elsewhere).count("guestfwd=") == 1
