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

import shlex
from collections.abc import Sequence

__all__ = ["DEFAULT_ENV_FILE", "server_unit"]

DEFAULT_ENV_FILE = "/etc/default/tunnel-core"

_TOKEN_FLAGS = ("--token", "--token-file", "--token-env")
_DROPPED_FLAGS = ("--generate",)


def _strip(argv: Sequence[str]) -> list[str]:
    """Remove token and ``--generate`` flags (with their values) from ``argv``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _TOKEN_FLAGS or name in _DROPPED_FLAGS:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def server_unit(
    mode: str,
    server_args: Sequence[str],
    *,
    ports: Sequence[int],
    exec_path: str = "/usr/local/bin/tunnel-core",
    env_file: str = DEFAULT_ENV_FILE,
) -> str:
    """The unit text for ``tunnel-core <mode> server <server_args>``.

    ``ports`` are all ports the server binds; one below 1024 keeps
    CAP_NET_BIND_SERVICE, otherwise the process gets no capabilities at all.
    """
    args = [exec_path, mode, "server", *_strip(server_args), "--token-env", "INLETS_TOKEN"]
    caps = "CAP_NET_BIND_SERVICE" if any(p < 1024 for p in ports) else ""
    return f"""\
[Unit]
Description=tunnel-core {mode} tunnel server
Documentation=https://github.com/inlets/inletsctl
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile={env_file}
ExecStart={shlex.join(args)}
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
