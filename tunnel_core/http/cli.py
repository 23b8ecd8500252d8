"""``tunnel-core http server|client|fileserver``: parse flags, build the engine, run it."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
from pathlib import Path
from typing import Any

from tunnel_core import options
from tunnel_core.client import ClientConfig, run_clients
from tunnel_core.errors import ConfigError
from tunnel_core.runner import run
from tunnel_core.server import ServerConfig, TunnelServer
from tunnel_core.systemd import add_generate_arg, server_unit

from .fileserver import FileServer, run_fileserver
from .plane import HttpClientPlane, HttpServerPlane
from .public import Limits
from .upstream import Upstreams, parse_upstream

__all__ = ["register"]

log = logging.getLogger("tunnel_core")


def _add_limit_args(parser: argparse.ArgumentParser) -> None:
    defaults = Limits()
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help=f"public connections served at once; more get 503 ({defaults.max_connections})",
    )
    parser.add_argument(
        "--max-connections-per-ip",
        type=int,
        default=defaults.max_connections_per_ip,
        metavar="N",
        help="public connections one source address (IPv6: /64) may hold; more get 429. "
        "0: no limit, e.g. behind a load balancer that every client shares "
        f"({defaults.max_connections_per_ip})",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout,
        help="seconds a client may take to send its request headers, counted from accept "
        f"for a connection's first request; then 408 ({defaults.header_timeout:g})",
    )
    parser.add_argument(
        "--min-body-rate",
        type=float,
        default=defaults.min_body_rate,
        metavar="BYTES_PER_S",
        help="slowest average rate of a request body over each --body-rate-window, "
        f"then 408; 0: no minimum ({defaults.min_body_rate:g})",
    )
    parser.add_argument(
        "--body-rate-window",
        type=float,
        default=defaults.body_rate_window,
        metavar="SECONDS",
        help=f"seconds over which --min-body-rate is averaged ({defaults.body_rate_window:g})",
    )
    parser.add_argument(
        "--trusted-proxy",
        default=None,
        metavar="CIDR,...",
        help="front proxies on this server (e.g. Caddy for HTTPS on 127.0.0.1): no "
        "per-IP limit for them, and their X-Forwarded-Proto/-Host are kept",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout,
        help=f"seconds an idle keep-alive connection is kept ({defaults.idle_timeout:g})",
    )


def _limits(args: argparse.Namespace) -> Limits:
    if (
        args.max_connections < 1
        or args.header_timeout <= 0
        or args.idle_timeout <= 0
        or args.body_rate_window <= 0
    ):
        raise ConfigError(
            "--max-connections, --header-timeout, --idle-timeout and --body-rate-window must be > 0"
        )
    if args.max_connections_per_ip < 0 or args.min_body_rate < 0:
        raise ConfigError("--max-connections-per-ip and --min-body-rate must be >= 0 (0: off)")
    try:
        trusted = tuple(
            ipaddress.ip_network(c.strip())
            for c in (args.trusted_proxy or "").split(",")
            if c.strip()
        )
    except ValueError as exc:
        raise ConfigError(f"--trusted-proxy: {exc}") from exc
    return Limits(
        trusted_proxies=trusted,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
        min_body_rate=args.min_body_rate,
        body_rate_window=args.body_rate_window,
        allow_ips=options.allow_ips(args),
    )


def register(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    http = modes.add_parser("http", help="route HTTP requests by Host header")
    roles = http.add_subparsers(dest="role", required=True, metavar="{server,client,fileserver}")
    server = roles.add_parser(
        "server",
        help="accept clients and serve HTTP on the data port",
        description="Run on the public host: accepts tunnel clients on the TLS control port "
        "and routes each request on --port by its Host header, round-robin across the "
        "clients that serve that host.",
    )
    options.add_server_args(server)
    server.add_argument("--port", type=int, default=8000, help="public HTTP data port (8000)")
    server.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="also serve GET /metrics (Bearer token) on this port; it is always on the "
        "control port",
    )
    _add_limit_args(server)
    options.add_allow_ips_arg(server, "the HTTP data port (--port)")
    add_generate_arg(server)
    server.set_defaults(func=server_main)

    client = roles.add_parser(
        "client",
        help="connect to a server and serve its requests from local upstreams",
        description="Run next to the private services: each --upstream [HOST=]URL serves "
        "requests for HOST (a bare URL serves any other host).",
    )
    options.add_client_args(client)
    client.add_argument(
        "--upstream",
        action="append",
        required=True,
        metavar="[HOST=]URL",
        help="e.g. api.example.com=http://127.0.0.1:3000 or http://127.0.0.1:8080; repeatable",
    )
    client.set_defaults(func=client_main)

    files = roles.add_parser(
        "fileserver",
        help="serve a directory over HTTP with basic auth, for a tunnel to expose",
        description="Serve --webroot on --port; every request needs basic auth with user "
        "admin and the token as password.",
    )
    files.add_argument("--webroot", required=True, type=Path, help="directory to serve")
    files.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    files.add_argument("--bind", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    files.add_argument(
        "--allow-browsing", action="store_true", help="list directories (off by default)"
    )
    options.add_token_args(files)
    files.set_defaults(func=fileserver_main)


def server_main(args: argparse.Namespace) -> int:
    _limits(args)  # bad values are a usage error, also before --generate
    interval, silence = options.keepalive(args)
    if args.generate:
        print(server_unit("http", args), end="")
        return 0

    async def main(stop: asyncio.Event) -> int:
        token = options.resolve_token(args)
        ctx, fingerprint = options.server_tls(args)
        plane = HttpServerPlane(args.bind, args.port, token, _limits(args))
        config = ServerConfig(
            token=token,
            ssl_context=ctx,
            bind=args.bind,
            control_port=args.control_port,
            keepalive=interval,
            keepalive_timeout=silence,
            authorized_routes={
                "/metrics": lambda: (plane.metrics.render(), "text/plain; version=0.0.4"),
                "/status": lambda: (json.dumps(plane.status()), "application/json"),
            },
        )
        server = TunnelServer(config, plane)
        await plane.start(args.metrics_port)
        await server.start()
        log.info(
            "control port on %s:%d, HTTP data port on %s:%d",
            args.bind, server.port, args.bind, plane.port,
        )  # fmt: skip
        if fingerprint:
            options.announce(args, fingerprint, server.port, "--upstream http://127.0.0.1:8080")
        await stop.wait()
        log.info("shutting down")
        await server.close()
        return 0

    return run(main)


def _upstreams(specs: list[str]) -> Upstreams:
    try:
        return Upstreams(parse_upstream(spec) for spec in specs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def client_main(args: argparse.Namespace) -> int:
    async def main(stop: asyncio.Event) -> int:
        plane = HttpClientPlane(_upstreams(args.upstream))
        configs = options.client_configs(args, plane.hello())

        def connected(config: ClientConfig, info: dict[str, Any]) -> None:
            log.info("connected to %s; serving %s", config.url, ", ".join(args.upstream))

        await run_clients(configs, plane.on_stream, stop, connected)
        return 0

    return run(main, role="client")


def fileserver_main(args: argparse.Namespace) -> int:
    async def main(stop: asyncio.Event) -> int:
        if not args.webroot.is_dir():
            raise ConfigError(f"--webroot {args.webroot} is not a directory")
        server = FileServer(args.webroot, options.resolve_token(args), args.allow_browsing)
        log.info("serving %s on %s:%d", args.webroot, args.bind, args.port)
        await run_fileserver(server, args.bind, args.port, Limits(), stop)
        return 0

    return run(main)
