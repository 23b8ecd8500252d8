"""The generated systemd unit."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tunnel_core.systemd import server_unit


def test_token_never_in_the_unit_and_read_from_the_environment_file() -> None:
    args = ["--bind", "0.0.0.0", "--token", "s3cret", "--token-file=/x", "--generate", "systemd"]
    unit = server_unit("http", [*args, "--port", "8000"], ports=[8000, 8123])
    assert "s3cret" not in unit and "/x" not in unit and "--generate" not in unit
    assert "EnvironmentFile=/etc/default/tunnel-core" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line == (
        "ExecStart=/usr/local/bin/tunnel-core http server --bind 0.0.0.0 --port 8000"
        " --token-env INLETS_TOKEN"
    )
    for option in (
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert option in unit.splitlines()
    assert "CapabilityBoundingSet=" in unit.splitlines()


def test_low_port_keeps_only_the_bind_capability() -> None:
    unit = server_unit("tcp", ["--allow-ports", "80"], ports=[80, 8123])
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit.splitlines()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tunnel-core.service"
    path.write_text(server_unit("http", ["--port", "8000"], ports=[8000], exec_path="/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=30
    )
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr
