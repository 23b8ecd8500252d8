"""Flags shared by every mode's CLI: token source, server TLS, client pin, logging.

Each mode module calls these helpers from its ``register(subparsers)`` so the flags
are spelled and checked the same way everywhere.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from . import netaddr, tls
from .client import ClientConfig
from .errors import ConfigError

log = logging.getLogger("tunnel_core")


def add_token_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--token", help="shared secret (visible in `ps`; prefer the others)")
    group.add_argument("--token-file", metavar="FILE", help="read the shared secret from FILE")
    group.add_argument(
        "--token-env", metavar="VAR", help="read the shared secret from environment variable VAR"
    )


def resolve_token(args: argparse.Namespace) -> str:
    if args.token is not None:
        token = str(args.token)
    elif args.token_file is not None:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read --token-file {args.token_file}: {exc.strerror}"
            ) from exc
    else:
        token = os.environ.get(args.token_env, "").strip()
        if not token:
            raise ConfigError(f"--token-env: environment variable {args.token_env} is not set")
    if not token:
        raise ConfigError("the token is empty", "use a long random secret")
    return token


def token_flag(args: argparse.Namespace) -> str:
    """How a client should pass the same token, without printing the token itself."""
    if args.token_file is not None:
        return f"--token-file {args.token_file}"
    if args.token_env is not None:
        return f"--token-env {args.token_env}"
    return "--token <TOKEN>"


def add_server_tls_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate of the control port")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--auto-tls",
        action="store_true",
        help="generate a self-signed certificate at start and print its fingerprint",
    )
    parser.add_argument(
        "--auto-tls-san",
        action="append",
        default=[],
        metavar="IP|NAME",
        help="extra subject alternative name for --auto-tls (the public IP); repeatable",
    )


def server_tls(args: argparse.Namespace) -> tuple[ssl.SSLContext, str | None]:
    """The server's TLS context and, with --auto-tls, the fingerprint to announce."""
    if args.auto_tls:
        if args.tls_cert or args.tls_key:
            raise ConfigError("--auto-tls and --tls-cert/--tls-key exclude each other")
        cert, key, fingerprint = tls.self_signed(list(args.auto_tls_san))
        return tls.server_context_from_pem(cert, key), fingerprint
    if not (args.tls_cert and args.tls_key):
        raise ConfigError(
            "the control port needs TLS", "pass --tls-cert and --tls-key, or --auto-tls"
        )
    return tls.server_context(args.tls_cert, args.tls_key), None


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind", default="0.0.0.0", help="address of the control and data ports (0.0.0.0)"
    )
    parser.add_argument(
        "--control-port", type=int, default=8123, help="TLS WebSocket port of clients (8123)"
    )
    parser.add_argument(
        "--keepalive",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="ping every client this often; drop one silent for 3 intervals (15)",
    )
    add_token_args(parser)
    add_server_tls_args(parser)


def keepalive(args: argparse.Namespace) -> tuple[float, float]:
    """(ping interval, silence allowed) from ``--keepalive``: 3 intervals, then dropped."""
    if args.keepalive <= 0:
        raise ConfigError("--keepalive must be > 0 seconds")
    return float(args.keepalive), 3.0 * args.keepalive


def add_allow_ips_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--allow-ips",
        metavar="CIDR,...",
        help=f"only sources in these networks (IPv4 and IPv6, e.g. 203.0.113.0/24,"
        f"2001:db8::/32; a bare address is one host) may connect to {what}; others are "
        "closed at accept, logged at debug level (-v). The control port stays open to "
        "all (default: everyone)",
    )


def allow_ips(args: argparse.Namespace) -> tuple[netaddr.Network, ...] | None:
    """``--allow-ips`` parsed (None when not given); a bad CIDR is a ConfigError (exit 2)."""
    text = getattr(args, "allow_ips", None)
    return None if text is None else netaddr.parse_cidrs("--allow-ips", text)


def announce(args: argparse.Namespace, fingerprint: str, port: int, client_args: str) -> None:
    """Print the --auto-tls fingerprint and the exact client command to stderr."""
    host = (args.auto_tls_san or [None])[0] or (
        "127.0.0.1" if args.bind in ("0.0.0.0", "::", "") else args.bind
    )
    if ":" in host and _is_ip(host):
        host = f"[{host}]"
    print(f"tunnel-core: TLS certificate fingerprint {fingerprint}", file=sys.stderr)
    print("tunnel-core: connect a client with:", file=sys.stderr)
    print(
        f"  tunnel-core {args.mode} client --url wss://{host}:{port} {token_flag(args)} "
        f"--tls-fingerprint {fingerprint} {client_args}",
        file=sys.stderr,
        flush=True,
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def add_client_args(parser: argparse.ArgumentParser, several_servers: bool = True) -> None:
    if several_servers:
        parser.add_argument(
            "--url",
            required=True,
            action="append",
            help="control URL of the server, wss://HOST:8123; repeat it to keep a session "
            "to each of several servers (e.g. behind one load balancer)",
        )
    else:
        parser.add_argument(
            "--url", required=True, help="control URL of the server, wss://HOST:8123"
        )
    add_token_args(parser)
    parser.add_argument(
        "--tls-fingerprint",
        metavar="sha256:HEX",
        help="SHA-256 fingerprint of the server certificate (checked before the token is sent)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server certificate (the token can be stolen; testing only)",
    )


def client_configs(args: argparse.Namespace, hello: dict[str, Any]) -> list[ClientConfig]:
    """One client configuration per ``--url``: the same token, pin and client id to each."""
    urls: list[str] = list(dict.fromkeys(args.url))  # a URL given twice is one server
    token, pin = resolve_token(args), client_pin(args)
    configs = [
        ClientConfig(url=url, token=token, hello=hello, fingerprint=pin, insecure=args.insecure)
        for url in urls
    ]
    client_id = getattr(args, "client_id", None)
    for config in configs:
        config.client_id = client_id or configs[0].client_id
    return configs


def client_pin(args: argparse.Namespace) -> str | None:
    if args.tls_fingerprint:
        return tls.parse_fingerprint(args.tls_fingerprint)
    if not args.insecure:
        raise ConfigError(
            "--tls-fingerprint is required",
            "pass the fingerprint the server printed, or --insecure to skip verification",
        )
    log.warning("--insecure: the server certificate is NOT verified; the token may leak")
    return None
