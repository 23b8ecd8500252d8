"""``--generate systemd``: a hardened unit for a tunnel server.

The unit never holds the token: it reads ``INLETS_TOKEN`` from an
``EnvironmentFile`` (mode 0600, written by cloud-init or the admin) and passes
``--token-env INLETS_TOKEN``, so the secret stays out of ``ps`` output and out of
the world-readable unit. The sandbox options are the ones current systemd
supports; the process needs nothing but sockets and its own certificate files.
It runs as root only so it can read the 0600 root-owned key and token files, but
with an empty capability bounding set (bar binding a low port) it holds no
privilege beyond owning those files.
"""

from __future__ import annotations

import argparse
import os
import shlex

__all__ = ["DEFAULT_ENV_FILE", "add_generate_arg", "server_unit"]

DEFAULT_ENV_FILE = "/etc/default/tunnel-core"

#: (argparse dest, flag) of the server options a unit carries over; paths made absolute.
_VALUE_FLAGS = (
    ("bind", "--bind", False),
    ("control_port", "--control-port", False),
    ("port", "--port", False),
    ("metrics_port", "--metrics-port", False),
    ("allow_ports", "--allow-ports", False),
    ("keepalive", "--keepalive", False),
    ("max_connections", "--max-connections", False),
    ("max_connections_per_ip", "--max-connections-per-ip", False),
    ("header_timeout", "--header-timeout", False),
    ("idle_timeout", "--idle-timeout", False),
    ("max_flows", "--max-flows", False),
    ("min_body_rate", "--min-body-rate", False),
    ("body_rate_window", "--body-rate-window", False),
    ("trusted_proxy", "--trusted-proxy", False),
    ("allow_ips", "--allow-ips", False),
    ("tls_cert", "--tls-cert", True),
    ("tls_key", "--tls-key", True),
)


def _flags(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for dest, flag, is_path in _VALUE_FLAGS:
        value = getattr(args, dest, None)
        if value is not None:
            out += [flag, os.path.abspath(value) if is_path else str(value)]
    if getattr(args, "auto_tls", False):
        out.append("--auto-tls")
        for san in getattr(args, "auto_tls_san", []):
            out += ["--auto-tls-san", san]
    return out


def _lowest_port(args: argparse.Namespace) -> int:
    ports = [getattr(args, d, None) for d in ("control_port", "port", "metrics_port")]
    lowest = min(p for p in ports if isinstance(p, int))
    allow = getattr(args, "allow_ports", None)
    if allow:  # TCP mode binds whatever clients ask for inside the allow-list
        for part in str(allow).split(","):
            first = part.strip().split("-", 1)[0]
            if first.isdigit():
                lowest = min(lowest, int(first))
    return lowest


def add_generate_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generate",
        choices=["systemd"],
        help="print a hardened systemd unit for this server (token from "
        f"{DEFAULT_ENV_FILE}, INLETS_TOKEN=...) and exit",
    )


def server_unit(
    mode: str,
    args: argparse.Namespace,
    *,
    exec_path: str = "/usr/local/bin/tunnel-core",
    env_file: str = DEFAULT_ENV_FILE,
) -> str:
    """The unit text for ``tunnel-core <mode> server`` with the options in ``args``.

    The token flags are never copied; a port below 1024 keeps CAP_NET_BIND_SERVICE,
    otherwise the process gets no capabilities at all.
    """
    argv = [exec_path, mode, "server", *_flags(args), "--token-env", "INLETS_TOKEN"]
    caps = "CAP_NET_BIND_SERVICE" if _lowest_port(args) < 1024 else ""
    return f"""\
[Unit]
Description=tunnel-core {mode} tunnel server
Documentation=https://github.com/inlets/inletsctl
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile={env_file}
ExecStart={shlex.join(argv)}
Restart=always
RestartSec=2
CapabilityBoundingSet={caps}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
UMask=0077
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""
