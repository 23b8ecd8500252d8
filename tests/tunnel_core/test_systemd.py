"""The generated systemd unit, through the real CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

ENGINE = [sys.executable, "-m", "tunnel_core"]


def generate(*argv: str) -> str:
    result = subprocess.run(
        [*ENGINE, *argv, "--generate", "systemd"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_http_unit_reads_the_token_from_the_environment_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    unit = generate(
        "http", "server", "--bind", "0.0.0.0", "--port", "8000", "--token", "s3cret",
        "--tls-cert", "cert.pem", "--tls-key", str(tmp_path / "key.pem"),
    )  # fmt: skip
    assert "s3cret" not in unit
    assert "EnvironmentFile=/etc/default/tunnel-core" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_line.startswith("ExecStart=/usr/local/bin/tunnel-core http server --bind 0.0.0.0")
    assert exec_line.endswith("--token-env INLETS_TOKEN")
    assert " --port 8000 " in exec_line and " --control-port 8123 " in exec_line
    assert " --max-connections 1024 " in exec_line and " --header-timeout 10.0 " in exec_line
    assert " --max-connections-per-ip 64 " in exec_line and " --min-body-rate 500.0 " in exec_line
    assert " --body-rate-window 10.0 " in exec_line
    assert f" --tls-key {tmp_path / 'key.pem'} " in exec_line
    assert " --tls-cert /" in exec_line  # relative paths are made absolute
    for option in (
        "Restart=always",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet=",
    ):
        assert option in unit.splitlines()


def test_tcp_unit_with_low_ports_keeps_only_the_bind_capability() -> None:
    unit = generate("tcp", "server", "--token-env", "X", "--auto-tls", "--allow-ports", "80,8000")
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit.splitlines()
    assert "--auto-tls" in unit and "--allow-ports 80,8000" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    unit = generate("http", "server", "--token", "t", "--auto-tls")
    path = tmp_path / "tunnel-core.service"
    path.write_text(unit.replace("/usr/local/bin/tunnel-core", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=30
    )
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr


@pytest.mark.parametrize("mode", ["tcp", "http"])
def test_the_unit_carries_allow_ips(mode: str) -> None:
    unit = generate(
        mode, "server", "--token", "t", "--auto-tls", "--allow-ips", "203.0.113.0/24,2001:db8::/32"
    )  # fmt: skip
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert " --allow-ips 203.0.113.0/24,2001:db8::/32 " in exec_line
